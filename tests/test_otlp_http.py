"""Tests for fgext.otlp._http: the kept-alive HTTP/1.1 client of the OTLP/HTTP exports.

A raw asyncio server on 127.0.0.1 reads each request (head and Content-Length body) and answers with
the bytes the test scripts, or closes, or holds: framings, idle closes, cut answers and hostile sizes
that a well-behaved library server would never produce.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any, Awaitable, Callable, List, Optional, Tuple

import pytest

from fgext.otlp._http import MAX_BODY, MAX_HEAD, Answer, Connection, Expired, Interrupt, ProtocolError

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
HEAD = b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: "


class Say:
    """One scripted answer: ``data`` written, then the connection closed if ``close``; ``hold`` answers
    nothing and waits for the client to go; ``echo`` answers with the request's body."""

    def __init__(self, data: bytes = b"", close: bool = False, hold: bool = False, echo: bool = False) -> None:
        self.data = data
        self.close = close
        self.hold = hold
        self.echo = echo  # answer 200 with the request's body


DROP = Say(close=True)  # read the request, close without a byte of answer


class RawServer:
    """Answers the n-th request with the n-th of ``answers`` (the last repeating); records everything."""

    def __init__(self, *answers: Say) -> None:
        self.answers = list(answers) or [Say(OK)]
        self.requests: List[Tuple[int, bytes, bytes]] = []  # (connection number, head, body)
        self.connections = 0
        self.eofs = 0  # connections the client ended between requests, or while a held answer waited
        self.port = 0
        self._server: Optional[asyncio.AbstractServer] = None

    def _next(self) -> Say:
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    self.eofs += 1
                    return
                match = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                body = await reader.readexactly(int(match.group(1))) if match else b""
                self.requests.append((number, head, body))
                answer = self._next()
                if answer.hold:
                    await reader.read()  # until the client gives up and closes
                    self.eofs += 1
                    return
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                             if answer.echo else answer.data)
                await writer.drain()
                if answer.close:
                    return
        except ConnectionError:
            return
        finally:
            writer.close()

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._server is not None
        self._server.close()


def post(connection: Connection, body: bytes = b"abc") -> Awaitable[Answer]:
    return connection.post(HEAD + str(len(body)).encode() + b"\r\n\r\n", body)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def run(scenario: Callable[..., Awaitable[Any]], *answers: Say) -> Any:
    async def go() -> Any:
        async with RawServer(*answers) as server:
            connection = Connection("127.0.0.1", server.port)
            try:
                return await scenario(server, connection)
            finally:
                await connection.close()

    return asyncio.run(go())


class TestFraming:
    def test_a_repeated_header_block_reads_the_same_and_a_changed_one_afresh(self) -> None:
        """Answers on one connection whose header blocks repeat are read as the first was; one that differs
        (another status, a Retry-After, Connection: close) is parsed on its own."""
        busy = b"HTTP/1.1 503 Busy\r\nRetry-After: 3\r\nContent-Length: 2\r\n\r\nno"

        async def scenario(server: RawServer, connection: Connection) -> List[Tuple[int, str, bytes]]:
            answers = [await post(connection) for _ in range(5)]
            return [(a.status, a.fields.get("retry-after", ""), a.body) for a in answers]

        seen = run(scenario, Say(OK), Say(OK), Say(busy), Say(busy), Say(OK))
        assert seen == [(200, "", b"ok"), (200, "", b"ok"), (503, "3", b"no"), (503, "3", b"no"), (200, "", b"ok")]

    def test_content_length_answers_keep_one_connection(self) -> None:
        """Answers framed by Content-Length leave the connection open: three requests, one connection."""

        async def scenario(server: RawServer, connection: Connection) -> None:
            for body in (b"one", b"two", b"three"):
                answer = await post(connection, body)
                assert (answer.status, answer.body) == (200, b"ok")
            assert [r[2] for r in server.requests] == [b"one", b"two", b"three"]
            assert server.connections == 1 and connection.connects == 1

        run(scenario)

    def test_chunked_answer(self) -> None:
        """A chunked body (with a chunk extension and a trailer) is joined, and the connection kept."""
        chunked = (b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")

        async def scenario(server: RawServer, connection: Connection) -> None:
            answer = await post(connection)
            assert (answer.status, answer.body) == (400, b"hello world")
            assert (await post(connection)).body == b"ok"
            assert server.connections == 1

        run(scenario, Say(chunked), Say(OK))

    def test_answer_read_until_close(self) -> None:
        """An answer with neither Content-Length nor chunking is read to the close; the next request opens a
        new connection."""
        unframed = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nthe whole body"

        async def scenario(server: RawServer, connection: Connection) -> None:
            assert (await post(connection)).body == b"the whole body"
            assert not connection.open
            assert (await post(connection)).body == b"ok"
            assert server.connections == 2 and connection.connects == 2

        run(scenario, Say(unframed, close=True), Say(OK))

    def test_connection_close_answer_closes_our_side(self) -> None:
        """``Connection: close`` on a Content-Length answer makes the client close the connection at once,
        though the server keeps it open."""
        closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"

        async def scenario(server: RawServer, connection: Connection) -> None:
            assert (await post(connection)).status == 200
            assert not connection.open
            await until(lambda: server.eofs == 1)

        run(scenario, Say(closing), Say(OK))

    def test_interim_answer_is_skipped(self) -> None:
        """A 100 Continue before the real answer is passed over."""

        async def scenario(server: RawServer, connection: Connection) -> None:
            assert (await post(connection)).body == b"ok"

        run(scenario, Say(b"HTTP/1.1 100 Continue\r\n\r\n" + OK))

    def test_no_content_has_no_body(self) -> None:
        """A 204 carries no body: the next answer on the connection is read correctly."""

        async def scenario(server: RawServer, connection: Connection) -> None:
            assert (await post(connection)).status == 204
            assert (await post(connection)).body == b"ok"
            assert server.connections == 1

        run(scenario, Say(b"HTTP/1.1 204 No Content\r\n\r\n"), Say(OK))


class TestBounds:
    @pytest.mark.parametrize("framing", ["length", "chunked"])
    def test_a_large_body_is_cut_and_the_rest_discarded(self, framing: str) -> None:
        """A body over MAX_BODY is kept to MAX_BODY and marked truncated; the rest is read, so the
        connection still carries the next request."""
        size = MAX_BODY + 300_000
        if framing == "length":
            data = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size
        else:
            data = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                    + (b"10000\r\n" + b"x" * 0x10000 + b"\r\n") * (size // 0x10000) + b"0\r\n\r\n")

        async def scenario(server: RawServer, connection: Connection) -> None:
            answer = await post(connection)
            assert len(answer.body) == MAX_BODY and answer.truncated
            assert (await post(connection)).body == b"ok"
            assert server.connections == 1

        run(scenario, Say(data), Say(OK))

    def test_a_header_block_over_the_bound_is_refused(self) -> None:
        """A header block growing past MAX_HEAD is a ProtocolError, and the connection is dropped."""
        data = b"HTTP/1.1 200 OK\r\n" + b"X-Filler: " + b"y" * (MAX_HEAD + 10) + b"\r\nContent-Length: 0\r\n\r\n"

        async def scenario(server: RawServer, connection: Connection) -> None:
            with pytest.raises(ProtocolError, match="header block larger"):
                await post(connection)
            assert not connection.open

        run(scenario, Say(data))

    @pytest.mark.parametrize("data", [b"SSH-2.0-OpenSSH_9.6\r\n\r\n", b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
                                      b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n",
                                      b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
                                      b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok",
                                      b"HTTP/1.1 2000 OK\r\n\r\n",
                                      b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"])
    def test_an_answer_that_is_not_http_is_a_protocol_error(self, data: bytes) -> None:
        """A status line, header line, length or chunk size that is not HTTP/1.x is a ProtocolError."""

        async def scenario(server: RawServer, connection: Connection) -> None:
            with pytest.raises(ProtocolError):
                await post(connection)
            assert not connection.open

        run(scenario, Say(data, close=True))


class TestReconnect:
    def test_a_connection_closed_while_idle_is_replaced_before_writing(self) -> None:
        """The collector's idle close is noticed before the next request, which goes out once, on a new
        connection."""

        async def scenario(server: RawServer, connection: Connection) -> None:
            await post(connection, b"first")
            await until(lambda: not connection.open)
            assert (await post(connection, b"second")).body == b"ok"
            assert [(n, body) for n, _, body in server.requests] == [(1, b"first"), (2, b"second")]

        run(scenario, Say(OK, close=True), Say(OK))

    def test_a_close_crossing_the_request_is_resent_once(self) -> None:
        """A kept-alive connection closed with not a byte of answer to the request: the request is sent
        once more, on a new connection, and its answer returned."""

        async def scenario(server: RawServer, connection: Connection) -> None:
            await post(connection, b"first")
            assert (await post(connection, b"second")).body == b"ok"
            assert [(n, body) for n, _, body in server.requests] == [(1, b"first"), (1, b"second"), (2, b"second")]

        run(scenario, Say(OK), DROP, Say(OK))

    def test_resent_at_most_once(self) -> None:
        """When the new connection also closes without an answer, the request fails: two sends, not three."""

        async def scenario(server: RawServer, connection: Connection) -> None:
            await post(connection, b"first")
            with pytest.raises(ConnectionError):
                await post(connection, b"second")
            assert [body for _, _, body in server.requests] == [b"first", b"second", b"second"]
            assert (await post(connection, b"third")).body == b"ok"

        run(scenario, Say(OK), DROP, DROP, Say(OK))

    def test_a_new_connection_closed_without_answer_is_not_resent(self) -> None:
        """On a connection opened for the request, a close without an answer is a failure, sent once."""

        async def scenario(server: RawServer, connection: Connection) -> None:
            with pytest.raises(ConnectionError):
                await post(connection, b"first")
            assert len(server.requests) == 1

        run(scenario, DROP, Say(OK))

    def test_a_cut_answer_is_never_resent(self) -> None:
        """An answer cut after its first bytes is an error for the retry policy; the request is not sent
        again on a kept-alive connection."""
        cut = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"

        async def scenario(server: RawServer, connection: Connection) -> None:
            await post(connection, b"first")
            with pytest.raises(ProtocolError, match="middle of the answer"):
                await post(connection, b"second")
            assert [body for _, _, body in server.requests] == [b"first", b"second"]

        run(scenario, Say(OK), Say(cut, close=True))

    def test_a_cancelled_request_closes_the_connection(self) -> None:
        """A request given up by its caller (the transport's timeout) closes the connection; the next request
        opens a new one."""

        async def scenario(server: RawServer, connection: Connection) -> None:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(post(connection, b"first"), 0.2)
            assert not connection.open
            await until(lambda: len(server.requests) == 1 and server.connections == 1)
            assert (await post(connection, b"second")).body == b"ok"
            assert connection.connects == 2

        run(scenario, Say(hold=True), Say(OK))

    def test_an_interrupt_ends_the_wait_for_the_answer(self) -> None:
        """A fired Interrupt makes the waiting request raise Expired and closes its connection; the next
        request opens a new one."""

        async def scenario(server: RawServer, connection: Connection) -> None:
            interrupt = Interrupt()
            asyncio.get_running_loop().call_later(0.2, interrupt.fire)
            with pytest.raises(Expired):
                await connection.post(HEAD + b"3\r\n\r\nabc", b"", interrupt)
            assert not connection.open
            assert (await post(connection, b"second")).body == b"ok"
            assert connection.connects == 2

        run(scenario, Say(hold=True), Say(OK))

    def test_concurrent_requests_use_connections_of_their_own(self) -> None:
        """Requests made while another is in flight each get a connection and their own answer; later
        requests, one at a time, reuse the kept ones."""

        async def scenario(server: RawServer, connection: Connection) -> None:
            results = await asyncio.gather(*(post(connection, b"%d" % n) for n in range(5)))
            assert [a.body for a in results] == [b"%d" % n for n in range(5)]
            opened = connection.connects
            for n in range(3):
                assert (await post(connection, b"%d" % n)).body == b"%d" % n
            assert connection.connects == opened

        run(scenario, Say(echo=True))

    def test_close_ends_the_connection(self) -> None:
        """close() closes the kept connection: the server sees the end."""

        async def scenario(server: RawServer, connection: Connection) -> None:
            await post(connection)
            await connection.close()
            assert not connection.open
            await until(lambda: server.eofs == 1)

        run(scenario)

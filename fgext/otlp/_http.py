"""A lean HTTP/1.1 client for the OTLP/HTTP exports: one kept-alive connection to one endpoint.

Why not aiohttp's ``ClientSession``: export POSTs are the largest share of the agent's CPU, and the
session costs about twice the CPU per POST of a plain keep-alive exchange on an asyncio protocol
(``bench/http_client.py`` measures both and this client). An OTLP export needs very little of HTTP:
one POST at a time to one collector, a small answer. This module speaks exactly that, on the
``asyncio.Protocol`` that asyncio's streams are built on (so it knows whether any byte of an answer
arrived, which the reconnect rule below depends on):

- one connection per :class:`Connection`, kept alive between requests, requests serialized on it;
- answers framed by ``Content-Length``, ``Transfer-Encoding: chunked`` or the end of the connection;
  an answer with ``Connection: close`` (or framed by the close) closes our side after it;
- bounded: a header block over 64 KiB is a protocol error; a body is kept up to 1 MiB and the rest
  read and discarded (collectors answer a few bytes);
- a kept-alive connection the collector closed while idle is noticed before writing, or, if the
  close crosses our request, when the connection ends before a single byte of the answer: then the
  request is sent once more on a fresh connection. An answer cut after its first byte is an error for
  the caller's retry policy, never resent here;
- any error or cancellation (the caller's timeout) closes the connection; it is never reused.

No redirect handling (a 3xx is returned like any answer), no retries beyond the one above, no
decompression (we send no ``Accept-Encoding``). Error texts never contain a request header.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

__all__ = ["MAX_BODY", "MAX_HEAD", "Answer", "Connection", "Expired", "Interrupt", "ProtocolError"]

MAX_HEAD = 64 * 1024  # a response's status line and header block, and a chunked body's trailers
MAX_BODY = 1024 * 1024  # answer body bytes kept; the rest is read and discarded
_MAX_CHUNK_LINE = 4096
_PAUSE_AT = 256 * 1024  # buffered bytes at which reading pauses until the answer's reader catches up


class ProtocolError(OSError):
    """The collector's answer is not HTTP/1.x this client can read; an error like a broken connection."""


class _NoAnswer(ConnectionError):
    """The connection ended before a single byte of the answer arrived."""


class Expired(TimeoutError):
    """The caller's time ran out (its :class:`Interrupt` fired) before the answer was complete."""


class Interrupt:
    """The caller's timer fires this when its time is up: whatever the request waits for (the connection,
    the next bytes of the answer) wakes and raises :class:`Expired`.

    A flag and a wake-up rather than cancelling the caller's task: the request runs in the caller's own
    task (no task per request, which costs CPU on every export), and a cancel of that task by anyone else
    must still arrive as a cancel, never be mistaken for our timeout.
    """

    __slots__ = ("_wake", "fired")

    def __init__(self) -> None:
        self.fired = False
        self._wake: Optional[Callable[[], None]] = None

    def fire(self) -> None:
        self.fired = True
        if self._wake is not None:
            self._wake()


class Answer:
    """A response: status, header fields (names lower-case; a repeated field keeps its last value; read-only:
    answers with the same header block share them), body."""

    __slots__ = ("body", "fields", "status", "truncated")

    def __init__(self, status: int, fields: Dict[str, str], body: bytes, truncated: bool) -> None:
        self.status = status
        self.fields = fields
        self.body = body
        self.truncated = truncated  # the body was longer than MAX_BODY; ``body`` is its start


class _Protocol(asyncio.Protocol):
    """Collects what the peer sends; the request's coroutine consumes it (see :meth:`more`)."""

    def __init__(self) -> None:
        self.transport: Optional[asyncio.Transport] = None
        self.buffer = bytearray()
        self.ended = False  # EOF received or connection lost
        self.error: Optional[BaseException] = None
        self.answered = False  # a byte arrived since the current request was written
        self.paused = False
        self.interrupt: Optional[Interrupt] = None  # the current request's
        # The last answer's header block and what _parse_head made of it (its fields are shared, read-only)
        self.last_head = b""
        self.last_parsed: Tuple[int, bool, Dict[str, str]] = (0, False, {})
        self._waiter: Optional[asyncio.Future[None]] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.answered = True
        if len(self.buffer) > _PAUSE_AT and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self.wake()

    def eof_received(self) -> bool:
        self.ended = True
        self.wake()
        return False  # let the transport close

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.ended = True
        self.error = exc
        self.wake()

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def more(self) -> None:
        """Wait until more bytes arrive; raise if the connection has ended or the caller's time is up."""
        if self.interrupt is not None and self.interrupt.fired:
            raise Expired("no complete answer in time")
        if self.ended:
            if not self.answered:
                raise _NoAnswer("connection closed before any answer")
            if self.error is not None:
                raise ProtocolError(f"connection lost in the middle of the answer: {self.error}")
            raise ProtocolError("connection closed in the middle of the answer")
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self._waiter = None
        if self.interrupt is not None and self.interrupt.fired:
            raise Expired("no complete answer in time")


class _Body:
    """Answer body bytes, kept up to :data:`MAX_BODY`."""

    __slots__ = ("parts", "size", "truncated")

    def __init__(self) -> None:
        self.parts: List[bytes] = []
        self.size = 0
        self.truncated = False

    def add(self, data: bytes) -> None:
        room = MAX_BODY - self.size
        if len(data) > room:
            self.truncated = True
            data = data[:room]
        if data:
            self.parts.append(data)
            self.size += len(data)


async def _take(protocol: _Protocol, count: int, body: Optional[_Body]) -> None:
    """Consume exactly ``count`` bytes, adding them to ``body`` (or dropping them when it is None)."""
    buffer = protocol.buffer
    while count:
        if not buffer:
            await protocol.more()
            continue
        step = min(count, len(buffer))
        if body is not None:
            body.add(bytes(buffer[:step]))
        del buffer[:step]
        count -= step


async def _until(protocol: _Protocol, delimiter: bytes, limit: int, overhang: int) -> Optional[bytes]:
    """The bytes before ``delimiter`` (taken from the buffer with it), or None when there are more than
    ``limit`` of them; ``overhang``: how far past ``limit`` the buffer may grow while the delimiter is
    awaited (a line's CR may come without its LF)."""
    buffer = protocol.buffer
    start = 0
    while True:
        end = buffer.find(delimiter, start)
        if end >= 0:
            if end > limit:
                return None
            found = bytes(buffer[:end])
            del buffer[:end + len(delimiter)]
            return found
        if len(buffer) > limit + overhang:
            return None
        start = max(0, len(buffer) - len(delimiter) + 1)  # a delimiter cut between two reads
        await protocol.more()


async def _line(protocol: _Protocol, limit: int, what: str) -> bytes:
    """One CRLF-terminated line (without the CRLF), at most ``limit`` bytes."""
    line = await _until(protocol, b"\r\n", limit, 1)
    if line is None:
        raise ProtocolError(f"{what} longer than {limit} bytes")
    return line


async def _head(protocol: _Protocol) -> bytes:
    """The status line and header block, without the blank line that ends them."""
    head = await _until(protocol, b"\r\n\r\n", MAX_HEAD, 0)
    if head is None:
        raise ProtocolError(f"answer header block larger than {MAX_HEAD} bytes")
    return head


def _parse_head(head: bytes) -> Tuple[int, bool, Dict[str, str]]:
    """Status, whether the connection may be kept (HTTP/1.1 without ``Connection: close``), fields."""
    text = head.decode("latin-1")
    status_line, _, rest = text.partition("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or len(parts[1]) != 3 or not parts[1].isdigit():
        raise ProtocolError("the answer's status line is not HTTP/1.x")
    fields: Dict[str, str] = {}
    if rest:
        for line in rest.split("\r\n"):
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise ProtocolError("malformed header line in the answer")
            key = name.lower()
            value = value.strip()
            if key == "content-length" and fields.get(key, value) != value:
                raise ProtocolError("conflicting Content-Length in the answer")
            fields[key] = value
    connection = fields.get("connection")
    keep = parts[0] == "HTTP/1.1" and (
        connection is None or "close" not in {token.strip().lower() for token in connection.split(",")})
    return int(parts[1]), keep, fields


async def _chunked(protocol: _Protocol, body: _Body) -> None:
    while True:
        line = await _line(protocol, _MAX_CHUNK_LINE, "chunk size line")
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            size = -1
        if size < 0 or not size_text or size_text.startswith((b"+", b"-", b"0x", b"0X")):
            raise ProtocolError("malformed chunk size in the answer")
        if size == 0:
            break
        await _take(protocol, size, body)
        while len(protocol.buffer) < 2:
            await protocol.more()
        if protocol.buffer[:2] != b"\r\n":
            raise ProtocolError("chunk not followed by CRLF in the answer")
        del protocol.buffer[:2]
    trailers = 0
    while True:  # trailer fields, bounded like the header block, then the blank line
        line = await _line(protocol, MAX_HEAD, "answer trailers")
        if not line:
            return
        trailers += len(line) + 2
        if trailers > MAX_HEAD:
            raise ProtocolError(f"answer trailers larger than {MAX_HEAD} bytes")


async def _read_answer(protocol: _Protocol) -> Tuple[Answer, bool]:
    """One answer, and whether the connection may carry the next request."""
    while True:
        head = await _head(protocol)
        if head == protocol.last_head:  # a collector's answers differ at most in Date, once a second
            status, keep, fields = protocol.last_parsed
        else:
            status, keep, fields = protocol.last_parsed = _parse_head(head)
            protocol.last_head = head
        if status >= 200:
            break
        if status == 101:
            raise ProtocolError("the collector switched protocols (101)")
        # 100 Continue and other interim answers: the real one follows
    body = _Body()
    encoding = fields.get("transfer-encoding")
    if status in (204, 304):
        pass
    elif encoding is not None:
        if encoding.rsplit(",", 1)[-1].strip().lower() != "chunked":
            raise ProtocolError("the answer's Transfer-Encoding is not chunked")
        await _chunked(protocol, body)
    elif "content-length" in fields:
        text = fields["content-length"]
        if not text.isdigit():
            raise ProtocolError("malformed Content-Length in the answer")
        await _take(protocol, int(text), body)
    else:  # framed by the end of the connection
        keep = False
        while not protocol.ended:
            if protocol.buffer:
                body.add(bytes(protocol.buffer))
                protocol.buffer.clear()
            await protocol.more()  # returns once more bytes or the end arrived
        if protocol.buffer:
            body.add(bytes(protocol.buffer))
            protocol.buffer.clear()
        if protocol.error is not None:
            raise ProtocolError(f"connection lost in the middle of the answer: {protocol.error}")
    data = body.parts[0] if len(body.parts) == 1 else b"".join(body.parts)
    return Answer(status, fields, data, body.truncated), keep and not protocol.ended


class Connection:
    """Kept-alive HTTP/1.1 connections to ``host:port`` (TLS when ``ssl_context`` is given).

    One connection serves every request while requests come one at a time (the shipper sends one at a
    time); a request made while another is in flight opens a connection of its own, and up to
    ``_MAX_IDLE`` of them are kept. :meth:`close` ends them all.
    """

    _MAX_IDLE = 2

    def __init__(self, host: str, port: int, ssl_context: Any = None) -> None:
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.connects = 0  # connections opened so far (for tests and diagnostics)
        self._idle: List[_Protocol] = []
        self._open: Set[_Protocol] = set()

    async def post(self, head: bytes, body: bytes, interrupt: Optional[Interrupt] = None) -> Answer:
        """Send ``head`` (the request line and header block, blank line included) and ``body``; return
        the answer. Raises ``OSError`` (:class:`ProtocolError` included) when there is no readable answer,
        :class:`Expired` once ``interrupt`` fired.
        """
        protocol: Optional[_Protocol] = None
        while self._idle:
            candidate = self._idle.pop()
            if candidate.ended or candidate.buffer or candidate.transport is None or candidate.transport.is_closing():
                self._end(candidate)  # closed by the collector while idle, or it sent something unasked for
            else:
                protocol = candidate
                break
        reused = protocol is not None
        try:
            if protocol is None:
                protocol = await self._connect(interrupt)
            try:
                answer, keep = await self._exchange(protocol, head, body, interrupt)
            except _NoAnswer:
                if not reused:
                    raise
                # The collector closed the kept-alive connection as our request crossed it (its idle
                # timeout), and not a byte of an answer came: it cannot have answered; send it once more.
                self._end(protocol)
                protocol = None
                protocol = await self._connect(interrupt)
                answer, keep = await self._exchange(protocol, head, body, interrupt)
        except BaseException:
            if protocol is not None:
                self._end(protocol)
            raise
        protocol.interrupt = None
        if keep and len(self._idle) < self._MAX_IDLE:
            self._idle.append(protocol)
        else:
            self._end(protocol, graceful=True)
        return answer

    async def _connect(self, interrupt: Optional[Interrupt]) -> _Protocol:
        if interrupt is not None and interrupt.fired:
            raise Expired("no connection in time")
        loop = asyncio.get_running_loop()
        extra: Dict[str, Any] = {}
        if self.ssl_context is not None:
            extra = {"ssl": self.ssl_context, "server_hostname": self.host}
        connecting = asyncio.ensure_future(loop.create_connection(_Protocol, self.host, self.port, **extra))
        if interrupt is not None:  # a task of its own only here: connecting is rare, and must be interruptible
            woke: asyncio.Future[None] = loop.create_future()

            def wake(_: Any = None) -> None:
                if not woke.done():
                    woke.set_result(None)

            connecting.add_done_callback(wake)
            interrupt._wake = wake
            try:
                await woke
            except asyncio.CancelledError:
                if connecting.done() and not connecting.cancelled() and connecting.exception() is None:
                    connecting.result()[0].abort()  # connected just as the caller was cancelled
                connecting.cancel()
                raise
            finally:
                interrupt._wake = None
            if not connecting.done():
                connecting.cancel()
                raise Expired("no connection in time")
        _, protocol = await connecting
        self.connects += 1
        self._open.add(protocol)
        return protocol

    async def _exchange(self, protocol: _Protocol, head: bytes, body: bytes,
                        interrupt: Optional[Interrupt]) -> Tuple[Answer, bool]:
        assert protocol.transport is not None
        protocol.answered = False
        protocol.interrupt = interrupt
        if interrupt is not None:
            interrupt._wake = protocol.wake
        if len(body) <= 16384:
            protocol.transport.write(head + body)
        else:  # no copy of a large body; asyncio sends both with TCP_NODELAY
            protocol.transport.write(head)
            protocol.transport.write(body)
        return await _read_answer(protocol)

    def _end(self, protocol: _Protocol, graceful: bool = False) -> None:
        self._open.discard(protocol)
        protocol.interrupt = None
        if protocol.transport is not None:
            if graceful:
                protocol.transport.close()
            else:
                protocol.transport.abort()

    @property
    def open(self) -> bool:
        """Whether a connection is kept for the next request and, as far as the client has seen, still open."""
        return any(not protocol.ended for protocol in self._idle)

    async def close(self) -> None:
        """Close every connection, kept or in use."""
        self._idle.clear()
        for protocol in list(self._open):
            self._end(protocol, graceful=True)

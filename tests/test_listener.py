"""fgext._listener: the fast path's strict heads, and the real agent with and without it (FGEXT_FAST_PATH)."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest
from aiohttp import http_parser
from hypothesis import event, given, settings
from hypothesis import strategies as st

from fgext._listener import plain_head
from tests.agentproc import AgentProcess, ready
from tests.platform import RecordingPlatform
from tests.test_parse import DONE, FUNCTION_LOG, REPORT, START, UUID

Start = Callable[..., AgentProcess]
LIMIT = 4096


def head(*fields: bytes, line: bytes = b"POST / HTTP/1.1", host: bytes = b"Host: x") -> bytes:
    return line + b"\r\n" + b"".join(field + b"\r\n" for field in (host, *fields) if field)


def request(path: str, body: bytes, *extra: bytes) -> bytes:
    return head(b"Content-Type: application/json", b"Content-Length: %d" % len(body), *extra,
                line=b"POST " + path.encode() + b" HTTP/1.1") + b"\r\n" + body


class TestPlainHead:
    @pytest.mark.parametrize(("raw", "taken"), [
        (head(b"Content-Length: 12"), (False, 12)),
        (head(b"content-length:7", b"Connection: Keep-Alive", b"Content-Encoding: identity",
              line=b"POST /extension/invoke HTTP/1.1"), (True, 7)),
        (head(b"Content-Length: 0", b"X-Tab:\tvalue\t "), (False, 0)),
        (head(b"Content-Length: %d" % LIMIT), (False, LIMIT)),
    ])
    def test_takes_plain_heads(self, raw: bytes, taken: Tuple[bool, int]) -> None:
        """The platform's two requests with a strict head are taken, with their Content-Length, which is
        where aiohttp's parsers end them too."""
        assert plain_head(raw, LIMIT) == taken
        assert_aiohttp_agrees(raw, *taken)

    @pytest.mark.parametrize("raw", [
        head(b"Content-Length: 1", line=b"POST /?x=1 HTTP/1.1"),
        head(b"Content-Length: 1", line=b"POST /extension/invoke/ HTTP/1.1"),
        head(b"Content-Length: 1", line=b"PUT / HTTP/1.1"),
        head(b"Content-Length: 1", line=b"POST / HTTP/1.0"),
        head(b"Content-Length: 1", line=b"POST  / HTTP/1.1"),
        head(b"Content-Length: 1", line=b"POST /v1/traces HTTP/1.1"),
        head(),
        head(b"Content-Length: 1", host=b""),
        head(b"Content-Length: 1", b"host: y"),
        head(b"Content-Length: 1", b"Content-Type: a", b"content-type: a"),
        head(b"Content-Length: 1", b"X-A: a", b"x-a: b"),
        head(b"Content-Length: 1", b"Content-Length: 1"),
        head(b"Content-Length: +1"),
        head(b"Content-Length: 1, 1"),
        head(b"Content-Length: 0x1"),
        head(b"Content-Length: %d" % (LIMIT + 1)),
        head(b"Content-Length : 1"),
        head(b"Content-Length: 1 "),
        head(b"Content-Length: 1\t"),
        head(b"Content-Length: 1", b"Transfer-Encoding: chunked"),
        head(b"Content-Length: 1", b"Transfer-Encoding: identity"),
        head(b"Content-Length: 1", b"Expect: 100-continue"),
        head(b"Content-Length: 1", b"Upgrade: websocket"),
        head(b"Content-Length: 1", b"Connection: close"),
        head(b"Content-Length: 1", b"Connection: upgrade"),
        head(b"Content-Length: 1", b"Content-Encoding: gzip"),
        head(b"Content-Length: 1", b"X-Folded: a", b" b"),
        head(b"Content-Length: 1", b"X-Bad: a\rb"),
        head(b"Content-Length: 1", b"X-Bad: a\nb"),
        head(b"Content-Length: 1", b"X-Bad: a\x00b"),
        head(b"Content-Length: 1", b"X-Bad: caf\xc3\xa9"),
        head(b"Content-Length: 1", b"X(Bad): a"),
        head(b"Content-Length: 1", b"NoColon"),
        head(*[b"X-%d: a" % n for n in range(40)], b"Content-Length: 1"),
    ])
    def test_hands_over_anything_else(self, raw: bytes) -> None:
        """Another target, method or version, a missing, repeated, signed, listed, oversize or space-trailed
        Content-Length, no Host or two, any repeated field, any transfer coding, Expect, Upgrade,
        Connection other than keep-alive, a content coding, obs-fold, CR, LF, NUL or obs-text in a value, a
        non-token name or too many fields: not taken."""
        assert plain_head(raw, LIMIT) is None


# --------------------------------------------------------------------- hypothesis: aiohttp agrees
_NAMES = [b"Host", b"Host", b"host", b"Content-Length", b"content-length", b"Transfer-Encoding", b"Connection",
          b"Expect", b"Content-Encoding", b"Upgrade", b"X-A", b"Content-Length ", b" Content-Length", b"Content-Type"]
_VALUES = [b"5", b"05", b"0", b"+5", b"5, 5", b"chunked", b"keep-alive", b"close", b"identity", b"gzip",
           b"100-continue", b" 5 ", b"\t5", b"5\r", b"a\nb", b"application/json", b""]
_HARMLESS = st.tuples(
    st.sampled_from([b"X-A", b"Content-Type", b"Connection", b"Content-Encoding", b"Accept"]),
    st.sampled_from([b":", b": ", b":\t", b":  "]),
    st.sampled_from([b"keep-alive", b"Keep-Alive", b"identity", b"application/json", b"a b", b"", b"x\ty"]),
    st.sampled_from([b"", b" ", b"\t"])).map(b"".join)
_FIELD = st.one_of(
    _HARMLESS, _HARMLESS, _HARMLESS,
    st.tuples(st.sampled_from(_NAMES), st.sampled_from([b":", b": ", b":\t", b" :"]), st.sampled_from(_VALUES))
    .map(b"".join),
    st.binary(max_size=12),
)
_ENDS = st.sampled_from([b"\r\n"] * 7 + [b"\n"])
_LENGTHS = st.sampled_from([b"Content-Length: 5", b"content-length:5", b"Content-Length:\t5", b"CONTENT-LENGTH: 05",
                            b"Content-Length: 5 ", b"Content-Length: 5\t", b"Content-Length:  5", b"Content-Length: 5"])
# A plain head's fields among extra ones, in any order: often still plain, often not, never far from it.
_HEAD_FIELDS = st.tuples(_LENGTHS, st.lists(st.tuples(_FIELD, _ENDS), max_size=4)).flatmap(
    lambda drawn: st.permutations([(b"Host: x", b"\r\n"), (drawn[0], b"\r\n"), *drawn[1]]))
_LINES = st.sampled_from([b"POST / HTTP/1.1", b"POST /extension/invoke HTTP/1.1", b"POST / HTTP/1.1",
                          b"POST /extension/invoke HTTP/1.1", b"POST /x HTTP/1.1", b"GET / HTTP/1.1",
                          b"POST / HTTP/1.0"])


def _parsers() -> List[Any]:
    kinds = [http_parser.HttpRequestParserPy]
    if getattr(http_parser, "HttpRequestParserC", None) is not None:
        kinds.append(http_parser.HttpRequestParserC)
    return kinds


class _Protocol:
    """What aiohttp's parser asks of its protocol while it reads a body."""

    _reading_paused = False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self, resume_parser: bool = True) -> None:
        pass


def aiohttp_reads(kind: Any, raw: bytes) -> List[Tuple[str, str, bytes]]:
    """The requests aiohttp's parser ``kind`` reads from ``raw``: method, path and body, in order."""
    loop = asyncio.new_event_loop()
    try:
        parser = kind(_Protocol(), loop, 2 ** 16, max_line_size=8190, max_field_size=8190)
        messages, _upgraded, _tail = parser.feed_data(raw)
        read = []
        for message, payload in messages:
            body = b"".join(payload._buffer) if hasattr(payload, "_buffer") else b""
            read.append((message.method, message.path, bytes(body)))
        return read
    finally:
        loop.close()


def assert_aiohttp_agrees(raw: bytes, invoke: bool, length: int) -> None:
    """aiohttp's parsers (C and Python) read ``raw`` + a body of ``length`` bytes as that request, and a
    request pipelined after it where the fast path would see it (no request smuggling)."""
    body = b"b" * length
    for kind in _parsers():
        read = aiohttp_reads(kind, raw + b"\r\n" + body + b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read[0] == ("POST", "/extension/invoke" if invoke else "/", body), kind
        assert read[1][:2] == ("GET", "/next"), kind


@settings(max_examples=1500, deadline=None)
@given(_LINES, _HEAD_FIELDS)
def test_a_head_taken_is_one_aiohttp_reads_alike(line: bytes, fields: List[Tuple[bytes, bytes]]) -> None:
    """Whatever head the fast path takes, aiohttp's parsers read the same method, path and body, and the
    next pipelined request where the fast path would."""
    raw = line + b"\r\n" + b"".join(field + end for field, end in fields)
    taken = plain_head(raw, LIMIT)
    event("taken" if taken is not None else "handed over")
    if taken is not None:
        assert_aiohttp_agrees(raw, *taken)


# ------------------------------------------------------------------------ the real agent, A/B
BATCH = json.dumps([START, FUNCTION_LOG, DONE, REPORT]).encode()
INVOKE = json.dumps({"traceId": UUID, "invokedFunctionUrn": "sn:cn:yrk:1111:function:0@test@hello:latest"}).encode()
INVOKE_REQ = request("/extension/invoke", INVOKE)
BATCH_REQ = request("/", BATCH)
ACCEPTED_4 = b'{"accepted": 4, "malformed": 0, "errors": []}'


def read_answers(sock: socket.socket, count: int, timeout: float = 5.0) -> List[Tuple[int, bytes]]:
    """Up to ``count`` final answers from ``sock`` (fewer if it closes first): status and body each."""
    sock.settimeout(timeout)
    data = b""
    answers: List[Tuple[int, bytes]] = []
    deadline = time.monotonic() + timeout
    while len(answers) < count and time.monotonic() < deadline:
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            lines = data[:end].split(b"\r\n")
            fields = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(b":") for ln in lines[1:])}
            length = int(fields.get(b"content-length", b"0"))
            if len(data) >= end + 4 + length:
                status = int(lines[0].split(b" ")[1])
                if status >= 200:  # not an interim answer (100 Continue)
                    answers.append((status, data[end + 4:end + 4 + length]))
                data = data[end + 4 + length:]
                continue
        try:
            chunk = sock.recv(65536)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    return answers


def exchange(port: int, chunks: List[bytes], count: int, pause: float = 0.0) -> List[Tuple[int, bytes]]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for index, chunk in enumerate(chunks):
            if index and pause:
                time.sleep(pause)
            sock.sendall(chunk)
        return read_answers(sock, count)


def recorded(path: Path, timeout: float = 10.0) -> List[Dict[str, Any]]:
    """The jsonl plugin's records once they stop growing, without what differs by arrival time."""
    deadline = time.monotonic() + timeout
    last = -1
    text = ""
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if len(text) == last:
            break
        last = len(text)
        time.sleep(0.3)
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [{k: v for k, v in r.items() if "received" not in k} for r in records]


CASES: Dict[str, Tuple[List[bytes], int]] = {
    "invoke": ([INVOKE_REQ], 1),
    "telemetry": ([BATCH_REQ], 1),
    "pipelined": ([INVOKE_REQ + BATCH_REQ + INVOKE_REQ + BATCH_REQ], 4),
    "keep-alive, one by one": ([INVOKE_REQ, BATCH_REQ, BATCH_REQ], 3),
    "plain then chunked": ([INVOKE_REQ + b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                            + b"%x\r\n" % len(BATCH) + BATCH + b"\r\n0\r\n\r\n" + INVOKE_REQ], 3),
    "query string": ([request("/?a=1", BATCH), INVOKE_REQ], 2),
    "lowercase, OWS": ([b"POST / HTTP/1.1\r\nhost:x\r\ncontent-length:  %d \t\r\nconnection: keep-alive\r\n\r\n"
                        % len(BATCH) + BATCH], 1),
    "expect": ([request("/", BATCH, b"Expect: 100-continue"), INVOKE_REQ], 2),
    "connection close": ([request("/", BATCH, b"Connection: close")], 1),
    "gzip": ([request("/", gzip.compress(BATCH), b"Content-Encoding: gzip"), INVOKE_REQ], 2),
    "bad gzip": ([request("/", BATCH, b"Content-Encoding: gzip")], 1),
    "invalid json": ([request("/", b"[{"), INVOKE_REQ], 2),
    "malformed events": ([request("/", json.dumps([START, {"name": 5}, REPORT]).encode()), INVOKE_REQ], 2),
    "not a list": ([request("/", b'{"a": 1}'), INVOKE_REQ], 2),
    "malformed invoke": ([request("/extension/invoke", b"[]"), BATCH_REQ], 2),
    "over the limit": ([request("/", b"[" + b" " * LIMIT + b"]")], 1),
    "other path": ([request("/elsewhere", BATCH), INVOKE_REQ], 2),
    "GET": ([b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", INVOKE_REQ], 2),
    "no Host": ([b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(BATCH) + BATCH], 1),
    "bare LF": ([b"POST / HTTP/1.1\nHost: x\nContent-Length: %d\n\n" % len(BATCH) + BATCH], 1),
    "obs-fold": ([head(b"X-A: a", b" b", b"Content-Length: %d" % len(BATCH)) + b"\r\n" + BATCH], 1),
    "two lengths": ([head(b"Content-Length: 2", b"Content-Length: %d" % len(BATCH)) + b"\r\n" + BATCH], 1),
    "TE and CL": ([head(b"Content-Length: 5", b"Transfer-Encoding: chunked") + b"\r\n0\r\n\r\n"], 1),
    "garbage": ([b"\x16\x03\x01\x00\xa5garbage\r\n\r\n"], 1),
}


@pytest.fixture
def pair(platform: RecordingPlatform, agents: Start, tmp_path: Path) -> Tuple[Tuple[int, Path], Tuple[int, Path]]:
    """Two agents, the fast path on and off, each writing what it submits to its own jsonl file."""
    started = []
    for name, fast in (("fast", "1"), ("aiohttp", "0")):
        out = tmp_path / f"{name}.jsonl"
        agent = agents({"EXTENSION_API_ADDR": platform.addr, "FGEXT_PLUGINS": "jsonl", "FGEXT_JSONL_PATH": str(out),
                        "FGEXT_MAX_BODY_BYTES": str(LIMIT), "FGEXT_FAST_PATH": fast})
        started.append((ready(agent), out))
    return started[0], started[1]


def both(pair: Tuple[Tuple[int, Path], Tuple[int, Path]], chunks: List[bytes], count: int,
         pause: float = 0.0) -> Tuple[List[Tuple[int, bytes]], List[Tuple[int, bytes]]]:
    return exchange(pair[0][0], chunks, count, pause), exchange(pair[1][0], chunks, count, pause)


@pytest.mark.agent
@pytest.mark.usefixtures("port_range_lock")
class TestAgainstAiohttp:
    def test_same_answers_and_events_with_and_without_fast_path(self, pair: Any) -> None:
        """Plain, pipelined, non-plain heads, bad bodies, gzip and oversize bodies: the same statuses, bodies
        and submitted events whether the fast path is on or off."""
        for name, (chunks, count) in CASES.items():
            fast, plain = both(pair, chunks, count)
            assert fast == plain, name
            assert len(fast) == count and fast[0][0] in (200, 400, 404, 405, 413, 417), (name, fast)
        fast_records, plain_records = recorded(pair[0][1]), recorded(pair[1][1])
        assert fast_records == plain_records
        assert len(fast_records) > 20

    def test_split_at_every_byte(self, pair: Any) -> None:
        """Two pipelined requests arriving in two pieces, split at every byte, are answered alike."""
        raw = INVOKE_REQ + BATCH_REQ
        for cut in range(1, len(raw)):
            fast, plain = both(pair, [raw[:cut], raw[cut:]], 2, pause=0.002)
            assert fast == plain == [(200, b'{"status": "ok"}'), (200, ACCEPTED_4)], cut
        fast_records, plain_records = recorded(pair[0][1]), recorded(pair[1][1])
        assert fast_records == plain_records and len(fast_records) == 5 * (len(raw) - 1)

    def test_fast_path_answer_is_well_formed(self, pair: Any) -> None:
        """The fast path's answer carries the JSON content type, its length and a Date, and keeps the
        connection open for the next request."""
        with socket.create_connection(("127.0.0.1", pair[0][0]), timeout=5) as sock:
            sock.sendall(INVOKE_REQ)
            data = b""
            while b'{"status": "ok"}' not in data:
                chunk = sock.recv(4096)
                assert chunk
                data += chunk
            lines = data.split(b"\r\n\r\n")[0].split(b"\r\n")
            assert lines[0] == b"HTTP/1.1 200 OK"
            fields = {k.lower(): v.strip() for k, _, v in (ln.partition(b":") for ln in lines[1:])}
            assert fields[b"content-type"] == b"application/json; charset=utf-8"
            assert fields[b"content-length"] == b"16" and fields[b"date"].endswith(b" GMT")
            assert b"server" not in fields  # the fast path answered: aiohttp names itself in a Server field
            sock.sendall(BATCH_REQ)
            assert read_answers(sock, 1) == [(200, ACCEPTED_4)]


@pytest.mark.agent
@pytest.mark.usefixtures("port_range_lock")
class TestProtection:
    def test_idle_fast_path_connection_is_closed(self, platform: RecordingPlatform, agents: Start,
                                                 tmp_path: Path) -> None:
        """A connection the fast path answered and that sends nothing more is closed after FGEXT_IDLE_TIMEOUT;
        one that keeps sending requests stays open."""
        agent = agents({"EXTENSION_API_ADDR": platform.addr, "FGEXT_PLUGINS": "jsonl",
                        "FGEXT_JSONL_PATH": str(tmp_path / "out.jsonl"), "FGEXT_IDLE_TIMEOUT": "1"})
        port = ready(agent)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as idle, \
                socket.create_connection(("127.0.0.1", port), timeout=5) as busy:
            idle.sendall(INVOKE_REQ)
            assert read_answers(idle, 1) == [(200, b'{"status": "ok"}')]
            for _ in range(6):  # 1.8 s of requests every 0.3 s: never idle for a second
                busy.sendall(INVOKE_REQ)
                assert read_answers(busy, 1) == [(200, b'{"status": "ok"}')]
                time.sleep(0.3)
            idle.settimeout(8)
            assert idle.recv(100) == b""  # closed (read blocks until then)
            busy.sendall(INVOKE_REQ)
            assert read_answers(busy, 1) == [(200, b'{"status": "ok"}')]

    def test_request_in_flight_is_not_evicted(self, platform: RecordingPlatform, agents: Start,
                                              tmp_path: Path) -> None:
        """A fast-path request whose body is still arriving counts as busy: connections over the cap evict
        the quiet ones, not it, and it is answered when its body is complete."""
        agent = agents({"EXTENSION_API_ADDR": platform.addr, "FGEXT_PLUGINS": "jsonl",
                        "FGEXT_JSONL_PATH": str(tmp_path / "out.jsonl"), "FGEXT_MAX_CONNECTIONS": "4"})
        port = ready(agent)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as slow:
            slow.sendall(BATCH_REQ[:-5])  # a complete plain head, and a body five bytes short
            time.sleep(0.3)
            # Three connections served after it: quieter than none of them, it would be the one evicted.
            served = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
            try:
                for sock in served:
                    sock.sendall(INVOKE_REQ)
                    assert read_answers(sock, 1) == [(200, b'{"status": "ok"}')]
                served.append(socket.create_connection(("127.0.0.1", port), timeout=5))  # the fifth: over the cap
                time.sleep(0.3)
                slow.sendall(BATCH_REQ[-5:])
                assert read_answers(slow, 1) == [(200, ACCEPTED_4)]
            finally:
                for sock in served:
                    sock.close()


    def test_stop_closes_fast_path_connections(self, platform: RecordingPlatform, agents: Start,
                                               tmp_path: Path) -> None:
        """At SIGTERM with a kept-alive connection the fast path served still open, the agent exits 0 without
        the listener's timeout warning, having delivered what it answered, and the connection is closed."""
        out = tmp_path / "out.jsonl"
        agent = agents({"EXTENSION_API_ADDR": platform.addr, "FGEXT_PLUGINS": "jsonl", "FGEXT_JSONL_PATH": str(out)})
        port = ready(agent)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(INVOKE_REQ + BATCH_REQ)
            assert read_answers(sock, 2) == [(200, b'{"status": "ok"}'), (200, ACCEPTED_4)]
            assert agent.stop() == 0
            sock.settimeout(5)
            assert sock.recv(100) == b""
        assert "listener did not close in time" not in agent.stderr()
        assert len(recorded(out)) == 5


def test_fast_path_setting() -> None:
    """FGEXT_FAST_PATH is on by default, 0 turns it off, and a value that is not a boolean is refused."""
    from fgext._config import ListenerLimits
    from fgext._errors import ConfigError

    assert ListenerLimits.from_environ({}).fast_path
    assert ListenerLimits.from_environ({"FGEXT_FAST_PATH": "1"}).fast_path
    assert not ListenerLimits.from_environ({"FGEXT_FAST_PATH": "0"}).fast_path
    with pytest.raises(ConfigError, match="FGEXT_FAST_PATH"):
        ListenerLimits.from_environ({"FGEXT_FAST_PATH": "maybe"})



# ------------------------------------------------------------- in process: a submission that must wait
class _Inner:
    """Stands in for aiohttp's protocol: records what it is handed."""

    def __init__(self) -> None:
        self.made = False
        self.data = b""

    def connection_made(self, _transport: Any) -> None:
        self.made = True

    def data_received(self, data: bytes) -> None:
        self.data += data

    def connection_lost(self, _exc: Any) -> None:
        pass


class _Log:
    def warning(self, *_args: Any, **_fields: Any) -> None:
        pass


def test_answers_wait_for_their_submission_in_order() -> None:
    """A request whose submission must wait is answered only once submitted, the connection is busy meanwhile,
    and a pipelined request behind it is neither read nor answered before it; a non-plain one goes to the
    inner protocol from its first byte, and the connection stays the inner protocol's."""
    from fgext._config import ListenerLimits
    from fgext._listener import ConnectionGuard

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        gates: List[asyncio.Future[None]] = []
        taken: List[bytes] = []

        def fast(invoke: bool, body: bytes) -> Tuple[str, Optional[asyncio.Future[None]]]:
            taken.append(body)
            if body == b"wait":
                gates.append(loop.create_future())
                return '"first"', gates[-1]
            return '"second"', None

        inners: List[_Inner] = []

        def factory() -> _Inner:
            inners.append(_Inner())
            return inners[-1]

        guard = ConnectionGuard(factory, ListenerLimits(), _Log(), fast=fast, max_body=100)
        server = await loop.create_server(guard, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            other = request("/v1/traces", b"x")
            writer.write(request("/", b"wait") + request("/", b"next") + other)
            await asyncio.wait_for(_until(lambda: bool(gates)), 5)
            (conn,) = guard.connections
            assert conn.busy and taken == [b"wait"]
            await asyncio.sleep(0.05)
            assert taken == [b"wait"]  # the pipelined request waits behind the first
            gates[0].set_result(None)
            first = await asyncio.wait_for(reader.readuntil(b'"first"'), 5)
            second = await asyncio.wait_for(reader.readuntil(b'"second"'), 5)
            assert first.startswith(b"HTTP/1.1 200 OK\r\n") and second.startswith(b"HTTP/1.1 200 OK\r\n")
            await asyncio.wait_for(_until(lambda: inners[0].data == other), 5)
            assert inners[0].made and taken == [b"wait", b"next"]
            writer.write(request("/", b"more"))
            await asyncio.wait_for(_until(lambda: inners[0].data == other + request("/", b"more")), 5)
            assert taken == [b"wait", b"next"]  # the connection stays the inner protocol's
        finally:
            writer.close()
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.01)

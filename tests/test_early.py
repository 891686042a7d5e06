"""fgext._early: the standard-library responder that answers on the bound socket until the listener takes it."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Callable, Iterator, List, Tuple

import pytest

from fgext._bootstrap import bind_listener
from fgext._early import MAX_CONNECTIONS, EarlyResponder
from tests.agentproc import AgentProcess, ready
from tests.platform import RecordingPlatform


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = bind_listener(0)
    try:
        yield sock
    finally:
        sock.close()


def exchange(port: int, raw: bytes, timeout: float = 5.0) -> Tuple[int, bytes]:
    """Send one raw request; return the status and body of the answer (read until the server closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(raw)
        answer = b""
        while True:
            data = conn.recv(65536)
            if not data:
                break
            answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def request(path: str, body: bytes, method: str = "POST", extra: str = "") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n").encode() + body


def test_answers_and_keeps_bodies_in_order(listener: socket.socket) -> None:
    """Invokes and telemetry POSTs are answered 200 once read whole; stop returns them in arrival order and
    leaves the socket blocking and listening for the next owner."""
    port = listener.getsockname()[1]
    early = EarlyResponder(listener, max_body_bytes=1024)
    early.start()
    invoke, batch = b'{"traceId": "r1"}', b'[{"name": "function", "logs": "x"}]'
    assert exchange(port, request("/extension/invoke", invoke)) == (200, b'{"status": "ok"}')
    assert exchange(port, request("/", batch))[0] == 200
    kept = early.stop()
    assert [(kind, body) for kind, _, body in kept] == [("invoke", invoke), ("telemetry", batch)]
    assert kept[0][1] <= kept[1][1] and early.answered == 2 and early.first_answer is not None
    assert listener.getblocking()
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        conn, _ = listener.accept()  # the responder no longer takes connections
        conn.close()


@pytest.mark.parametrize(("raw", "status"), [
    (request("/extension/invoke", b"x" * 2000), 413),
    (request("/elsewhere", b"{}"), 404),
    (request("/extension/invoke", b"", method="GET"), 405),
    (b"garbage\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 2000, 400),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n300\r\n" + b"x" * 768 + b"\r\n300\r\n", 413),
])
def test_what_it_cannot_keep_is_refused_not_answered_200(listener: socket.socket, raw: bytes, status: int) -> None:
    """An oversize body (FGEXT_MAX_BODY_BYTES, chunked or not), another path or method, a malformed head, a
    chunked body that is malformed or also has a Content-Length, or another transfer coding gets an error
    status and nothing is kept."""
    early = EarlyResponder(listener, max_body_bytes=1024)
    early.start()
    try:
        assert exchange(listener.getsockname()[1], raw)[0] == status
    finally:
        assert early.stop() == []


def test_expect_continue_is_honoured(listener: socket.socket) -> None:
    """A client that waits for 100 Continue before its body gets it, then its 200."""
    early = EarlyResponder(listener, max_body_bytes=1024)
    early.start()
    with socket.create_connection(("127.0.0.1", listener.getsockname()[1]), timeout=5) as conn:
        conn.sendall(b"POST / HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        assert conn.recv(100).startswith(b"HTTP/1.1 100 Continue")
        conn.sendall(b"[]")
        assert conn.recv(1000).startswith(b"HTTP/1.1 200 OK")
    assert [body for _, _, body in early.stop()] == [b"[]"]


def test_a_chunked_body_is_decoded_and_kept(listener: socket.socket) -> None:
    """A telemetry POST with Transfer-Encoding: chunked, sent in pieces, with chunk extensions and a trailer,
    is answered 200 and kept decoded."""
    early = EarlyResponder(listener, max_body_bytes=1024)
    early.start()
    with socket.create_connection(("127.0.0.1", listener.getsockname()[1]), timeout=5) as conn:
        for piece in (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", b"5;name=x\r\n[{\"a\"", b"\r",
                      b"\n3\r\n: 1\r\n", b"2\r\n}]\r\n0\r\nX-Trailer: y\r\n\r\n"):
            conn.sendall(piece)
            time.sleep(0.02)
        assert conn.recv(1000).startswith(b"HTTP/1.1 200 OK")
    assert [body for _, _, body in early.stop()] == [b'[{"a": 1}]']


def test_a_silent_connection_delays_no_other_and_is_closed_at_the_header_timeout(listener: socket.socket) -> None:
    """A client that connects and sends nothing does not hold up the platform's invoke, and is closed once
    FGEXT_HEADER_TIMEOUT passes without a complete request head."""
    port = listener.getsockname()[1]
    early = EarlyResponder(listener, max_body_bytes=1024, header_timeout=0.5)
    early.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as silent:
            silent.sendall(b"POST / HTTP/1.1\r\n")  # a head never finished
            assert exchange(port, request("/extension/invoke", b'{"traceId": "r1"}'), timeout=0.4)[0] == 200
            assert silent.recv(100) == b""  # closed by the responder (the recv's own limit is 5 s)
        assert early.header_timeouts == 1 and early.answered == 1
    finally:
        assert [body for _, _, body in early.stop()] == [b'{"traceId": "r1"}']


def test_at_its_connection_cap_the_longest_quiet_connection_makes_room(listener: socket.socket) -> None:
    """With MAX_CONNECTIONS connections open and none sending, a new request still gets its 200: the one
    quiet longest is closed to make room."""
    port = listener.getsockname()[1]
    early = EarlyResponder(listener, max_body_bytes=1024)
    early.start()
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(MAX_CONNECTIONS)]
    try:
        deadline = time.monotonic() + 5
        while early.accepted < MAX_CONNECTIONS and time.monotonic() < deadline:
            time.sleep(0.01)
        assert exchange(port, request("/extension/invoke", b'{"traceId": "r1"}'))[0] == 200
        assert early.evicted == 1 and idle[0].recv(100) == b""
    finally:
        for conn in idle:
            conn.close()
        early.stop()


def adopt_by_hand(handed: Tuple[socket.socket, bytes, object]) -> bytes:
    """What the next owner sees of a handed-over connection: the bytes read already, then the rest."""
    sock, read, _ = handed
    sock.settimeout(5)
    data = read
    while b'"r1"}' not in data:
        more = sock.recv(1000)
        assert more, "the client's connection was closed"
        data += more
    return data


def test_stop_never_waits_for_a_slow_client_and_hands_its_request_over(listener: socket.socket) -> None:
    """stop() while a request is half sent returns at once, unanswered, with the connection open and the
    bytes read so far for the listener, which finishes reading the request from its first byte."""
    early = EarlyResponder(listener, max_body_bytes=1024)
    early.start()
    head = b'POST /extension/invoke HTTP/1.1\r\nContent-Length: 17\r\n\r\n{"traceId"'
    with socket.create_connection(("127.0.0.1", listener.getsockname()[1]), timeout=5) as conn:
        conn.sendall(head)
        deadline = time.monotonic() + 5
        while early._buffered() < len(head) and time.monotonic() < deadline:  # until the responder has read it
            time.sleep(0.01)
        assert early.stop() == [] and early.answered == 0
        assert len(early.handed) == 1 and early.handed[0][1] == head and early.handed[0][2] is None
        conn.sendall(b': "r1"}')
        assert adopt_by_hand(early.handed[0]).endswith(b'{"traceId": "r1"}')
        early.handed[0][0].close()


@pytest.mark.parametrize("raw", [
    b"POST /v1/traces HTTP/1.1\r\nContent-Type: application/x-protobuf\r\nContent-Length: 4\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Encoding: gzip\r\nContent-Length: 40\r\n\r\n",
])
def test_what_the_listener_serves_is_left_to_it_unanswered(listener: socket.socket, raw: bytes) -> None:
    """A function's OTLP export and a compressed body are not answered early: at stop() their connections are
    handed over with what was read of them."""
    early = EarlyResponder(listener, max_body_bytes=1024)
    early.start()
    with socket.create_connection(("127.0.0.1", listener.getsockname()[1]), timeout=5) as conn:
        conn.sendall(raw + b"abcd")
        deadline = time.monotonic() + 5
        while early._buffered() < len(raw) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert early.stop() == [] and early.answered == 0
        assert len(early.handed) == 1
        sock, read, _ = early.handed[0]
        with sock:
            sock.settimeout(5)
            while len(read) < len(raw) + 4:  # what it had not read yet is still in the connection
                read += sock.recv(100)
        assert read == raw + b"abcd"


def test_past_its_byte_budget_connections_wait_for_the_next_owner(listener: socket.socket) -> None:
    """Once the kept bytes reach the budget, new connections are left in the backlog (not answered, not
    refused), for the listener that takes the socket over."""
    port = listener.getsockname()[1]
    early = EarlyResponder(listener, max_body_bytes=1024, max_kept_bytes=10)
    early.start()
    assert exchange(port, request("/", b'["' + b"x" * 20 + b'"]'))[0] == 200
    waiting = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        waiting.sendall(request("/extension/invoke", b'{"traceId": "r2"}'))
        time.sleep(0.3)
        assert early.answered == 1
        assert len(early.stop()) == 1
        conn, _ = listener.accept()
        with conn:
            assert b'"r2"' in conn.recv(1000)
    finally:
        waiting.close()


@pytest.mark.agent
@pytest.mark.usefixtures("port_range_lock")
def test_the_agent_answers_before_its_listener_and_loses_nothing(
        platform: RecordingPlatform, agents: Callable[..., AgentProcess], tmp_path: Path) -> None:
    """Right after registering, an invoke and a telemetry POST are answered 200 while aiohttp still loads;
    both reach the plugins, in order, before what the listener serves later; a malformed body answered
    early is counted and logged as rejected at the hand-over, a malformed event in a kept batch is skipped
    and warned about as the listener does it."""
    out = tmp_path / "out.jsonl"
    agent = agents({"EXTENSION_API_ADDR": platform.addr, "FGEXT_PLUGINS": "jsonl", "FGEXT_JSONL_PATH": str(out)})
    seen = platform.wait_for(lambda r: len(r) >= 2, timeout=30)
    port = int(seen[0].headers["FunctionGraph-Extension-Address"].rsplit(":", 1)[1])
    early_log = {"name": "function", "startTime": "2023-02-01T00:03:50.000Z", "logs": "early"}
    assert agent.post(port, "/extension/invoke", json.dumps({"traceId": "r1"}).encode()) == (200, {"status": "ok"})
    assert agent.post(port, "/", json.dumps([early_log, {"logs": "no name"}]).encode())[0] == 200
    assert agent.post(port, "/extension/invoke", b"not json")[0] == 200  # read whole, judged at hand-over
    note = agent.wait_log("answered before the listener started")
    assert note["kept"] == 3 and note["first_answer_ms"] is not None
    reason = agent.wait_log("invoke body rejected")["reason"]
    assert reason.startswith("answered before the listener started: body is not valid JSON"), reason
    skipped = agent.wait_log("malformed telemetry events skipped")
    assert (skipped["count"], skipped["kept"]) == (1, 1)
    assert ready(agent) == port
    assert agent.post(port, "/extension/invoke", json.dumps({"traceId": "r2"}).encode())[0] == 200
    deadline = time.monotonic() + 10
    records: List[dict] = []  # type: ignore[type-arg]
    while len(records) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
        records = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    assert [r["type"] for r in records] == ["Invoke", "FunctionLog", "Invoke"]
    assert (records[0]["request_id"], records[2]["request_id"]) == ("r1", "r2")
    assert agent.stop() == 0


@pytest.mark.agent
@pytest.mark.usefixtures("port_range_lock")
def test_a_request_half_sent_at_hand_over_is_served_by_the_listener(
        platform: RecordingPlatform, agents: Callable[..., AgentProcess], tmp_path: Path) -> None:
    """A telemetry POST whose client stalls mid-body while aiohttp loads does not hold the hand-over: the
    listener adopts the connection with what was read of it, answers once the rest arrives, and the event
    reaches the plugins."""
    out = tmp_path / "out.jsonl"
    agent = agents({"EXTENSION_API_ADDR": platform.addr, "FGEXT_PLUGINS": "jsonl", "FGEXT_JSONL_PATH": str(out)})
    seen = platform.wait_for(lambda r: len(r) >= 2, timeout=30)
    port = int(seen[0].headers["FunctionGraph-Extension-Address"].rsplit(":", 1)[1])
    body = json.dumps([{"name": "function", "startTime": "2023-02-01T00:03:50.000Z", "logs": "slow"}]).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:10])
        agent.wait_log("listening")
        conn.sendall(body[10:])
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            more = conn.recv(65536)
            assert more, answer
            answer += more
    assert answer.startswith(b"HTTP/1.1 200") and b'"accepted": 1' in answer  # aiohttp's answer, not the early one
    assert agent.wait_log("answered before the listener started")["handed_over"] == 1
    deadline = time.monotonic() + 10
    records: List[dict] = []  # type: ignore[type-arg]
    while not records and time.monotonic() < deadline:
        time.sleep(0.05)
        records = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    assert [(r["type"], r.get("message", r.get("logs"))) for r in records][:1] == [("FunctionLog", "slow")]
    assert agent.stop() == 0

"""fgext._early: the standard-library responder that answers on the bound socket until the listener takes it."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, List, Tuple

import pytest

from fgext._bootstrap import bind_listener
from fgext._early import EarlyResponder
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
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", 411),
    (b"garbage\r\n\r\n", 400),
])
def test_what_it_cannot_keep_is_refused_not_answered_200(listener: socket.socket, raw: bytes, status: int) -> None:
    """An oversize body (FGEXT_MAX_BODY_BYTES), another path or method, a chunked body or a malformed head
    gets an error status and nothing is kept."""
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


def test_a_request_half_read_at_hand_over_is_finished_and_kept(listener: socket.socket) -> None:
    """stop() while a body is half sent waits for the rest: the request is answered 200 and handed over."""
    early = EarlyResponder(listener, max_body_bytes=1024)
    early.start()
    handed: List[List[Tuple[str, int, bytes]]] = []
    with socket.create_connection(("127.0.0.1", listener.getsockname()[1]), timeout=5) as conn:
        conn.sendall(b'POST /extension/invoke HTTP/1.1\r\nContent-Length: 17\r\n\r\n{"traceId"')
        deadline = time.monotonic() + 5
        while early.accepted == 0 and time.monotonic() < deadline:  # until the responder has it in hand
            time.sleep(0.01)
        stopper = threading.Thread(target=lambda: handed.append(early.stop()))
        stopper.start()
        time.sleep(0.2)
        assert handed == [], "stop returned while a request was half read"
        conn.sendall(b': "r1"}')
        assert conn.recv(1000).startswith(b"HTTP/1.1 200 OK")
    stopper.join(5)
    assert [body for _, _, body in handed[0]] == [b'{"traceId": "r1"}']


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
    early is counted and logged as rejected at the hand-over."""
    out = tmp_path / "out.jsonl"
    agent = agents({"EXTENSION_API_ADDR": platform.addr, "FGEXT_PLUGINS": "jsonl", "FGEXT_JSONL_PATH": str(out)})
    seen = platform.wait_for(lambda r: len(r) >= 2, timeout=30)
    port = int(seen[0].headers["FunctionGraph-Extension-Address"].rsplit(":", 1)[1])
    early_log = {"name": "function", "startTime": "2023-02-01T00:03:50.000Z", "logs": "early"}
    assert agent.post(port, "/extension/invoke", json.dumps({"traceId": "r1"}).encode()) == (200, {"status": "ok"})
    assert agent.post(port, "/", json.dumps([early_log]).encode())[0] == 200
    assert agent.post(port, "/extension/invoke", b"not json")[0] == 200  # read whole, judged at hand-over
    note = agent.wait_log("answered before the listener started")
    assert note["kept"] == 3 and note["first_answer_ms"] is not None
    assert "answered before the listener started" in agent.wait_log("invoke body rejected")["reason"]
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

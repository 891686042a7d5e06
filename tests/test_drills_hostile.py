"""Drill: hostile input to both listeners of a real agent process (invoke and telemetry).

Expectation: whatever arrives - not JSON, deep nesting, huge strings, wrong types, 10 MB bodies,
slow-loris clients, thousands of connections, fuzzed bodies - the process stays up, answers a clear
4xx (never a 5xx or a reset) to what it refuses, keeps serving honest requests, and its memory stays
bounded. The agent runs with its default plugin (otlp) towards a collector nobody listens on, so
everything it accepts also goes through the mapping and the spool.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.agentproc import AgentProcess
from tests.platform import RecordingPlatform
from tests.test_otlp_agent import otlp_env, ready
from tests.test_otlp_plugin import free_port, invocation

pytestmark = [pytest.mark.agent, pytest.mark.usefixtures("port_range_lock")]
Start = Callable[..., AgentProcess]
PATHS = ("/extension/invoke", "/")
GOOD_INVOKE = json.dumps({"traceId": "3da1f2dc-3222-475e-9205-e2e6c6318895",
                          "invokedFunctionUrn": "sn:cn:yrk:1111:function:0@test@hello:latest"}).encode()


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def start_agent(platform: RecordingPlatform, agents: Start, tmp_path: Path) -> Tuple[AgentProcess, int]:
    agent = agents(otlp_env(platform, free_port(), tmp_path / "spool"))
    return agent, ready(agent)


def post(port: int, path: str, body: bytes, timeout: float = 10.0, chunked: bool = False) -> Tuple[int, Any]:
    """POST with http.client (it can send chunked bodies); (status, decoded JSON answer or text)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        if chunked:
            conn.putrequest("POST", path)
            conn.putheader("Transfer-Encoding", "chunked")
            conn.putheader("Content-Type", "application/json")
            conn.endheaders()
            step = 1 << 20
            try:
                for first in range(0, len(body), step):
                    piece = body[first:first + step]
                    conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
                conn.send(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the agent answered 413 and closed before the whole body was sent
        else:
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        text = response.read()
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, text.decode(errors="replace")
    finally:
        conn.close()


def still_serving(agent: AgentProcess, port: int) -> None:
    assert agent.proc.poll() is None, agent.stderr()
    assert post(port, "/extension/invoke", GOOD_INVOKE)[0] == 200
    status, answer = post(port, "/", json.dumps(invocation("after-hostile", 0, logs=1)).encode())
    assert status == 200 and answer["accepted"] == 4 and answer["malformed"] == 0, answer


def test_hostile_bodies_get_a_clear_4xx_and_memory_stays_bounded(platform: RecordingPlatform, agents: Start,
                                                               tmp_path: Path) -> None:
    """Not JSON, deep nesting, wrong types and 10 MB bodies get 400/413 with a reason; huge strings within
    the limit are taken; the agent keeps serving and its RSS stays within a fixed bound."""
    agent, port = start_agent(platform, agents, tmp_path)
    baseline = rss_mb(agent.pid)
    ten_mb = b"[" + b'{"name":"function","startTime":"2023-02-01T00:03:50.000Z","logs":"xxxxxxxx"},' * 130_000
    ten_mb = ten_mb[:-1] + b"]"
    assert len(ten_mb) > 10_000_000
    deep = b"[" * 200_000 + b"]" * 200_000
    wrong_types: List[Dict[str, Any]] = [
        {"name": 7}, {"name": "platform.start", "startTime": [1]}, {"name": "function", "logs": {"a": 1}},
        {"name": "platform.report", "startTime": "2023-02-01T00:03:50Z", "traceId": None, "reportMetrics": "x"},
        {"name": ["platform.start"]}, {"name": "platform.runtimeDone", "startTime": 1e308, "status": 5},
    ]
    for path in PATHS:
        for body, expected in ((b"{not json", 400), (b"\xff\xfe\x00garbage", 400), (deep, 400),
                               (ten_mb, 413), (b'"just a string"', 400), (b"null", 400)):
            status, answer = post(path=path, port=port, body=body)
            assert status == expected and "error" in answer, (path, body[:20], status, answer)
        status, answer = post(port, path, ten_mb, chunked=True)  # no Content-Length: counted while read
        assert status == 413 and "FGEXT_MAX_BODY_BYTES" in answer["error"], (path, status, answer)
    for wrong in wrong_types:
        status, answer = post(port, "/extension/invoke", json.dumps({"traceId": wrong}).encode())
        assert status in (200, 400), (wrong, status, answer)
    status, answer = post(port, "/", json.dumps(wrong_types).encode())
    # Each wrong item is skipped with its reason, or kept as an UnknownEvent (a name that is not text)
    assert status == 200 and answer["accepted"] + answer["malformed"] == len(wrong_types), answer
    assert answer["malformed"] >= len(wrong_types) - 1, answer
    assert all(isinstance(reason, str) for reason in answer["errors"])
    # Huge strings under the body limit are legitimate telemetry: taken, mapped, spooled - repeatedly.
    huge = json.dumps([{"name": "function", "startTime": "2023-02-01T00:03:50.000Z",
                        "logs": "[Function]INFO " + "y" * 2_500_000},
                       {"name": "platform.start", "startTime": "2023-02-01T00:03:50.000Z",
                        "traceId": "z" * 2_500_000}]).encode()
    for _ in range(5):
        status, answer = post(port, "/", huge, timeout=30)
        assert status == 200 and answer["accepted"] == 2, answer
    still_serving(agent, port)
    grown = rss_mb(agent.pid) - baseline
    print(f"drill figure: hostile bodies, RSS {baseline:.1f} MB before, +{grown:.1f} MB after")
    # Bound: a few copies of the largest accepted body (6 MB) in flight, not one per request sent.
    assert grown < 60, f"RSS grew by {grown:.1f} MB"
    assert "Traceback" not in agent.stderr()


def test_slow_loris_and_thousands_of_connections_do_not_stop_service(platform: RecordingPlatform,
                                                                   agents: Start, tmp_path: Path) -> None:
    """2,000 open connections, half of them dribbling a request header byte by byte, do not stop the agent
    from answering honest requests (it closes what is above its cap); memory stays bounded."""
    agent, port = start_agent(platform, agents, tmp_path)
    baseline = rss_mb(agent.pid)
    idle: List[socket.socket] = []
    loris: List[socket.socket] = []
    try:
        for index in range(2000):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            (loris if index % 2 else idle).append(sock)
        header = b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-Slow: "
        started = time.monotonic()
        answered: List[float] = []
        for offset in range(0, 6):  # each slow client sends a few more bytes, never finishing its header
            for sock in loris:
                # A connection the agent closed (above its cap, or past the header timeout) refuses the send.
                with contextlib.suppress(OSError):
                    sock.send(header[offset * 4:offset * 4 + 4] or b"a")
            began = time.monotonic()
            status, _ = post(port, "/", json.dumps(invocation(f"honest-{offset}", 0)).encode(), timeout=10)
            assert status == 200
            answered.append(time.monotonic() - began)
        assert time.monotonic() - started < 60
        under_attack = rss_mb(agent.pid)
        still_serving(agent, port)
    finally:
        for sock in idle + loris:
            sock.close()
    time.sleep(0.5)
    still_serving(agent, port)
    print(f"drill figure: 2,000 connections (1,000 slow-loris), RSS {baseline:.1f} -> {under_attack:.1f} MB, "
          f"honest POST answered in at most {max(answered) * 1000:.0f} ms")
    assert under_attack - baseline < 80, f"2,000 connections cost {under_attack - baseline:.1f} MB"
    assert agent.proc.poll() is None and "Traceback" not in agent.stderr()


_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                       st.text(max_size=40))
_json = st.recursive(_json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                         st.dictionaries(st.text(max_size=12), inner, max_size=5)),
                     max_leaves=20)
_event = st.fixed_dictionaries(
    {"name": st.sampled_from(["platform.start", "platform.runtimeDone", "platform.RuntimeDone", "platform.report",
                              "platform.initStart", "function", "extension", "platform.x", ""])},
    optional={"startTime": st.one_of(st.just("2023-02-01T00:03:50.000Z"), _json_leaf),
              "endTime": _json_leaf, "traceId": _json_leaf, "tracelId": _json_leaf,
              "status": _json_leaf, "logs": _json_leaf, "reportMetrics": _json})
_bodies = st.one_of(
    st.binary(max_size=300),
    _json.map(lambda v: json.dumps(v).encode()),
    st.lists(st.one_of(_event, _json), max_size=10).map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(["traceId", "tracelId", "invokedFunctionUrn", "x"]), _json_leaf)
    .map(lambda v: json.dumps(v).encode()),
)


def test_fuzzed_bodies_never_break_the_listener(platform: RecordingPlatform, agents: Start, tmp_path: Path) -> None:
    """Any body on either route gets 200 or a 4xx with a JSON reason; an accepted batch accounts for every item."""
    agent, port = start_agent(platform, agents, tmp_path)

    @settings(max_examples=300, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.sampled_from(PATHS), _bodies)
    def check(path: str, body: bytes) -> None:
        status, answer = post(port, path, body)
        assert status in (200, 400), (status, answer)
        assert isinstance(answer, dict), answer
        if status == 400:
            assert isinstance(answer.get("error"), str) and answer["error"]
        elif path == "/":
            items = json.loads(body)
            assert answer["accepted"] + answer["malformed"] == len(items)

    check()
    still_serving(agent, port)
    assert "Traceback" not in agent.stderr()

"""The function helper and the real agent together: the function's spans in fgext's trace, at the collector.

A real agent process (its default OTLP plugin pointed at oteltap, a third-party OTLP receiver), a real
function process (tests/function_script.py, wrapped by ``fgext.function.instrument``, the real SDK)
that finds the agent's receiver through the file the agent writes, and the platform's telemetry posted
to the agent as the platform would.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import random
import signal
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from fgext._discovery_file import read_agent_file
from fgext._ids import invoke_span_id_for, trace_id_for
from fgext._sampling import HeadSampler
from tests.agentproc import AgentProcess, ready
from tests.test_function import ROOT, Function
from tests.test_otlp_plugin import URN, OtelTap, free_port, invocation

pytestmark = [pytest.mark.agent, pytest.mark.usefixtures("port_range_lock")]
Start = Callable[..., AgentProcess]
# The listener's 127.0.0.1 connection: urllib's default headers say JSON, the receiver wants these.
PROTOBUF = {"Content-Type": "application/x-protobuf"}


@pytest.fixture
def tap(tap_factory: Callable[[int], OtelTap]) -> OtelTap:
    started = tap_factory(free_port())
    started.start()
    return started


def agent_env(platform: Any, tap: OtelTap, tmp_path: Path, **extra: str) -> Dict[str, str]:
    return {"EXTENSION_API_ADDR": platform.addr, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{tap.port}",
            "FGEXT_SPOOL_DIR": str(tmp_path / "spool"), "RUNTIME_TIMEOUT": "3",
            "FGEXT_AGENT_FILE": str(tmp_path / "fgext-agent.json"), **extra}


def wait(tap: OtelTap, kind: str, predicate: Callable[[List[Dict[str, Any]]], bool],
         timeout: float = 20.0) -> List[Dict[str, Any]]:
    return asyncio.run(tap.wait(kind, predicate, timeout))


def post(port: int, path: str, body: bytes, headers: Dict[str, str]) -> int:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def run_invocation(agent: AgentProcess, port: int, function: Function, rid: str, begin_ms: int,
                   spans: int = 2) -> None:
    """One invocation as the platform runs it: invoke, the handler, then the platform's telemetry."""
    invoke = json.dumps({"traceId": rid, "invokedFunctionUrn": URN}).encode()
    assert agent.post(port, "/extension/invoke", invoke)[0] == 200
    outcome = function.invoke(rid, {"spans": spans})
    assert outcome["returned"]["ok"] and outcome["exporter"] == "loopback", outcome
    status, answer = agent.post(port, "/", json.dumps(invocation(rid, begin_ms)).encode())
    assert status == 200 and answer["malformed"] == 0, answer


def freeze(*pids: int) -> None:
    """The sandbox frozen between invocations (every process stopped), then thawed."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    time.sleep(0.5)
    for pid in pids:
        os.kill(pid, signal.SIGCONT)


def test_the_functions_spans_reach_the_collector_under_invoke_through_a_freeze(
        platform: Any, agents: Start, tap: OtelTap, functions: Callable[..., Function], tmp_path: Path) -> None:
    """Handler spans join fgext's trace as children of ``invoke``; freezes between invocations lose none."""
    agent = agents(agent_env(platform, tap, tmp_path))
    port = ready(agent)
    assert read_agent_file(str(tmp_path / "fgext-agent.json")) == port  # the agent announced its receiver
    function = functions()
    rids = [str(uuid.UUID(int=random.Random(seed).getrandbits(128), version=4)) for seed in (1, 2, 3)]
    for index, rid in enumerate(rids):
        run_invocation(agent, port, function, rid, index * 100)
        freeze(agent.proc.pid, function.process.pid)
    spans = wait(tap, "spans", lambda s: len(s) >= 5 * len(rids))
    for rid in rids:
        trace = {s["name"]: s for s in spans if s["traceId"] == trace_id_for(rid).hex()}
        assert set(trace) == {"helloWorld", "invoke", "handler", "step-0", "step-1"}, sorted(trace)
        assert trace["invoke"]["spanId"] == invoke_span_id_for(rid).hex()
        assert trace["handler"]["parentSpanId"] == trace["invoke"]["spanId"]
        assert trace["step-0"]["parentSpanId"] == trace["handler"]["spanId"]
    assert len(spans) == 5 * len(rids)  # nothing twice
    assert agent.stop() == 0
    assert not (tmp_path / "fgext-agent.json").exists()  # removed at exit: it was the agent's own


def test_the_receiver_refuses_bad_input_through_the_real_agent(
        platform: Any, agents: Start, tap: OtelTap, tmp_path: Path) -> None:
    """Not protobuf 400, wrong content type 415, oversize 413, gzip bomb 413; the agent goes on taking data."""
    agent = agents(agent_env(platform, tap, tmp_path))
    port = ready(agent)
    assert post(port, "/v1/traces", b"\xff\xff\xff\xff not protobuf", PROTOBUF) == 400
    assert post(port, "/v1/traces", b"hello", {"Content-Type": "text/plain"}) == 415
    assert post(port, "/v1/logs", b"\x00" * (4 * 1024 * 1024 + 1), PROTOBUF) == 413
    bomb = gzip.compress(b"\x00" * (17 * 1024 * 1024))
    assert post(port, "/v1/traces", bomb, {**PROTOBUF, "Content-Encoding": "gzip"}) == 413
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.CopyFrom(Span(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="after-the-bad-ones",
                       start_time_unix_nano=1, end_time_unix_nano=2))
    assert post(port, "/v1/traces", gzip.compress(request.SerializeToString()),
                {**PROTOBUF, "Content-Encoding": "gzip"}) == 200
    # The platform's telemetry listener on the same server still takes a gzip body (auto_decompress is off).
    events = gzip.compress(json.dumps(invocation(str(uuid.uuid4()), 0)).encode())
    assert post(port, "/", events, {"Content-Type": "application/json", "Content-Encoding": "gzip"}) == 200
    spans = wait(tap, "spans", lambda s: any(x["name"] == "after-the-bad-ones" for x in s) and len(s) >= 3)
    assert [s["name"] for s in spans].count("after-the-bad-ones") == 1
    assert agent.stop() == 0


def test_the_agent_and_the_helper_keep_exactly_the_same_traces(
        platform: Any, agents: Start, tap: OtelTap, functions: Callable[..., Function], tmp_path: Path) -> None:
    """traceidratio 0.5 on both sides: fgext's spans and the function's are exported for the same request IDs."""
    sampler = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5"}
    agent = agents(agent_env(platform, tap, tmp_path, **sampler))
    port = ready(agent)
    function = functions(**sampler)
    rng = random.Random(12)
    rids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(12)]
    expected = {trace_id_for(rid).hex() for rid in rids if HeadSampler.from_environ(sampler).sampled(trace_id_for(rid))}
    assert 0 < len(expected) < len(rids)
    for index, rid in enumerate(rids):
        run_invocation(agent, port, function, rid, index * 100, spans=1)
    # Every function's span is delivered before its handler returns; fgext's leave at the report's flush.
    every_trace = {trace_id_for(rid).hex() for rid in rids}
    spans = wait(tap, "spans", lambda s: len(s) >= 4 * len(expected))
    # each invocation has a log line and a report record: wait for every trace, not for a count of items
    wait(tap, "logs", lambda items: {item.get("traceId") for item in items} >= every_trace)
    assert agent.stop() == 0
    spans, logs = tap.items("spans"), tap.items("logs")
    by_side = {name: {s["traceId"] for s in spans if s["name"] == name} for name in ("helloWorld", "handler")}
    assert by_side["helloWorld"] == expected  # the agent's own root spans
    assert by_side["handler"] == expected  # the function's
    assert len(spans) == 4 * len(expected)
    # Logs are not sampled: every invocation's line arrives, its trace flags saying the head decision.
    flags = {item["traceId"]: item.get("flags", 0) for item in logs}
    assert set(flags) == every_trace
    assert {tid for tid, flag in flags.items() if flag & 1} == expected


def test_an_unreadable_sampler_stops_the_agent_with_exit_2_and_one_line(
        platform: Any, agents: Start, tap: OtelTap, tmp_path: Path) -> None:
    """OTEL_TRACES_SAMPLER the agent cannot read is a configuration error naming the variable."""
    agent = agents(agent_env(platform, tap, tmp_path, OTEL_TRACES_SAMPLER="sometimes"))
    assert agent.proc.wait(20) == 2
    errors = [line for line in agent.stderr_path.read_text().splitlines() + agent.stdout_path.read_text().splitlines()
              if "OTEL_TRACES_SAMPLER must be one of" in line]
    assert len(errors) == 1, errors


def test_under_the_emulator_the_sample_functions_spans_hang_under_invoke_through_freezes(
        tap: OtelTap, tmp_path: Path) -> None:
    """The emulator runs the agent and the instrumented sample function; its freezes lose none of their spans."""
    from fgext.testing import run_emulator
    from tests.conftest import agent_python

    env = {"FGEXT_PYTHON": agent_python(), "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{tap.port}",
           "FGEXT_SPOOL_DIR": str(tmp_path / "spool")}
    report = run_emulator(ROOT, invocations=3, freeze_s=0.3, env=env, register_timeout_s=20.0)
    assert report.ok, report.problems
    assert report.freezes == 2
    rids = [result.request_id for result in report.invocations]
    spans = wait(tap, "spans", lambda s: sum(x["name"] in ("handler", "digest", "respond") for x in s) >= 3 * 3
                 and sum(x["name"] == "invoke" for x in s) >= 3)
    for rid in rids:
        trace = {s["name"]: s for s in spans if s["traceId"] == trace_id_for(rid).hex()}
        assert {"invoke", "handler", "digest", "respond"} <= set(trace), sorted(trace)
        assert trace["handler"]["parentSpanId"] == trace["invoke"]["spanId"] == invoke_span_id_for(rid).hex()
        assert trace["digest"]["parentSpanId"] == trace["respond"]["parentSpanId"] == trace["handler"]["spanId"]

"""Drills: the collector misbehaves while a real agent runs under the emulator or takes direct POSTs.

* collector down for the first invocations, then up (emulator + oteltap): every span, log line and the
  invocation count arrive, exactly once. OTLP is at-least-once: a request the collector took whose answer
  the agent never saw (a timeout) is sent again; a refused connection cannot cause that, so none here.
* collector answering 429/503 with Retry-After, then too slow to answer (timeouts), then well: the wait
  is honoured, everything is retried until delivered, and the agent's memory stays bounded.
* SIGTERM while the collector hangs: the agent exits within FGEXT_SHUTDOWN_TIMEOUT, the data is
  spooled, and the next agent delivers it to oteltap.
* SIGKILL 1 s after the last report while the collector hangs: every request was written ahead to the
  spool, and the next agent on that directory delivers all of it, once.
* a 307 to another loopback host: the exporter does not follow it; that host receives nothing.
* credentials in the endpoint URL plus an Authorization header: the OTLP plugin is not started, with one
  clear line; nothing is sent.
* two agents on one spool directory while the collector is down, then one is killed: nothing lost,
  duplicated, or falsely reported dropped.
"""

from __future__ import annotations

import asyncio
import signal
import ssl
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from fgext.testing import emulate
from tests.agentproc import AgentProcess
from tests.conftest import ROOT, agent_python
from tests.platform import RecordingPlatform
from tests.test_drills_hostile import rss_mb
from tests.test_otlp_agent import otlp_env, post_events, ready
from tests.test_otlp_plugin import OtelTap, attr, free_port, invocation, metric_value, roots
from tests.test_otlp_transports import pki, server_context  # noqa: F401 - pki is a fixture
from tests.threaded_server import ThreadedServer

pytestmark = [pytest.mark.agent, pytest.mark.usefixtures("port_range_lock")]
Start = Callable[..., AgentProcess]

HANDLER = '''
import time
def handler(event, context):
    for line in range(3):
        print(f"[Function]INFO drill {event['n']} line {line}", flush=True)
        time.sleep(event.get("pause", 0))
    return {"n": event["n"]}
'''


def emulated_env(collector_port: int, spool: Path) -> Dict[str, str]:
    return {"FGEXT_PYTHON": agent_python(), "FGEXT_PLUGINS": "otlp", "FGEXT_SPOOL_DIR": str(spool),
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector_port}", "OTEL_EXPORTER_OTLP_TIMEOUT": "2000",
            "FGEXT_SHUTDOWN_TIMEOUT": "3",
            # metrics leave on their own timer: a short one, so that a drill sees them while the agent runs
            "FGEXT_OTLP_METRICS_INTERVAL_MS": "200"}


def log_lines(tap: OtelTap) -> Counter[str]:
    return Counter(item["body"]["stringValue"] for item in tap.items("logs")
                   if "drill" in item["body"].get("stringValue", ""))


def test_collector_down_then_up_every_item_arrives_once(taps: Callable[[int], OtelTap],
                                                        tmp_path: Path) -> None:
    """Four invocations while the collector is down, four after it comes up: 8 traces, 24 lines, count 8, once each."""
    port = free_port()
    function = tmp_path / "func.py"
    function.write_text(HANDLER)
    spool = tmp_path / "spool"
    holder: List[OtelTap] = []

    async def scenario() -> List[str]:
        ids = []
        async with emulate(ROOT, function=f"{function}:handler", env=emulated_env(port, spool),
                           register_timeout_s=20.0, timeout_s=10.0) as emu:
            for n in range(4):
                ids.append((await emu.invoke({"n": n})).request_id)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not list(spool.glob("*.pb")):
                await asyncio.sleep(0.05)
            assert list(spool.glob("*.pb")), "nothing was spooled while the collector was down"
            down_since = time.monotonic()
            holder.append(await asyncio.get_running_loop().run_in_executor(None, taps, port))
            for n in range(4, 8):
                ids.append((await emu.invoke({"n": n})).request_id)
            tap = holder[0]
            await tap.wait("spans", lambda s: len(roots(s)) >= 8, timeout=40)
            await tap.wait("metrics", lambda m: metric_value(m, "faas.invocations") == 8, timeout=20)
            print(f"drill figure: collector down->up recovery {time.monotonic() - down_since:.2f} s")
        assert emu.report is not None and emu.report.telemetry.events_dropped == 0
        return ids

    ids = asyncio.run(scenario())
    tap = holder[0]
    time.sleep(0.5)  # anything sent twice would have arrived by now
    per_request = Counter(attr(span, "faas.invocation_id") for span in roots(tap.items("spans")))
    assert per_request == Counter(ids), per_request  # every trace, once
    assert len(tap.items("spans")) == 8 * 2 + 1  # root + invoke each, one init
    lines = log_lines(tap)
    assert lines == Counter({f"INFO drill {n} line {line}": 1 for n in range(8) for line in range(3)}), lines
    assert metric_value(tap.items("metrics"), "faas.invocations") == 8
    assert list(spool.glob("*.pb")) == []


class ScriptedCollector(ThreadedServer):
    """An OTLP/HTTP endpoint in a thread: answers from ``mode`` (ok, 429, 503, slow, hang), records every
    request whose body fully arrived (as a real collector, which may process a request whose answer the
    client gave up on), with the request IDs of the root spans it carried."""

    def __init__(self, ssl_context: Optional[ssl.SSLContext] = None) -> None:
        super().__init__(ssl_context)
        self.mode = "ok"
        self.location = ""  # where the "307" mode redirects to
        self.requests: List[Tuple[float, str, str, int]] = []  # (time, path, mode answered, items)
        self.root_ids: List[str] = []

    async def handle(self, request: Any) -> Any:
        from aiohttp import web

        body = await self.body(request)
        mode = self.mode
        self._record(request.path, body, mode)
        if mode in ("429", "503"):
            return web.Response(status=int(mode), headers={"Retry-After": "1"})
        if mode == "307":
            return web.Response(status=307, headers={"Location": self.location})
        if mode == "slow":
            await asyncio.sleep(3)
        if mode == "hang":
            await asyncio.sleep(60)
        return web.Response(status=200, content_type="application/x-protobuf")

    def _record(self, path: str, body: bytes, mode: str) -> int:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        ids: List[str] = []
        if path == "/v1/traces":
            request = ExportTraceServiceRequest.FromString(body)
            for resource_spans in request.resource_spans:
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        if not span.parent_span_id:
                            ids += [kv.value.string_value for kv in span.attributes
                                    if kv.key == "faas.invocation_id"]
        with self._lock:
            self.requests.append((time.monotonic(), path, mode, len(ids)))
            if mode in ("ok", "slow", "hang"):  # taken by the collector (slow: answered too late)
                self.root_ids += ids
        return len(ids)

    def snapshot(self) -> Tuple[List[Tuple[float, str, str, int]], List[str]]:
        with self._lock:
            return list(self.requests), list(self.root_ids)


@pytest.fixture
def scripted() -> Iterator[ScriptedCollector]:
    collector = ScriptedCollector().start()
    try:
        yield collector
    finally:
        collector.stop()


@pytest.mark.slow
def test_429_503_and_timeouts_are_retried_with_bounded_memory(platform: RecordingPlatform, agents: Start,
                                                              scripted: ScriptedCollector, tmp_path: Path) -> None:
    """429 then 503 (Retry-After: 1) then answers slower than the timeout: nothing is sent before
    Retry-After, every invocation arrives at least once when the collector recovers, RSS stays bounded."""
    agent = agents(otlp_env(platform, scripted.port, tmp_path / "spool", OTEL_EXPORTER_OTLP_TIMEOUT="500"))
    port = ready(agent)
    baseline = rss_mb(agent.pid)
    peak = baseline
    ids: List[str] = []
    for mode in ("429", "503", "slow"):
        # Each misbehaviour lasts until the agent has met it at least once (bounded: its backoff grows)
        scripted.mode = mode
        deadline = time.monotonic() + 25
        posted = 0
        while time.monotonic() < deadline and (
                posted < 100 or not any(m == mode for _, _, m, _ in scripted.snapshot()[0])):
            posted += 1
            rid = f"00000000-0000-4000-8000-{len(ids):012d}"
            ids.append(rid)
            post_events(agent, port, invocation(rid, 0, logs=10))
            peak = max(peak, rss_mb(agent.pid))
            time.sleep(0.02)
        assert any(m == mode for _, _, m, _ in scripted.snapshot()[0]), f"the agent never met {mode}"
    requests, _ = scripted.snapshot()
    refused = [at for at, _, mode, _ in requests if mode in ("429", "503")]
    assert refused, "the scripted collector never refused"
    # Retry-After: after a refusal, nothing is sent for a second (a little slack for two event loops)
    for refusal in refused:
        following = [at for at, *_ in requests if at > refusal]
        if following:
            assert following[0] - refusal >= 0.95, following[0] - refusal
    recovered_at = time.monotonic()
    scripted.mode = "ok"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not set(ids) <= set(scripted.snapshot()[1]):
        time.sleep(0.1)
        peak = max(peak, rss_mb(agent.pid))
    delivered = Counter(scripted.snapshot()[1])
    missing = set(ids) - set(delivered)
    assert not missing, f"{len(missing)} invocations never arrived"
    duplicates = sum(count - 1 for count in delivered.values())
    print(f"drill figure: 429/503/slow recovery {time.monotonic() - recovered_at:.2f} s, "
          f"duplicates {duplicates} (timed-out sends retried), RSS baseline {baseline:.1f} MB, peak {peak:.1f} MB")
    assert peak - baseline < 25, f"RSS grew {peak - baseline:.1f} MB while the collector misbehaved"
    assert agent.stop() == 0


def test_sigterm_while_the_collector_hangs_spools_and_next_agent_delivers(
        platform: RecordingPlatform, agents: Start, scripted: ScriptedCollector,
        taps: Callable[[int], OtelTap], tmp_path: Path) -> None:
    """A collector that never answers cannot hold the agent past FGEXT_SHUTDOWN_TIMEOUT: it exits 0 in time,
    its data is on disk, and the next agent (collector fixed) delivers all of it."""
    spool = tmp_path / "spool"
    scripted.mode = "hang"
    agent = agents(otlp_env(platform, scripted.port, spool, FGEXT_SHUTDOWN_TIMEOUT="2",
                            FGEXT_FLUSH="periodically,600000"))
    port = ready(agent)
    ids = [f"00000000-0000-4000-8000-{n:012d}" for n in range(5)]
    for rid in ids:
        post_events(agent, port, invocation(rid, 0, logs=2))
    started = time.monotonic()
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.wait_exit(10) == 0
    took = time.monotonic() - started
    assert took < 2 + 1.5, f"shutdown took {took:.2f} s with a 2 s deadline"
    assert list(spool.glob("*.pb")), "nothing was spooled at the deadline"
    tap = taps(free_port())
    second = agents(otlp_env(platform, tap.port, spool))
    ready(second)
    spans = asyncio.run(tap.wait("spans", lambda s: len(roots(s)) >= 5, timeout=20))
    assert sorted(attr(s, "faas.invocation_id") for s in roots(spans)) == ids
    asyncio.run(tap.wait("logs", lambda items: len(items) >= 10, timeout=10))
    print(f"drill figure: SIGTERM with hung collector exited in {took:.2f} s (deadline 2 s)")
    assert second.stop() == 0


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_sigkill_while_the_collector_hangs_loses_nothing(
        platform: RecordingPlatform, agents: Start, scripted: ScriptedCollector,
        taps: Callable[[int], OtelTap], tmp_path: Path) -> None:
    """The collector accepts connections and never answers; the agent is SIGKILLed 1 s after the last of
    50 reports: a second agent on the same spool directory delivers all 50 invocations and their logs, once."""
    spool = tmp_path / "spool"
    scripted.mode = "hang"
    agent = agents(otlp_env(platform, scripted.port, spool))
    port = ready(agent)
    ids = [f"00000000-0000-4000-8000-{n:012d}" for n in range(50)]
    for rid in ids:
        post_events(agent, port, invocation(rid, 0, logs=2))
    wait_for(lambda: bool(scripted.snapshot()[0]), 10, "the first export to reach the hung collector")
    time.sleep(1.0)  # the scenario: the kill comes 1 s after the last report
    agent.proc.kill()
    agent.wait_exit(10)
    assert list(spool.glob("*.pb")), "nothing was written ahead to the spool"
    tap = taps(free_port())
    second = agents(otlp_env(platform, tap.port, spool))
    ready(second)
    asyncio.run(tap.wait("spans", lambda s: len(roots(s)) >= 50, timeout=30))
    asyncio.run(tap.wait("logs", lambda items: len(items) >= 150, timeout=20))  # 2 lines + 1 report record each
    assert second.stop() == 0
    assert Counter(attr(s, "faas.invocation_id") for s in roots(tap.items("spans"))) == Counter(ids)
    assert len(tap.items("logs")) == 150
    assert list(spool.glob("*.pb")) == []


def test_a_redirect_to_another_host_is_not_followed(platform: RecordingPlatform, agents: Start,
                                                    scripted: ScriptedCollector, tmp_path: Path) -> None:
    """A collector answering 307 to another loopback host: that host receives nothing (no telemetry, no
    header); the redirect is a counted rejection, logged with its Location stripped of credentials and query."""
    other = ScriptedCollector().start()
    try:
        scripted.mode = "307"
        scripted.location = f"http://user:PASSWORD@127.0.0.1:{other.port}/v1/traces?api_key=KEY-123"
        agent = agents(otlp_env(platform, scripted.port, tmp_path / "spool",
                                OTEL_EXPORTER_OTLP_HEADERS="x-api-key=SECRET-HEADER"))
        port = ready(agent)
        post_events(agent, port, invocation("00000000-0000-4000-8000-000000000001", 0, logs=1))
        wait_for(lambda: {p for _, p, _, _ in scripted.snapshot()[0]} >= {"/v1/traces", "/v1/logs"}, 10,
                 "the exports to meet the redirect")
        assert agent.stop() == 0
        assert other.snapshot()[0] == []
        refusals = [line for line in agent.logs() if line.get("event", "").startswith("otlp collector rejected")]
        assert refusals and all(f"127.0.0.1:{other.port}/v1/traces" in line["detail"] for line in refusals)
        assert "PASSWORD" not in agent.stderr() and "KEY-123" not in agent.stderr()
    finally:
        other.stop()


@pytest.mark.parametrize("strict", ["0", "1"])
def test_credentials_in_the_url_and_an_authorization_header_are_a_configuration_error(
        platform: RecordingPlatform, agents: Start, scripted: ScriptedCollector, tmp_path: Path,
        strict: str) -> None:
    """User-info in the endpoint plus an Authorization header: the OTLP plugin does not start, one line says
    why (without the secrets), nothing reaches the collector; in strict mode the agent exits 2."""
    env = otlp_env(platform, scripted.port, tmp_path / "spool", FGEXT_STRICT=strict,
                   OTEL_EXPORTER_OTLP_HEADERS="Authorization=Bearer%20TOKEN-XYZ")
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://user:PASSWORD@127.0.0.1:{scripted.port}"
    agent = agents(env)
    if strict == "1":
        assert agent.wait_exit(20) == 2  # a configuration error
    else:
        agent.wait_log("pipeline started")
    lines = [line for line in agent.logs() if "Authorization header" in str(line)]
    assert len(lines) == 1, agent.stderr()
    assert "credentials in the URL" in str(lines[0])
    assert "PASSWORD" not in agent.stderr() and "TOKEN-XYZ" not in agent.stderr()
    assert "Traceback" not in agent.stderr()
    if strict == "0":
        port = ready(agent)
        post_events(agent, port, invocation("00000000-0000-4000-8000-000000000001", 0, logs=1))
        assert agent.stop() == 0
    assert scripted.snapshot()[0] == []


def test_two_agents_on_one_spool_neither_lose_duplicate_nor_report_false_drops(
        platform: RecordingPlatform, agents: Start, taps: Callable[[int], OtelTap],
        tmp_path: Path) -> None:
    """Two agents share a spool directory while the collector is down; one is killed, the other carries on:
    once the collector is up every invocation of both arrives exactly once, and no drop is reported."""
    spool = tmp_path / "spool"
    collector_port = free_port()
    first = agents(otlp_env(platform, collector_port, spool))
    second = agents(otlp_env(platform, collector_port, spool))
    ports = [ready(first), ready(second)]
    ids = [f"00000000-0000-4000-8000-{n:012d}" for n in range(40)]
    for index, rid in enumerate(ids):
        agent, port = (first, ports[0]) if index % 2 == 0 else (second, ports[1])
        post_events(agent, port, invocation(rid, 0, logs=1))
    wait_for(lambda: len(list(spool.glob("*.pb"))) >= 40, 20, "both agents to spool")
    time.sleep(1.0)  # the promise is for a kill 1 s or more after the last report, not the moment files appear
    first.proc.kill()
    first.wait_exit(10)
    tap = taps(collector_port)
    # The survivor delivers its own spool and claims the dead agent's files (checked every 10 s when idle).
    asyncio.run(tap.wait("spans", lambda s: len(roots(s)) >= 40, timeout=60))
    assert second.stop() == 0
    assert Counter(attr(s, "faas.invocation_id") for s in roots(tap.items("spans"))) == Counter(ids)
    falsely = [line for line in first.logs() + second.logs()
               if "unreadable" in line.get("event", "") or "dropped" in line.get("event", "")]
    assert falsely == []
    assert list(spool.glob("*.pb")) == []


def test_each_emulator_run_spools_in_its_own_directory(tmp_path: Path) -> None:
    """Without FGEXT_SPOOL_DIR, an emulated agent spools under its own run's TMPDIR (a fresh directory per
    run), so two runs never replay each other's data."""
    function = tmp_path / "func.py"
    function.write_text(HANDLER)
    env = emulated_env(free_port(), tmp_path / "unused")
    del env["FGEXT_SPOOL_DIR"]
    roots_seen: List[Path] = []

    async def one_run() -> None:
        async with emulate(ROOT, function=f"{function}:handler", env=env, register_timeout_s=20.0,
                           timeout_s=10.0) as emu:
            assert emu.sandbox is not None
            spool = emu.sandbox.root / "tmp" / "fgext-spool"
            await emu.invoke({"n": 0})
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not list(spool.glob("*.pb")):
                await asyncio.sleep(0.05)
            assert list(spool.glob("*.pb")), "the collector is down: the run's own spool should hold the export"
            roots_seen.append(emu.sandbox.root)

    asyncio.run(one_run())
    asyncio.run(one_run())
    assert roots_seen[0] != roots_seen[1]


def test_tls_collector_with_a_ca_bundle_and_an_unreadable_file(platform: RecordingPlatform, agents: Start,
                                                              pki: Path, tmp_path: Path) -> None:  # noqa: F811
    """An HTTPS collector signed by a private CA receives the agent's export when OTEL_EXPORTER_OTLP_CERTIFICATE
    names that CA; an unreadable certificate file is a configuration error naming the variable and the path
    (exit 2 in strict mode), and nothing is sent."""
    collector = ScriptedCollector(server_context(pki, require_client=False)).start()
    try:
        env = otlp_env(platform, collector.port, tmp_path / "spool", OTEL_EXPORTER_OTLP_CERTIFICATE=str(pki / "ca.pem"))
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"https://127.0.0.1:{collector.port}"
        agent = agents(env)
        port = ready(agent)
        rid = "00000000-0000-4000-8000-000000000001"
        post_events(agent, port, invocation(rid, 0, logs=1))
        wait_for(lambda: rid in collector.snapshot()[1], 15, "the export over TLS")
        assert agent.stop() == 0
        sent = len(collector.snapshot()[0])
        missing = tmp_path / "no-such-ca.pem"
        broken = agents({**env, "OTEL_EXPORTER_OTLP_CERTIFICATE": str(missing), "FGEXT_STRICT": "1"})
        assert broken.wait_exit(20) == 2
        assert "OTEL_EXPORTER_OTLP_CERTIFICATE" in broken.stderr() and str(missing) in broken.stderr()
        assert "Traceback" not in broken.stderr()
        assert len(collector.snapshot()[0]) == sent
    finally:
        collector.stop()

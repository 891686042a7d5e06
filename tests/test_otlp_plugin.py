"""Tests for fgext.otlp._plugin and _export: the plugin's hooks end to end against real receivers.

HTTP/protobuf goes to oteltap (a third-party OTLP receiver) run as its own process, so the same tests
run on Python 3.9 when ``FGEXT_TEST_OTELTAP`` points at an oteltap from a 3.10+ environment. The
gRPC path uses grpcio's server with opentelemetry-proto's collector services on 127.0.0.1. Failure
answers oteltap cannot give (503 with Retry-After, 400) come from a small aiohttp server.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest

from fgext._parse import parse_batch, parse_invoke
from fgext._plugin import PluginContext, RegistrationInfo
from fgext.otlp import OtlpPlugin

INIT_ID = "69be64a7-0233-11e8-82e4-e5d37911193e"
INVOKE_ID = "3da1f2dc-3222-475e-9205-e2e6c6318895"
URN = "sn:cn:yrk:1111:function:0@test@hello:latest"
POD = "pool22-300-128-fusion-64774779-4g77v"


# ------------------------------------------------------------------------------------------ helpers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def oteltap_executable() -> Optional[str]:
    configured = os.environ.get("FGEXT_TEST_OTELTAP")
    if configured:
        return configured
    sibling = Path(sys.executable).parent / "oteltap"
    if sibling.exists():
        return str(sibling)
    return shutil.which("oteltap")


class OtelTap:
    """The oteltap CLI as a subprocess on 127.0.0.1; what it prints (NDJSON) is collected by kind."""

    def __init__(self, executable: str, port: int) -> None:
        self.executable = executable
        self.port = port
        self.spans: List[Dict[str, Any]] = []
        self.logs: List[Dict[str, Any]] = []
        self.metrics: List[Dict[str, Any]] = []
        self._lock = threading.Lock()
        self._process: Optional[subprocess.Popen[str]] = None
        self._reader: Optional[threading.Thread] = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            [self.executable, "--port", str(self.port)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, bufsize=1,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"oteltap exited with {self._process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("oteltap did not listen within 15 s")

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            if not line.startswith("{"):
                continue
            item = json.loads(line)
            with self._lock:
                if "observedTimeUnixNano" in item:  # log records carry span IDs too: test them first
                    self.logs.append(item)
                elif "spanId" in item:
                    self.spans.append(item)
                elif "name" in item:
                    self.metrics.append(item)

    def stop(self) -> None:
        process = self._process
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        if self._reader is not None:
            self._reader.join(timeout=5)
        self._process = None

    def items(self, kind: str) -> List[Dict[str, Any]]:
        with self._lock:
            return list(getattr(self, kind))

    async def wait(self, kind: str, predicate: Callable[[List[Dict[str, Any]]], bool],
                   timeout: float = 15.0) -> List[Dict[str, Any]]:
        """Poll (without blocking the loop the plugin sends from) until ``predicate(items)`` holds."""
        deadline = time.monotonic() + timeout
        while True:
            items = self.items(kind)
            if predicate(items):
                return items
            if time.monotonic() > deadline:
                raise AssertionError(f"oteltap: condition on {kind} not met in {timeout} s; got {len(items)}")
            await asyncio.sleep(0.05)


@pytest.fixture
def tap(tap_factory: Callable[[int], OtelTap]) -> OtelTap:
    collector = tap_factory(free_port())
    collector.start()
    return collector


def attr(item: Dict[str, Any], key: str) -> Any:
    for kv in item.get("attributes", []):
        if kv["key"] == key:
            return next(iter(kv["value"].values()), None)
    return None


def environ(port: int, spool: Path, **extra: str) -> Dict[str, str]:
    values = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", "FGEXT_SPOOL_DIR": str(spool),
              "OTEL_EXPORTER_OTLP_TIMEOUT": "2000", "RUNTIME_TIMEOUT": "3", "RUNTIME_MEMORY": "128",
              # metrics leave on their own timer: a short one, so that a test sees them without waiting a minute
              "FGEXT_OTLP_METRICS_INTERVAL_MS": "100"}
    values.update(extra)
    return values


async def started(env: Dict[str, str]) -> OtlpPlugin:
    plugin = OtlpPlugin()
    registration = RegistrationInfo("extensionFgext.sh", "127.0.0.1:8081", "hello", "latest")
    await plugin.start(PluginContext(name="otlp", registration=registration, environ=env))
    return plugin


def ts(ms: int) -> str:
    return f"2023-02-01T00:03:{50 + ms // 1000:02d}.{ms % 1000:03d}Z"


def invocation(rid: str, begin: int, *, init: bool = False, status: str = "success",
               logs: int = 1) -> List[Dict[str, Any]]:
    metrics = {"durationMs": 10.6, "billingDurationMS": 11, "memoryUsed": 23.4, "memorySize": 128,
               "podName": POD}
    out: List[Dict[str, Any]] = []
    if init:
        out += [{"name": "platform.initStart", "startTime": ts(begin), "traceId": rid},
                {"name": "platform.initRuntimeDone", "startTime": ts(begin + 10), "tracelId": rid,
                 "status": "success"},
                {"name": "platform.initReport", "startTime": ts(begin), "tracelId": rid,
                 "endTime": ts(begin + 11), "status": "success", "reportMetrics": metrics}]
        begin += 20
    out.append({"name": "platform.start", "startTime": ts(begin), "traceId": rid})
    out += [{"name": "function", "startTime": ts(begin + 1), "logs": f"[Function]INFO line {i} of {rid}"}
            for i in range(logs)]
    out += [{"name": "platform.RuntimeDone", "startTime": ts(begin + 10), "traceId": rid, "status": status},
            {"name": "platform.report", "startTime": ts(begin), "tracelId": rid, "endTime": ts(begin + 11),
             "status": status, "reportMetrics": metrics}]
    return out


def parsed(objects: List[Dict[str, Any]]) -> List[Any]:
    return parse_batch(objects).events


def roots(spans: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return [s for s in spans if s["parentSpanId"] == ""]


def metric_value(metrics: List[Dict[str, Any]], name: str) -> Optional[int]:
    """The latest value of a counter (cumulative) as oteltap printed it."""
    value = None
    for metric in metrics:
        if metric["name"] == name:
            value = sum(int(p["asInt"]) for p in metric["sum"]["dataPoints"])
    return value


# ----------------------------------------------------------------------------------- http (oteltap)


def test_spec_examples_reach_the_collector(tap: OtelTap, tmp_path: Path) -> None:
    """The spec's events become a waterfall, correlated logs and FaaS metrics at the collector."""

    async def scenario() -> None:
        plugin = await started(environ(tap.port, tmp_path))
        await plugin.on_invoke(parse_invoke({"tracelId": INIT_ID, "invokedFunctionUrn": URN}, 0))
        events = invocation(INIT_ID, 0, init=True)
        await plugin.on_telemetry(parsed(events[:4]))  # split across two POSTs
        outside = {"name": "extension", "startTime": ts(500), "logs": "[Extension]ERROR outside"}
        await plugin.on_telemetry(parsed([*events[4:], outside]))
        await plugin.flush(3)  # what the pipeline does after a batch that ends an invocation
        spans = await tap.wait("spans", lambda s: len(s) >= 3)
        trace = INIT_ID.replace("-", "")
        by_name = {s["name"]: s for s in spans}
        assert set(by_name) == {"hello", "init", "invoke"}
        assert {s["traceId"] for s in spans} == {trace}
        assert by_name["hello"]["kind"] == 2 and attr(by_name["hello"], "faas.coldstart") is True
        assert by_name["init"]["parentSpanId"] == by_name["hello"]["spanId"]
        assert by_name["invoke"]["parentSpanId"] == by_name["hello"]["spanId"]
        logs = await tap.wait("logs", lambda items: len(items) >= 2)
        inside = next(item for item in logs if item["body"]["stringValue"].startswith("INFO line 0"))
        outside = next(item for item in logs if item["body"]["stringValue"] == "ERROR outside")
        assert inside["traceId"] == trace and inside["spanId"] == by_name["invoke"]["spanId"]
        assert attr(inside, "faas.invocation_id") == INIT_ID
        assert outside["traceId"] == "" and outside["severityNumber"] == 17
        assert attr(outside, "fgext.log.source") == "extension"
        # oteltap prints one metric per line: wait for both rather than read the second mid-request
        await tap.wait("metrics", lambda m: metric_value(m, "faas.invocations") == 1
                       and metric_value(m, "faas.coldstarts") == 1)
        await plugin.shutdown(3)

    asyncio.run(scenario())


def test_error_status_reaches_the_collector(tap: OtelTap, tmp_path: Path) -> None:
    """A failed invocation arrives with status ERROR and the platform's text, and counts as an error."""

    async def scenario() -> None:
        plugin = await started(environ(tap.port, tmp_path))
        await plugin.on_telemetry(parsed(invocation(INVOKE_ID, 0, status="timeout")))
        await plugin.flush(3)
        spans = await tap.wait("spans", lambda s: len(s) >= 2)
        root = roots(spans)[0]
        assert root["status"] == {"code": 2, "message": "timeout"}
        # both from one snapshot; waiting for both keeps the test from reading oteltap mid-print
        await tap.wait("metrics",
                       lambda m: metric_value(m, "faas.errors") == 1 and metric_value(m, "faas.timeouts") == 1)
        await plugin.shutdown(3)

    asyncio.run(scenario())


def test_collector_down_then_up_loses_nothing(tap_factory: Callable[[int], OtelTap], tmp_path: Path) -> None:
    """Exports during an outage are spooled and replayed by themselves once the collector answers."""
    port = free_port()

    async def scenario() -> None:
        plugin = await started(environ(port, tmp_path))
        ids = [f"0000000{i}-0000-4000-8000-000000000000" for i in range(3)]
        for index, rid in enumerate(ids):
            await plugin.on_telemetry(parsed(invocation(rid, index * 100, logs=3)))
        await plugin.flush(2)
        assert plugin.stats["spooled_requests"] >= 2  # traces and logs (metrics leave on their timer)
        assert plugin.stats["failed_attempts"] >= 1
        collector = tap_factory(port)
        collector.start()
        # No flush call: the sender's own backoff (capped at 30 s) finds the collector again.
        spans = await collector.wait("spans", lambda s: len(roots(s)) >= 3, timeout=45)
        assert sorted(attr(s, "faas.invocation_id") for s in roots(spans)) == sorted(ids)
        logs = await collector.wait("logs", lambda items: len(items) >= 12)
        await plugin.flush(5)  # whatever is still in flight finishes before the spool is checked
        assert len(collector.items("logs")) == len(logs) == 12  # 3 lines and 1 report record each
        assert plugin.stats["spooled_requests"] == 0 and plugin.stats["dropped_items"] == 0
        assert os.listdir(tmp_path) == []
        await plugin.shutdown(3)

    asyncio.run(scenario())


def test_spool_bound_drops_oldest_counted_and_reported(tap_factory: Callable[[int], OtelTap],
                                                      tmp_path: Path) -> None:
    """Past FGEXT_SPOOL_MAX_BYTES the oldest data is dropped, counted, and the count is exported."""
    port = free_port()

    async def scenario() -> None:
        env = environ(port, tmp_path, FGEXT_SPOOL_MAX_BYTES="6000", OTEL_TRACES_EXPORTER="none")
        plugin = await started(env)
        for index in range(8):
            await plugin.on_telemetry(parsed(invocation(f"req-{index}", index * 100, logs=10)))
            await plugin.flush(1)
        dropped = plugin.stats["dropped_items"]
        assert dropped > 0
        assert plugin.stats["spooled_bytes"] <= 6000
        collector = tap_factory(port)
        collector.start()
        await plugin.flush(5)
        # Making room for the very snapshot that carries the count may drop more; the next one says so.
        await plugin.on_telemetry(parsed(invocation("req-last", 5000, logs=0)))
        await plugin.flush(5)
        total = plugin.stats["dropped_items"]
        assert total >= dropped
        await collector.wait("metrics", lambda m: metric_value(m, "fgext.agent.dropped") == total)
        await plugin.shutdown(3)

    asyncio.run(scenario())


def test_restarted_agent_sends_what_the_last_one_spooled(tap_factory: Callable[[int], OtelTap],
                                                       tmp_path: Path) -> None:
    """Data spooled by a plugin that shut down during an outage is sent by the next one on start."""
    port = free_port()

    async def first_life() -> None:
        plugin = await started(environ(port, tmp_path))
        await plugin.on_telemetry(parsed(invocation(INVOKE_ID, 0, logs=2)))
        never_ends = {"name": "platform.start", "startTime": ts(500), "traceId": "open"}
        await plugin.on_telemetry(parsed([never_ends]))
        await plugin.shutdown(1)

    asyncio.run(first_life())
    assert any(name.endswith(".pb") for name in os.listdir(tmp_path))
    collector = tap_factory(port)
    collector.start()

    async def second_life() -> None:
        plugin = await started(environ(port, tmp_path))
        spans = await collector.wait("spans", lambda s: len(roots(s)) >= 2)
        ids = {attr(s, "faas.invocation_id"): s for s in roots(spans)}
        assert set(ids) == {INVOKE_ID, "open"}
        assert attr(ids["open"], "fgext.close_reason") == "shutdown"
        await collector.wait("logs", lambda items: len(items) >= 2)
        await plugin.shutdown(3)

    asyncio.run(second_life())
    assert [name for name in os.listdir(tmp_path) if name.endswith(".pb")] == []


def test_on_telemetry_only_consumes_and_flush_exports(tap: OtelTap, tmp_path: Path) -> None:
    """The plugin never decides when to export: a complete invocation waits for ``flush``, which sends it."""

    async def scenario() -> None:
        plugin = await started(environ(tap.port, tmp_path))
        await plugin.on_telemetry(parsed(invocation(INVOKE_ID, 0, logs=2)))
        await asyncio.sleep(0.5)
        assert tap.items("spans") == [] and tap.items("logs") == []
        await plugin.flush(3)
        await tap.wait("spans", lambda s: len(s) >= 2, timeout=5)
        await tap.wait("logs", lambda items: len(items) >= 2, timeout=5)
        assert plugin.stats["early_exports"] == 0
        await plugin.shutdown(3)

    asyncio.run(scenario())


def test_declared_inline_its_invoke_and_telemetry_hooks_end_without_suspending(tap: OtelTap,
                                                                               tmp_path: Path) -> None:
    """The sink declares ``inline``, and with the collector keeping up its on_invoke and on_telemetry end at
    their first step (so the pipeline runs them in the listener's task, with no task of their own)."""
    assert OtlpPlugin.inline

    async def scenario() -> None:
        plugin = await started(environ(tap.port, tmp_path))
        objects = invocation(INVOKE_ID, 0, logs=2)
        invoke = parse_invoke({"traceId": INVOKE_ID, "invokedFunctionUrn": URN}, 0)
        for coro in (plugin.on_invoke(invoke), plugin.on_telemetry(parsed(objects))):
            with pytest.raises(StopIteration):
                coro.send(None)
        await plugin.flush(3)
        await tap.wait("spans", lambda s: len(s) >= 2, timeout=5)
        await plugin.shutdown(3)

    asyncio.run(scenario())


def test_pending_bytes_budget_is_the_one_early_export(tap: OtelTap, tmp_path: Path) -> None:
    """Pending data reaching FGEXT_OTLP_MAX_PENDING_BYTES is exported without a flush (and counted), so a
    long invocation printing without end keeps memory bounded."""

    async def scenario() -> None:
        env = environ(tap.port, tmp_path, FGEXT_OTLP_MAX_REQUEST_BYTES="65536",
                      FGEXT_OTLP_MAX_PENDING_BYTES="65536")
        plugin = await started(env)
        lines = [{"name": "function", "startTime": ts(i), "logs": "[Function]" + "x" * 1000} for i in range(100)]
        await plugin.on_telemetry(parsed(lines))
        assert plugin.stats["early_exports"] == 1
        assert plugin.stats["pending_bytes"] == 0
        await tap.wait("logs", lambda items: len(items) >= 100, timeout=10)
        await plugin.shutdown(3)

    asyncio.run(scenario())


def test_data_leaves_pending_only_once_encoded(tap: OtelTap, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """An encode that fails leaves every span and line pending (take-after-encode): the next flush
    sends them all."""
    from fgext.otlp import _plugin as plugin_module

    real = plugin_module.encode_logs_requests
    calls = []

    def fails_once(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("encoder failed")
        return real(*args, **kwargs)

    monkeypatch.setattr(plugin_module, "encode_logs_requests", fails_once)

    async def scenario() -> None:
        plugin = await started(environ(tap.port, tmp_path))
        await plugin.on_telemetry(parsed(invocation(INVOKE_ID, 0, logs=3)))
        with pytest.raises(RuntimeError):
            await plugin.flush(3)
        assert plugin.stats["pending_logs"] == 3
        await plugin.flush(3)
        await tap.wait("spans", lambda s: len(s) >= 2, timeout=5)
        await tap.wait("logs", lambda items: len(items) >= 4, timeout=5)
        assert len(tap.items("spans")) == 2 and len(tap.items("logs")) == 4  # 3 lines and the report record
        await plugin.shutdown(3)

    asyncio.run(scenario())


def test_an_event_the_assembler_rejects_is_counted_as_dropped(tap: OtelTap, tmp_path: Path) -> None:
    """An event that cannot be assembled is dropped alone and reported in fgext.agent.dropped
    (fgext.signal=events, fgext.reason=malformed); the rest of the batch is exported."""

    async def scenario() -> None:
        plugin = await started(environ(tap.port, tmp_path))
        bad = parsed(invocation("bad", 0)[:1])[0]
        object.__setattr__(bad, "request_id", ["unhashable"])  # what no parser produces
        await plugin.on_telemetry([bad, *parsed(invocation(INVOKE_ID, 100))])
        await plugin.flush(3)
        await tap.wait("spans", lambda s: len(s) >= 2)
        metrics = await tap.wait("metrics", lambda m: metric_value(m, "fgext.agent.dropped") == 1)
        point = next(m for m in metrics if m["name"] == "fgext.agent.dropped")["sum"]["dataPoints"][0]
        assert {kv["key"]: kv["value"]["stringValue"] for kv in point["attributes"]} == {
            "fgext.signal": "events", "fgext.reason": "malformed"}
        assert plugin.stats["rejected_events"] == 1
        await plugin.shutdown(3)

    asyncio.run(scenario())


def test_an_unencodable_record_is_counted_and_its_neighbours_sent(tap: OtelTap, tmp_path: Path) -> None:
    """A pending record the encoder cannot carry (a negative time, which no parser lets through) is dropped
    alone, reported as fgext.agent.dropped{logs, unencodable}; the other lines arrive."""

    async def scenario() -> None:
        plugin = await started(environ(tap.port, tmp_path))
        await plugin.on_telemetry(parsed(invocation(INVOKE_ID, 0, logs=3)))
        assert plugin._assembler is not None
        plugin._assembler.lines.insert(1, (-1, 0, "function", "impossible", None, 0))
        await plugin.flush(3)
        await tap.wait("logs", lambda items: len(items) >= 3)
        metrics = await tap.wait("metrics", lambda m: metric_value(m, "fgext.agent.dropped") == 1)
        point = next(m for m in metrics if m["name"] == "fgext.agent.dropped")["sum"]["dataPoints"][0]
        assert {kv["key"]: kv["value"]["stringValue"] for kv in point["attributes"]} == {
            "fgext.signal": "logs", "fgext.reason": "unencodable"}
        assert "impossible" not in [item["body"]["stringValue"] for item in tap.items("logs")]
        await plugin.shutdown(3)

    asyncio.run(scenario())


def test_unfinished_invocation_closes_after_the_bounded_wait(tap: OtelTap, tmp_path: Path) -> None:
    """A start whose end never comes is closed, marked incomplete, after RUNTIME_TIMEOUT plus the margin,
    and leaves with the next flush."""

    async def scenario() -> None:
        env = environ(tap.port, tmp_path, RUNTIME_TIMEOUT="0.3", FGEXT_OTLP_CLOSE_MARGIN_MS="200")
        plugin = await started(env)
        await plugin.on_telemetry(parsed(invocation(INVOKE_ID, 0)[:2]))
        deadline = time.monotonic() + 5
        while plugin.stats["closed_incomplete"] == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert tap.items("spans") == [], "closing is not exporting: the spans wait for the next flush"
        await plugin.flush(3)
        spans = await tap.wait("spans", lambda s: len(roots(s)) >= 1, timeout=5)
        assert attr(roots(spans)[0], "fgext.close_reason") == "timeout"
        await plugin.shutdown(3)

    asyncio.run(scenario())


def test_shutdown_exports_what_is_open(tap: OtelTap, tmp_path: Path) -> None:
    """Shutdown closes open invocations (marked incomplete) and exports everything within its deadline."""

    async def scenario() -> None:
        plugin = await started(environ(tap.port, tmp_path))
        await plugin.on_telemetry(parsed(invocation(INVOKE_ID, 0, logs=2)[:3]))
        await plugin.shutdown(5)
        spans = await tap.wait("spans", lambda s: len(s) >= 2, timeout=5)
        assert attr(roots(spans)[0], "fgext.incomplete") is True
        await tap.wait("logs", lambda items: len(items) >= 2, timeout=5)

    asyncio.run(scenario())


# --------------------------------------------------------------------- failure answers (aiohttp)


class Recorder:
    """An OTLP/HTTP endpoint that answers from a script, to test what oteltap cannot answer."""

    def __init__(self, answers: List[Tuple[int, Dict[str, str]]], body: bytes = b"", delay: float = 0.0) -> None:
        self.answers = answers
        self.body = body
        self.delay = delay  # seconds before each answer: a slow collector
        self.requests: List[Tuple[float, str, Dict[str, str], bytes]] = []
        self.port = 0
        self._runner: Any = None

    async def __aenter__(self) -> Recorder:
        from aiohttp import web

        async def handle(request: web.Request) -> web.Response:
            body = await request.read()  # aiohttp undoes Content-Encoding: gzip itself
            if body[:2] == b"\x1f\x8b":
                body = gzip.decompress(body)
            self.requests.append((time.monotonic(), request.path, dict(request.headers), body))
            status, headers = self.answers.pop(0) if self.answers else (200, {})
            if self.delay:
                await asyncio.sleep(self.delay)
            return web.Response(status=status, headers=headers, body=self.body)

        app = web.Application()
        app.router.add_post("/{tail:.*}", handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._runner.cleanup()


def test_retry_after_is_honoured_and_gzip_and_headers_are_sent(tmp_path: Path) -> None:
    """A 503 with Retry-After delays the retry at least that long; bodies are gzip, headers as configured."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    async def scenario() -> None:
        async with Recorder([(503, {"Retry-After": "1"})]) as server:
            env = environ(server.port, tmp_path, OTEL_EXPORTER_OTLP_COMPRESSION="gzip",
                          OTEL_EXPORTER_OTLP_HEADERS="x-api-key=secret", OTEL_LOGS_EXPORTER="none",
                          OTEL_METRICS_EXPORTER="none")
            plugin = await started(env)
            await plugin.on_telemetry(parsed(invocation(INVOKE_ID, 0)))
            await plugin.flush(0.5)  # refused, and a flush must not retry before Retry-After
            assert len(server.requests) == 1
            deadline = time.monotonic() + 10
            while len(server.requests) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert len(server.requests) == 2
            first, second = server.requests
            assert second[0] - first[0] >= 1.0
            assert second[1] == "/v1/traces"
            assert second[2]["x-api-key"] == "secret"
            assert second[2]["Content-Type"] == "application/x-protobuf"
            assert second[2]["Content-Encoding"] == "gzip"
            request = ExportTraceServiceRequest.FromString(second[3])
            assert len(request.resource_spans[0].scope_spans[0].spans) == 2
            await plugin.shutdown(2)

    asyncio.run(scenario())


def test_a_flush_that_fails_midway_still_sends_what_it_handed_over(tmp_path: Path) -> None:
    """A flush whose export fails after the traces were handed to the shipper (here the function's own
    telemetry cannot be encoded) raises, and those traces still leave, without another flush."""

    async def scenario() -> None:
        async with Recorder([(200, {})]) as server:
            env = environ(server.port, tmp_path, OTEL_LOGS_EXPORTER="none", OTEL_METRICS_EXPORTER="none")
            plugin = await started(env)
            await plugin.on_telemetry(parsed(invocation(INVOKE_ID, 0)))

            def broken(*args: Any) -> Any:
                raise RuntimeError("cannot encode")

            plugin._foreign.pending_items = lambda signal: 1  # type: ignore[method-assign]
            plugin._foreign.encode = broken  # type: ignore[method-assign]
            with pytest.raises(RuntimeError):
                await plugin.flush(2)
            deadline = time.monotonic() + 10
            while not server.requests and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert [request[1] for request in server.requests] == ["/v1/traces"]
            del plugin._foreign.pending_items, plugin._foreign.encode
            await plugin.shutdown(2)

    asyncio.run(scenario())


def test_permanent_rejection_is_counted_not_retried(tmp_path: Path) -> None:
    """A 400 is not retried: the request is dropped, counted and reported."""

    async def scenario() -> None:
        async with Recorder([(400, {})]) as server:
            env = environ(server.port, tmp_path, OTEL_LOGS_EXPORTER="none", OTEL_METRICS_EXPORTER="none")
            plugin = await started(env)
            await plugin.on_telemetry(parsed(invocation(INVOKE_ID, 0)))
            await plugin.flush(2)
            assert plugin.stats["dropped_items"] == 2
            assert plugin.stats["spooled_requests"] == 0
            await asyncio.sleep(0.6)
            assert len(server.requests) == 1
            await plugin.shutdown(2)

    asyncio.run(scenario())


def test_partial_success_is_counted_as_dropped(tmp_path: Path) -> None:
    """A 200 whose OTLP body says some spans were rejected counts those spans as dropped, with the reason."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTracePartialSuccess,
        ExportTraceServiceResponse,
    )

    answer = ExportTraceServiceResponse(
        partial_success=ExportTracePartialSuccess(rejected_spans=1, error_message="span too old"))

    async def scenario() -> None:
        async with Recorder([], body=answer.SerializeToString()) as server:
            env = environ(server.port, tmp_path, OTEL_LOGS_EXPORTER="none", OTEL_METRICS_EXPORTER="none")
            plugin = await started(env)
            await plugin.on_telemetry(parsed(invocation(INVOKE_ID, 0)))
            await plugin.flush(2)
            assert plugin.stats["dropped_items"] == 1
            assert plugin.stats["spooled_requests"] == 0 and len(server.requests) == 1
            await plugin.shutdown(2)

    asyncio.run(scenario())


def trace_requests(server: Recorder) -> List[List[str]]:
    """The request IDs (``faas.invocation_id`` of the roots) in each trace request the server received."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    out = []
    for _, path, _, body in server.requests:
        if path == "/v1/traces":
            spans = [span for rs in ExportTraceServiceRequest.FromString(body).resource_spans
                     for ss in rs.scope_spans for span in ss.spans]  # coalesced requests hold several
            out.append([kv.value.string_value for span in spans for kv in span.attributes
                        if kv.key == "faas.invocation_id" and not span.parent_span_id])
    return out


def test_a_slow_collector_holds_the_caller_instead_of_spooling(tmp_path: Path) -> None:
    """While the collector is up but slower than the input, the in-memory queue stays under its bound:
    ``on_telemetry`` waits for the sender (backpressure) rather than spilling to the spool and dropping."""
    from fgext.otlp import _plugin as plugin_module

    async def scenario() -> None:
        async with Recorder([], delay=0.05) as server:
            # (no write-ahead copies within this test: it is about memory and backpressure, not the spool)
            plugin = await started(environ(server.port, tmp_path, OTEL_METRICS_EXPORTER="none",
                                           FGEXT_OTLP_SPOOL_AFTER_MS="600000"))
            assert plugin._shipper is not None
            bound = plugin._shipper._max_queue_bytes = 64 * 1024  # ~12 invocations of 30 lines each
            held = 0
            for index in range(40):
                rid = f"00000000-0000-4000-8000-{index:012d}"
                started_at = time.monotonic()
                await plugin.on_telemetry(parsed(invocation(rid, index * 20, logs=30)))
                held += time.monotonic() - started_at > 0.02
                plugin._export_pending()  # as a flush that does not wait would
                assert plugin._shipper._queue_bytes <= bound
            assert held > 0, "the caller was never held back"
            assert await plugin._shipper.flush(20)
            assert sum(len(ids) for ids in trace_requests(server)) == 40
            assert plugin.stats["spooled_total"] == 0 and plugin.stats["dropped_items"] == 0
            await plugin.shutdown(2)

    assert plugin_module._BACKPRESSURE_WAIT_S >= 5
    asyncio.run(scenario())


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    """Retry-After is read as seconds or as an HTTP date; anything else is ignored."""
    from datetime import datetime, timedelta, timezone
    from email.utils import format_datetime

    from fgext._retry import retry_after as _retry_after

    assert _retry_after("3") == 3.0
    later = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    value = _retry_after(later)
    assert value is not None and 25 <= value <= 31
    assert _retry_after("soon") is None and _retry_after(None) is None


def test_metrics_leave_at_shutdown_not_with_a_flush(tmp_path: Path) -> None:
    """A flush sends spans and logs but no metrics; shutdown sends the metrics' one snapshot."""

    async def scenario() -> None:
        async with Recorder([]) as server:
            plugin = await started(environ(server.port, tmp_path, FGEXT_OTLP_METRICS_INTERVAL_MS="600000"))
            for index in range(3):
                await plugin.on_telemetry(parsed(invocation(f"req-{index}", index * 100, logs=1)))
                await plugin.flush(3)
            assert "/v1/metrics" not in [path for _, path, _, _ in server.requests]
            assert sorted({path for _, path, _, _ in server.requests}) == ["/v1/logs", "/v1/traces"]
            await plugin.shutdown(3)
            assert [path for _, path, _, _ in server.requests].count("/v1/metrics") == 1

    asyncio.run(scenario())


def test_metrics_leave_on_their_timer_without_a_flush(tap: OtelTap, tmp_path: Path) -> None:
    """FGEXT_OTLP_METRICS_INTERVAL_MS: the metrics are exported by their own timer, with no flush at all,
    cumulative across exports; the spans still wait for a flush."""

    async def scenario() -> None:
        plugin = await started(environ(tap.port, tmp_path, FGEXT_OTLP_METRICS_INTERVAL_MS="150"))
        await plugin.on_telemetry(parsed(invocation("req-0", 0)))
        await tap.wait("metrics", lambda m: metric_value(m, "faas.invocations") == 1, timeout=10)
        await plugin.on_telemetry(parsed(invocation("req-1", 500)))
        await tap.wait("metrics", lambda m: metric_value(m, "faas.invocations") == 2, timeout=10)
        assert tap.items("spans") == [], "the timer exports metrics only; spans wait for the pipeline's flush"
        await plugin.shutdown(3)

    asyncio.run(scenario())


def test_switched_off_signal_is_not_sent(tmp_path: Path) -> None:
    """OTEL_LOGS_EXPORTER=none keeps logs local; traces and metrics still go out."""

    async def scenario() -> None:
        async with Recorder([]) as server:
            plugin = await started(environ(server.port, tmp_path, OTEL_LOGS_EXPORTER="none"))
            await plugin.on_telemetry(parsed(invocation(INVOKE_ID, 0, logs=3)))
            await plugin.flush(3)
            await plugin.shutdown(2)
            assert sorted({path for _, path, _, _ in server.requests}) == ["/v1/metrics", "/v1/traces"]

    asyncio.run(scenario())


def test_sdk_disabled_starts_nothing(tmp_path: Path) -> None:
    """OTEL_SDK_DISABLED=true makes the plugin a no-op: no spool, no sender, hooks accept events."""

    async def scenario() -> None:
        plugin = await started(environ(1, tmp_path / "spool", OTEL_SDK_DISABLED="true"))
        assert plugin.disabled
        await plugin.on_telemetry(parsed(invocation(INVOKE_ID, 0)))
        await plugin.flush(1)
        await plugin.shutdown(1)
        assert not (tmp_path / "spool").exists()

    asyncio.run(scenario())


# ------------------------------------------------------------------------------------------- grpc


class GrpcCollector:
    """grpcio's aio server with opentelemetry-proto's three collector services, on 127.0.0.1."""

    def __init__(self) -> None:
        self.requests: Dict[str, List[Any]] = {"traces": [], "logs": [], "metrics": []}
        self.port = 0
        self.server: Any = None
        self.fail_first = 0

    async def __aenter__(self) -> GrpcCollector:
        import grpc
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

        collector = self

        async def record(signal: str, request: Any, context: Any, response: Any) -> Any:
            if collector.fail_first > 0:
                collector.fail_first -= 1
                await context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
            collector.requests[signal].append((request, dict(context.invocation_metadata())))
            return response

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            async def Export(self, request: Any, context: Any) -> Any:
                answer = trace_service_pb2.ExportTraceServiceResponse()
                return await record("traces", request, context, answer)

        class Logs(logs_service_pb2_grpc.LogsServiceServicer):
            async def Export(self, request: Any, context: Any) -> Any:
                return await record("logs", request, context, logs_service_pb2.ExportLogsServiceResponse())

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            async def Export(self, request: Any, context: Any) -> Any:
                answer = metrics_service_pb2.ExportMetricsServiceResponse()
                return await record("metrics", request, context, answer)

        self.server = grpc.aio.server()
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), self.server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), self.server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.server.stop(grace=None)


def test_grpc_export_with_gzip_headers_and_resource(tmp_path: Path) -> None:
    """Over gRPC (gzip, metadata) the collector gets spans, logs and metrics with the full resource."""
    pytest.importorskip("grpc", reason="the grpc extra (grpcio) is not installed in this environment")

    async def scenario() -> None:
        async with GrpcCollector() as collector:
            collector.fail_first = 1  # the first call is refused as UNAVAILABLE: retried, not lost
            env = environ(0, tmp_path, OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
                          OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{collector.port}",
                          OTEL_EXPORTER_OTLP_COMPRESSION="gzip", OTEL_EXPORTER_OTLP_HEADERS="x-tenant=t1",
                          OTEL_RESOURCE_ATTRIBUTES="deployment.environment=test")
            plugin = await started(env)
            await plugin.on_invoke(parse_invoke({"traceId": INVOKE_ID, "invokedFunctionUrn": URN}, 0))
            await plugin.on_telemetry(parsed(invocation(INVOKE_ID, 0, logs=2)))
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not all(collector.requests.values()):
                await plugin.flush(2)
                await asyncio.sleep(0.2)
            (trace_request, metadata), = collector.requests["traces"]
            assert metadata["x-tenant"] == "t1"
            resource = {kv.key: kv.value for kv in trace_request.resource_spans[0].resource.attributes}
            assert resource["service.name"].string_value == "hello"
            assert resource["cloud.region"].string_value == "yrk"
            assert resource["huawei_cloud.project.id"].string_value == "1111"
            assert resource["faas.instance"].string_value == POD
            assert resource["faas.max_memory"].int_value == 128 * 1024 * 1024
            assert resource["deployment.environment"].string_value == "test"
            spans = trace_request.resource_spans[0].scope_spans[0].spans
            assert {s.name for s in spans} == {"hello", "invoke"}
            assert all(s.trace_id.hex() == INVOKE_ID.replace("-", "") for s in spans)
            log_request, _ = collector.requests["logs"][0]
            assert len(log_request.resource_logs[0].scope_logs[0].log_records) == 3  # 2 lines and the report
            await plugin.shutdown(3)

    asyncio.run(scenario())


# ---------------------------------------------------------------------------------- public surface


def test_public_surface_and_discovery() -> None:
    """fgext.otlp exports exactly OtlpPlugin, and the agent finds it under the name ``otlp``."""
    import fgext.otlp
    from fgext._discovery import load_plugin

    assert fgext.otlp.__all__ == ["OtlpPlugin"]
    plugin = load_plugin("otlp")
    assert isinstance(plugin, OtlpPlugin) and plugin.role == "sink" and plugin.name == "otlp"


def test_a_flush_waits_for_the_collector_only_until_the_request_is_on_disk(tmp_path: Path) -> None:
    """With a collector slower than FGEXT_OTLP_SPOOL_AFTER_MS, a flush returns once the unanswered requests are
    written ahead (long before its own timeout and the answer), and the answer, when it comes, clears them."""

    async def scenario() -> None:
        async with Recorder([], delay=3.0) as server:
            spool = tmp_path / "spool"
            plugin = await started(environ(server.port, spool, OTEL_EXPORTER_OTLP_TIMEOUT="10000",
                                           FGEXT_OTLP_SPOOL_AFTER_MS="100"))
            await plugin.on_telemetry(parsed(invocation("00000000-0000-4000-8000-000000000001", 0)))
            await plugin.flush(60)
            # returned while the collector still holds every answer: what it was sent is on disk
            assert server.requests and len(server.requests) <= 3
            assert list(spool.rglob("*.pb")), "the flush returned before the data was safe"
            assert plugin._shipper is not None
            assert await plugin._shipper.flush(20)  # the answers come: the written-ahead files go
            assert not list(spool.rglob("*.pb"))
            await plugin.shutdown(2)

    asyncio.run(scenario())

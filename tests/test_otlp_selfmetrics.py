"""The agent's self-metrics (fgext.otlp._selfmetrics): read from their owners, exported with the FaaS metrics."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from fgext.otlp._selfmetrics import SELF_METRICS, SelfMetrics, process_readings
from tests.agentproc import AgentProcess, ready
from tests.platform import RecordingPlatform
from tests.test_otlp_plugin import INIT_ID, INVOKE_ID, OtelTap, free_port, invocation

Start = Callable[..., AgentProcess]


# ------------------------------------------------------------------------------------------------- units


def _value(metric: Any, attrs: Tuple[Tuple[str, str], ...] = ()) -> float:
    points = metric.sum.data_points if metric.WhichOneof("data") == "sum" else metric.gauge.data_points
    for point in points:
        found = tuple(sorted((a.key, a.value.string_value) for a in point.attributes))
        if found == tuple(sorted(attrs)):
            return point.as_int if point.WhichOneof("value") == "as_int" else point.as_double
    raise AssertionError(f"no point {attrs} in {metric.name}")


def test_counters_are_cumulative_by_default_and_differences_with_delta() -> None:
    """Cumulative counters carry the owner's total; delta ones the change since the last snapshot taken;
    gauges are the value now either way."""
    readings: Dict[str, Dict[Any, Any]] = {"fgext.agent.events.malformed": {(): 3},
                                           "fgext.agent.spool.size": {(): 100}}
    cumulative = SelfMetrics(lambda: readings, delta=False, start_ns=1)
    delta = SelfMetrics(lambda: readings, delta=True, start_ns=1)
    for metrics in (cumulative, delta):
        metrics.metrics(10)
        metrics.taken(10)
    readings["fgext.agent.events.malformed"] = {(): 5}
    readings["fgext.agent.spool.size"] = {(): 40}
    by_name = {m.name: m for m in cumulative.metrics(20)}
    assert _value(by_name["fgext.agent.events.malformed"]) == 5
    assert by_name["fgext.agent.events.malformed"].sum.aggregation_temporality == 2  # cumulative
    assert _value(by_name["fgext.agent.spool.size"]) == 40
    by_name = {m.name: m for m in delta.metrics(20)}
    assert _value(by_name["fgext.agent.events.malformed"]) == 2
    assert by_name["fgext.agent.events.malformed"].sum.aggregation_temporality == 1  # delta
    assert by_name["fgext.agent.events.malformed"].sum.data_points[0].start_time_unix_nano == 10
    assert _value(by_name["fgext.agent.spool.size"]) == 40


def test_self_metrics_ride_in_the_faas_snapshot_with_its_temporality() -> None:
    """Attached to Metrics, the self-metrics are part of each snapshot, make it due when an event was
    counted, and follow OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE through Metrics.taken."""
    from fgext.otlp._metrics import Metrics

    readings: Dict[str, Dict[Any, Any]] = {"fgext.agent.events.malformed": {(): 2}}
    metrics = Metrics("delta", 1)
    metrics.agent = SelfMetrics(lambda: readings, delta=metrics.delta, start_ns=1)
    assert metrics.dirty  # nothing recorded by the FaaS side, but two malformed events were counted
    first = {m.name: m for m in metrics.snapshot(10)}
    assert _value(first["fgext.agent.events.malformed"]) == 2 and "faas.invocations" in first
    metrics.taken(10)
    assert not metrics.dirty
    readings["fgext.agent.events.malformed"] = {(): 3}
    assert metrics.dirty
    second = {m.name: m for m in metrics.snapshot(20)}
    assert _value(second["fgext.agent.events.malformed"]) == 1


def test_only_events_and_losses_make_a_snapshot_due() -> None:
    """A new event or drop makes the self-metrics changed; the export's own counters and CPU do not
    (each export would otherwise call for another)."""
    readings: Dict[str, Dict[Any, Any]] = {"fgext.agent.export.requests": {(): 1}}
    metrics = SelfMetrics(lambda: readings, delta=False, start_ns=1)
    metrics.metrics(5)
    metrics.taken(5)
    readings["fgext.agent.export.requests"] = {(): 2}
    readings["fgext.agent.cpu.time"] = {(("cpu.mode", "user"),): 1.5}
    assert not metrics.changed()
    readings["fgext.agent.dropped"] = {(("fgext.reason", "rejected"), ("fgext.signal", "traces")): 2}
    assert metrics.changed()


def test_process_readings_cpu_always_rss_only_where_proc_has_it(tmp_path: Path) -> None:
    """CPU time comes from os.times; RSS from /proc/self/statm, and is left out where that file is missing."""
    readings = process_readings()
    assert set(readings["fgext.agent.cpu.time"]) == {(("cpu.mode", "user"),), (("cpu.mode", "system"),)}
    if Path("/proc/self/statm").exists():
        assert readings["fgext.agent.memory.usage"][()] > 1024 * 1024
    assert "fgext.agent.memory.usage" not in process_readings(str(tmp_path / "missing"))


def test_every_self_metric_is_documented_with_its_unit() -> None:
    """docs/otlp.md lists every self-metric with its unit."""
    docs = (Path(__file__).resolve().parent.parent / "docs" / "otlp.md").read_text()
    for name, (_, unit, _) in SELF_METRICS.items():
        assert f"| `{name}` |" in docs, name
        row = next(line for line in docs.splitlines() if line.startswith(f"| `{name}` |"))
        assert f"`{unit}`" in row, (name, unit)


# ------------------------------------------------------------------------------- the agent, end to end


class _Collector(ThreadingHTTPServer):
    """OTLP/HTTP answers oteltap cannot give: every trace export refused for good (400), the first logs
    export refused for now (503), so it is spooled, then retried and accepted."""

    daemon_threads = True

    def __init__(self) -> None:
        self.paths: List[Tuple[str, int]] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Answer)


class _Answer(BaseHTTPRequestHandler):
    server: _Collector

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with self.server.lock:
            logs_before = sum(1 for path, _ in self.server.paths if path == "/v1/logs")
            status = 400 if self.path == "/v1/traces" else (503 if logs_before == 0 else 200)
            self.server.paths.append((self.path, status))
        self.send_response(status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[_Collector]:
    server = _Collector()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _points(metrics: List[Dict[str, Any]], name: str) -> Dict[Tuple[Tuple[str, str], ...], float]:
    """The latest points of ``name`` as oteltap printed them, by their attributes."""
    out: Dict[Tuple[Tuple[str, str], ...], float] = {}
    for metric in metrics:
        if metric["name"] != name:
            continue
        data = metric.get("sum") or metric.get("gauge") or {}
        for point in data.get("dataPoints", []):
            attrs = tuple(sorted((a["key"], str(a["value"].get("stringValue", "")))
                                 for a in point.get("attributes", [])))
            out[attrs] = float(point.get("asInt", point.get("asDouble", 0)))
    return out


@pytest.mark.agent
@pytest.mark.usefixtures("port_range_lock")
def test_self_metrics_after_malformed_events_a_rejection_and_a_spool(
        platform: RecordingPlatform, agents: Start, tap_factory: Callable[[int], OtelTap],
        collector: _Collector, tmp_path: Path) -> None:
    """After malformed events, a rejected trace export and a spooled logs export, the collector's
    fgext.agent.* metrics count each of them, and the stopped line says the same by signal."""
    tap = tap_factory(free_port())
    tap.start()
    base = f"http://127.0.0.1:{collector.server_address[1]}"
    agent = agents({
        "EXTENSION_API_ADDR": platform.addr, "FGEXT_SPOOL_DIR": str(tmp_path / "spool"), "RUNTIME_TIMEOUT": "3",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{base}/v1/traces",
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": f"{base}/v1/logs",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": f"http://127.0.0.1:{tap.port}/v1/metrics",
        "FGEXT_OTLP_METRICS_INTERVAL_MS": "200",  # metrics leave on their timer, not with each flush
    })
    port = ready(agent)
    malformed = [{"name": "platform.start"}, {"startTime": "2023-02-01T00:03:50.000Z"}, "not an event"]
    status, answer = agent.post(port, "/", json.dumps(invocation(INIT_ID, 0, init=True, logs=2) + malformed).encode())
    assert status == 200 and answer["malformed"] == 3, answer

    def wait_for(predicate: Callable[[], bool], what: str) -> None:
        for _ in range(300):
            if predicate():
                return
            threading.Event().wait(0.05)
        raise AssertionError(f"timed out waiting for {what}: {collector.paths}")

    # The logs export is refused once (spooled), then sent on retry; only then is the queue free again.
    wait_for(lambda: ("/v1/logs", 200) in collector.paths, "the logs export to be retried")
    status, answer = agent.post(port, "/", json.dumps(invocation(INVOKE_ID, 100, logs=1)).encode())
    assert status == 200, answer

    def counted(metrics: List[Dict[str, Any]]) -> bool:
        requests = _points(metrics, "fgext.agent.export.requests")
        lines = _points(metrics, "fgext.agent.events.received").get((("fgext.event.kind", "function"),), 0)
        # a snapshot the timer took after both POSTs were consumed and the refused logs export was retried
        refused = _points(metrics, "fgext.agent.dropped").get(
            (("fgext.reason", "rejected"), ("fgext.signal", "traces")), 0)
        return requests.get((("fgext.outcome", "retry"), ("fgext.signal", "logs")), 0) >= 1 and lines >= 3 \
            and refused >= 5
    metrics = asyncio.run(tap.wait("metrics", counted, 20))
    received = _points(metrics, "fgext.agent.events.received")
    assert received[(("fgext.event.kind", "platform.report"),)] >= 1
    assert received[(("fgext.event.kind", "function"),)] == 3  # two lines, then one
    assert _points(metrics, "fgext.agent.events.malformed")[()] == 3
    dropped = _points(metrics, "fgext.agent.dropped")
    # every traces export is refused: root, init and invoke of the first invocation, root and invoke of the second
    assert dropped[(("fgext.reason", "rejected"), ("fgext.signal", "traces"))] == 5
    requests = _points(metrics, "fgext.agent.export.requests")
    assert requests[(("fgext.outcome", "rejected"), ("fgext.signal", "traces"))] in (1, 2)  # 2 unless coalesced
    # one success per logs request sent so far: the retried one, then the second invocation's by the time
    # the timer takes its snapshot
    assert requests[(("fgext.outcome", "success"), ("fgext.signal", "logs"))] >= 1
    assert _points(metrics, "fgext.agent.spool.added")[()] >= 1
    assert _points(metrics, "fgext.agent.export.sent")[(("fgext.signal", "logs"),)] > 0
    assert _points(metrics, "fgext.agent.spool.files")[()] == 0  # the spooled request was sent since
    assert _points(metrics, "fgext.agent.queue.depth")[(("fgext.plugin", "otlp"),)] >= 0
    assert _points(metrics, "fgext.agent.plugin.disabled") == {(("fgext.plugin", "otlp"),): 0}
    assert sum(_points(metrics, "fgext.agent.cpu.time").values()) > 0
    assert agent.stop() == 0
    stopped = next(line for line in agent.logs() if line.get("event") == "stopped")
    assert stopped["events_malformed"] == 3
    assert stopped["events_by_kind"]["function"] == 3 and stopped["events_by_kind"]["platform.report"] == 2
    otlp: Optional[Dict[str, Any]] = stopped.get("otlp")
    assert otlp is not None, stopped
    assert otlp["dropped"]["traces"]["rejected"] >= 3
    assert otlp["sent"]["logs"]["requests"] >= 1 and otlp["sent"]["logs"]["items"] >= 2
    assert otlp["spooled"] == {}

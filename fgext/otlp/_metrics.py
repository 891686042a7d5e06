"""FaaS metric aggregation: each written phase is counted and measured here, a snapshot per flush.

A step of the OTLP sink's path (listener handler -> parse -> pipeline -> chain -> lane ->
``OtlpPlugin.on_telemetry`` -> assembler -> flush: take -> encode -> shipper -> transport): the assembler
(``_traces``) records each phase it writes; at a flush the plugin takes a snapshot, the encoder
(``_requests``) serializes it, and only then is the snapshot committed (``Metrics.taken``), so a failed
encode loses no delta.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Dict, List, Optional, Sequence, Tuple

from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Metric, ScopeMetrics

from fgext._events import ReportMetrics
from fgext.otlp._ids import SECOND_NS, put_attributes
from fgext.otlp._selfmetrics import SelfMetrics

__all__ = ["DURATION_BOUNDS", "MEMORY_BOUNDS", "Metrics"]

_MB = 1024 * 1024

# Seconds buckets for durations (semconv's advice for request durations, stretched to FunctionGraph's
# 15-minute ceiling) and bytes buckets for memory (the platform's memory sizes).
DURATION_BOUNDS: Tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0, 60.0, 300.0,
    900.0,
)
MEMORY_BOUNDS: Tuple[float, ...] = tuple(
    float(mb * _MB) for mb in (16, 32, 64, 128, 256, 512, 768, 1024, 2048, 4096, 8192, 10240)
)


class _Histogram:
    __slots__ = ("bounds", "count", "counts", "max", "min", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.reset()

    def reset(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)
        self.count = 0
        self.sum = 0.0
        self.min = float("inf")
        self.max = float("-inf")

    def record(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # buckets are (previous bound, bound]
        self.count += 1
        self.sum += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value


_COUNTERS: Dict[str, Tuple[str, str]] = {
    "faas.invocations": ("{invocation}", "Number of successful and failed invocations"),
    "faas.errors": ("{error}", "Number of invocation errors (any status other than success)"),
    "faas.timeouts": ("{timeout}", "Number of invocation timeouts"),
    "faas.coldstarts": ("{coldstart}", "Number of invocation cold starts"),
}
_HISTOGRAMS: Dict[str, Tuple[str, str, Tuple[float, ...]]] = {
    "faas.invoke_duration": ("s", "Duration of the function's logic execution", DURATION_BOUNDS),
    "faas.init_duration": ("s", "Duration of the function's initialization (or restore)", DURATION_BOUNDS),
    "faas.mem_usage": ("By", "Distribution of max memory usage per invocation", MEMORY_BOUNDS),
    "fgext.faas.billed_duration": ("s", "Billed duration of each invocation", DURATION_BOUNDS),
}


class Metrics:
    """FaaS metrics aggregated in memory and exported as one snapshot per flush.

    Cumulative by default (like the SDK); ``delta`` (``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE``)
    resets after each snapshot taken. A snapshot is produced only when something was recorded since the last.
    """

    def __init__(self, temporality: str, start_ns: int) -> None:
        self.delta = temporality == "delta"
        self._start_ns = start_ns
        self._counters: Dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self._histograms = {name: _Histogram(spec[2]) for name, spec in _HISTOGRAMS.items()}
        self._dirty = False
        self._scope: Optional[ScopeMetrics] = None
        #: the agent's own metrics (``fgext.agent.*``), part of every snapshot once attached
        self.agent: Optional[SelfMetrics] = None

    def count(self, name: str, value: int = 1) -> None:
        self._counters[name] += value
        self._dirty = True

    def record(self, name: str, value: Optional[float]) -> None:
        if value is None or value != value or value < 0:
            return
        self._histograms[name].record(value)
        self._dirty = True

    @property
    def dirty(self) -> bool:
        return self._dirty or (self.agent is not None and self.agent.changed())

    def _build(self) -> ScopeMetrics:
        """The metric messages, built once; each snapshot only overwrites their values."""
        temporality = (AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA if self.delta
                       else AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE)
        scope = ScopeMetrics()
        for name, (unit, description) in _COUNTERS.items():
            metric = scope.metrics.add(name=name, unit=unit, description=description)
            metric.sum.aggregation_temporality = temporality
            metric.sum.is_monotonic = True
            put_attributes(metric.sum.data_points.add().attributes, [("faas.trigger", "other")])
        for name, (unit, description, bounds) in _HISTOGRAMS.items():
            metric = scope.metrics.add(name=name, unit=unit, description=description)
            metric.histogram.aggregation_temporality = temporality
            point = metric.histogram.data_points.add()
            point.explicit_bounds.extend(bounds)
            put_attributes(point.attributes, [("faas.trigger", "other")])
        return scope

    def snapshot(self, now_ns: int) -> List[Metric]:
        """The metrics to export now; empty when nothing changed since the last :meth:`taken`.

        The returned messages are reused by the next snapshot: encode them before taking another.
        Nothing is reset here: call :meth:`taken` once the snapshot is encoded.
        """
        if not self.dirty:
            return []
        if self._scope is None:
            self._scope = self._build()
        metrics = self._scope.metrics
        start = self._start_ns
        index = 0
        for name in _COUNTERS:
            point = metrics[index].sum.data_points[0]
            point.start_time_unix_nano = start
            point.time_unix_nano = now_ns
            point.as_int = self._counters[name]
            index += 1
        for name in _HISTOGRAMS:
            hist = self._histograms[name]
            point_h = metrics[index].histogram.data_points[0]
            point_h.start_time_unix_nano = start
            point_h.time_unix_nano = now_ns
            point_h.count = hist.count
            point_h.sum = hist.sum
            del point_h.bucket_counts[:]
            point_h.bucket_counts.extend(hist.counts)
            if hist.count:
                point_h.min = hist.min
                point_h.max = hist.max
            else:
                point_h.ClearField("min")
                point_h.ClearField("max")
            index += 1
        out = list(metrics)
        if self.agent is not None:
            out.extend(self.agent.metrics(now_ns))
        return out

    def taken(self, now_ns: int) -> None:
        """The last snapshot (taken at ``now_ns``) was encoded: it no longer counts as pending.

        Separate from :meth:`snapshot`, so that a delta is reset only once its request exists.
        """
        self._dirty = False
        if self.agent is not None:
            self.agent.taken(now_ns)
        if self.delta:
            self._start_ns = now_ns
            self._counters = dict.fromkeys(_COUNTERS, 0)
            for hist in self._histograms.values():
                hist.reset()

    def record_phase(self, kind: str, status: Optional[str], report: Optional[ReportMetrics], begin: int,
                     end: int, incomplete: bool) -> None:
        """Count and measure one written phase span (``init``, ``restore`` or ``invoke``)."""
        duration_ms = report.duration_ms if report is not None else None
        duration_s = duration_ms / 1000 if duration_ms is not None else (end - begin) / SECOND_NS
        if kind == "invoke":
            lowered = (status or "").lower()
            if lowered and lowered != "success":
                self.count("faas.errors")
                if "timeout" in lowered or "timed out" in lowered:
                    self.count("faas.timeouts")
            if not incomplete or duration_ms is not None:
                self.record("faas.invoke_duration", duration_s)
            if report is not None:
                if report.memory_used_mb is not None:
                    self.record("faas.mem_usage", report.memory_used_mb * _MB)
                if report.billing_duration_ms is not None:
                    self.record("fgext.faas.billed_duration", report.billing_duration_ms / 1000)
        elif not incomplete or duration_ms is not None:
            self.record("faas.init_duration", duration_s)


"""The agent's own metrics (``fgext.agent.*``), exported in the same snapshot as the FaaS metrics.

Nothing is counted here: each number is read, at snapshot time, from the counter's one owner (the
listener and pipeline through :class:`fgext._selfstats.AgentStats`, the OTLP plugin, its shipper and
spool, the process itself), so the self-metrics cannot disagree with the ``stopped`` line. Counters
follow the FaaS metrics' temporality (delta: the difference since the last snapshot taken, by keeping
the values last taken); gauges are gauges. The list, with units and attributes, is in ``docs/otlp.md``.
"""

from __future__ import annotations

import os
from typing import Callable, Dict, List, Mapping, Optional, Tuple, Union

from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Metric

from fgext.otlp._ids import put_attributes

__all__ = ["SELF_METRICS", "Attrs", "Number", "Readings", "SelfMetrics", "process_readings"]

Number = Union[int, float]
Attrs = Tuple[Tuple[str, str], ...]
#: metric name -> {attributes: value}
Readings = Dict[str, Dict[Attrs, Number]]

#: name -> (kind, unit, description); kind is "counter" (monotonic sum) or "gauge"
SELF_METRICS: Dict[str, Tuple[str, str, str]] = {
    "fgext.agent.events.received": ("counter", "{event}", "Telemetry events received, by kind"),
    "fgext.agent.events.malformed": ("counter", "{event}", "Telemetry events skipped as malformed"),
    "fgext.agent.bodies.rejected": ("counter", "{request}",
                                    "Invoke and telemetry bodies refused (not JSON, too large, malformed)"),
    "fgext.agent.invokes.received": ("counter", "{invoke}", "Invokes received"),
    "fgext.agent.dropped": ("counter", "{item}", "Telemetry items fgext could not deliver and dropped"),
    "fgext.agent.export.requests": ("counter", "{request}", "OTLP export requests sent, by outcome"),
    "fgext.agent.export.sent": ("counter", "By", "Bytes of OTLP export requests the collector acknowledged"),
    "fgext.agent.events.late": ("counter", "{event}", "Events that arrived after their invocation was exported"),
    "fgext.agent.invocations.incomplete": ("counter", "{invocation}",
                                           "Invocations exported without their report (closed as incomplete)"),
    "fgext.agent.spool.added": ("counter", "{request}", "Export requests written to the spool"),
    "fgext.agent.spool.size": ("gauge", "By", "Bytes in the spool now"),
    "fgext.agent.spool.files": ("gauge", "{file}", "Requests (files) in the spool now"),
    "fgext.agent.queue.depth": ("gauge", "{batch}", "Batches waiting in each sink's lane"),
    "fgext.agent.plugin.failures": ("counter", "{failure}", "Plugin hook failures"),
    "fgext.agent.plugin.disabled": ("gauge", "{plugin}", "1 for a plugin the agent disabled, else 0"),
    "fgext.agent.cpu.time": ("counter", "s", "CPU time the agent process used"),
    "fgext.agent.memory.usage": ("gauge", "By", "Resident set size of the agent process"),
}
#: what makes a snapshot worth sending by itself: events and losses, not the export's own counters (each
#: export changes those, and would call for another one) nor the process's CPU and memory
_NEWS = ("fgext.agent.events.received", "fgext.agent.events.malformed", "fgext.agent.bodies.rejected",
         "fgext.agent.dropped", "fgext.agent.plugin.failures", "fgext.agent.plugin.disabled")

_STATM = "/proc/self/statm"


def _rss_bytes(path: str = _STATM) -> Optional[int]:
    """Resident set size from ``/proc/self/statm`` (pages); None where that file does not exist."""
    try:
        with open(path, "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def process_readings(statm: str = _STATM) -> Readings:
    """The process's CPU time (``cpu.mode`` user and system) and, where ``/proc`` has it, its RSS."""
    times = os.times()
    readings: Readings = {"fgext.agent.cpu.time": {(("cpu.mode", "user"),): times.user,
                                                   (("cpu.mode", "system"),): times.system}}
    rss = _rss_bytes(statm)
    if rss is not None:
        readings["fgext.agent.memory.usage"] = {(): rss}
    return readings


class SelfMetrics:
    """Turns readings (cumulative counters and gauges, read from their owners) into OTLP metrics."""

    def __init__(self, read: Callable[[], Readings], *, delta: bool, start_ns: int) -> None:
        self._read = read
        self.delta = delta
        self._start_ns = start_ns
        self._taken: Readings = {}  # counter values of the last snapshot taken (the delta's baseline)
        self._last: Readings = {}  # of the last snapshot made (committed by taken())

    def changed(self) -> bool:
        """Whether an event or a loss was counted since the last snapshot taken."""
        readings = self._read()
        return any(readings.get(name, {}) != self._taken.get(name, {}) for name in _NEWS
                   if readings.get(name) or self._taken.get(name))

    def metrics(self, now_ns: int) -> List[Metric]:
        """The self-metrics as of now (counters since the start, or since the last snapshot with delta)."""
        readings = self._read()
        self._last = readings
        temporality = (AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA if self.delta
                       else AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE)
        out: List[Metric] = []
        for name, (kind, unit, description) in SELF_METRICS.items():
            values = readings.get(name)
            if not values:
                continue
            metric = Metric(name=name, unit=unit, description=description)
            if kind == "counter":
                metric.sum.aggregation_temporality = temporality
                metric.sum.is_monotonic = True
                baseline: Mapping[Attrs, Number] = self._taken.get(name, {}) if self.delta else {}
                points = metric.sum.data_points
            else:
                baseline = {}
                points = metric.gauge.data_points
            for attrs, value in sorted(values.items()):
                point = points.add(start_time_unix_nano=self._start_ns if kind == "counter" else 0,
                                   time_unix_nano=now_ns)
                value -= baseline.get(attrs, 0)
                if isinstance(value, float):
                    point.as_double = value
                else:
                    point.as_int = value
                put_attributes(point.attributes, list(attrs))
            out.append(metric)
        return out

    def taken(self, now_ns: int) -> None:
        """The last snapshot was encoded: with delta, the next counts from it."""
        self._taken = {name: dict(values) for name, values in self._last.items()}
        if self.delta:
            self._start_ns = now_ns

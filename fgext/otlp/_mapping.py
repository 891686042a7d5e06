"""Telemetry events to OTLP spans, log records and metric points: the project's mapping convention.

One trace per request. Its ID is the request ID's 16 bytes when that is a UUID (so a user finds the
trace from the request ID alone), else the first 16 bytes of its SHA-256. The waterfall is::

    <function name>   SERVER   initStart/restoreStart (when this request caused one) or start → report end
    ├── init | restore          its start → its report's endTime (else its done event)
    └── invoke                  platform.start → its report's endTime (else platform.runtimeDone)

Events arrive in any order and split across POSTs, so each request is a small record that collects
its phases and is turned into spans only when complete (the invoke report arrived), when it has
waited longer than the function may run (closed as incomplete, marked so), or at shutdown.

The init phase carries the request ID of the request that caused it. When an init's ID never shows
up on a ``platform.start`` (the platform document's examples use unrelated IDs for init and invoke),
the first invocation that starts after that init adopts it as its ``init`` child when it closes; an
init no invocation adopts becomes a trace of its own.

Logs carry no request ID: a log line is correlated with a phase when exactly one request had a phase
open at the line's time; with overlapping invocations it stays uncorrelated rather than guessed.
Correlation runs when the logs are encoded for export, so platform events that arrive after the
log line (in a later POST) still count.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from bisect import bisect_left, bisect_right, insort
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Metric, ScopeMetrics
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans, Span, Status

from fgext._events import (
    AnyEvent,
    LogEvent,
    PlatformEvent,
    ReportEvent,
    RuntimeDoneEvent,
    StartEvent,
    UnknownEvent,
)
from fgext.otlp._resource import ResourceBuilder, any_value, safe_text

__all__ = ["Mapper", "Metrics", "encode_logs", "span_id", "trace_id_for"]

_TRACE_FLAG_SAMPLED = 0x01  # and never 0x02 ("random"): derived IDs are not random
_SECOND_NS = 1_000_000_000
_MB = 1024 * 1024

# W3C-style severities per the OTel log data model; CRITICAL maps to FATAL like the Python SDK does.
_SEVERITY: Dict[str, int] = {
    "TRACE": 1, "DEBUG": 5, "INFO": 9, "NOTICE": 10, "WARN": 13, "WARNING": 13, "ERROR": 17,
    "CRITICAL": 21, "FATAL": 21,
}
# Upper-case words only, near the start: "no error occurred" must not become an ERROR record.
_LEVEL = re.compile(r"\b(TRACE|DEBUG|INFO|NOTICE|WARNING|WARN|ERROR|CRITICAL|FATAL)\b")
_LEVEL_SCAN = 128

LOG_SOURCE = "fgext.log.source"
_SOURCE_ATTRS = {
    "function": KeyValue(key=LOG_SOURCE, value=AnyValue(string_value="function")),
    "extension": KeyValue(key=LOG_SOURCE, value=AnyValue(string_value="extension")),
    "unknown": KeyValue(key=LOG_SOURCE, value=AnyValue(string_value="platform")),
}

# Seconds buckets for durations (semconv's advice for request durations, stretched to FunctionGraph's
# 15-minute ceiling) and bytes buckets for memory (the platform's memory sizes).
DURATION_BOUNDS: Tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0, 60.0, 300.0,
    900.0,
)
MEMORY_BOUNDS: Tuple[float, ...] = tuple(
    float(mb * _MB) for mb in (16, 32, 64, 128, 256, 512, 768, 1024, 2048, 4096, 8192, 10240)
)


def trace_id_for(request_id: str) -> bytes:
    """The trace ID of a request: its UUID's bytes, else the first 16 bytes of its SHA-256."""
    try:
        value = uuid.UUID(request_id).bytes
    except ValueError:
        value = b""
    if len(value) != 16 or value == bytes(16):
        value = hashlib.sha256(request_id.encode("utf-8", "surrogatepass")).digest()[:16]
    return value


def span_id() -> bytes:
    """A random, non-zero span ID."""
    while True:
        value = os.urandom(8)
        if value != bytes(8):
            return value


def _kv(key: str, value: Union[str, bool, int, float]) -> KeyValue:
    return KeyValue(key=key, value=any_value(value))


Attribute = Tuple[str, Union[str, bool, int, float]]


def _put(container: Any, attributes: Iterable[Attribute]) -> None:
    """Write attributes straight into a repeated KeyValue field: no intermediate messages to copy."""
    add = container.add
    for key, value in attributes:
        kv = add()
        kv.key = key
        if isinstance(value, bool):
            kv.value.bool_value = value
        elif isinstance(value, int):
            kv.value.int_value = value
        elif isinstance(value, float):
            kv.value.double_value = value
        else:
            try:
                kv.value.string_value = value
            except UnicodeEncodeError:  # rare: only ever pay for the check when it fails
                kv.value.string_value = safe_text(value)


# ----------------------------------------------------------------------------------------- records


class _Phase:
    """One phase (init, restore or invoke) of one request, as far as its events have arrived."""

    __slots__ = ("done_ns", "done_status", "forced_end_ns", "kind", "report", "request", "span_id",
                 "start_ns")

    def __init__(self, kind: str, request: _Request) -> None:
        self.kind = kind
        self.request = request
        self.span_id = span_id()
        self.start_ns: Optional[int] = None
        self.done_ns: Optional[int] = None
        self.done_status: Optional[str] = None
        self.report: Optional[ReportEvent] = None
        self.forced_end_ns: Optional[int] = None

    @property
    def begin_ns(self) -> Optional[int]:
        if self.start_ns is not None:
            return self.start_ns
        if self.report is not None:
            return self.report.start_ns
        return self.done_ns

    @property
    def end_ns(self) -> Optional[int]:
        """The phase's end when known: its report's endTime, else its done event, else as forced."""
        if self.report is not None and self.report.end_ns is not None:
            return self.report.end_ns
        if self.done_ns is not None:
            return self.done_ns
        return self.forced_end_ns

    @property
    def status(self) -> Optional[str]:
        if self.report is not None and self.report.status:
            return self.report.status
        return self.done_status

    def settle(self, begin: int, end: int) -> None:
        """Its span is written: keep only the extent that log correlation needs.

        The phase stays in the correlation index for a few hundred invocations; letting its report event
        (raw JSON included) go now keeps those long-lived objects few, which is what lets pymalloc give
        whole arenas back instead of holding them for one survivor each (bench/RESULTS.md, memory).
        """
        self.start_ns = begin
        self.forced_end_ns = end
        self.done_ns = None
        self.report = None


class _Request:
    """The phases of one request ID, open until the trace can be written."""

    __slots__ = ("adopted_init_id", "deadline", "first_invoke", "late", "phases", "request_id",
                 "root_span_id", "trace_id")

    def __init__(self, request_id: str, trace_id: bytes, root_span_id: bytes, *, late: bool = False) -> None:
        self.request_id = request_id
        self.trace_id = trace_id
        self.root_span_id = root_span_id
        self.phases: Dict[str, _Phase] = {}
        self.deadline = 0.0
        self.late = late  # the root span was already written; only the missing phases remain
        self.adopted_init_id: Optional[str] = None
        self.first_invoke: Optional[Tuple[int, str]] = None  # init-only: first invoke after it

    def phase(self, kind: str) -> _Phase:
        found = self.phases.get(kind)
        if found is None:
            found = self.phases[kind] = _Phase(kind, self)
        return found

    @property
    def init_only(self) -> bool:
        return not self.late and "invoke" not in self.phases


class _Closed:
    """What stays of a written trace, so late events join it instead of starting a new one."""

    __slots__ = ("emitted", "root_span_id", "trace_id")

    def __init__(self, trace_id: bytes, root_span_id: bytes, emitted: Iterable[str]) -> None:
        self.trace_id = trace_id
        self.root_span_id = root_span_id
        self.emitted = set(emitted)


# ----------------------------------------------------------------------------------------- metrics


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
        self.min = min(self.min, value)
        self.max = max(self.max, value)


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
DROPPED = "fgext.otlp.dropped"


class Metrics:
    """FaaS metrics aggregated in memory and exported as one snapshot per flush.

    Cumulative by default (like the SDK); ``delta`` (``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE``)
    resets after each snapshot. A snapshot is produced only when something was recorded since the last.
    """

    def __init__(self, temporality: str, start_ns: int) -> None:
        self.delta = temporality == "delta"
        self._start_ns = start_ns
        self._counters: Dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self._histograms = {name: _Histogram(spec[2]) for name, spec in _HISTOGRAMS.items()}
        self._dropped: Dict[Tuple[str, str], int] = {}
        self._dirty = False
        self._scope: Optional[ScopeMetrics] = None

    def count(self, name: str, value: int = 1) -> None:
        self._counters[name] += value
        self._dirty = True

    def record(self, name: str, value: Optional[float]) -> None:
        if value is None or value != value or value < 0:
            return
        self._histograms[name].record(value)
        self._dirty = True

    def dropped(self, signal: str, reason: str, items: int) -> None:
        """Count telemetry items that could not be delivered (self-metric ``fgext.otlp.dropped``)."""
        key = (signal, reason)
        self._dropped[key] = self._dropped.get(key, 0) + items
        self._dirty = True

    @property
    def dirty(self) -> bool:
        return self._dirty

    def _build(self) -> ScopeMetrics:
        """The metric messages, built once; each snapshot only overwrites their values."""
        temporality = (AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA if self.delta
                       else AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE)
        scope = ScopeMetrics()
        for name, (unit, description) in _COUNTERS.items():
            metric = scope.metrics.add(name=name, unit=unit, description=description)
            metric.sum.aggregation_temporality = temporality
            metric.sum.is_monotonic = True
            _put(metric.sum.data_points.add().attributes, [("faas.trigger", "other")])
        for name, (unit, description, bounds) in _HISTOGRAMS.items():
            metric = scope.metrics.add(name=name, unit=unit, description=description)
            metric.histogram.aggregation_temporality = temporality
            point = metric.histogram.data_points.add()
            point.explicit_bounds.extend(bounds)
            _put(point.attributes, [("faas.trigger", "other")])
        return scope

    def snapshot(self, now_ns: int) -> List[Metric]:
        """The metrics to export now; empty when nothing changed since the last snapshot.

        The returned messages are reused by the next snapshot: encode them before taking another.
        """
        if not self._dirty:
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
        if self._dropped:
            temporality = metrics[0].sum.aggregation_temporality
            dropped = Metric(name=DROPPED, unit="{item}",
                             description="Telemetry items fgext could not deliver and dropped")
            dropped.sum.aggregation_temporality = temporality
            dropped.sum.is_monotonic = True
            for (signal, reason), items in sorted(self._dropped.items()):
                point = dropped.sum.data_points.add(start_time_unix_nano=start, time_unix_nano=now_ns,
                                                    as_int=items)
                _put(point.attributes, [("fgext.signal", signal), ("fgext.reason", reason)])
            out.append(dropped)
        self._dirty = False
        if self.delta:
            self._start_ns = now_ns
            self._counters = dict.fromkeys(_COUNTERS, 0)
            for hist in self._histograms.values():
                hist.reset()
            self._dropped = {}
        return out


# ------------------------------------------------------------------------------------------ mapper

PendingLog = Tuple[Union[LogEvent, UnknownEvent], int]


class Mapper:
    """Turns typed events into finished spans, pending log records and metrics; no I/O, no asyncio."""

    def __init__(
        self,
        resource: ResourceBuilder,
        metrics: Metrics,
        *,
        open_wait_s: float,
        function_timeout_s: float,
        clock_ns: Callable[[], int] = time.time_ns,
        monotonic: Callable[[], float] = time.monotonic,
        max_open: int = 10_000,
        # Bounds of what is remembered after a request is written. A sandbox runs one invocation at a
        # time (or a few): late events and log lines refer to the last few requests, and every entry
        # costs memory in the customer's function (measured in bench/RESULTS.md). Indexed phases are the
        # costly ones: each keeps a few objects alive for as long as it is indexed, and such survivors
        # spread over pymalloc's arenas stop them being returned (256 cost ~2 MB more than 64).
        closed_memory: int = 1024,
        max_intervals: int = 64,
    ) -> None:
        self.resource = resource
        self.metrics = metrics
        self._open_wait = open_wait_s
        self._timeout_ns = int(function_timeout_s * _SECOND_NS)
        self._clock_ns = clock_ns
        self._monotonic = monotonic
        self._max_open = max_open
        self._closed_memory = closed_memory
        self._max_intervals = max_intervals
        self._open: Dict[str, _Request] = {}
        # open requests holding only an init or restore phase: candidates for adoption (usually 0 or 1)
        self._inits: Dict[str, _Request] = {}
        self._closed: OrderedDict[str, _Closed] = OrderedDict()
        # phases with a known start, sorted by start: the log correlation index
        self._starts: List[int] = []
        self._phases: List[_Phase] = []
        # Phases indexed but not ended yet, and the longest ended one: together they let a lookup stop
        # scanning back as soon as no earlier phase can still contain the time asked about.
        self._running: Dict[int, _Phase] = {}
        self._longest_ns = 0
        # Finished spans are built in place inside this message (the fastest way to make them).
        self._pending_spans = ScopeSpans()
        self.logs: List[PendingLog] = []
        self.late_events = 0
        self.closed_incomplete = 0

    # ---------------------------------------------------------------------------- events in

    @property
    def open_requests(self) -> int:
        return len(self._open)

    def consume(self, events: Iterable[AnyEvent]) -> int:
        """Take a batch in arrival order; return how many requests were completed by it."""
        observed = self._clock_ns()
        completed = 0
        logs = self.logs
        for event in events:
            if isinstance(event, PlatformEvent):
                if self._platform(event):
                    completed += 1
            elif isinstance(event, (LogEvent, UnknownEvent)):
                logs.append((event, observed))
        if len(self._open) > self._max_open:
            # Memory stays bounded whatever the platform sends: the oldest open requests are written
            # out as incomplete rather than kept forever.
            for request in list(self._open.values())[: len(self._open) - self._max_open]:
                self._close(request, "capacity")
        return completed

    def _platform(self, event: PlatformEvent) -> bool:
        rid = event.request_id
        request = self._open.get(rid)
        kind = event.phase
        if request is None or (request.late and kind not in request.phases):
            closed = self._closed.get(rid)
            if closed is not None and kind in closed.emitted:
                self.late_events += 1  # its span is written already; nothing new to say
                return False
        if request is None:
            closed = self._closed.get(rid)
            if closed is not None:
                request = _Request(rid, closed.trace_id, closed.root_span_id, late=True)
            else:
                request = _Request(rid, trace_id_for(rid), span_id())
            self._open[rid] = request
        phase = request.phase(kind)
        if kind == "invoke":
            self._inits.pop(rid, None)
        old_begin = phase.begin_ns
        if isinstance(event, StartEvent):
            phase.start_ns = event.start_ns
        elif isinstance(event, RuntimeDoneEvent):
            phase.done_ns = event.start_ns
            phase.done_status = event.status
        elif isinstance(event, ReportEvent):
            phase.report = event
            self.resource.note_report(event.metrics.pod_name, event.metrics.memory_size_mb)
        begin = phase.begin_ns
        if old_begin is not None and begin is not None and begin != old_begin:
            self._reindex(phase, old_begin, begin)  # e.g. the start event came after the done event
        elif old_begin is None and begin is not None:
            self._index(phase, begin)
            if kind == "invoke":
                self._note_invoke_start(request, begin)
            elif request.init_only:
                self._inits[rid] = request
                self._find_first_invoke(request, begin)
        end = phase.end_ns
        if begin is not None and end is not None:
            # Known extent: out of the running set, and the look-back horizon covers it (a start or a
            # report arriving late can stretch a phase that was already indexed).
            self._running.pop(id(phase), None)
            if end - begin > self._longest_ns:
                self._longest_ns = end - begin
        request.deadline = self._monotonic() + self._open_wait
        if request.late:
            if all(p.report is not None for p in request.phases.values()):
                self._close(request, "complete")
                return True
            return False
        invoke = request.phases.get("invoke")
        if invoke is not None and invoke.report is not None:
            self._close(request, "complete")
            return True
        return False

    def _note_end(self, phase: _Phase) -> None:
        end = phase.end_ns
        begin = phase.begin_ns
        if end is not None and begin is not None:
            del self._running[id(phase)]
            self._longest_ns = max(self._longest_ns, end - begin)

    def _index(self, phase: _Phase, begin: int) -> None:
        self._running[id(phase)] = phase
        if not self._starts or begin >= self._starts[-1]:
            self._starts.append(begin)
            self._phases.append(phase)
        else:
            position = bisect_right(self._starts, begin)
            insort(self._starts, begin)
            self._phases.insert(position, phase)
        # Trimmed a quarter past the bound, not at twice it: a smaller saw-tooth leaves pymalloc's arenas
        # less fragmented, so RSS follows the bound.
        if len(self._starts) > self._max_intervals + self._max_intervals // 4:
            drop = len(self._starts) - self._max_intervals
            del self._starts[:drop]
            del self._phases[:drop]

    def _reindex(self, phase: _Phase, old_begin: int, begin: int) -> None:
        starts, phases = self._starts, self._phases
        for position in range(bisect_left(starts, old_begin), bisect_right(starts, old_begin)):
            if phases[position] is phase:
                del starts[position]
                del phases[position]
                position = bisect_right(starts, begin)
                starts.insert(position, begin)
                phases.insert(position, phase)
                return

    def _note_invoke_start(self, request: _Request, begin: int) -> None:
        for other in self._inits.values():
            if other is not request:
                init_begin = min((p.begin_ns for p in other.phases.values() if p.begin_ns is not None),
                                 default=None)
                if init_begin is not None and init_begin <= begin and (
                        other.first_invoke is None or begin < other.first_invoke[0]):
                    other.first_invoke = (begin, request.request_id)

    def _find_first_invoke(self, request: _Request, init_begin: int) -> None:
        best: Optional[Tuple[int, str]] = None
        for other in self._open.values():
            invoke = other.phases.get("invoke")
            if other is request or other.late or invoke is None or invoke.begin_ns is None:
                continue
            if invoke.begin_ns >= init_begin and (best is None or invoke.begin_ns < best[0]):
                best = (invoke.begin_ns, other.request_id)
        if best is not None:
            request.first_invoke = best

    # ---------------------------------------------------------------------------- closing

    def expire(self, *, everything: bool = False) -> int:
        """Close requests that waited too long (or all of them at shutdown); return how many."""
        now = self._monotonic()
        expired = [r for r in self._open.values() if everything or r.deadline <= now]
        # Invocations first, so that one can still adopt an init that is closing at the same time.
        expired.sort(key=lambda r: r.init_only)
        count = 0
        for request in expired:
            if request.request_id in self._open:
                self._close(request, "shutdown" if everything else "timeout")
                count += 1
        return count

    def _adopt_init(self, request: _Request) -> None:
        for other in list(self._inits.values()):
            if other.first_invoke is not None and other.first_invoke[1] == request.request_id:
                del self._open[other.request_id]
                del self._inits[other.request_id]
                for kind, phase in other.phases.items():
                    phase.request = request
                    request.phases[kind] = phase
                request.adopted_init_id = other.request_id
                self._remember(other.request_id, request.trace_id, request.root_span_id, other.phases)
                return

    def _remember(self, rid: str, trace_id: bytes, root: bytes, kinds: Iterable[str]) -> None:
        self._closed[rid] = _Closed(trace_id, root, kinds)
        while len(self._closed) > self._closed_memory:
            self._closed.popitem(last=False)

    def _close(self, request: _Request, reason: str) -> None:
        self._open.pop(request.request_id, None)
        self._inits.pop(request.request_id, None)
        if not request.late and "invoke" in request.phases \
                and "init" not in request.phases and "restore" not in request.phases:
            self._adopt_init(request)
        now_ns = self._clock_ns()
        complete = reason == "complete"
        add_span = self._pending_spans.spans.add
        tid = request.trace_id
        rid = request.request_id
        first_begin: Optional[int] = None
        last_end: Optional[int] = None
        root_error: Optional[str] = None
        incomplete_phases = []
        for kind in ("init", "restore", "invoke"):
            phase = request.phases.get(kind)
            if phase is None:
                continue
            begin = phase.begin_ns
            end = phase.end_ns
            if end is None:
                incomplete_phases.append(kind)
                # Still running when given up on: it ran at most until now, and at most the timeout.
                end = now_ns if begin is None else max(begin, min(now_ns, begin + self._timeout_ns))
                phase.forced_end_ns = end
            if id(phase) in self._running:
                self._note_end(phase)
            if begin is None:
                begin = end
            end = max(end, begin)
            first_begin = begin if first_begin is None else min(first_begin, begin)
            last_end = end if last_end is None else max(last_end, end)
            attributes = self._phase_attributes(phase)
            status = phase.status
            code = Status.STATUS_CODE_UNSET
            message = ""
            if status and status.lower() != "success":
                code = Status.STATUS_CODE_ERROR
                message = status
                if root_error is None or kind == "invoke":
                    root_error = status if kind == "invoke" else f"{kind}: {status}"
            if kind in incomplete_phases:
                attributes.append(("fgext.incomplete", True))
            span = add_span()
            span.trace_id = tid
            span.span_id = phase.span_id
            span.parent_span_id = request.root_span_id
            span.name = kind
            span.kind = Span.SPAN_KIND_INTERNAL
            span.start_time_unix_nano = begin
            span.end_time_unix_nano = end
            span.flags = _TRACE_FLAG_SAMPLED
            _put(span.attributes, attributes)
            if code != Status.STATUS_CODE_UNSET:
                span.status.code = code
                span.status.message = safe_text(message)
            self._record_metrics(phase, begin, end, kind in incomplete_phases)
            phase.settle(begin, end)
        coldstart = "init" in request.phases or "restore" in request.phases
        if not request.late and first_begin is not None and last_end is not None:
            root_attributes: List[Attribute] = [
                ("faas.invocation_id", rid), ("faas.coldstart", coldstart), ("faas.trigger", "other"),
            ]
            if request.adopted_init_id is not None:
                root_attributes.append(("fgext.init.request_id", request.adopted_init_id))
            if not complete or incomplete_phases:
                root_attributes.append(("fgext.incomplete", True))
                root_attributes.append(("fgext.close_reason", reason))
                self.closed_incomplete += 1
            span = add_span()
            span.trace_id = tid
            span.span_id = request.root_span_id
            span.name = self.resource.function_name
            span.kind = Span.SPAN_KIND_SERVER
            span.start_time_unix_nano = first_begin
            span.end_time_unix_nano = last_end
            span.flags = _TRACE_FLAG_SAMPLED
            _put(span.attributes, root_attributes)
            if root_error:
                span.status.code = Status.STATUS_CODE_ERROR
                span.status.message = safe_text(root_error)
            if "invoke" in request.phases:
                self.metrics.count("faas.invocations")
                if coldstart:
                    self.metrics.count("faas.coldstarts")
        if request.late:
            closed = self._closed.get(rid)
            if closed is not None:
                closed.emitted.update(request.phases)
        else:
            self._remember(rid, tid, request.root_span_id, request.phases)

    def _phase_attributes(self, phase: _Phase) -> List[Attribute]:
        attributes: List[Attribute] = []
        if phase.request.adopted_init_id is not None and phase.kind in ("init", "restore"):
            attributes.append(("faas.invocation_id", phase.request.adopted_init_id))
        status = phase.status
        if status:
            attributes.append(("fgext.status", status))
        report = phase.report
        if report is not None:
            metrics = report.metrics
            if metrics.duration_ms is not None:
                attributes.append(("fgext.report.duration_ms", metrics.duration_ms))
            if metrics.billing_duration_ms is not None:
                attributes.append(("fgext.report.billed_duration_ms", metrics.billing_duration_ms))
            if metrics.memory_used_mb is not None:
                attributes.append(("fgext.report.memory_used_mb", metrics.memory_used_mb))
            if metrics.memory_size_mb is not None:
                attributes.append(("fgext.report.memory_size_mb", metrics.memory_size_mb))
            if metrics.pod_name:
                attributes.append(("fgext.report.pod_name", metrics.pod_name))
            for key, value in metrics.extra.items():
                if isinstance(value, (str, bool, int, float)):
                    attributes.append((f"fgext.report.{key}", value))
        return attributes

    def _record_metrics(self, phase: _Phase, begin: int, end: int, incomplete: bool) -> None:
        metrics = self.metrics
        report_metrics = phase.report.metrics if phase.report is not None else None
        duration_ms = report_metrics.duration_ms if report_metrics is not None else None
        duration_s = duration_ms / 1000 if duration_ms is not None else (end - begin) / _SECOND_NS
        if phase.kind == "invoke":
            status = (phase.status or "").lower()
            if status and status != "success":
                metrics.count("faas.errors")
                if "timeout" in status or "timed out" in status:
                    metrics.count("faas.timeouts")
            if not incomplete or duration_ms is not None:
                metrics.record("faas.invoke_duration", duration_s)
            if report_metrics is not None:
                if report_metrics.memory_used_mb is not None:
                    metrics.record("faas.mem_usage", report_metrics.memory_used_mb * _MB)
                if report_metrics.billing_duration_ms is not None:
                    metrics.record("fgext.faas.billed_duration", report_metrics.billing_duration_ms / 1000)
        elif not incomplete or duration_ms is not None:
            metrics.record("faas.init_duration", duration_s)

    # ---------------------------------------------------------------------------- logs out

    def correlate(self, at_ns: int) -> Optional[_Phase]:
        """The phase open at ``at_ns`` when exactly one request had one open then; else ``None``."""
        starts = self._starts
        phases = self._phases
        index = bisect_right(starts, at_ns)
        # No ended phase that began before the horizon can reach ``at_ns``; running ones are checked apart.
        horizon = at_ns - self._longest_ns
        lowest = index - 64 if index > 64 else 0
        found: Optional[_Phase] = None
        scanned_running = 0
        position = index - 1
        while position >= lowest and starts[position] >= horizon:
            phase = phases[position]
            position -= 1
            end = phase.end_ns
            if end is None:
                scanned_running += 1
            elif end < at_ns:
                continue
            if found is None:
                found = phase
            elif phase.request is not found.request:
                return None
            elif phase.kind == "invoke":
                found = phase
        if scanned_running < len(self._running):
            # A phase still running that began before the scanned window (rare: a long invocation).
            low_start = starts[position + 1] if position + 1 < index else at_ns + 1
            for phase in self._running.values():
                begin = phase.begin_ns
                if begin is None or begin > at_ns or begin >= low_start:
                    continue
                if found is None:
                    found = phase
                elif phase.request is not found.request:
                    return None
                elif phase.kind == "invoke":
                    found = phase
        return found

    @property
    def pending_spans(self) -> int:
        """How many finished spans wait to be taken."""
        return len(self._pending_spans.spans)

    def take_spans(self) -> List[Span]:
        spans = list(self._pending_spans.spans)  # references stay valid: they keep their message alive
        self._pending_spans = ScopeSpans()
        return spans

    def take_logs(self) -> List[PendingLog]:
        logs, self.logs = self.logs, []
        return logs


_TEMPLATES: Dict[Tuple[str, Optional[str]], bytes] = {}


def _template(source: str, word: Optional[str]) -> bytes:
    """The serialized constant part of a record (severity and source), merged in one call."""
    template = LogRecord()
    if word is not None:
        template.severity_number = _SEVERITY[word]  # type: ignore[assignment]
        template.severity_text = word
    template.attributes.append(_SOURCE_ATTRS[source])
    data: bytes = template.SerializeToString()
    _TEMPLATES[(source, word)] = data
    return data


def encode_logs(container: object, pending: Sequence[PendingLog], mapper: Mapper) -> None:
    """Append one OTLP log record per pending event to ``container`` (a repeated LogRecord field).

    The hot path: records are added in place, and the parts shared by many records (severity and
    source; trace ID, span ID and request ID of a phase) are merged from prebuilt serialized
    templates: one C-level merge instead of several Python-level field writes, which more than
    halves the cost per line.
    """
    add = container.add  # type: ignore[attr-defined]
    level = _LEVEL
    templates = _TEMPLATES
    correlate = mapper.correlate
    cached_phase: Optional[_Phase] = None
    correlation = b""
    for event, observed in pending:
        record: LogRecord = add()
        record.observed_time_unix_nano = observed
        if isinstance(event, LogEvent):
            at = event.start_ns
            message = event.message.rstrip("\r\n")
            match = level.search(message, 0, _LEVEL_SCAN)
            key = (event.category, match.group(1) if match is not None else None)
            record.MergeFromString(templates.get(key) or _template(*key))
            try:
                record.body.string_value = message
            except UnicodeEncodeError:
                record.body.string_value = safe_text(message)
        else:
            at = event.start_ns if event.start_ns is not None else observed
            record.body.string_value = safe_text(json.dumps(dict(event.raw), ensure_ascii=False, default=str))
            record.MergeFromString(templates.get(("unknown", None)) or _template("unknown", None))
            record.attributes.add(key="fgext.event.name").value.string_value = safe_text(event.name)
        record.time_unix_nano = at
        phase = correlate(at)
        if phase is not None:
            if phase is not cached_phase:
                cached_phase = phase
                correlation = LogRecord(
                    trace_id=phase.request.trace_id, span_id=phase.span_id, flags=_TRACE_FLAG_SAMPLED,
                    attributes=[_kv("faas.invocation_id", phase.request.request_id)],
                ).SerializeToString()
            record.MergeFromString(correlation)

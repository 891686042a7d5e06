"""Trace assembly: typed events to finished spans, one record per request.

The assembler step of the OTLP sink's path (listener handler -> parse -> pipeline -> chain -> lane ->
``OtlpPlugin.on_telemetry`` -> **assembler** -> pending -> flush: take -> encode -> shipper -> transport).
Events come from the plugin's ``on_telemetry``. :meth:`Assembler.consume` sorts them into per-request
records, writes a request's spans when it is complete (how a phase becomes a span: ``_spans``), keeps
log lines as plain records and feeds the FaaS metrics (``_metrics``); what is finished goes to the
pending state (``_pending``). At the plugin's flush, :meth:`Assembler.pending` hands it to the encoder
(``_requests``), each log line already linked to its phase (``_correlation``), and :meth:`Assembler.taken`
lets it go once its requests are encoded. No I/O, no asyncio, and nothing here decides when data leaves.

One trace per request (IDs: ``_ids``)::

    <function name>   SERVER   initStart/restoreStart (when this request caused one) or start → report end
    ├── init | restore          its start → its report's endTime (else its done event)
    └── invoke                  platform.start → its report's endTime (else platform.runtimeDone)

Events arrive in any order and split across POSTs, so each request is a small record that collects
its phases and is turned into spans only when complete (the invoke report arrived), when it has
waited longer than the function may run (closed as incomplete, marked so: the assembler's
completeness rule, applied by :meth:`Assembler.expire`), or at shutdown.

The init phase carries the request ID of the request that caused it. When an init's ID never shows
up on a ``platform.start`` (the platform document's examples use unrelated IDs for init and invoke),
the first invocation that starts after that init adopts it as its ``init`` child when it closes; an
init no invocation adopts becomes a trace of its own.

Log lines are correlated (``_correlation``) when they are handed over, not when they arrive, so
platform events that arrive after the log line (in a later POST) still count. A written trace is
remembered (``_written``) so that its late events join it or are counted late.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from opentelemetry.proto.trace.v1.trace_pb2 import Span

from fgext._events import AnyEvent, LogEvent, PlatformEvent, ReportEvent, RuntimeDoneEvent, StartEvent, UnknownEvent
from fgext._sampling import HeadSampler, TailRule
from fgext.otlp._correlation import CorrelationIndex
from fgext.otlp._ids import SECOND_NS, TRACE_FLAG_SAMPLED, span_id, span_id_for, trace_id_for
from fgext.otlp._logs import LINE_OVERHEAD, Link, LogLine, log_line
from fgext.otlp._metrics import Metrics
from fgext.otlp._pending import Finished, Pending
from fgext.otlp._report import REPORT_ESTIMATE, report_line
from fgext.otlp._requests import SPAN_ESTIMATE
from fgext.otlp._resource import ResourceBuilder, safe_text
from fgext.otlp._spans import phase_attributes, root_attributes, write_span
from fgext.otlp._written import WrittenTraces

__all__ = ["Assembler"]

#: The default bound of one log line's body (``FGEXT_OTLP_MAX_LOG_BYTES``).
DEFAULT_MAX_LOG_BYTES = 256 * 1024


# ----------------------------------------------------------------------------------------- records


class _Phase:
    """One phase (init, restore or invoke) of one request, as far as its events have arrived."""

    __slots__ = ("_link", "done_ns", "done_status", "forced_end_ns", "kind", "report", "request", "span_id",
                 "start_ns")

    def __init__(self, kind: str, request: _Request) -> None:
        self.kind = kind
        self.request = request
        # the invoke span's ID is derived from the request ID (a function can parent to it); init and
        # restore spans, which may be adopted by another request, keep random IDs
        self.span_id = span_id_for(request.request_id, "invoke") if kind == "invoke" else span_id()
        self.start_ns: Optional[int] = None
        self.done_ns: Optional[int] = None
        self.done_status: Optional[str] = None
        self.report: Optional[ReportEvent] = None
        self.forced_end_ns: Optional[int] = None
        self._link: Optional[Link] = None

    @property
    def link(self) -> Link:
        """What a log line correlated with this phase carries; one object, so the encoder can cache."""
        if self._link is None:
            flags = TRACE_FLAG_SAMPLED if self.request.sampled else 0
            self._link = (self.request.trace_id, self.span_id, self.request.request_id, flags)
        return self._link

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
                 "root_span_id", "sampled", "trace_id")

    def __init__(self, request_id: str, trace_id: bytes, root_span_id: bytes, *, late: bool = False,
                 sampled: bool = True) -> None:
        self.request_id = request_id
        self.sampled = sampled  # the head decision (fgext._sampling): what log lines' trace flags say
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


# --------------------------------------------------------------------------------------- assembler


class Assembler:
    """Turns typed events into finished spans, pending log lines and metrics; no I/O, no asyncio."""

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
        closed_memory: int = 256,
        max_intervals: int = 64,
        max_log_bytes: int = DEFAULT_MAX_LOG_BYTES,
        report_log: bool = True,
        head: Optional[HeadSampler] = None,
        tail: Optional[TailRule] = None,
    ) -> None:
        self.resource = resource
        self.metrics = metrics
        self._open_wait = open_wait_s
        self._timeout_ns = int(function_timeout_s * SECOND_NS)
        self._clock_ns = clock_ns
        self._monotonic = monotonic
        self._max_open = max_open
        self._max_log_bytes = max_log_bytes
        self._open: Dict[str, _Request] = {}
        # open requests holding only an init or restore phase: candidates for adoption (usually 0 or 1)
        self._inits: Dict[str, _Request] = {}
        self._written = WrittenTraces(closed_memory)
        self._index: CorrelationIndex[_Phase] = CorrelationIndex(max_intervals)
        self._finished = Finished()
        self._report_log = report_log
        self.late_events = 0
        self.closed_incomplete = 0
        #: events that could not be assembled (a value no check caught): each dropped alone, counted
        self.rejected_events = 0
        # Sampling (fgext._sampling): the head decision by trace ID, the tail rule when a trace closes.
        # A head decision that keeps every trace (always_on, the default) is not asked trace by trace: a
        # sampling value never reaches its bound, and computing one is a SHA-256 per request.
        self._head = None if head is None or head.keeps_all else head
        self._tail = tail or TailRule()
        #: traces (and their spans) that neither the head decision nor the tail rule kept: not exported
        self.unsampled_traces = 0
        self.unsampled_spans = 0

    # ---------------------------------------------------------------------------- events in

    @property
    def open_requests(self) -> int:
        return len(self._open)

    def consume(self, events: Iterable[AnyEvent]) -> int:
        """Take a batch in arrival order; return how many requests were completed by it.

        Every value was checked when the event was parsed; an event that still cannot be assembled is
        dropped alone and counted (``rejected_events``), with any span it had begun to write: the rest
        of the batch goes on.
        """
        observed = self._clock_ns()
        completed = 0
        finished = self._finished
        lines = finished.lines
        max_log_bytes = self._max_log_bytes
        added = 0
        short = 0  # lines taken on the hot path: their overhead is added once, after the loop
        append = lines.append
        for event in events:
            if isinstance(event, LogEvent):  # most events are log lines
                message = event.message.rstrip("\r\n")
                size = len(message)
                if size * 4 <= max_log_bytes:  # the hot path: surely within the bound
                    append((event.start_ns, observed, event.category, message, None, 0))
                    added += size
                    short += 1
                    continue
                line = log_line(event, observed, max_log_bytes)
                append(line)
                added += len(line[3]) + LINE_OVERHEAD
            elif isinstance(event, PlatformEvent):
                spans = finished.scope.spans
                before = len(spans)
                try:
                    if self._platform(event):
                        completed += 1
                except Exception:
                    del spans[before:]
                    self.rejected_events += 1
                else:
                    added += (len(spans) - before) * SPAN_ESTIMATE
            elif isinstance(event, UnknownEvent):
                try:
                    line = log_line(event, observed, max_log_bytes)
                except Exception:
                    self.rejected_events += 1
                    continue
                lines.append(line)
                added += len(line[3]) + LINE_OVERHEAD
        if len(self._open) > self._max_open:
            # Memory stays bounded whatever the platform sends: the oldest open requests are written
            # out as incomplete rather than kept forever.
            spans = finished.scope.spans
            before = len(spans)
            for request in list(self._open.values())[: len(self._open) - self._max_open]:
                self._close(request, "capacity")
            added += (len(spans) - before) * SPAN_ESTIMATE
        finished.bytes += added + short * LINE_OVERHEAD
        return completed

    def _platform(self, event: PlatformEvent) -> bool:
        rid = event.request_id
        request = self._open.get(rid)
        kind = event.phase
        if request is None or (request.late and kind not in request.phases):
            closed = self._written.get(rid)
            if closed is not None and kind in closed.emitted:
                self.late_events += 1  # its span is written already; nothing new to say
                return False
        if request is None:
            closed = self._written.get(rid)
            if closed is not None:
                request = _Request(rid, closed.trace_id, closed.root_span_id, late=True,
                                   sampled=self._head_sampled(closed.trace_id))
            else:
                trace_id = trace_id_for(rid)
                request = _Request(rid, trace_id, span_id_for(rid, "root"), sampled=self._head_sampled(trace_id))
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
            self._index.move(phase, old_begin, begin)  # e.g. the start event came after the done event
        elif old_begin is None and begin is not None:
            self._index.add(phase, begin)
            if kind == "invoke":
                self._note_invoke_start(request, begin)
            elif request.init_only:
                self._inits[rid] = request
                self._find_first_invoke(request, begin)
        end = phase.end_ns
        if begin is not None and end is not None:
            # Known extent: out of the running set, and the look-back horizon covers it (a start or a
            # report arriving late can stretch a phase that was already indexed).
            self._index.extent_known(phase)
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
                self._written.remember(other.request_id, request.trace_id, request.root_span_id, other.phases)
                return

    def _head_sampled(self, trace_id: bytes) -> bool:
        return self._head is None or self._head.sampled(trace_id)

    def _kept(self, request: _Request, coldstart: bool) -> bool:
        """The tail rule over the head decision, for a trace whose spans were just written."""
        if request.sampled:
            return True
        invoke = request.phases.get("invoke")
        status = (invoke.status or "") if invoke is not None else ""
        duration_ms: Optional[float] = None
        if invoke is not None:
            report = invoke.report
            if report is not None and report.metrics.duration_ms is not None:
                duration_ms = float(report.metrics.duration_ms)
            elif invoke.begin_ns is not None and invoke.end_ns is not None:
                duration_ms = (invoke.end_ns - invoke.begin_ns) / 1e6
        return self._tail.keep(sampled=False, status=status, cold_start=coldstart, duration_ms=duration_ms)

    def _close(self, request: _Request, reason: str) -> None:
        self._open.pop(request.request_id, None)
        self._inits.pop(request.request_id, None)
        if not request.late and "invoke" in request.phases \
                and "init" not in request.phases and "restore" not in request.phases:
            self._adopt_init(request)
        now_ns = self._clock_ns()
        complete = reason == "complete"
        finished = self._finished
        written_before = len(finished.scope.spans)
        add_span = finished.scope.spans.add
        tid = request.trace_id
        rid = request.request_id
        first_begin: Optional[int] = None
        last_end: Optional[int] = None
        root_error: Optional[str] = None
        incomplete_phases = []
        invoke_report: Optional[ReportEvent] = None
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
            if self._index.is_running(phase):
                self._index.extent_known(phase)
            if begin is None:
                begin = end
            end = max(end, begin)
            first_begin = begin if first_begin is None else min(first_begin, begin)
            last_end = end if last_end is None else max(last_end, end)
            shared, attributes = phase_attributes(kind, phase.status, phase.report, request.adopted_init_id)
            status = phase.status
            error = status if status and status.lower() != "success" else None
            if error is not None and (root_error is None or kind == "invoke"):
                root_error = error if kind == "invoke" else f"{kind}: {error}"
            if kind in incomplete_phases:
                attributes.append(("fgext.incomplete", True))
            span = add_span()
            span.parent_span_id = request.root_span_id
            write_span(span, tid, phase.span_id, kind, Span.SPAN_KIND_INTERNAL, begin, end, attributes, error,
                       shared)
            self.metrics.record_phase(kind, status, phase.report.metrics if phase.report is not None else None,
                                      begin, end, kind in incomplete_phases)
            if kind == "invoke":
                invoke_report = phase.report  # settle() lets it go; the report record needs it
            phase.settle(begin, end)
        coldstart = "init" in request.phases or "restore" in request.phases
        if not request.late and first_begin is not None and last_end is not None:
            incomplete = not complete or bool(incomplete_phases)
            if incomplete:
                self.closed_incomplete += 1
            shared, attributes = root_attributes(rid, coldstart, request.adopted_init_id,
                                                 reason if incomplete else None)
            write_span(add_span(), tid, request.root_span_id, safe_text(self.resource.function_name),
                       Span.SPAN_KIND_SERVER, first_begin, last_end, attributes, root_error, shared)
            if "invoke" in request.phases:
                self.metrics.count("faas.invocations")
                if coldstart:
                    self.metrics.count("faas.coldstarts")
                if self._report_log and invoke_report is not None:
                    finished.reports.append(report_line(rid, tid, request.phases["invoke"].span_id, invoke_report,
                                                    coldstart=coldstart, observed_ns=now_ns,
                                                    sampled=request.sampled))
                    finished.bytes += REPORT_ESTIMATE
        if not self._kept(request, coldstart):
            # Written, then let go: metrics above still count the invocation, its spans are not exported.
            spans = finished.scope.spans
            self.unsampled_traces += 1
            self.unsampled_spans += len(spans) - written_before
            del spans[written_before:]
        if request.late:
            self._written.add(rid, request.phases)
        else:
            self._written.remember(rid, tid, request.root_span_id, request.phases)
        # Phase and request point at each other: without this, every written request waited for the cyclic
        # collector, and such survivors spread over pymalloc's arenas (RSS grew ~0.9 MB from 1,000 to 10,000
        # invocations). An indexed phase still reaches its request; nothing reads a written request's phases.
        request.phases.clear()

    # ---------------------------------------------------------------------------- logs out

    @property
    def lines(self) -> List[LogLine]:
        """The log lines that wait to be taken."""
        return self._finished.lines

    @property
    def pending_bytes(self) -> int:
        """An estimate of the bytes that what waits to be taken will take once encoded."""
        return self._finished.bytes

    @property
    def pending_spans(self) -> int:
        """How many finished spans wait to be taken."""
        return len(self._finished.scope.spans)

    def pending(self) -> Pending:
        """Everything finished, for the encoder: spans, and log lines each with the phase open at its
        time (correlated now, so platform events that came after the line count). Nothing is removed:
        call :meth:`taken` once it is encoded, before anything else is consumed."""
        return self._finished.hand_over(self._index.links(self._finished.lines))

    def taken(self, pending: Pending) -> None:
        """``pending`` was encoded: let it go (anything finished since stays)."""
        self._finished.taken(pending)

"""The OTLP sink's pending state: what the assembler finished and the encoder has not taken yet.

Between two steps of the OTLP sink's path (listener handler -> parse -> pipeline ->
``OtlpPlugin.on_telemetry`` -> assembler (``_traces``) -> **pending** -> flush: take -> encode
(``_requests``) -> shipper -> transport). The assembler adds to a :class:`Finished`: spans, built in place
in the one scope of a trace request message (the fastest way to make them, and the encoder sends that
message as it is), log lines as plain records, one plain report record per invocation, and an estimate
of their encoded size (what ``FGEXT_OTLP_MAX_PENDING_BYTES`` bounds). At ``take`` it hands them over as
one :class:`Pending`, log lines already paired with their links; they leave only once their requests are
encoded (:meth:`Finished.taken`), so an export that fails to encode loses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans, Span

from fgext.otlp._logs import LINE_OVERHEAD, Link, LogLine
from fgext.otlp._report import REPORT_ESTIMATE, ReportLine
from fgext.otlp._requests import SPAN_ESTIMATE

__all__ = ["Finished", "Pending"]


@dataclass
class Pending:
    """What is finished and waits for the encoder: spans, log lines with their links, and how many."""

    spans: Sequence[Span]
    span_count: int
    lines: List[LogLine]
    links: List[Optional[Link]]
    #: one report record per invocation closed with its report (``_report``), when enabled, plain until encoded
    records: List[ReportLine] = field(default_factory=list)
    #: the request message whose only spans are ``spans`` (they were built in it): when they all fit one
    #: request, the encoder serializes it as it is instead of copying them into another
    message: Optional[ExportTraceServiceRequest] = None


class Finished:
    """Finished spans, log lines and report records not taken yet, and their estimated encoded bytes."""

    __slots__ = ("bytes", "lines", "message", "reports", "scope")

    def __init__(self) -> None:
        self.message, self.scope = _message()
        self.lines: List[LogLine] = []
        self.reports: List[ReportLine] = []  # report records of closed invocations, waiting like lines
        #: an estimate of the bytes that pending spans, lines and records will take once encoded
        self.bytes = 0

    def hand_over(self, links: List[Optional[Link]]) -> Pending:
        """Everything finished, with ``links`` (one per line); nothing is removed until :meth:`taken`."""
        spans = self.scope.spans
        return Pending(spans=spans, span_count=len(spans), lines=self.lines, links=links, records=self.reports,
                       message=self.message)

    def taken(self, pending: Pending) -> None:
        """``pending`` was encoded: let it go (anything finished since stays)."""
        spans = self.scope.spans
        if pending.span_count == len(spans):
            self.message, self.scope = _message()  # references the encoder kept stay valid
        else:
            del spans[:pending.span_count]
        count = len(pending.links)  # how many lines there were when they were handed over
        if count == len(self.lines):
            self.lines = []
        else:
            del self.lines[:count]
        reports = len(pending.records)
        if reports == len(self.reports):
            self.reports = []
        else:
            del self.reports[:reports]
        self.bytes = (len(self.scope.spans) * SPAN_ESTIMATE + len(self.reports) * REPORT_ESTIMATE
                      + sum(len(line[3]) + LINE_OVERHEAD for line in self.lines))


def _message() -> Tuple[ExportTraceServiceRequest, ScopeSpans]:
    """A trace request with one resource and one scope, and that scope: finished spans are built in place in
    it (the fastest way to make them), and the encoder can send it as it is."""
    message = ExportTraceServiceRequest()
    return message, message.resource_spans.add().scope_spans.add()

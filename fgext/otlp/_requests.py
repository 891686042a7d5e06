"""Records to serialized ``Export*ServiceRequest`` bytes, each request at most a byte limit.

The encode step of the OTLP sink's path (listener handler -> parse -> pipeline -> chain -> lane ->
``OtlpPlugin.on_telemetry`` -> assembler -> pending -> flush: take -> **encode** -> shipper -> transport).
At the plugin's flush it takes plain records (the pending spans and log lines already correlated,
``_pending``; a metrics snapshot, ``_metrics``) and returns the bytes the plugin hands to the shipper
(``_shipper``), each request serialized once. It is the one owner of "how big may a request be":
records are grouped by an estimate of their size, and a request that still comes out over
``max_bytes`` is split in half and encoded again. A record that cannot be encoded at all is isolated the
same way and dropped alone (counted in :attr:`Encoded.unencodable`), so one bad value never costs its
neighbours nor blocks a later export.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import itemgetter
from typing import Callable, List, Optional, Sequence, Set, Tuple

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from fgext.otlp._logs import LINE_OVERHEAD, Link, LogLine, encode_logs
from fgext.otlp._report import REPORT_ESTIMATE, ReportLine, write_report

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES", "Encoded", "encode_logs_requests", "encode_metrics_request",
    "encode_trace_requests",
]

DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024
#: What a span is estimated to cost before it is encoded (a written span is ~250-400 bytes).
SPAN_ESTIMATE = 512
# Room kept for the envelope (resource, scope, field tags) when records are grouped by estimate.
_ENVELOPE_ROOM = 4096

_SCOPE: List[InstrumentationScope] = []
_BODY = itemgetter(3)

def _scope() -> InstrumentationScope:
    if not _SCOPE:
        from fgext import __version__

        _SCOPE.append(InstrumentationScope(name="fgext.otlp", version=__version__))
    return _SCOPE[0]


@dataclass
class Encoded:
    """Serialized requests with how many items each holds, and the records that could not be encoded."""

    requests: List[Tuple[bytes, int]] = field(default_factory=list)
    unencodable: int = 0


def _groups(count: int, size_of: Callable[[int], int], budget: int) -> List[Tuple[int, int]]:
    """Index ranges ``[first, last)`` whose estimated sizes add up to at most ``budget`` (at least one)."""
    groups = []
    first = 0
    total = 0
    for index in range(count):
        size = size_of(index)
        if index > first and total + size > budget:
            groups.append((first, index))
            first = index
            total = 0
        total += size
    if count > first:
        groups.append((first, count))
    return groups


def _encode_split(first: int, last: int, build: Callable[[int, int], bytes], max_bytes: int,
                  out: Encoded) -> None:
    """Encode records ``[first, last)`` as one request, halving until each part fits ``max_bytes`` or is
    a single record."""
    try:
        data = build(first, last)
    except Exception:  # a value the encoder cannot carry: find it by halving, drop it alone
        if last - first == 1:
            out.unencodable += 1
            return
    else:
        if len(data) <= max_bytes or last - first == 1:
            # one record over the limit is sent alone: it cannot be split further (spans only; a log
            # line is cut well below the limit when it is consumed)
            out.requests.append((data, last - first))
            return
    middle = (first + last) // 2
    _encode_split(first, middle, build, max_bytes, out)
    _encode_split(middle, last, build, max_bytes, out)


def encode_trace_requests(resource: Resource, spans: Sequence[Span], max_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
                          message: Optional[ExportTraceServiceRequest] = None) -> Encoded:
    """Serialized ``ExportTraceServiceRequest``s of at most ``max_bytes`` each.

    ``message``, when given, is a request whose one scope holds exactly ``spans`` (``_pending`` builds them in
    it): when they fit one request it gets the resource and scope and is serialized as it is, without copying
    the spans into another message (that copy was most of the cost of encoding them).
    """
    scope = _scope()
    out = Encoded()
    per_request = max(1, (max_bytes - _ENVELOPE_ROOM) // SPAN_ESTIMATE)
    if message is not None and 0 < len(spans) <= per_request:
        resource_spans = message.resource_spans[0]
        resource_spans.resource.CopyFrom(resource)
        resource_spans.scope_spans[0].scope.CopyFrom(scope)
        try:
            data: bytes = message.SerializeToString()
        except Exception:  # never expected: the general path below finds the record and drops it alone
            pass
        else:
            if len(data) <= max_bytes:
                out.requests.append((data, len(spans)))
                return out

    def build(first: int, last: int) -> bytes:
        request = ExportTraceServiceRequest()
        resource_spans = request.resource_spans.add()
        resource_spans.resource.CopyFrom(resource)
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.CopyFrom(scope)
        scope_spans.spans.extend(spans[first:last])
        data: bytes = request.SerializeToString()
        return data

    for first in range(0, len(spans), per_request):
        _encode_split(first, min(first + per_request, len(spans)), build, max_bytes, out)
    return out


def encode_logs_requests(resource: Resource, lines: Sequence[LogLine], links: Sequence[Optional[Link]],
                         max_bytes: int = DEFAULT_MAX_REQUEST_BYTES, records: Sequence[ReportLine] = ()) -> Encoded:
    """Serialized ``ExportLogsServiceRequest``s of at most ``max_bytes`` each; ``links[i]`` is the phase
    ``lines[i]`` was correlated with (or ``None``). Records are built straight into the request.
    ``records`` (plain report records, ``_report``, a few hundred bytes each) go in the last request, written
    straight into it."""
    scope = _scope()

    def build(first: int, last: int) -> bytes:
        request = ExportLogsServiceRequest()
        resource_logs = request.resource_logs.add()
        resource_logs.resource.CopyFrom(resource)
        scope_logs = resource_logs.scope_logs.add()
        scope_logs.scope.CopyFrom(scope)
        encode_logs(scope_logs.log_records, lines[first:last], links[first:last])
        if last == count:
            log_records = scope_logs.log_records
            for index, record in enumerate(records):
                try:
                    write_report(log_records.add(), record)
                except Exception:  # never expected (every value was checked when parsed): it costs itself
                    del log_records[-1]
                    unwritten.add(index)
        data: bytes = request.SerializeToString()
        return data

    out = Encoded()
    unwritten: Set[int] = set()  # report records that could not be written (the last request may be built twice)
    budget = max(1, max_bytes - _ENVELOPE_ROOM)
    count = len(links)
    # len() of the body is its size in bytes for ASCII text; other text comes out larger than estimated
    # and its request is halved after encoding. The usual flush fits one request: sum in C, group only
    # when it does not.
    budget -= len(records) * REPORT_ESTIMATE
    if sum(map(len, map(_BODY, lines))) + count * LINE_OVERHEAD <= budget:
        groups = [(0, count)] if count or records else []
    else:
        groups = _groups(count, lambda i: len(lines[i][3]) + LINE_OVERHEAD, budget)
    for first, last in groups:
        _encode_split(first, last, build, max_bytes, out)
    if records and out.requests:
        data, items = out.requests[-1]
        out.requests[-1] = (data, items + len(records) - len(unwritten))  # the report records went in the last
    out.unencodable += len(unwritten)
    return out


def encode_metrics_request(resource: Resource, metrics: Sequence[Metric]) -> Encoded:
    """One serialized ``ExportMetricsServiceRequest`` (a snapshot is a few kilobytes)."""
    out = Encoded()
    try:
        request = ExportMetricsServiceRequest()
        resource_metrics = request.resource_metrics.add()
        resource_metrics.resource.CopyFrom(resource)
        scope_metrics = resource_metrics.scope_metrics.add()
        scope_metrics.scope.CopyFrom(_scope())
        scope_metrics.metrics.extend(metrics)
        points = sum(len(m.sum.data_points) + len(m.histogram.data_points) for m in metrics)
        out.requests.append((request.SerializeToString(), points))
    except Exception:  # never expected: every value was checked when recorded
        out.unencodable += sum(len(m.sum.data_points) + len(m.histogram.data_points) for m in metrics)
    return out

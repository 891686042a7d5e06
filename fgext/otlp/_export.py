"""Export requests: records in, serialized OTLP export requests (bytes) out.

Every request is serialized exactly once; the bytes are what is POSTed, what is spooled and what is
replayed later. Sending them is :mod:`fgext.otlp._shipper`'s job, over :mod:`fgext.otlp._transports`.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from fgext.otlp._mapping import Mapper, PendingLog, encode_logs

__all__ = ["encode_logs_requests", "encode_metrics_request", "encode_trace_requests"]

MAX_ITEMS_PER_REQUEST = 1000


# ------------------------------------------------------------------------------------------ encode


_SCOPE: List[InstrumentationScope] = []


def _scope() -> InstrumentationScope:
    if not _SCOPE:
        from fgext import __version__

        _SCOPE.append(InstrumentationScope(name="fgext.otlp", version=__version__))
    return _SCOPE[0]


def encode_trace_requests(resource: Resource, spans: Sequence[Span]) -> List[Tuple[bytes, int]]:
    """Serialized ``ExportTraceServiceRequest``s of at most ``MAX_ITEMS_PER_REQUEST`` spans each."""
    out = []
    scope = _scope()
    for first in range(0, len(spans), MAX_ITEMS_PER_REQUEST):
        chunk = spans[first:first + MAX_ITEMS_PER_REQUEST]
        request = ExportTraceServiceRequest()
        resource_spans = request.resource_spans.add()
        resource_spans.resource.CopyFrom(resource)
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.CopyFrom(scope)
        scope_spans.spans.extend(chunk)
        out.append((request.SerializeToString(), len(chunk)))
    return out


def encode_logs_requests(
    resource: Resource, logs: Sequence[PendingLog], mapper: Mapper
) -> List[Tuple[bytes, int]]:
    """Serialized ``ExportLogsServiceRequest``s; log records are built straight into the request."""
    out = []
    scope = _scope()
    for first in range(0, len(logs), MAX_ITEMS_PER_REQUEST):
        chunk = logs[first:first + MAX_ITEMS_PER_REQUEST]
        request = ExportLogsServiceRequest()
        resource_logs = request.resource_logs.add()
        resource_logs.resource.CopyFrom(resource)
        scope_logs = resource_logs.scope_logs.add()
        scope_logs.scope.CopyFrom(scope)
        encode_logs(scope_logs.log_records, chunk, mapper)
        out.append((request.SerializeToString(), len(chunk)))
    return out


def encode_metrics_request(resource: Resource, metrics: Sequence[Metric]) -> Tuple[bytes, int]:
    request = ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    resource_metrics.resource.CopyFrom(resource)
    scope_metrics = resource_metrics.scope_metrics.add()
    scope_metrics.scope.CopyFrom(_scope())
    scope_metrics.metrics.extend(metrics)
    points = sum(len(m.sum.data_points) + len(m.histogram.data_points) for m in metrics)
    return request.SerializeToString(), points

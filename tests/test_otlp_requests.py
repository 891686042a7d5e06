"""Tests for fgext.otlp._requests: records to serialized requests, each within the byte limit."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from fgext.otlp._requests import encode_trace_requests
from tests.otlp_helpers import (
    INVOKE_ID,
    attrs,
    events,
    invocation,
    make_assembler,
    take_spans,
)


class TestRequests:
    def test_trace_request_carries_resource_and_scope(self) -> None:
        """An encoded trace request holds the resource, the fgext scope and every span."""
        assembler = make_assembler()
        assembler.consume(events(*invocation(INVOKE_ID, 0, 10)))
        ((data, items),) = encode_trace_requests(assembler.resource.message(), take_spans(assembler)).requests
        request = ExportTraceServiceRequest.FromString(data)
        assert items == 2
        scope_spans = request.resource_spans[0].scope_spans[0]
        assert scope_spans.scope.name == "fgext.otlp"
        assert len(scope_spans.spans) == 2
        assert attrs(request.resource_spans[0].resource)["faas.name"] == "hello"

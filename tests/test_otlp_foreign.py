"""Tests for fgext.otlp._foreign: the function's own export requests, kept whole and re-encoded within bounds."""

from __future__ import annotations

from typing import Dict

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from fgext._events import OtlpPayload
from fgext.otlp._foreign import ForeignTelemetry, merge_resource


def kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def traces(count: int, name_bytes: int = 10, service: str = "orders") -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend([kv("service.name", service)])
    resource_spans.schema_url = "https://opentelemetry.io/schemas/1.21.0"
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "user"
    for index in range(count):
        scope_spans.spans.add(trace_id=b"\x01" * 16, span_id=(index + 1).to_bytes(8, "big"),
                              name=f"{index:0{name_bytes}d}")
    return request


DETECTED = Resource(attributes=[kv("service.name", "helloWorld"), kv("faas.name", "helloWorld"),
                                kv("cloud.provider", "huawei_cloud")])


def attributes(resource: Resource) -> Dict[str, str]:
    return {a.key: a.value.string_value for a in resource.attributes}


def test_the_functions_resource_is_kept_and_fgexts_attributes_fill_only_the_gaps() -> None:
    """service.name stays the function's; faas.name and cloud.provider are added from fgext's resource."""
    merged = merge_resource(Resource(attributes=[kv("service.name", "orders")]), DETECTED)
    assert attributes(merged) == {"service.name": "orders", "faas.name": "helloWorld", "cloud.provider": "huawei_cloud"}


def test_encoded_requests_keep_resource_scope_and_every_span() -> None:
    """Two payloads out as one request: both resources, scopes and spans as sent, with the merged resource."""
    foreign = ForeignTelemetry()
    assert foreign.add(OtlpPayload("traces", traces(3))) == 3
    assert foreign.add(OtlpPayload("traces", traces(2, service="billing"))) == 2
    assert foreign.pending_items("traces") == 5 and foreign.pending_bytes > 0
    encoded = foreign.encode("traces", DETECTED, 4 * 1024 * 1024)
    assert [items for _, items in encoded.requests] == [5]
    request = ExportTraceServiceRequest.FromString(encoded.requests[0][0])
    services = [attributes(rs.resource)["service.name"] for rs in request.resource_spans]
    assert services == ["orders", "billing"]
    assert all(attributes(rs.resource)["faas.name"] == "helloWorld" for rs in request.resource_spans)
    assert request.resource_spans[0].schema_url == "https://opentelemetry.io/schemas/1.21.0"
    assert request.resource_spans[0].scope_spans[0].scope.name == "user"
    assert sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans) == 5
    assert foreign.pending_items("traces") == 0 and foreign.pending_bytes == 0


def test_requests_are_split_to_the_byte_limit_and_lose_nothing() -> None:
    """200 spans of ~1 KiB with a 16 KiB limit: every request fits, every span is in one of them once."""
    foreign = ForeignTelemetry()
    foreign.add(OtlpPayload("traces", traces(200, name_bytes=1000)))
    encoded = foreign.encode("traces", DETECTED, 16 * 1024)
    assert len(encoded.requests) > 1
    assert all(len(data) <= 16 * 1024 for data, _ in encoded.requests)
    names = [span.name for data, _ in encoded.requests
             for rs in ExportTraceServiceRequest.FromString(data).resource_spans for ss in rs.scope_spans
             for span in ss.spans]
    assert sorted(names) == sorted(f"{index:01000d}" for index in range(200))
    assert sum(items for _, items in encoded.requests) == 200


def test_log_records_keep_their_trace_context() -> None:
    """A log record's trace and span IDs and body leave as the function sent them."""
    request = ExportLogsServiceRequest()
    record = request.resource_logs.add().scope_logs.add().log_records.add()
    record.trace_id, record.span_id, record.body.string_value = b"\x02" * 16, b"\x03" * 8, "charged"
    foreign = ForeignTelemetry()
    foreign.add(OtlpPayload("logs", request))
    (data, items), = foreign.encode("logs", DETECTED, 1024 * 1024).requests
    (out,) = ExportLogsServiceRequest.FromString(data).resource_logs[0].scope_logs[0].log_records
    assert (out.trace_id, out.span_id, out.body.string_value, items) == (b"\x02" * 16, b"\x03" * 8, "charged", 1)


def test_a_disabled_signal_is_let_go_without_encoding() -> None:
    """drop() empties a signal and says how many items went."""
    foreign = ForeignTelemetry()
    foreign.add(OtlpPayload("traces", traces(4)))
    assert foreign.drop("traces") == 4 and foreign.pending_bytes == 0

"""The agent's local OTLP/HTTP receiver (fgext.otlp._receiver), in a real aiohttp server on loopback."""

from __future__ import annotations

import gzip
import json
from typing import Any, Dict, Iterator, List

import pytest
from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest, ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from fgext.otlp._receiver import Receiver, Refused
from tests.receiver_server import ReceiverServer, post

PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}
TRACE_ID = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN_ID = bytes.fromhex("eee19b7ec3c1b174")


def trace_request(*spans: Span) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for span in spans:
        scope.spans.add().CopyFrom(span)
    request.resource_spans[0].resource.attributes.add(key="service.name").value.string_value = "orders"
    return request


def good_span(name: str = "work", span_id: bytes = SPAN_ID) -> Span:
    return Span(trace_id=TRACE_ID, span_id=span_id, name=name, kind=Span.SPAN_KIND_INTERNAL,
                start_time_unix_nano=1_700_000_000_000_000_000, end_time_unix_nano=1_700_000_000_500_000_000)


@pytest.fixture(params=[True, False], ids=["aiohttp-decompresses", "receiver-decompresses"])
def server(request: pytest.FixtureRequest) -> Iterator[ReceiverServer]:
    with ReceiverServer(auto_decompress=request.param, max_body_bytes=256 * 1024,
                        max_decompressed_bytes=1024 * 1024) as running:
        yield running


@pytest.fixture
def plain() -> Iterator[ReceiverServer]:
    with ReceiverServer() as running:
        yield running


def status_of(body: bytes, json_body: bool = False) -> Any:
    status = status_pb2.Status()
    if json_body:
        json_format.Parse(body.decode(), status)
    else:
        status.ParseFromString(body)
    return status


class TestAccepted:
    def test_protobuf_traces_reach_the_callback(self, server: ReceiverServer) -> None:
        """A protobuf ExportTraceServiceRequest is handed to on_export whole, and answered 200 with a response."""
        sent = trace_request(good_span("a"), good_span("b", bytes.fromhex("0102030405060708")))
        status, headers, body = post(f"{server.url}/v1/traces", sent.SerializeToString(), PROTOBUF)
        assert status == 200
        assert headers["Content-Type"] == "application/x-protobuf"
        answer = ExportTraceServiceResponse.FromString(body)
        assert not answer.HasField("partial_success")
        assert server.exports == [("traces", sent)]

    def test_gzip_bodies_are_decompressed(self, server: ReceiverServer) -> None:
        """Content-Encoding: gzip is decoded, whether aiohttp or the receiver decompresses."""
        sent = trace_request(good_span())
        headers = {**PROTOBUF, "Content-Encoding": "gzip"}
        status, _, _ = post(f"{server.url}/v1/traces", gzip.compress(sent.SerializeToString()), headers)
        assert status == 200
        assert server.exports == [("traces", sent)]

    def test_otlp_json_with_hex_ids_enum_names_and_string_int64(self, plain: ReceiverServer) -> None:
        """OTLP JSON: hex IDs, enum names or numbers and 64-bit integers as strings decode to the same spans."""
        document = {"resourceSpans": [{"resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "orders"}}]}, "scopeSpans": [{"spans": [
                {"traceId": TRACE_ID.hex(), "spanId": SPAN_ID.hex(), "parentSpanId": "0102030405060708",
                 "name": "a", "kind": "SPAN_KIND_SERVER", "startTimeUnixNano": "1700000000000000000",
                 "endTimeUnixNano": "1700000000500000000", "links": [{"traceId": "00" * 15 + "01",
                                                                      "spanId": "00" * 7 + "02"}],
                 "someFutureField": True},
                {"traceId": TRACE_ID.hex().upper(), "spanId": "0a0b0c0d0e0f1011", "name": "b", "kind": 3}]}]}]}
        status, headers, body = post(f"{plain.url}/v1/traces", json.dumps(document).encode(), JSON)
        assert status == 200, body
        assert headers["Content-Type"] == "application/json"
        assert json.loads(body) == {}
        [(signal, request)] = plain.exports
        first, second = request.resource_spans[0].scope_spans[0].spans
        assert (signal, first.trace_id, first.span_id) == ("traces", TRACE_ID, SPAN_ID)
        assert first.parent_span_id == bytes.fromhex("0102030405060708")
        assert first.kind == Span.SPAN_KIND_SERVER and second.kind == Span.SPAN_KIND_CLIENT
        assert first.end_time_unix_nano == 1_700_000_000_500_000_000
        assert first.links[0].trace_id == bytes(15) + b"\x01" and first.links[0].span_id == bytes(7) + b"\x02"
        assert second.trace_id == TRACE_ID

    def test_logs_and_metrics_paths(self, plain: ReceiverServer) -> None:
        """/v1/logs and /v1/metrics hand their own request types to on_export, with their signal's name."""
        logs = ExportLogsServiceRequest()
        record = logs.resource_logs.add().scope_logs.add().log_records.add()
        record.body.string_value, record.trace_id, record.span_id = "hello", TRACE_ID, SPAN_ID
        assert post(f"{plain.url}/v1/logs", logs.SerializeToString(), PROTOBUF)[0] == 200
        metrics = {"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "orders", "sum": {
            "dataPoints": [{"asInt": "7", "timeUnixNano": "1700000000000000000",
                            "exemplars": [{"traceId": TRACE_ID.hex(), "spanId": SPAN_ID.hex(), "asInt": "1"}]}],
            "aggregationTemporality": "AGGREGATION_TEMPORALITY_DELTA", "isMonotonic": True}}]}]}]}
        assert post(f"{plain.url}/v1/metrics", json.dumps(metrics).encode(), JSON)[0] == 200
        (log_signal, got_logs), (metric_signal, got_metrics) = plain.exports
        assert (log_signal, got_logs) == ("logs", logs)
        assert metric_signal == "metrics" and isinstance(got_metrics, ExportMetricsServiceRequest)
        point = got_metrics.resource_metrics[0].scope_metrics[0].metrics[0].sum.data_points[0]
        assert point.as_int == 7 and point.exemplars[0].trace_id == TRACE_ID

    def test_content_type_parameters_are_ignored(self, plain: ReceiverServer) -> None:
        """application/json; charset=utf-8 is JSON."""
        status, _, _ = post(f"{plain.url}/v1/traces", b"{}", {"Content-Type": "application/json; charset=utf-8"})
        assert status == 200


class TestPartialSuccess:
    def test_spans_with_invalid_ids_are_rejected_and_counted(self, plain: ReceiverServer) -> None:
        """Spans with a zero trace ID or a short span ID are dropped; the answer counts them."""
        zero_trace = Span(trace_id=bytes(16), span_id=SPAN_ID, name="zero")
        short_span = Span(trace_id=TRACE_ID, span_id=b"\x01\x02", name="short")
        bad_parent = Span(trace_id=TRACE_ID, span_id=SPAN_ID, parent_span_id=b"\x01", name="parent")
        sent = trace_request(zero_trace, good_span("kept"), short_span, bad_parent)
        status, _, body = post(f"{plain.url}/v1/traces", sent.SerializeToString(), PROTOBUF)
        assert status == 200
        partial = ExportTraceServiceResponse.FromString(body).partial_success
        assert partial.rejected_spans == 3
        assert "invalid trace, span or parent span ID" in partial.error_message
        [(_, received)] = plain.exports
        assert [span.name for span in received.resource_spans[0].scope_spans[0].spans] == ["kept"]

    def test_json_ids_that_are_not_hex_are_rejected(self, plain: ReceiverServer) -> None:
        """A JSON span whose ID is not hex is rejected like one of the wrong length, in a JSON answer."""
        document = {"resourceSpans": [{"scopeSpans": [{"spans": [
            {"traceId": "zz" * 16, "spanId": SPAN_ID.hex(), "name": "bad"},
            {"traceId": TRACE_ID.hex(), "spanId": SPAN_ID.hex(), "name": "good"}]}]}]}
        status, _, body = post(f"{plain.url}/v1/traces", json.dumps(document).encode(), JSON)
        assert status == 200
        assert json.loads(body)["partialSuccess"]["rejectedSpans"] == "1"
        [(_, received)] = plain.exports
        assert [span.name for span in received.resource_spans[0].scope_spans[0].spans] == ["good"]

    def test_log_records_with_wrong_length_ids_are_rejected(self, plain: ReceiverServer) -> None:
        """A log record with an 8-byte trace ID is rejected; one without IDs is kept."""
        logs = ExportLogsServiceRequest()
        scope = logs.resource_logs.add().scope_logs.add()
        scope.log_records.add().trace_id = b"\x01" * 8
        scope.log_records.add().body.string_value = "no ids"
        status, _, body = post(f"{plain.url}/v1/logs", logs.SerializeToString(), PROTOBUF)
        assert status == 200
        assert ExportLogsServiceResponse.FromString(body).partial_success.rejected_log_records == 1
        [(_, received)] = plain.exports
        assert [r.body.string_value for r in received.resource_logs[0].scope_logs[0].log_records] == ["no ids"]


class TestRefused:
    @pytest.mark.parametrize(("content_type", "words"), [
        ("text/plain", "Content-Type must be application/x-protobuf or application/json, got 'text/plain'"),
        ("", "got ''"),
    ])
    def test_wrong_content_type_is_415(self, plain: ReceiverServer, content_type: str, words: str) -> None:
        """A body that is neither protobuf nor JSON by its Content-Type gets 415 with the reason."""
        status, _, body = post(f"{plain.url}/v1/traces", b"{}", {"Content-Type": content_type})
        assert status == 415
        assert words in body.decode()
        assert plain.exports == []

    def test_unknown_content_encoding_is_415(self, plain: ReceiverServer) -> None:
        """Content-Encoding other than gzip or identity gets 415."""
        status, _, body = post(f"{plain.url}/v1/traces", b"{}", {**JSON, "Content-Encoding": "compress"})
        assert status == 415
        assert "Content-Encoding must be gzip or identity" in body.decode()

    @pytest.mark.parametrize(("body", "headers", "words"), [
        (b"hello, not protobuf", PROTOBUF, "body is not a protobuf ExportTraceServiceRequest"),
        (b"\xa2\x06\x02hi", PROTOBUF, "has no field of ExportTraceServiceRequest"),
        (b"not json", JSON, "body is not JSON"),
        (b"[1, 2]", JSON, "not an object"),
        (b'{"hello": "world"}', JSON, "not an OTLP JSON ExportTraceServiceRequest"),
        (b"[" * 100_000 + b"]" * 100_000, JSON, "body is not JSON"),
        (b'{"resourceSpans": ' + b"[" * 500 + b"]" * 500 + b"}", JSON, "not an OTLP JSON"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": {"a": 1}}]}]}]}', JSON, "name field"),
    ])
    def test_bodies_that_are_not_otlp_are_400(self, plain: ReceiverServer, body: bytes, headers: Dict[str, str],
                                              words: str) -> None:
        """Bodies that do not decode as the signal's request get 400 and a Status naming the reason."""
        status, answer_headers, answer = post(f"{plain.url}/v1/traces", body, headers)
        assert status == 400
        is_json = headers is JSON
        assert answer_headers["Content-Type"] == headers["Content-Type"]
        reason = status_of(answer, is_json)
        assert reason.code == 3
        assert words in reason.message
        assert plain.exports == []

    def test_invalid_gzip_is_400_when_the_receiver_decompresses(self, server: ReceiverServer) -> None:
        """A gzip body that is not gzip gets 400 from the receiver; aiohttp makes it empty: nothing is delivered."""
        status, _, _ = post(f"{server.url}/v1/traces", b"\x1f\x8b\x08\x00garbage", {**PROTOBUF,
                                                                                   "Content-Encoding": "gzip"})
        assert status == (200 if server.auto_decompress else 400)
        assert server.exports == []

    def test_truncated_gzip_is_400(self, server: ReceiverServer) -> None:
        """A gzip stream cut short gets 400 either way."""
        body = gzip.compress(trace_request(good_span()).SerializeToString())[:-12]
        status, _, _ = post(f"{server.url}/v1/traces", body, {**PROTOBUF, "Content-Encoding": "gzip"})
        assert status == 400
        assert server.exports == []

    def test_empty_request_is_answered_and_not_delivered(self, plain: ReceiverServer) -> None:
        """An empty export request (allowed by OTLP) gets 200 and reaches nobody."""
        assert post(f"{plain.url}/v1/traces", b"", PROTOBUF)[0] == 200
        assert post(f"{plain.url}/v1/logs", b"{}", JSON)[0] == 200
        assert plain.exports == []

    def test_oversize_body_is_413(self, server: ReceiverServer) -> None:
        """A body above max_body_bytes gets 413 with the bound in the reason."""
        status, _, answer = post(f"{server.url}/v1/traces", b"\x00" * (300 * 1024), PROTOBUF)
        assert status == 413
        assert "exceeds the receiver's bound of 262144 bytes" in status_of(answer).message
        assert server.exports == []

    def test_gzip_bomb_is_413(self, server: ReceiverServer) -> None:
        """64 MiB of zeros in about 64 KiB of gzip stop at the decompressed bound with 413."""
        bomb = gzip.compress(bytes(64 * 1024 * 1024), compresslevel=9)
        assert len(bomb) < 256 * 1024
        status, _, answer = post(f"{server.url}/v1/traces", bomb, {**PROTOBUF, "Content-Encoding": "gzip"})
        assert status == 413
        # aiohttp 3.13 (the newest for Python 3.9) stops such a body itself, at its own bound
        reason = status_of(answer).message
        assert ("decompressed body exceeds the receiver's bound of 1048576 bytes" in reason
                or (server.auto_decompress and "decompressed body exceeds aiohttp's bound" in reason))
        assert server.exports == []

    def test_refused_by_the_callback_is_503_with_retry_after(self) -> None:
        """on_export raising Refused gives 503 and Retry-After, so the exporter retries."""
        def refuse(signal: str, request: Any) -> None:
            raise Refused("spool full", retry_after_s=3)

        with ReceiverServer(on_export=refuse) as running:
            status, headers, answer = post(f"{running.url}/v1/traces", trace_request(good_span()).SerializeToString(),
                                           PROTOBUF)
        assert (status, headers["Retry-After"]) == (503, "3")
        assert "spool full" in status_of(answer).message

    def test_callback_failure_is_500(self) -> None:
        """on_export failing otherwise gives 500 naming the error type, and the server lives on."""
        calls: List[str] = []

        async def broken(signal: str, request: Any) -> None:
            calls.append(signal)
            raise KeyError("bug")

        with ReceiverServer(on_export=broken) as running:
            body = trace_request(good_span()).SerializeToString()
            assert post(f"{running.url}/v1/traces", body, PROTOBUF)[0] == 500
            assert post(f"{running.url}/v1/traces", body, PROTOBUF)[0] == 500
        assert calls == ["traces", "traces"]


def test_default_bounds() -> None:
    """By default a body may have 4 MiB, and 16 MiB once decompressed (docs/function.md)."""
    receiver = Receiver(lambda signal, request: None)
    assert (receiver.max_body_bytes, receiver.max_decompressed_bytes) == (4 * 1024 * 1024, 16 * 1024 * 1024)


def test_bounds_must_be_positive() -> None:
    """A receiver with a zero bound is a mistake caught at construction."""
    with pytest.raises(ValueError, match="positive"):
        Receiver(lambda signal, request: None, max_body_bytes=0)


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_the_sdk_exporter_posts_to_it(plain: ReceiverServer, compression: str) -> None:
    """The OpenTelemetry SDK's OTLP/HTTP span exporter exports to the receiver with success."""
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    exporter = OTLPSpanExporter(endpoint=f"{plain.url}/v1/traces", compression=Compression(
        "gzip" if compression == "gzip" else "none"))
    provider = TracerProvider(resource=Resource.create({"service.name": "sdk-test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("test").start_as_current_span("outer"), \
            provider.get_tracer("test").start_as_current_span("inner"):
        pass
    provider.shutdown()
    spans = plain.wait_for_spans(2)
    assert sorted(span.name for span in spans) == ["inner", "outer"]
    assert {"service.name": "sdk-test"}.items() <= plain.resources()[0].items()


def test_the_sdk_metric_exporter_posts_to_it(plain: ReceiverServer) -> None:
    """The SDK's OTLP/HTTP metric exporter delivers a counter to /v1/metrics."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=f"{plain.url}/v1/metrics"),
                                           export_interval_millis=600_000)
    provider = MeterProvider(metric_readers=[reader])
    provider.get_meter("test").create_counter("orders.placed").add(3)
    provider.force_flush()
    provider.shutdown()
    request = plain.wait_for_export("metrics")
    [metric] = request.resource_metrics[0].scope_metrics[0].metrics
    assert (metric.name, metric.sum.data_points[0].as_int) == ("orders.placed", 3)

"""The demo's OTLP/HTTP receiver and the terminal waterfall, on hand-built and SDK-exported data."""

from __future__ import annotations

import asyncio
import gzip
from typing import Any, List

import aiohttp
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    Histogram,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    Sum,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from fgext.emulator._otlp import OtlpReceiver, decode_logs, decode_metrics, decode_traces
from fgext.emulator._waterfall import render_metrics, render_trace, render_traces

TRACE = bytes.fromhex("5b8aa5a2d2c872e8321cf37308d69df2")
ROOT, INIT, INVOKE = bytes.fromhex("1111111111111111"), bytes.fromhex("2222222222222222"), bytes.fromhex(
    "3333333333333333")
T0 = 1_700_000_000_000_000_000
MS = 1_000_000


def kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, str):
        return KeyValue(key=key, value=AnyValue(string_value=value))
    return KeyValue(key=key, value=AnyValue(int_value=value))


def agent_trace(error: bool = False, trace_id: bytes = TRACE) -> ExportTraceServiceRequest:
    """One request as the OTLP plugin will shape it: SERVER root named after the function, init, invoke."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.append(kv("service.name", "fgext-demo"))
    spans = resource_spans.scope_spans.add().spans
    spans.append(Span(trace_id=trace_id, span_id=ROOT, name="fgext-demo", kind=Span.SPAN_KIND_SERVER,
                      start_time_unix_nano=T0, end_time_unix_nano=T0 + 100 * MS,
                      attributes=[kv("faas.invocation_id", "r1"), kv("faas.coldstart", "true")]))
    spans.append(Span(trace_id=trace_id, span_id=INVOKE, parent_span_id=ROOT, name="invoke",
                      kind=Span.SPAN_KIND_INTERNAL, start_time_unix_nano=T0 + 40 * MS,
                      end_time_unix_nano=T0 + 100 * MS,
                      status=Status(code=Status.STATUS_CODE_ERROR if error else Status.STATUS_CODE_OK,
                                    message="boom" if error else "")))
    spans.append(Span(trace_id=trace_id, span_id=INIT, parent_span_id=ROOT, name="init",
                      kind=Span.SPAN_KIND_INTERNAL, start_time_unix_nano=T0, end_time_unix_nano=T0 + 40 * MS))
    return request


def agent_logs() -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    records = request.resource_logs.add().scope_logs.add().log_records
    records.append(LogRecord(time_unix_nano=T0 + 50 * MS, severity_text="INFO", trace_id=TRACE,
                             span_id=INVOKE,
                             body=AnyValue(string_value="[Function] handling request r1")))
    records.append(LogRecord(time_unix_nano=T0 + 10 * MS, trace_id=TRACE, span_id=INIT,
                             body=AnyValue(string_value="[Function] loading")))
    records.append(LogRecord(time_unix_nano=T0 + 5 * MS, body=AnyValue(string_value="[Extension] no span")))
    return request


def agent_metrics() -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    metrics = request.resource_metrics.add().scope_metrics.add().metrics
    metrics.append(Metric(name="faas.invoke_duration", unit="ms", histogram=Histogram(data_points=[
        HistogramDataPoint(count=4, sum=120.0, attributes=[kv("faas.name", "fgext-demo")])])))
    metrics.append(Metric(name="faas.errors", sum=Sum(data_points=[NumberDataPoint(as_int=1)])))
    return request


class TestWaterfall:
    def test_renders_the_span_tree_with_bars_and_logs_under_their_span(self) -> None:
        """Root first, children by start time with tree branches, each log line under its own span."""
        text = render_trace(decode_traces(agent_trace(error=True)), decode_logs(agent_logs()))
        lines = text.splitlines()
        assert lines[0] == f"trace {TRACE.hex()}  fgext-demo  100.0 ms  (service fgext-demo)"
        assert lines[1].startswith("  fgext-demo  SERVER") and lines[1].endswith("|   100.0 ms")
        assert lines[2].startswith("  ├─ init ") and lines[2].endswith("|    40.0 ms")
        assert lines[3] == "  │     · [Function] loading"
        assert lines[4].startswith("  └─ invoke ") and lines[4].endswith("60.0 ms  ERROR boom")
        assert lines[5] == "        · INFO [Function] handling request r1"
        assert lines[6] == "    · (no span) [Extension] no span"
        bars = [line[line.index("|") + 1:line.rindex("|")] for line in lines[1:5] if "|" in line]
        root_bar, init_bar, invoke_bar = bars
        assert root_bar == "#" * 30
        assert init_bar.startswith("#" * 12) and init_bar.endswith(" " * 18)
        assert invoke_bar.startswith(" " * 12) and invoke_bar.endswith("#" * 18)

    def test_orphan_spans_still_show(self) -> None:
        """A span whose parent never arrived is shown as a root rather than lost."""
        request = agent_trace()
        del request.resource_spans[0].scope_spans[0].spans[0]  # drop the root
        text = render_trace(decode_traces(request))
        assert "init" in text and "invoke" in text

    def test_several_traces_in_the_given_order(self) -> None:
        """render_traces separates traces and follows the given order."""
        other = bytes.fromhex("00" * 15 + "01")
        spans = decode_traces(agent_trace()) + decode_traces(agent_trace(trace_id=other))
        text = render_traces(spans, order=[other.hex(), TRACE.hex()])
        assert text.index(other.hex()) < text.index(TRACE.hex()) and "\n\ntrace " in text

    def test_metrics_show_histograms_and_sums(self) -> None:
        """Each metric is one line with kind, unit, value and attributes."""
        text = render_metrics(decode_metrics(agent_metrics()))
        assert text.splitlines() == [
            "  faas.errors (sum): 1",
            "  faas.invoke_duration (histogram ms): count 4, sum 120.000, mean 30.000"
            "  {faas.name=fgext-demo}",
        ]


class TestWaterfallReadability:
    def test_invoke_shows_the_reported_duration(self) -> None:
        """A span carrying the report's duration shows it, not its millisecond-stamped extent (0.0 ms)."""
        request = agent_trace()
        invoke = request.resource_spans[0].scope_spans[0].spans[1]
        invoke.end_time_unix_nano = invoke.start_time_unix_nano  # stamped to the same millisecond
        invoke.attributes.append(KeyValue(key="fgext.report.duration_ms", value=AnyValue(double_value=0.9)))
        line = next(line for line in render_trace(decode_traces(request)).splitlines() if "invoke" in line)
        assert line.endswith("|     0.9 ms"), line

    def test_a_warm_trace_within_one_millisecond_shows_the_reported_duration(self) -> None:
        """Root and invoke stamped to the same millisecond: both lines and the header show the 0.9 ms."""
        request = ExportTraceServiceRequest()
        spans = request.resource_spans.add().scope_spans.add().spans
        spans.append(Span(trace_id=TRACE, span_id=ROOT, name="fgext-demo", kind=Span.SPAN_KIND_SERVER,
                          start_time_unix_nano=T0, end_time_unix_nano=T0))
        spans.append(Span(trace_id=TRACE, span_id=INVOKE, parent_span_id=ROOT, name="invoke",
                          kind=Span.SPAN_KIND_INTERNAL, start_time_unix_nano=T0, end_time_unix_nano=T0,
                          attributes=[KeyValue(key="fgext.report.duration_ms", value=AnyValue(double_value=0.9))]))
        lines = render_trace(decode_traces(request)).splitlines()
        assert lines[0].endswith("  fgext-demo  0.9 ms")
        assert lines[1].endswith("|     0.9 ms") and lines[2].endswith("|     0.9 ms"), lines

    def test_a_level_in_the_line_is_not_repeated(self) -> None:
        """A function logger's line that names its level is shown once; a bare line gets the severity."""
        request = ExportLogsServiceRequest()
        records = request.resource_logs.add().scope_logs.add().log_records
        body = "2026-11-24T09:14:41Z r1 INFO [Function] remaining time 2999 ms"
        records.append(LogRecord(time_unix_nano=T0 + 50 * MS, severity_text="INFO", trace_id=TRACE,
                                 span_id=INVOKE, body=AnyValue(string_value=body)))
        text = render_trace(decode_traces(agent_trace()), decode_logs(request))
        assert f"        · {body}" in text.splitlines()

    def test_memory_in_megabytes(self) -> None:
        """A metric in bytes (faas.mem_usage) is shown in MB."""
        request = ExportMetricsServiceRequest()
        metrics = request.resource_metrics.add().scope_metrics.add().metrics
        metrics.append(Metric(name="faas.mem_usage", unit="By", histogram=Histogram(data_points=[
            HistogramDataPoint(count=2, sum=2 * 40.5 * 1024 * 1024)])))
        assert render_metrics(decode_metrics(request)) == \
            "  faas.mem_usage (histogram MB): count 2, sum 81.000, mean 40.500"


def with_receiver(test: Any) -> None:
    async def main() -> None:
        receiver = OtlpReceiver()
        endpoint = await receiver.start()
        try:
            async with aiohttp.ClientSession() as session:
                await test(receiver, endpoint, session)
        finally:
            await receiver.stop()

    asyncio.run(main())


class TestReceiver:
    def test_decodes_protobuf_posts_of_every_signal(self) -> None:
        """Traces, logs and metrics POSTed as protobuf are stored and answered with protobuf responses."""
        async def test(receiver: OtlpReceiver, endpoint: str, session: aiohttp.ClientSession) -> None:
            headers = {"Content-Type": "application/x-protobuf"}
            messages = (("traces", agent_trace()), ("logs", agent_logs()), ("metrics", agent_metrics()))
            for path, message in messages:
                async with session.post(f"{endpoint}/v1/{path}", data=message.SerializeToString(),
                                        headers=headers) as response:
                    assert response.status == 200
                    assert response.content_type == "application/x-protobuf"
                    if path == "traces":
                        ExportTraceServiceResponse().ParseFromString(await response.read())
            assert [s.name for s in receiver.spans] == ["fgext-demo", "invoke", "init"]
            root = receiver.spans[0]
            assert root.kind == "SERVER" and root.attributes["faas.coldstart"] == "true"
            assert len(receiver.logs) == 3 and receiver.logs[0].span_id == INVOKE.hex()
            assert [m.name for m in receiver.metrics] == ["faas.invoke_duration", "faas.errors"]
            assert receiver.trace_ids() == [TRACE.hex()]
        with_receiver(test)

    def test_accepts_gzip_and_json(self) -> None:
        """A gzip-compressed protobuf body and an OTLP/JSON body are both understood."""
        async def test(receiver: OtlpReceiver, endpoint: str, session: aiohttp.ClientSession) -> None:
            body = gzip.compress(agent_trace().SerializeToString())
            async with session.post(f"{endpoint}/v1/traces", data=body, headers={
                    "Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}) as response:
                assert response.status == 200
            as_json = json_format.MessageToJson(agent_logs())
            async with session.post(f"{endpoint}/v1/logs", data=as_json,
                                    headers={"Content-Type": "application/json"}) as response:
                assert response.status == 200
            assert len(receiver.spans) == 3 and len(receiver.logs) == 3
            assert receiver.logs[1].body == "[Function] loading"
        with_receiver(test)

    def test_garbage_is_refused_and_noted(self) -> None:
        """A body that is not a valid message gets 400 and is listed in the receiver's errors."""
        async def test(receiver: OtlpReceiver, endpoint: str, session: aiohttp.ClientSession) -> None:
            async with session.post(f"{endpoint}/v1/traces", data=b"\xff\xff\xff",
                                    headers={"Content-Type": "application/x-protobuf"}) as response:
                assert response.status == 400
            assert receiver.spans == [] and receiver.errors and receiver.errors[0].startswith("/v1/traces")
        with_receiver(test)

    def test_wait_for_gives_up_after_its_timeout(self) -> None:
        """Waiting for traces that never come returns False after the bound, not never."""
        async def test(receiver: OtlpReceiver, endpoint: str, session: aiohttp.ClientSession) -> None:
            loop = asyncio.get_running_loop()
            started = loop.time()
            assert await receiver.wait_for(1, 0.2) is False
            assert loop.time() - started < 2
        with_receiver(test)

    def test_receives_what_the_opentelemetry_sdk_exports(self) -> None:
        """The real OTLP/HTTP span and metric exporters talk to the receiver."""
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.trace import SpanKind

        def export(endpoint: str) -> None:
            resource = Resource.create({"service.name": "sdk-test"})
            tracer_provider = TracerProvider(resource=resource)
            tracer_provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(f"{endpoint}/v1/traces")))
            tracer = tracer_provider.get_tracer("test")
            with tracer.start_as_current_span("handler", kind=SpanKind.SERVER), \
                    tracer.start_as_current_span("invoke"):
                pass
            tracer_provider.shutdown()
            reader = PeriodicExportingMetricReader(OTLPMetricExporter(f"{endpoint}/v1/metrics"),
                                                   export_interval_millis=60_000)
            meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
            meter_provider.get_meter("test").create_counter("faas.invocations").add(3)
            meter_provider.shutdown()

        async def test(receiver: OtlpReceiver, endpoint: str, session: aiohttp.ClientSession) -> None:
            await asyncio.get_running_loop().run_in_executor(None, export, endpoint)
            names: List[str] = sorted(span.name for span in receiver.spans)
            assert names == ["handler", "invoke"]
            text = render_traces(receiver.spans)
            assert "handler  SERVER" in text and "└─ invoke" in text and "(service sdk-test)" in text
            assert "faas.invocations (sum): 3" in render_metrics(receiver.metrics)
        with_receiver(test)

"""A small OTLP/HTTP receiver: ``/v1/traces``, ``/v1/logs`` and ``/v1/metrics`` into plain records.

It accepts what OpenTelemetry exporters send over HTTP (``application/x-protobuf``, or OTLP JSON,
optionally gzip-compressed), answers with the matching empty ``Export*ServiceResponse``, and keeps
spans, log records and metric points as flat dataclasses that the waterfall renderer and tests read.
The protobuf classes come from ``opentelemetry-proto`` and are imported on first use.
"""

from __future__ import annotations

import asyncio
import gzip
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple

from aiohttp import web

__all__ = ["LogData", "MetricPoint", "OtlpReceiver", "SpanData", "decode_logs", "decode_metrics",
           "decode_traces"]

SPAN_KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
STATUS_CODES = {0: "UNSET", 1: "OK", 2: "ERROR"}


@dataclass(frozen=True)
class SpanData:
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: str
    start_ns: int
    end_ns: int
    status: str = "UNSET"
    status_message: str = ""
    attributes: Dict[str, Any] = field(default_factory=dict)
    resource: Dict[str, Any] = field(default_factory=dict)

    @property
    def duration_ms(self) -> float:
        return max(0, self.end_ns - self.start_ns) / 1e6


@dataclass(frozen=True)
class LogData:
    time_ns: int
    body: str
    severity: str = ""
    trace_id: str = ""
    span_id: str = ""
    attributes: Dict[str, Any] = field(default_factory=dict)
    resource: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricPoint:
    """One data point of one metric; ``value`` is the number, or a histogram's (count, sum)."""

    name: str
    kind: str  # "sum", "gauge", "histogram", "exponential_histogram", "summary"
    unit: str
    value: Any
    attributes: Dict[str, Any] = field(default_factory=dict)
    resource: Dict[str, Any] = field(default_factory=dict)


def _any_value(value: Any) -> Any:
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_any_value(item) for item in value.array_value.values]
    if which == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    if which == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, which)


def _attributes(pairs: Any) -> Dict[str, Any]:
    return {pair.key: _any_value(pair.value) for pair in pairs}


def _walk(resources: Any, scopes: str, items: str) -> Iterator[Tuple[Dict[str, Any], Any]]:
    """(resource attributes, item) for every item of every scope of every resource in an export."""
    for resource in resources:
        attributes = _attributes(resource.resource.attributes)
        for scope in getattr(resource, scopes):
            for item in getattr(scope, items):
                yield attributes, item


def decode_traces(message: Any) -> List[SpanData]:
    """Flatten an ``ExportTraceServiceRequest`` into spans."""
    return [
        SpanData(
            trace_id=span.trace_id.hex(), span_id=span.span_id.hex(), parent_span_id=span.parent_span_id.hex(),
            name=span.name, kind=SPAN_KINDS.get(span.kind, str(span.kind)), start_ns=span.start_time_unix_nano,
            end_ns=span.end_time_unix_nano, status=STATUS_CODES.get(span.status.code, "UNSET"),
            status_message=span.status.message, attributes=_attributes(span.attributes), resource=resource,
        )
        for resource, span in _walk(message.resource_spans, "scope_spans", "spans")
    ]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def decode_logs(message: Any) -> List[LogData]:
    """Flatten an ``ExportLogsServiceRequest`` into log records."""
    return [
        LogData(
            time_ns=record.time_unix_nano or record.observed_time_unix_nano, body=_text(_any_value(record.body)),
            severity=record.severity_text, trace_id=record.trace_id.hex(), span_id=record.span_id.hex(),
            attributes=_attributes(record.attributes), resource=resource,
        )
        for resource, record in _walk(message.resource_logs, "scope_logs", "log_records")
    ]


def _point_value(kind: str, point: Any) -> Any:
    if kind in ("sum", "gauge"):
        return getattr(point, point.WhichOneof("value") or "as_double")
    if kind == "summary":
        return (point.count, point.sum)
    return (point.count, point.sum if point.HasField("sum") else None)


def decode_metrics(message: Any) -> List[MetricPoint]:
    """Flatten an ``ExportMetricsServiceRequest`` into data points."""
    points: List[MetricPoint] = []
    for resource, metric in _walk(message.resource_metrics, "scope_metrics", "metrics"):
        kind = metric.WhichOneof("data") or ""
        for point in (getattr(metric, kind).data_points if kind else []):
            points.append(MetricPoint(name=metric.name, kind=kind, unit=metric.unit, value=_point_value(kind, point),
                                      attributes=_attributes(point.attributes), resource=resource))
    return points


def _classes() -> Dict[str, Tuple[Any, Any, Any]]:
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

    return {
        "traces": (trace_service_pb2.ExportTraceServiceRequest, trace_service_pb2.ExportTraceServiceResponse,
                   decode_traces),
        "logs": (logs_service_pb2.ExportLogsServiceRequest, logs_service_pb2.ExportLogsServiceResponse,
                 decode_logs),
        "metrics": (metrics_service_pb2.ExportMetricsServiceRequest,
                    metrics_service_pb2.ExportMetricsServiceResponse, decode_metrics),
    }


class OtlpReceiver:
    """An in-process OTLP/HTTP endpoint; ``endpoint`` is what ``OTEL_EXPORTER_OTLP_ENDPOINT`` takes."""

    def __init__(self) -> None:
        self.spans: List[SpanData] = []
        self.logs: List[LogData] = []
        self.metrics: List[MetricPoint] = []
        self.requests: Dict[str, int] = {"traces": 0, "logs": 0, "metrics": 0}
        self.errors: List[str] = []
        self.changed: Optional[asyncio.Event] = None
        self._runner: Optional[web.AppRunner] = None
        self._endpoint = ""
        self._classes = _classes()
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        for signal in ("traces", "logs", "metrics"):
            self.app.router.add_post(f"/v1/{signal}", self._handler(signal))

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self.changed = asyncio.Event()
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        bound = self._runner.addresses[0]
        self._endpoint = f"http://{bound[0]}:{bound[1]}"
        return self._endpoint

    @property
    def endpoint(self) -> str:
        return self._endpoint

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def trace_ids(self) -> List[str]:
        """Trace IDs in the order their first span arrived."""
        return list(dict.fromkeys(span.trace_id for span in self.spans))

    async def wait_for(self, traces: int, timeout: float) -> bool:
        """Wait until ``traces`` distinct traces arrived; False if ``timeout`` passed first."""
        assert self.changed is not None, "start() the receiver first"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.trace_ids()) < traces:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except asyncio.TimeoutError:
                return False
        return True

    def _handler(self, signal: str) -> Any:
        request_class, response_class, decode = self._classes[signal]

        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            # aiohttp already inflates a gzip Content-Encoding; only a body still gzipped is ours to do.
            if body[:2] == b"\x1f\x8b":
                try:
                    body = gzip.decompress(body)
                except OSError as error:
                    return self._bad(signal, f"bad gzip body: {error}")
            is_json = request.content_type == "application/json"
            message = request_class()
            try:
                if is_json:
                    from google.protobuf import json_format  # type: ignore[import-untyped]

                    json_format.Parse(body.decode("utf-8"), message)
                else:
                    message.ParseFromString(body)
            except Exception as error:  # protobuf raises its own DecodeError / ParseError types
                return self._bad(signal, f"cannot decode {request.content_type or 'body'}: {error}")
            stores: Dict[str, List[Any]] = {"traces": self.spans, "logs": self.logs, "metrics": self.metrics}
            stores[signal].extend(decode(message))
            self.requests[signal] += 1
            if self.changed is not None:
                self.changed.set()
            if is_json:
                return web.json_response({})
            return web.Response(body=response_class().SerializeToString(),
                                content_type="application/x-protobuf")

        return handle

    def _bad(self, signal: str, message: str) -> web.Response:
        self.errors.append(f"/v1/{signal}: {message}")
        return web.Response(status=400, text=message)

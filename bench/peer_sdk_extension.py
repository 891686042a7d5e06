"""The peer: the extension a competent user would write without fgext, for ``bench/run.py --only peer``.

Register and subscribe with urllib, serve invokes and telemetry with aiohttp, and turn the platform's
events into OpenTelemetry the usual way: the SDK's TracerProvider and LoggerProvider with a
BatchSpanProcessor and a BatchLogRecordProcessor feeding the OTLP/HTTP exporters, the function's log
lines through the SDK's ``LoggingHandler``, and both providers force-flushed at each ``platform.report``
(a frozen sandbox runs no batch timer). Run: ``python bench/peer_sdk_extension.py PORT`` with
``EXTENSION_API_ADDR`` and ``OTEL_EXPORTER_OTLP_ENDPOINT`` set; it needs opentelemetry-sdk and
opentelemetry-exporter-otlp-proto-http (fgext's own dependencies).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import urllib.request
from datetime import datetime
from typing import Any, Dict, Optional

from aiohttp import web
from opentelemetry.context import attach, detach
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, set_span_in_context

NAME = "extensionPeer.sh"


def _post(path: str, body: Dict[str, Any], port: int) -> None:
    request = urllib.request.Request(
        f"http://{os.environ['EXTENSION_API_ADDR']}{path}", data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", "FunctionGraph-Extension-Name": NAME,
                 "FunctionGraph-Extension-Address": f"127.0.0.1:{port}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        answer.read()


def _ns(stamp: Optional[str]) -> Optional[int]:
    if not stamp:
        return None
    return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1e9)


class Peer:
    def __init__(self) -> None:
        resource = Resource.create({"service.name": "peer", "faas.name": "hello"})
        self.tracer_provider = TracerProvider(resource=resource)
        self.tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self.tracer = self.tracer_provider.get_tracer("peer")
        self.logger_provider = LoggerProvider(resource=resource)
        self.logger_provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
        self.log = logging.getLogger("peer.function")
        self.log.propagate = False
        self.log.setLevel(logging.INFO)
        self.log.addHandler(LoggingHandler(logger_provider=self.logger_provider))
        self.open: Dict[str, Span] = {}
        self.current: Optional[Span] = None

    async def invoke(self, request: web.Request) -> web.Response:
        json.loads(await request.read())
        return web.json_response({"status": "ok"})

    async def telemetry(self, request: web.Request) -> web.Response:
        for event in json.loads(await request.read()):
            name = event.get("name")
            if name == "platform.start":
                span = self.tracer.start_span("invoke", kind=SpanKind.SERVER, start_time=_ns(event.get("startTime")),
                                              attributes={"faas.invocation_id": event.get("traceId", "")})
                self.open[event.get("traceId", "")] = self.current = span
            elif name in ("function", "extension"):
                # correlated with the invocation's span, as the SDK's LoggingHandler does from the context
                token = attach(set_span_in_context(self.current)) if self.current is not None else None
                try:
                    self.log.info(event.get("logs", ""), extra={"log.source": name})
                finally:
                    if token is not None:
                        detach(token)
            elif name == "platform.report":
                span = self.open.pop(event.get("traceId", ""), None)
                if span is not None:
                    metrics = event.get("reportMetrics") or {}
                    span.set_attribute("faas.duration_ms", float(metrics.get("durationMs", 0)))
                    span.end(end_time=_ns(event.get("endTime")))
                self.current = None
                # the sandbox may be frozen right after the report: send now, not on the batch timer
                self.tracer_provider.force_flush()
                self.logger_provider.force_flush()
        return web.json_response({"status": "ok"})

    async def shutdown(self, _app: web.Application) -> None:
        self.tracer_provider.shutdown()
        self.logger_provider.shutdown()


def main() -> None:
    port = int(sys.argv[1])
    peer = Peer()
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/extension/invoke", peer.invoke)
    app.router.add_post("/", peer.telemetry)
    app.on_cleanup.append(peer.shutdown)
    _post("/extension/register", {}, port)
    _post("/telemetry", {"subscriber": {"protocol": "POST", "uri": f"http://127.0.0.1:{port}"},
                         "types": ["platform", "function", "extension"]}, port)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()

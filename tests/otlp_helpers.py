"""Shared helpers of the OTLP unit tests: platform events as the spec writes them, and the assembler."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from fgext._parse import parse_batch
from fgext.otlp._metrics import Metrics
from fgext.otlp._pending import Pending
from fgext.otlp._requests import encode_logs_requests
from fgext.otlp._resource import ResourceBuilder
from fgext.otlp._traces import Assembler

INIT_ID = "69be64a7-0233-11e8-82e4-e5d37911193e"  # the spec's init examples
INVOKE_ID = "3da1f2dc-3222-475e-9205-e2e6c6318895"  # the spec's invoke example
POD = "pool22-300-128-fusion-64774779-4g77v"


class Clock:
    """A hand-driven monotonic clock, so deadlines are tested without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_assembler(clock: Optional[Clock] = None, *, open_wait: float = 60.0, timeout: float = 30.0,
                   temporality: str = "cumulative", max_log_bytes: int = 256 * 1024) -> Assembler:
    resource = ResourceBuilder({}, function_name="hello", function_version="latest")
    return Assembler(resource, Metrics(temporality, 1), open_wait_s=open_wait, function_timeout_s=timeout,
                     monotonic=clock or Clock(), max_log_bytes=max_log_bytes)


def events(*objects: Dict[str, Any]) -> List[Any]:
    batch = parse_batch(list(objects))
    assert not batch.errors, batch.errors
    return batch.events


def ts(ms: int) -> str:
    return f"2023-02-01T00:03:{50 + ms // 1000:02d}.{ms % 1000:03d}Z"


def ns(ms: int) -> int:
    return 1675209830_000_000_000 + ms * 1_000_000


def start(rid: str, ms: int, name: str = "platform.start") -> Dict[str, Any]:
    return {"name": name, "startTime": ts(ms), "traceId": rid}


def done(rid: str, ms: int, status: str = "success", name: str = "platform.RuntimeDone") -> Dict[str, Any]:
    return {"name": name, "startTime": ts(ms), "tracelId": rid, "status": status}


def report(rid: str, begin: int, end: int, status: str = "success", name: str = "platform.report",
           **metrics: Any) -> Dict[str, Any]:
    values = {"durationMs": float(end - begin), "billingDurationMS": float(end - begin + 1),
              "memoryUsed": 23.4, "memorySize": 128, "podName": POD}
    values.update(metrics)
    return {"name": name, "startTime": ts(begin), "tracelId": rid, "endTime": ts(end), "status": status,
            "reportMetrics": values}


def log(ms: int, text: str, name: str = "function") -> Dict[str, Any]:
    return {"name": name, "startTime": ts(ms), "logs": text}


def invocation(rid: str, begin: int, end: int, status: str = "success") -> List[Dict[str, Any]]:
    return [start(rid, begin), done(rid, end, status), report(rid, begin, end + 1, status)]


def cold(rid: str, begin: int) -> List[Dict[str, Any]]:
    return [start(rid, begin, "platform.initStart"), done(rid, begin + 10, name="platform.initRuntimeDone"),
            report(rid, begin, begin + 11, name="platform.initReport")]


def by_name(spans: List[Span]) -> Dict[str, Span]:
    return {span.name: span for span in spans}


def attrs(message: Any) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for kv in message.attributes:
        out[kv.key] = getattr(kv.value, kv.value.WhichOneof("value"))
    return out



def take_spans(assembler: Assembler) -> List[Span]:
    """The finished spans, let go as a flush does once they are encoded (the log lines stay)."""
    pending = assembler.pending()
    spans = list(pending.spans)
    assembler.taken(Pending(spans=pending.spans, span_count=pending.span_count, lines=[], links=[]))
    return spans


def encoded_logs(assembler: Assembler) -> List[LogRecord]:
    """The pending log lines encoded as a flush encodes them (correlated at hand-over), then let go."""
    pending = assembler.pending()
    records: List[LogRecord] = []
    for data, _ in encode_logs_requests(assembler.resource.message(), pending.lines, pending.links).requests:
        request = ExportLogsServiceRequest.FromString(data)
        records.extend(request.resource_logs[0].scope_logs[0].log_records)
    assembler.taken(Pending(spans=pending.spans, span_count=0, lines=pending.lines, links=pending.links))
    return records


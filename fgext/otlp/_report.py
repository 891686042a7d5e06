"""The per-invocation report record: the platform's report of an invocation as one OTLP log record.

Written by the assembler (``_traces``) when it closes an invocation whose report arrived, correlated to
the invocation's trace and invoke span, so a backend shows the report line beside the function's logs.
Off with ``FGEXT_OTLP_REPORT_LOG=0``.
"""

from __future__ import annotations

from typing import List, Optional

from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from fgext._events import ReportEvent
from fgext.otlp._ids import TRACE_FLAG_SAMPLED, Attribute, put_attributes
from fgext.otlp._resource import safe_text

__all__ = ["REPORT_ESTIMATE", "is_oom", "report_record"]

#: bytes a report record takes once encoded, for the pending-memory estimate
REPORT_ESTIMATE = 400
_INFO, _ERROR = 9, 17


def is_oom(report: ReportEvent) -> bool:
    """Whether the function died of (or reached) its memory limit: the status names memory (the platform
    documents no status text but ``success``, so any case and wording), or memory used reached the size."""
    if "memory" in report.status.lower():
        return True
    used, size = report.metrics.memory_used_mb, report.metrics.memory_size_mb
    return used is not None and size is not None and size > 0 and used >= size


def _number(value: Optional[float], unit: str) -> str:
    return "-" if value is None else f"{value:g} {unit}"


def report_record(request_id: str, trace_id: bytes, span_id: bytes, report: ReportEvent, *, coldstart: bool,
                  observed_ns: int, sampled: bool = True) -> LogRecord:
    """One log record like the platform's report line, with the report's values as attributes; its trace flags
    say what the invocation's log lines say (the head sampling decision)."""
    metrics = report.metrics
    oom = is_oom(report)
    body = (f"REPORT RequestId: {request_id} Duration: {_number(metrics.duration_ms, 'ms')} "
            f"Billed Duration: {_number(metrics.billing_duration_ms, 'ms')} "
            f"Memory Size: {_number(metrics.memory_size_mb, 'MB')} "
            f"Max Memory Used: {_number(metrics.memory_used_mb, 'MB')} Status: {report.status or '-'}")
    ok = report.status.lower() == "success" and not oom
    record = LogRecord(time_unix_nano=report.end_ns or report.start_ns, observed_time_unix_nano=observed_ns,
                       trace_id=trace_id, span_id=span_id, flags=TRACE_FLAG_SAMPLED if sampled else 0,
                       severity_number=_INFO if ok else _ERROR,  # type: ignore[arg-type]
                       severity_text="INFO" if ok else "ERROR")
    record.body.string_value = safe_text(body)
    attributes: List[Attribute] = [
        ("fgext.log.source", "platform"), ("fgext.event.name", "platform.report"),
        ("faas.invocation_id", request_id), ("faas.coldstart", coldstart), ("fgext.report.status", report.status),
    ]
    for key, value in (("duration_ms", metrics.duration_ms), ("billed_duration_ms", metrics.billing_duration_ms),
                       ("memory_used_mb", metrics.memory_used_mb), ("memory_size_mb", metrics.memory_size_mb)):
        if value is not None:
            attributes.append((f"fgext.report.{key}", value))
    if oom:
        attributes.append(("fgext.oom", True))
    put_attributes(record.attributes, attributes)
    return record

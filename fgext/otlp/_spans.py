"""Spans: how a phase and a request are written as OTLP spans, and the attributes each carries.

A part of the assembler step of the OTLP sink's path (listener handler -> parse -> pipeline ->
``OtlpPlugin.on_telemetry`` -> assembler (``_traces``, which calls this module when it closes a request)
-> flush: take -> encode -> shipper -> transport). Given plain values (times, IDs, a report), it fills
spans in place in the assembler's pending message; it keeps no state and decides nothing about when.

Attributes of a phase span (``init``, ``restore``, ``invoke``): ``fgext.status``, the report's metrics as
``fgext.report.*`` (the extra metrics the platform adds, when they are plain values) and, for an adopted
init, the request ID that caused it as ``faas.invocation_id``. The root span carries the
``faas.invocation_id``, ``faas.coldstart`` and ``faas.trigger`` of the invocation, and
``fgext.incomplete`` with ``fgext.close_reason`` when the request was closed before it was complete.
"""

from __future__ import annotations

from typing import List, Optional

from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from fgext._events import ReportEvent
from fgext.otlp._ids import TRACE_FLAG_SAMPLED, Attribute, put_attributes
from fgext.otlp._resource import safe_text

__all__ = ["phase_attributes", "root_attributes", "write_span"]


def write_span(span: Span, trace_id: bytes, span_id: bytes, name: str, kind: int, begin: int, end: int,
               attributes: List[Attribute], error: Optional[str]) -> None:
    """Fill a span added in place to the pending spans (the fastest way to make one)."""
    span.trace_id = trace_id
    span.span_id = span_id
    span.name = name
    span.kind = kind  # type: ignore[assignment]
    span.start_time_unix_nano = begin
    span.end_time_unix_nano = end
    span.flags = TRACE_FLAG_SAMPLED
    put_attributes(span.attributes, attributes)
    if error:
        span.status.code = Status.STATUS_CODE_ERROR
        span.status.message = safe_text(error)


def phase_attributes(kind: str, status: Optional[str], report: Optional[ReportEvent],
                     adopted_init_id: Optional[str]) -> List[Attribute]:
    """The attributes of one phase's span: the adopted init's request ID, its status, its report's metrics."""
    attributes: List[Attribute] = []
    if adopted_init_id is not None and kind in ("init", "restore"):
        attributes.append(("faas.invocation_id", adopted_init_id))
    if status:
        attributes.append(("fgext.status", status))
    if report is not None:
        metrics = report.metrics
        if metrics.duration_ms is not None:
            attributes.append(("fgext.report.duration_ms", metrics.duration_ms))
        if metrics.billing_duration_ms is not None:
            attributes.append(("fgext.report.billed_duration_ms", metrics.billing_duration_ms))
        if metrics.memory_used_mb is not None:
            attributes.append(("fgext.report.memory_used_mb", metrics.memory_used_mb))
        if metrics.memory_size_mb is not None:
            attributes.append(("fgext.report.memory_size_mb", metrics.memory_size_mb))
        if metrics.pod_name:
            attributes.append(("fgext.report.pod_name", metrics.pod_name))
        for key, value in metrics.extra.items():
            if isinstance(value, (str, bool, int, float)):
                attributes.append((f"fgext.report.{key}", value))
    return attributes


def root_attributes(request_id: str, coldstart: bool, adopted_init_id: Optional[str],
                    close_reason: Optional[str]) -> List[Attribute]:
    """The attributes of a request's root span; ``close_reason`` when it was closed incomplete."""
    attributes: List[Attribute] = [
        ("faas.invocation_id", request_id), ("faas.coldstart", coldstart), ("faas.trigger", "other"),
    ]
    if adopted_init_id is not None:
        attributes.append(("fgext.init.request_id", adopted_init_id))
    if close_reason is not None:
        attributes.append(("fgext.incomplete", True))
        attributes.append(("fgext.close_reason", close_reason))
    return attributes

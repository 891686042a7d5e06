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

from typing import Dict, List, Optional, Tuple

from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from fgext._events import ReportEvent
from fgext.otlp._ids import TRACE_FLAG_SAMPLED, Attribute, keep_part, put_attributes
from fgext.otlp._resource import safe_text

__all__ = ["phase_attributes", "root_attributes", "write_span"]


def write_span(span: Span, trace_id: bytes, span_id: bytes, name: str, kind: int, begin: int, end: int,
               attributes: List[Attribute], error: Optional[str], shared: Shared = ()) -> None:
    """Fill a span added in place to the pending spans (the fastest way to make one).

    ``shared`` are attributes that take a handful of values (``phase_attributes``, ``root_attributes``):
    they are merged from bytes serialized once per combination, a third of the cost of writing them.
    """
    span.trace_id = trace_id
    span.span_id = span_id
    span.name = name
    span.kind = kind  # type: ignore[assignment]
    span.start_time_unix_nano = begin
    span.end_time_unix_nano = end
    span.flags = TRACE_FLAG_SAMPLED
    if shared:
        span.MergeFromString(_SHARED.get(shared) or _shared(shared))
    put_attributes(span.attributes, attributes)
    if error:
        span.status.code = Status.STATUS_CODE_ERROR
        span.status.message = safe_text(error)


#: Attributes that take a handful of values in a sandbox, in a tuple (a key of _SHARED). Each key's values are of
#: one type (True and 1 would be one key).
Shared = Tuple[Attribute, ...]
_SHARED: Dict[Shared, bytes] = {}


def _shared(shared: Shared) -> bytes:
    holder = Span()
    put_attributes(holder.attributes, shared)
    return keep_part(_SHARED, shared, holder.SerializeToString())


def phase_attributes(kind: str, status: Optional[str], report: Optional[ReportEvent],
                     adopted_init_id: Optional[str]) -> Tuple[Shared, List[Attribute]]:
    """The attributes of one phase's span: its status and its report's memory size and pod (shared by most
    invocations), and the adopted init's request ID and its report's other metrics."""
    attributes: List[Attribute] = []
    if adopted_init_id is not None and kind in ("init", "restore"):
        attributes.append(("faas.invocation_id", adopted_init_id))
    if report is None:
        return ((("fgext.status", status),) if status else ()), attributes
    metrics = report.metrics
    size, pod = metrics.memory_size_mb, metrics.pod_name
    shared: Shared = (
        ((("fgext.status", status),) if status else ())
        + ((("fgext.report.memory_size_mb", size),) if size is not None else ())
        + ((("fgext.report.pod_name", pod),) if pod else ()))
    if metrics.duration_ms is not None:
        attributes.append(("fgext.report.duration_ms", metrics.duration_ms))
    if metrics.billing_duration_ms is not None:
        attributes.append(("fgext.report.billed_duration_ms", metrics.billing_duration_ms))
    if metrics.memory_used_mb is not None:
        attributes.append(("fgext.report.memory_used_mb", metrics.memory_used_mb))
    for key, value in metrics.extra.items():
        if isinstance(value, (str, bool, int, float)):
            attributes.append((f"fgext.report.{key}", value))
    return shared, attributes


_ROOT_SHARED: Dict[bool, Shared] = {
    cold: (("faas.coldstart", cold), ("faas.trigger", "other")) for cold in (True, False)
}


def root_attributes(request_id: str, coldstart: bool, adopted_init_id: Optional[str],
                    close_reason: Optional[str]) -> Tuple[Shared, List[Attribute]]:
    """The attributes of a request's root span: cold start and trigger (shared), the invocation's ID, and
    ``close_reason`` when it was closed incomplete."""
    attributes: List[Attribute] = [("faas.invocation_id", request_id)]
    if adopted_init_id is not None:
        attributes.append(("fgext.init.request_id", adopted_init_id))
    if close_reason is not None:
        attributes.append(("fgext.incomplete", True))
        attributes.append(("fgext.close_reason", close_reason))
    return _ROOT_SHARED[bool(coldstart)], attributes

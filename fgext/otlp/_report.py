"""The per-invocation report record: the platform's report of an invocation as one OTLP log record.

Noted by the assembler (``_traces``) when it closes an invocation whose report arrived, as a plain
:data:`ReportLine` (:func:`report_line`), correlated to the invocation's trace and invoke span, so a backend
shows the report line beside the function's logs. The encoder (``_requests``) writes it straight into the
request (:func:`write_report`): a record built on its own would be copied there once more.
Off with ``FGEXT_OTLP_REPORT_LOG=0``.
"""

from __future__ import annotations

import struct
from typing import Any, Dict, List, Optional, Tuple

from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from fgext._events import ReportEvent
from fgext.otlp._ids import TRACE_FLAG_SAMPLED, Attribute, keep_part, put_attributes
from fgext.otlp._resource import safe_text

__all__ = ["REPORT_ESTIMATE", "ReportLine", "is_oom", "record_of", "report_line", "report_record", "write_report"]

#: bytes a report record takes once encoded, for the pending-memory estimate
REPORT_ESTIMATE = 400
_INFO, _ERROR = 9, 17

#: A report record, plain until it is encoded: (request ID, trace ID, invoke span ID, trace flags, cold start,
#: observed time ns, time ns, the report's status, duration ms, billed duration ms, memory size MB, memory used
#: MB). Plain values only: neither the report event (raw JSON included) nor its metrics are kept while it waits.
ReportLine = Tuple[str, bytes, bytes, int, bool, int, int, str, Optional[float], Optional[float], Optional[int],
                   Optional[float]]


def _oom(status: str, used: Optional[float], size: Optional[int]) -> bool:
    if "memory" in status.lower():
        return True
    return used is not None and size is not None and size > 0 and used >= size


def is_oom(report: ReportEvent) -> bool:
    """Whether the function died of (or reached) its memory limit: the status names memory (the platform
    documents no status text but ``success``, so any case and wording), or memory used reached the size."""
    return _oom(report.status, report.metrics.memory_used_mb, report.metrics.memory_size_mb)


def _number(value: Optional[float], unit: str) -> str:
    return "-" if value is None else f"{value:g} {unit}"


def report_line(request_id: str, trace_id: bytes, span_id: bytes, report: ReportEvent, *, coldstart: bool,
                observed_ns: int, sampled: bool = True) -> ReportLine:
    """The plain report record of an invocation; its trace flags say what the invocation's log lines say (the
    head sampling decision)."""
    metrics = report.metrics
    return (request_id, trace_id, span_id, TRACE_FLAG_SAMPLED if sampled else 0, coldstart, observed_ns,
            report.end_ns or report.start_ns, report.status, metrics.duration_ms, metrics.billing_duration_ms,
            metrics.memory_size_mb, metrics.memory_used_mb)


#: The serialized part of a record that its invocation shares with most others: severity, and the attributes
#: that take a handful of values (source, event name, cold start, status, memory size, out of memory).
_SHARED: Dict[Tuple[str, bool, Optional[int], bool], bytes] = {}
#: time_unix_nano (field 1) and observed_time_unix_nano (field 11), both fixed64, with their tags.
_TIMES = struct.Struct("<BQBQ")


def _shared(status: str, coldstart: bool, size: Optional[int], oom: bool) -> bytes:
    ok = not oom and status.lower() == "success"
    record = LogRecord(severity_number=_INFO if ok else _ERROR,  # type: ignore[arg-type]
                       severity_text="INFO" if ok else "ERROR")
    attributes: List[Attribute] = [
        ("fgext.log.source", "platform"), ("fgext.event.name", "platform.report"), ("faas.coldstart", coldstart),
        ("fgext.report.status", status),
    ]
    if size is not None:
        attributes.append(("fgext.report.memory_size_mb", size))
    if oom:
        attributes.append(("fgext.oom", True))
    put_attributes(record.attributes, attributes)
    return keep_part(_SHARED, (status, coldstart, size, oom), record.SerializeToString())


def write_report(record: Any, line: ReportLine) -> None:
    """Fill ``record`` (a LogRecord just added to a request) like the platform's report line, with the report's
    values as attributes. The part most records share is merged from bytes made once; serialized fragments
    of one message concatenate into the message they make together, so the record is the one that
    field-by-field writes make."""
    request_id, trace_id, span_id, flags, coldstart, observed_ns, time_ns, status, duration, billed, size, used = line
    oom = _oom(status, used, size)
    shared = _SHARED.get((status, coldstart, size, oom)) or _shared(status, coldstart, size, oom)
    # a negative or too large time raises here (struct.error); both were checked when the event was parsed
    record.MergeFromString(_TIMES.pack(0x09, time_ns, 0x59, observed_ns) + shared)
    record.trace_id = trace_id
    record.span_id = span_id
    record.flags = flags
    record.body.string_value = safe_text(
        f"REPORT RequestId: {request_id} Duration: {_number(duration, 'ms')} "
        f"Billed Duration: {_number(billed, 'ms')} Memory Size: {_number(size, 'MB')} "
        f"Max Memory Used: {_number(used, 'MB')} Status: {status or '-'}")
    attributes: List[Attribute] = [("faas.invocation_id", request_id)]
    if duration is not None:
        attributes.append(("fgext.report.duration_ms", duration))
    if billed is not None:
        attributes.append(("fgext.report.billed_duration_ms", billed))
    if used is not None:
        attributes.append(("fgext.report.memory_used_mb", used))
    put_attributes(record.attributes, attributes)


def record_of(line: ReportLine) -> LogRecord:
    """The report record of ``line`` as a message of its own (what the encoder writes into a request)."""
    record = LogRecord()
    write_report(record, line)
    return record


def report_record(request_id: str, trace_id: bytes, span_id: bytes, report: ReportEvent, *, coldstart: bool,
                  observed_ns: int, sampled: bool = True) -> LogRecord:
    """One log record like the platform's report line, with the report's values as attributes."""
    return record_of(report_line(request_id, trace_id, span_id, report, coldstart=coldstart,
                                 observed_ns=observed_ns, sampled=sampled))

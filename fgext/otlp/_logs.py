"""Log records: a log line as a plain record, its size bound, and its encoding into OTLP LogRecords.

Two steps of the OTLP sink's path (listener handler -> parse -> pipeline -> chain -> lane ->
``OtlpPlugin.on_telemetry`` -> assembler -> pending -> flush: take -> encode -> shipper -> transport) use
this module. The assembler
(``_traces``) turns each ``function``/``extension``/unknown event into a :data:`LogLine` when it
consumes it (:func:`log_line`: the text is cut to ``FGEXT_OTLP_MAX_LOG_BYTES`` there, so pending memory
holds no more than that per line), and at ``take`` pairs each line with its :data:`Link` (the phase it
was correlated with). The encoder (``_requests``) calls :func:`encode_logs` on those plain records; it
asks nothing of anyone.
"""

from __future__ import annotations

import json
import re
import struct
from typing import Any, Dict, Optional, Sequence, Tuple, Union

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from fgext._events import LogEvent, UnknownEvent
from fgext.otlp._ids import kv
from fgext.otlp._resource import safe_text

__all__ = ["LOG_SOURCE", "TRUNCATED", "Link", "LogLine", "encode_logs", "log_line", "truncate_utf8"]

# W3C-style severities per the OTel log data model; CRITICAL maps to FATAL like the Python SDK does.
_SEVERITY: Dict[str, int] = {
    "TRACE": 1, "DEBUG": 5, "INFO": 9, "NOTICE": 10, "WARN": 13, "WARNING": 13, "ERROR": 17,
    "CRITICAL": 21, "FATAL": 21,
}
# Upper-case words only, near the start: "no error occurred" must not become an ERROR record.
_LEVEL = re.compile(r"\b(TRACE|DEBUG|INFO|NOTICE|WARNING|WARN|ERROR|CRITICAL|FATAL)\b")
_LEVEL_SCAN = 128

LOG_SOURCE = "fgext.log.source"
TRUNCATED = "fgext.log.truncated"
ORIGINAL_BYTES = "fgext.log.original_bytes"
_SOURCE_ATTRS = {
    "function": KeyValue(key=LOG_SOURCE, value=AnyValue(string_value="function")),
    "extension": KeyValue(key=LOG_SOURCE, value=AnyValue(string_value="extension")),
    "unknown": KeyValue(key=LOG_SOURCE, value=AnyValue(string_value="platform")),
}

#: One pending log line, plain: (time ns, observed time ns, source, body, unknown event's name or None,
#: original size in bytes when the body was truncated, else 0).
LogLine = Tuple[int, int, str, str, Optional[str], int]
#: The phase a line was correlated with: (trace ID, span ID, request ID).
Link = Tuple[bytes, bytes, str, int]  # trace ID, span ID, request ID, trace flags
#: Bytes a record costs beyond its body (timestamps, severity, source, trace and span IDs, request ID):
#: what the pending-memory and request-size estimates add per line.
LINE_OVERHEAD = 160


def truncate_utf8(text: str, max_bytes: int) -> Tuple[str, int]:
    """``text`` cut to at most ``max_bytes`` of UTF-8 on a character boundary, and its original size in
    bytes when it was cut (else 0). Lone surrogates count as their escapes, as they are exported."""
    if len(text) * 4 <= max_bytes:  # the common case, without encoding: no character is over 4 bytes
        return text, 0
    data = text.encode("utf-8", "backslashreplace")
    if len(data) <= max_bytes:
        return text, 0
    return data[:max_bytes].decode("utf-8", "ignore"), len(data)


def log_line(event: Union[LogEvent, UnknownEvent], observed_ns: int, max_bytes: int) -> LogLine:
    """The plain record of a log event or of an event fgext does not know, its body at most ``max_bytes``."""
    if isinstance(event, LogEvent):
        body, original = truncate_utf8(event.message.rstrip("\r\n"), max_bytes)
        return (event.start_ns, observed_ns, event.category, body, None, original)
    try:
        text = json.dumps(dict(event.raw), ensure_ascii=False, default=str)
    except (ValueError, TypeError, RecursionError):  # nested past the recursion limit: keep the name
        text = f"{{\"name\": {json.dumps(event.name, ensure_ascii=False)}}}"
    body, original = truncate_utf8(text, max_bytes)
    at = event.start_ns if event.start_ns is not None else observed_ns
    return (at, observed_ns, "unknown", body, event.name, original)


_TEMPLATES: Dict[Tuple[str, Optional[str]], bytes] = {}


def _template(source: str, word: Optional[str]) -> bytes:
    """The serialized constant part of a record (severity and source), merged in one call."""
    template = LogRecord()
    if word is not None:
        template.severity_number = _SEVERITY[word]  # type: ignore[assignment]
        template.severity_text = word
    template.attributes.append(_SOURCE_ATTRS.get(source) or _SOURCE_ATTRS["unknown"])
    data: bytes = template.SerializeToString()
    _TEMPLATES[(source, word)] = data
    return data


def _truncation(original: int) -> bytes:
    record = LogRecord(attributes=[kv(TRUNCATED, True), kv(ORIGINAL_BYTES, original)])
    data: bytes = record.SerializeToString()
    return data


def encode_logs(container: Any, lines: Sequence[LogLine], links: Sequence[Optional[Link]]) -> None:
    """Append one OTLP log record per line to ``container`` (a repeated LogRecord field).

    ``links[i]`` is the phase ``lines[i]`` belongs to, or ``None``. The hot path: records are added in
    place, and everything but the body is merged in one C-level call from bytes: the two timestamps
    packed with their field tags, then the serialized parts shared by many records (severity and
    source; trace ID, span ID and request ID of a phase), joined once per kind of line in a run of lines of one phase.
    Serialized fragments of one message concatenate into the message they make together, so the
    record is the one that field-by-field writes would make.
    """
    add = container.add
    level = _LEVEL
    templates = _TEMPLATES
    pack_times = _TIMES.pack
    cached_link: Optional[Link] = None
    correlation = b""
    # the shared part of each kind of line (source and level) in the current run of lines of one phase
    joined: Dict[Tuple[str, Optional[str]], bytes] = {}
    for (at, observed, source, body, name, original), link in zip(lines, links):
        record: LogRecord = add()
        if name is None:
            match = level.search(body, 0, _LEVEL_SCAN)
            key = (source, match[1] if match is not None else None)
        else:
            key = ("unknown", None)
        if link is not cached_link:
            cached_link = link
            joined = {}
            correlation = b"" if link is None else LogRecord(
                trace_id=link[0], span_id=link[1], flags=link[3],
                attributes=[kv("faas.invocation_id", link[2])],
            ).SerializeToString()
        shared = joined.get(key)
        if shared is None:
            shared = joined[key] = (templates.get(key) or _template(*key)) + correlation
        # a negative or too large time raises here (struct.error): the encoder drops this line alone
        record.MergeFromString(pack_times(0x09, at, 0x59, observed) + shared)
        try:
            record.body.string_value = body
        except UnicodeEncodeError:
            record.body.string_value = safe_text(body)
        if name is not None:
            record.attributes.add(key="fgext.event.name").value.string_value = safe_text(name)
        if original:
            record.MergeFromString(_truncation(original))


#: time_unix_nano (field 1) and observed_time_unix_nano (field 11), both fixed64, with their tags.
_TIMES = struct.Struct("<BQBQ")

"""Parsing: the platform's JSON objects to typed events, every value checked at this boundary.

The parse step of every sink's path (listener handler (``fgext._agent``) -> **parse** -> pipeline
(:mod:`fgext._pipeline`) -> chain -> a lane per sink -> the sink, for OTLP ``OtlpPlugin.on_telemetry`` ->
assembler -> pending -> flush: take -> encode -> shipper -> transport). The handler gives :func:`parse_batch` (or
:func:`parse_body`) what a telemetry POST held and :func:`parse_invoke` an invoke's body; the events
(:mod:`fgext._events`) go on to the pipeline, the skipped objects are counted.

This is the boundary where values are checked: a time OTLP cannot carry (:mod:`fgext._time`) makes its
event malformed here, a memory size it cannot carry is left out, so nothing further down has to guard
against them. An object that is not an event at all (not an object, no name, a documented event without
a usable ``startTime`` or request ID) raises :class:`~fgext._errors.MalformedEvent` from
:func:`parse_event`; :func:`parse_batch` counts and skips those and keeps the rest.

The platform document disagrees with itself (see the spec, section 5); every variant is accepted:
``traceId``/``tracelId``, ``platform.RuntimeDone``/``platform.runtimeDone`` (names are matched
case-insensitively), ``metrics``/``reportMetrics``, ``billingDurationMS``/``billingDurationMs`` (metric keys
are matched case-insensitively), and stray spaces around string values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Type, TypeVar, Union

from fgext._errors import MalformedEvent
from fgext._events import (
    AnyEvent,
    Event,
    ExtensionLog,
    FunctionLog,
    InitReport,
    InitRuntimeDone,
    InitStart,
    Invoke,
    LogEvent,
    PlatformEvent,
    Report,
    ReportMetrics,
    RestoreReport,
    RestoreRuntimeDone,
    RestoreStart,
    RuntimeDone,
    RuntimeDoneEvent,
    Start,
    StartEvent,
    UnknownEvent,
)
from fgext._time import parse_time_ns
from fgext._urn import FunctionUrn, parse_urn

__all__ = ["MalformedEvent", "ParsedBatch", "parse_batch", "parse_body", "parse_event", "parse_invoke"]

JSONObject = Dict[str, Any]

_PLATFORM_TYPES: Tuple[Type[PlatformEvent], ...] = (
    InitStart, Start, RestoreStart, InitRuntimeDone, RuntimeDone, RestoreRuntimeDone,
    InitReport, Report, RestoreReport,
)
# Lower-cased names, so that "platform.RuntimeDone" (the document's table) and "platform.runtimeDone"
# (the pattern of every other name) both land on RuntimeDone.
_BY_NAME: Dict[str, Type[Event]] = {t.canonical_name.lower(): t for t in _PLATFORM_TYPES}
_BY_NAME["function"] = FunctionLog
_BY_NAME["extension"] = ExtensionLog
# Names exactly as the platform sends them (both spellings of the document): one look-up, no normalising.
_EXACT: Dict[str, Type[Event]] = {t.canonical_name: t for t in _PLATFORM_TYPES}
_EXACT.update({"platform.RuntimeDone": RuntimeDone, "function": FunctionLog, "extension": ExtensionLog})

# What each platform class is made from, decided once per class instead of by issubclass per event.
_START, _DONE, _REPORT = range(3)
_SHAPES: Dict[Type[Event], int] = {
    t: _START if issubclass(t, StartEvent) else _DONE if issubclass(t, RuntimeDoneEvent) else _REPORT
    for t in _PLATFORM_TYPES
}

_MAX_MEMORY_MB = (2**63 - 1) // (1024 * 1024)
_INF = float("inf")
_REQUEST_ID_KEYS = ("traceId", "tracelId", "requestId", "request_id")
_METRIC_KEYS = {
    "durationms": "duration_ms",
    "billingdurationms": "billing_duration_ms",
    "memoryused": "memory_used_mb",
    "memorysize": "memory_size_mb",
    "podname": "pod_name",
}
# The spellings the platform document uses, looked up as they come (no normalising for them); what each
# means is _METRIC_KEYS' answer.
_METRIC_SPELLINGS = {spelling: _METRIC_KEYS[spelling.lower()] for spelling in (
    "durationMs", "durationMS", "billingDurationMS", "billingDurationMs", "memoryUsed", "memorySize", "podName")}


def _text(value: Any) -> Optional[str]:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def _number(value: Any) -> Optional[float]:
    kind = value.__class__
    if kind is float:  # the usual cases, decided by one comparison each
        return value if -_INF < value < _INF else None
    if kind is int:
        return float(value)  # finite, or OverflowError: the event is skipped as unparsable, as before
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if -_INF < number < _INF else None  # neither NaN nor infinite


def _metrics(obj: JSONObject) -> ReportMetrics:
    source = obj.get("metrics")
    if not isinstance(source, dict):
        source = obj.get("reportMetrics")
    if not isinstance(source, dict):
        return ReportMetrics()
    extra: Dict[str, Any] = {}
    values: Dict[str, Any] = {"duration_ms": None, "billing_duration_ms": None, "memory_used_mb": None,
                              "memory_size_mb": None, "pod_name": None, "extra": extra}
    for key, value in source.items():
        target = _METRIC_SPELLINGS.get(key)
        if target is None:
            target = _METRIC_KEYS.get(str(key).strip().lower())
        if target is None:
            extra[str(key)] = value
        elif target == "pod_name":
            values[target] = _text(value)
        elif target == "memory_size_mb":
            # In bytes (faas.max_memory) it must fit OTLP's int64: a size beyond costs this value only.
            number = _number(value)
            values[target] = int(number) if number is not None and 0 <= number <= _MAX_MEMORY_MB else None
        else:
            values[target] = _number(value)
    return _build(ReportMetrics, values)


def _request_id(obj: JSONObject) -> Optional[str]:
    value = obj.get("traceId")
    if value.__class__ is str:  # the platform's own spelling and type: one look-up
        value = value.strip()
        if value:
            return value
    for key in _REQUEST_ID_KEYS:
        value = _text(obj.get(key))
        if value:
            return value
    return None


def _log_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return "\n".join(value)
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False, default=str)


_E = TypeVar("_E")


def _no_start(name: Any) -> int:
    raise MalformedEvent(f"{name}: no startTime")


def _build(cls: Type[_E], fields: Dict[str, Any]) -> _E:
    """An instance of a frozen dataclass (an event, report metrics) from all of its fields, without its
    generated ``__init__``.

    The generated ``__init__`` sets each field through ``object.__setattr__`` (that is what frozen costs),
    which was a third of the time of parsing a log line. The result is the same object: the classes have
    no ``__post_init__`` and every field is given (``tests/test_events.py`` compares both ways).
    """
    event = _new(cls)
    event.__dict__.update(fields)
    return event


_new = object.__new__


def parse_event(obj: Any) -> AnyEvent:
    """Turn one decoded JSON value into a typed event, or raise :class:`MalformedEvent`."""
    if not isinstance(obj, dict):
        raise MalformedEvent(f"event must be a JSON object, got {type(obj).__name__}")
    raw_name = obj.get("name")
    cls = _EXACT.get(raw_name) if raw_name.__class__ is str else None
    if cls is FunctionLog or cls is ExtensionLog:
        # The hottest path (a log line in the platform's own spelling).
        start_ns = parse_time_ns(obj["startTime"]) if "startTime" in obj else _no_start(raw_name)
        logs = obj.get("logs")
        if logs.__class__ is not str:
            logs = _log_text(logs)
        message = logs.lstrip()
        marker = cls.marker
        if message.startswith(marker):
            message = message[len(marker):]
        return _build(cls, {"name": cls.category, "start_ns": start_ns, "raw": obj, "logs": logs,
                            "message": message})
    if cls is not None:
        name = raw_name  # a platform event in the platform's own spelling: nothing to normalise
    else:
        if raw_name is None:
            raw_name = obj.get("type")
        name = _text(raw_name)
        if name:
            # The document's own table lists "platform.initRuntimeDone," with a stray comma.
            name = name.rstrip(",").strip()
        if not name:
            raise MalformedEvent("event has no name")
        cls = _BY_NAME.get(name.lower())
        if cls is None:
            start: Optional[int]
            try:
                start = parse_time_ns(obj.get("startTime"))
            except MalformedEvent:
                start = None
            return UnknownEvent(name=name, raw=obj, start_ns=start)

    if "startTime" not in obj:
        raise MalformedEvent(f"{name}: no startTime")
    start_ns = parse_time_ns(obj["startTime"])

    shape = _SHAPES.get(cls)
    if shape is None:  # a log line by another spelling of its name
        assert issubclass(cls, LogEvent)
        logs = _log_text(obj.get("logs"))
        message = logs.lstrip()
        if message.startswith(cls.marker):
            message = message[len(cls.marker):]
        return cls(name=cls.category, start_ns=start_ns, raw=obj, logs=logs, message=message)

    request_id = _request_id(obj)
    if request_id is None:
        raise MalformedEvent(f"{name}: no traceId (or tracelId)")
    name = cls.canonical_name  # type: ignore[attr-defined]
    if shape == _START:
        return _build(cls, {"name": name, "start_ns": start_ns, "raw": obj, "request_id": request_id})
    status = obj.get("status")
    status = status.strip() if status.__class__ is str else _text(status) or ""
    if shape == _DONE:
        return _build(cls, {"name": name, "start_ns": start_ns, "raw": obj, "request_id": request_id,
                            "status": status})
    end_ns: Optional[int] = None
    if obj.get("endTime") is not None:
        try:
            end_ns = parse_time_ns(obj["endTime"])
        except MalformedEvent:
            end_ns = None  # a bad end costs only itself: the phase ends at its done event, as without one
    return _build(cls, {"name": name, "start_ns": start_ns, "raw": obj, "request_id": request_id,
                        "status": status, "end_ns": end_ns, "metrics": _metrics(obj)})


@dataclass(frozen=True)
class ParsedBatch:
    """What one telemetry POST held: the events kept, and why each skipped object was skipped."""

    events: List[AnyEvent]
    errors: List[str]

    @property
    def malformed(self) -> int:
        return len(self.errors)


def parse_batch(items: Any) -> ParsedBatch:
    """Parse a decoded telemetry body. Raise :class:`MalformedEvent` only if it is not an array."""
    if not isinstance(items, list):
        raise MalformedEvent(f"telemetry body must be a JSON array of events, got {_json_type(items)}")
    events: List[AnyEvent] = []
    errors: List[str] = []
    for index, item in enumerate(items):
        try:
            events.append(parse_event(item))
        except MalformedEvent as error:
            errors.append(f"event {index}: {error}")
        except (RecursionError, ValueError, TypeError, OverflowError) as error:
            # A parser bug must cost one event, never the batch.
            errors.append(f"event {index}: {type(error).__name__}: {error}")
    return ParsedBatch(events=events, errors=errors)


def parse_body(body: Union[bytes, str]) -> ParsedBatch:
    """Decode and parse a telemetry POST body; raise :class:`MalformedEvent` if it is not JSON."""
    try:
        items = json.loads(body)
    except (ValueError, RecursionError) as error:
        raise MalformedEvent(f"body is not valid JSON: {error}") from None
    return parse_batch(items)


def _json_type(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if value is None:
        return "null"
    return type(value).__name__


_URNS: Dict[str, FunctionUrn] = {}
_URNS_MAX = 16


def parse_invoke(obj: Any, received_ns: int) -> Invoke:
    """Read an invoke body; only a non-object is refused, a missing field stays empty."""
    if not isinstance(obj, dict):
        raise MalformedEvent(f"invoke body must be a JSON object, got {_json_type(obj)}")
    request_id = _request_id(obj) or ""
    function_urn = _text(obj.get("invokedFunctionUrn")) or ""
    urn: Optional[FunctionUrn] = None
    if function_urn:
        # Every invoke of a sandbox names the same function: its URN is parsed once, the object reused.
        urn = _URNS.get(function_urn)
        if urn is None:
            try:
                urn = parse_urn(function_urn)
            except ValueError:
                urn = None
            else:
                if len(_URNS) >= _URNS_MAX:
                    _URNS.clear()
                _URNS[function_urn] = urn
    return Invoke(request_id=request_id, function_urn=function_urn, urn=urn, received_ns=received_ns, raw=obj)

"""Typed, immutable events: what the platform sends, parsed once, contradictions absorbed.

The parse step of every sink's path (listener handler -> **parse** -> pipeline -> a sink, for OTLP:
``OtlpPlugin.on_telemetry`` -> assembler -> flush: take -> encode -> shipper -> transport), and the
boundary where values are checked: a time OTLP cannot carry makes its event malformed here, a memory
size it cannot carry is left out, so nothing further down has to guard against them.

The Telemetry API POSTs JSON arrays of objects. Each object becomes one of:

    Event
    ├── PlatformEvent            has ``phase`` ("init", "invoke", "restore") and ``request_id``
    │   ├── StartEvent           InitStart, Start, RestoreStart
    │   ├── RuntimeDoneEvent     InitRuntimeDone, RuntimeDone, RestoreRuntimeDone  (+ status)
    │   └── ReportEvent          InitReport, Report, RestoreReport  (+ status, end_time, metrics)
    ├── LogEvent                 FunctionLog, ExtensionLog  (``message`` without the marker)
    └── UnknownEvent             any other name, kept whole in ``raw``

An object that is not an event at all (not an object, no name, a documented event without a usable
``startTime`` or request ID) raises :class:`MalformedEvent` from :func:`parse_event`;
:func:`parse_batch` counts and skips those and keeps the rest.

The platform document disagrees with itself (see the spec, section 5); every variant is accepted:
``traceId``/``tracelId``, ``platform.RuntimeDone``/``platform.runtimeDone`` (names are matched
case-insensitively), ``metrics``/``reportMetrics``, ``billingDurationMS``/``billingDurationMs`` (metric keys
are matched case-insensitively), and stray spaces around string values.
"""

from __future__ import annotations

import calendar
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Tuple, Type, TypeVar, Union

from fgext._urn import FunctionUrn, parse_urn

__all__ = [
    "Event",
    "ExtensionLog",
    "FunctionLog",
    "InitReport",
    "InitRuntimeDone",
    "InitStart",
    "Invoke",
    "LogEvent",
    "MalformedEvent",
    "OtlpPayload",
    "ParsedBatch",
    "PlatformEvent",
    "Report",
    "ReportEvent",
    "ReportMetrics",
    "RestoreReport",
    "RestoreRuntimeDone",
    "RestoreStart",
    "RuntimeDone",
    "RuntimeDoneEvent",
    "Start",
    "StartEvent",
    "UnknownEvent",
    "parse_batch",
    "parse_body",
    "parse_event",
    "parse_invoke",
    "parse_time",
    "parse_time_ns",
]

JSONObject = Dict[str, Any]


class MalformedEvent(ValueError):
    """One object of a telemetry batch could not be read as an event; the message says why."""


# ---------------------------------------------------------------------------------------------- time

_ISO = re.compile(
    r"\s*(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?"
    r"\s*(Z|z|[+-]\d{2}(?::?\d{2})?)?\s*\Z"
)


# "YYYY-MM-DDTHH:MM" -> Unix seconds of that minute in UTC. Events of one sandbox share a handful of
# minutes, so the calendar arithmetic and validation run once per minute instead of once per event.
_MINUTES: Dict[str, int] = {}
_MINUTES_MAX = 1024
# "YYYY-MM-DDTHH:MM:SS" -> Unix nanoseconds of that second, for the platform's own form only. Lines of one
# invocation share a few seconds: one dictionary look-up and one int() per event on the hottest path.
_SECONDS: Dict[str, int] = {}
_SECONDS_MAX = 4096


# What OTLP can carry: fixed64 Unix nanoseconds, and int64 where other code paths convert them; so from
# the epoch (nothing before 1970, no negative time) to 2262-04-11T23:47:16.854775807Z.
MAX_TIME_NS = 2**63 - 1


def _out_of_range(value: str) -> MalformedEvent:
    return MalformedEvent(f"timestamp {value[:64]!r} is out of range: OTLP carries 1970-01-01 to 2262-04-11 UTC")


def _minute_epoch(year: int, month: int, day: int, hour: int, minute: int) -> int:
    datetime(year, month, day, hour, minute)  # validates the fields: raises ValueError when out of range
    return calendar.timegm((year, month, day, hour, minute, 0))


def parse_time_ns(value: Any) -> int:
    """Parse an ISO 8601 timestamp into Unix nanoseconds; raise :class:`MalformedEvent` otherwise.

    The boundary check of every time: one before 1970 or after 2262-04-11 (what OTLP's fixed64
    nanoseconds, read as int64 by some collectors, can carry) is refused here, so the event holding it
    is dropped and counted as malformed instead of failing an export later. Python 3.9's
    ``fromisoformat`` accepts neither ``Z`` nor arbitrary fraction lengths, so the
    documented shape is parsed here. A timestamp without an offset is taken as UTC. The platform's
    own form (``2023-02-01T00:03:50.000Z``) takes a fast path: it is on every event.
    """
    platform_form = value.__class__ is str and len(value) == 24 and value[23] == "Z" and value[19] == "."
    if platform_form:
        second = _SECONDS.get(value[:19])
        if second is not None:
            millis = value[20:23]
            if millis.isdigit():
                return second + int(millis) * 10**6
    if not isinstance(value, str):
        raise MalformedEvent(f"timestamp must be an ISO 8601 string, got {type(value).__name__}")
    if platform_form and value[10] == "T":
        base = _MINUTES.get(value[:16])
        rest = value[17:19] + value[20:23]
        if base is not None and rest.isdigit() and value[16] == ":" and rest[0] < "6":
            second = base * 10**9 + int(rest[:2]) * 10**9
            if second + 999_000_000 <= MAX_TIME_NS:  # a cached minute is >= 0; its last second may not fit
                if len(_SECONDS) >= _SECONDS_MAX:
                    _SECONDS.clear()
                _SECONDS[value[:19]] = second  # the whole form was checked: only valid seconds get in
                return second + int(rest[2:]) * 10**6
    match = _ISO.match(value)
    if match is None:
        raise MalformedEvent(f"timestamp {value[:64]!r} is not ISO 8601")
    year, month, day, hour, minute = (int(match.group(i)) for i in range(1, 6))
    second = int(match.group(6) or 0)
    fraction = match.group(7) or ""
    nanos = int((fraction + "000000000")[:9]) if fraction else 0
    offset_text = match.group(8)
    offset_seconds = 0
    if offset_text and offset_text not in ("Z", "z"):
        digits = offset_text[1:].replace(":", "")
        offset_seconds = int(digits[:2]) * 3600 + int(digits[2:4] or 0) * 60
        if offset_text[0] == "-":
            offset_seconds = -offset_seconds
    if second > 59 or offset_seconds >= 86400 or offset_seconds <= -86400:
        raise MalformedEvent(f"timestamp {value[:64]!r} is out of range")
    try:
        base = _minute_epoch(year, month, day, hour, minute)
    except (ValueError, OverflowError) as error:
        raise MalformedEvent(f"timestamp {value[:64]!r} is out of range: {error}") from None
    ns = (base + second - offset_seconds) * 10**9 + nanos
    if ns < 0 or ns > MAX_TIME_NS:
        raise _out_of_range(value)
    if offset_seconds == 0 and value.strip()[10:11] == "T" and len(value.strip()) >= 16 and base >= 0:
        if len(_MINUTES) >= _MINUTES_MAX:
            _MINUTES.clear()
        _MINUTES[value.strip()[:16]] = base
    return ns


def ns_to_datetime(ns: int) -> datetime:
    """Unix nanoseconds as an aware UTC datetime (microsecond precision, as datetime has)."""
    return _EPOCH + timedelta(microseconds=ns // 1000)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def parse_time(value: Any) -> Tuple[datetime, int]:
    """Parse an ISO 8601 timestamp into an aware UTC datetime and Unix nanoseconds."""
    ns = parse_time_ns(value)
    return ns_to_datetime(ns), ns


# --------------------------------------------------------------------------------------------- model


# Only the classes that add fields are decorated: the kinds below them (Start, Report, FunctionLog...) add
# only class constants and inherit their parent's generated methods, which behave the same for them
# (repr names the subclass, equality requires the same class, fields stay frozen). Generating them per
# class cost ~1.5 ms each of every cold start, after registration but before the first batch.
@dataclass(frozen=True)
class Event:
    """Base of every telemetry event. ``raw`` is the object exactly as received."""

    name: str
    start_ns: int
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    category: ClassVar[str] = ""  # "platform", "function" or "extension": the subscription type

    @property
    def start_time(self) -> datetime:
        """``startTime`` as an aware UTC datetime (derived on use: most consumers need only ``start_ns``)."""
        return ns_to_datetime(self.start_ns)


@dataclass(frozen=True)
class PlatformEvent(Event):
    """A platform event of one phase of one request."""

    request_id: str

    category: ClassVar[str] = "platform"
    phase: ClassVar[str] = ""  # "init", "invoke" or "restore"
    canonical_name: ClassVar[str] = ""


class StartEvent(PlatformEvent):
    """A phase started."""


@dataclass(frozen=True)
class RuntimeDoneEvent(PlatformEvent):
    """A phase finished; ``status`` is trimmed, ``ok`` tells success."""

    status: str = ""

    @property
    def ok(self) -> bool:
        return self.status.lower() == "success"


@dataclass(frozen=True)
class ReportMetrics:
    """The report's metrics, whichever spelling carried them; absent ones are ``None``."""

    duration_ms: Optional[float] = None
    billing_duration_ms: Optional[float] = None
    memory_used_mb: Optional[float] = None
    memory_size_mb: Optional[int] = None
    pod_name: Optional[str] = None
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)  # a dict: compared, never hashed


@dataclass(frozen=True)
class ReportEvent(PlatformEvent):
    """The overall report of a phase: status, end time and metrics."""

    status: str = ""
    end_ns: Optional[int] = None
    metrics: ReportMetrics = field(default_factory=ReportMetrics)

    @property
    def ok(self) -> bool:
        return self.status.lower() == "success"

    @property
    def end_time(self) -> Optional[datetime]:
        """``endTime`` as an aware UTC datetime, when the report carried one."""
        return None if self.end_ns is None else ns_to_datetime(self.end_ns)


class InitStart(StartEvent):
    phase: ClassVar[str] = "init"
    canonical_name: ClassVar[str] = "platform.initStart"


class Start(StartEvent):
    phase: ClassVar[str] = "invoke"
    canonical_name: ClassVar[str] = "platform.start"


class RestoreStart(StartEvent):
    phase: ClassVar[str] = "restore"
    canonical_name: ClassVar[str] = "platform.restoreStart"


class InitRuntimeDone(RuntimeDoneEvent):
    phase: ClassVar[str] = "init"
    canonical_name: ClassVar[str] = "platform.initRuntimeDone"


class RuntimeDone(RuntimeDoneEvent):
    phase: ClassVar[str] = "invoke"
    canonical_name: ClassVar[str] = "platform.runtimeDone"


class RestoreRuntimeDone(RuntimeDoneEvent):
    phase: ClassVar[str] = "restore"
    canonical_name: ClassVar[str] = "platform.restoreRuntimeDone"


class InitReport(ReportEvent):
    phase: ClassVar[str] = "init"
    canonical_name: ClassVar[str] = "platform.initReport"


class Report(ReportEvent):
    phase: ClassVar[str] = "invoke"
    canonical_name: ClassVar[str] = "platform.report"


class RestoreReport(ReportEvent):
    phase: ClassVar[str] = "restore"
    canonical_name: ClassVar[str] = "platform.restoreReport"


@dataclass(frozen=True)
class LogEvent(Event):
    """A log line; ``message`` is the text without its ``[Function]``/``[Extension]`` marker."""

    logs: str = ""
    message: str = ""

    marker: ClassVar[str] = ""


class FunctionLog(LogEvent):
    category: ClassVar[str] = "function"
    marker: ClassVar[str] = "[Function]"


class ExtensionLog(LogEvent):
    category: ClassVar[str] = "extension"
    marker: ClassVar[str] = "[Extension]"


@dataclass(frozen=True)
class UnknownEvent:
    """An object with a name fgext does not know (yet): kept whole, never dropped for that."""

    name: str
    raw: Mapping[str, Any] = field(repr=False, compare=False)
    start_ns: Optional[int] = None

    category: ClassVar[str] = "unknown"

    @property
    def start_time(self) -> Optional[datetime]:
        return None if self.start_ns is None else ns_to_datetime(self.start_ns)


@dataclass(frozen=True)
class OtlpPayload:
    """What the function itself exported to the agent's OTLP receiver: one decoded request.

    ``signal`` is ``"traces"``, ``"logs"`` or ``"metrics"``; ``request`` the ``Export*ServiceRequest``
    message, items with invalid IDs already removed. It travels the pipeline like any event (the same
    flush policy and lanes), but it is not platform telemetry: processors that look at log lines or
    platform events pass it unchanged, and the OTLP sink ships it with the function's own resource.
    """

    signal: str
    request: Any = field(repr=False, compare=False)
    start_ns: int = 0  # when the agent received it
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    category: ClassVar[str] = "otlp"

    @property
    def name(self) -> str:
        return f"otlp.{self.signal}"

    @property
    def start_time(self) -> datetime:
        return ns_to_datetime(self.start_ns)


AnyEvent = Union[Event, UnknownEvent, OtlpPayload]

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

_MAX_MEMORY_MB = (2**63 - 1) // (1024 * 1024)
_REQUEST_ID_KEYS = ("traceId", "tracelId", "requestId", "request_id")
_METRIC_KEYS = {
    "durationms": "duration_ms",
    "billingdurationms": "billing_duration_ms",
    "memoryused": "memory_used_mb",
    "memorysize": "memory_size_mb",
    "podname": "pod_name",
}

# --------------------------------------------------------------------------------------------- parse


def _text(value: Any) -> Optional[str]:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def _number(value: Any) -> Optional[float]:
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
    return number if number == number and abs(number) != float("inf") else None


def _metrics(obj: JSONObject) -> ReportMetrics:
    source = obj.get("metrics")
    if not isinstance(source, dict):
        source = obj.get("reportMetrics")
    if not isinstance(source, dict):
        return ReportMetrics()
    values: Dict[str, Any] = {}
    extra: Dict[str, Any] = {}
    for key, value in source.items():
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
    return ReportMetrics(extra=extra, **values)


def _request_id(obj: JSONObject) -> Optional[str]:
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


_E = TypeVar("_E", bound="Event")


def _no_start(name: Any) -> int:
    raise MalformedEvent(f"{name}: no startTime")


def _build(cls: Type[_E], fields: Dict[str, Any]) -> _E:
    """An instance of a frozen event dataclass from all of its fields, without its generated ``__init__``.

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
    if raw_name is None:
        raw_name = obj.get("type")
    name = _text(raw_name)
    if name:
        # The document's own table lists "platform.initRuntimeDone," with a stray comma.
        name = name.rstrip(",").strip()
    if not name:
        raise MalformedEvent("event has no name")
    if cls is None:
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

    if issubclass(cls, LogEvent):
        logs = _log_text(obj.get("logs"))
        message = logs.lstrip()
        if message.startswith(cls.marker):
            message = message[len(cls.marker):]
        return cls(name=cls.category, start_ns=start_ns, raw=obj, logs=logs, message=message)

    assert issubclass(cls, PlatformEvent)
    request_id = _request_id(obj)
    if request_id is None:
        raise MalformedEvent(f"{name}: no traceId (or tracelId)")
    name = cls.canonical_name
    if issubclass(cls, StartEvent):
        return _build(cls, {"name": name, "start_ns": start_ns, "raw": obj, "request_id": request_id})
    status = _text(obj.get("status")) or ""
    if issubclass(cls, RuntimeDoneEvent):
        return _build(cls, {"name": name, "start_ns": start_ns, "raw": obj, "request_id": request_id,
                            "status": status})
    assert issubclass(cls, ReportEvent)
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


# -------------------------------------------------------------------------------------------- invoke


@dataclass(frozen=True)
class Invoke:
    """One ``POST /extension/invoke``: the request ID and the invoked function's URN."""

    request_id: str
    function_urn: str
    urn: Optional[FunctionUrn]
    received_ns: int
    raw: Mapping[str, Any] = field(repr=False, compare=False)


def parse_invoke(obj: Any, received_ns: int) -> Invoke:
    """Read an invoke body; only a non-object is refused, a missing field stays empty."""
    if not isinstance(obj, dict):
        raise MalformedEvent(f"invoke body must be a JSON object, got {_json_type(obj)}")
    request_id = _request_id(obj) or ""
    function_urn = _text(obj.get("invokedFunctionUrn")) or ""
    urn: Optional[FunctionUrn] = None
    if function_urn:
        try:
            urn = parse_urn(function_urn)
        except ValueError:
            urn = None
    return Invoke(request_id=request_id, function_urn=function_urn, urn=urn, received_ns=received_ns, raw=obj)


# ----------------------------------------------------------------------------------------- to JSON


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, ReportMetrics):
        return {k: _plain(v) for k, v in value.__dict__.items() if v is not None and v != {}}
    if isinstance(value, FunctionUrn):
        return value.raw
    if isinstance(value, Mapping):
        return dict(value)
    return value


def event_to_dict(event: Union[AnyEvent, Invoke]) -> Dict[str, Any]:
    """A JSON-ready dict of any event or invoke: its type, its typed fields, and ``raw`` as received."""
    out: Dict[str, Any] = {"type": type(event).__name__, "category": getattr(event, "category", "invoke")}
    for key in ("start_time", "end_time"):
        moment = getattr(event, key, None)
        if moment is not None:
            out[key] = moment.isoformat()
    for key, value in event.__dict__.items():
        if key in ("raw", "urn") or value is None:
            continue
        if key == "request" and isinstance(event, OtlpPayload):
            out["bytes"] = value.ByteSize()  # the protobuf message itself is not JSON
            continue
        out[key] = _plain(value)
    out["raw"] = dict(event.raw)
    return out

"""Typed, immutable events: what the platform sends, as the pipeline and every plugin see it.

What flows along every sink's path (listener handler -> parse (:mod:`fgext._parse` makes these) ->
pipeline -> chain -> a lane per sink -> the sink, for OTLP ``OtlpPlugin.on_telemetry`` -> assembler ->
pending -> flush: take -> encode -> shipper -> transport). Events are made once, at the parse step, with every value
already checked; nothing here parses or validates.

The Telemetry API POSTs JSON arrays of objects. Each object becomes one of:

    Event
    ├── PlatformEvent            has ``phase`` ("init", "invoke", "restore") and ``request_id``
    │   ├── StartEvent           InitStart, Start, RestoreStart
    │   ├── RuntimeDoneEvent     InitRuntimeDone, RuntimeDone, RestoreRuntimeDone  (+ status)
    │   └── ReportEvent          InitReport, Report, RestoreReport  (+ status, end_time, metrics)
    ├── LogEvent                 FunctionLog, ExtensionLog  (``message`` without the marker)
    └── UnknownEvent             any other name, kept whole in ``raw``

plus :class:`OtlpPayload` (what the function exported to the agent's own receiver) and :class:`Invoke`
(one ``POST /extension/invoke``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Dict, Mapping, Optional, Union

from fgext._time import ns_to_datetime
from fgext._urn import FunctionUrn

__all__ = [
    "AnyEvent",
    "Event",
    "ExtensionLog",
    "FunctionLog",
    "InitReport",
    "InitRuntimeDone",
    "InitStart",
    "Invoke",
    "LogEvent",
    "OtlpPayload",
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
    "event_to_dict",
]


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



@dataclass(frozen=True)
class Invoke:
    """One ``POST /extension/invoke``: the request ID and the invoked function's URN."""

    request_id: str
    function_urn: str
    urn: Optional[FunctionUrn]
    received_ns: int
    raw: Mapping[str, Any] = field(repr=False, compare=False)


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

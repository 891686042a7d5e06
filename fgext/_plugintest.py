"""Test a plugin in a few lines: synthetic events through the real pipeline, captured at the end.

::

    from fgext.testing import make_log, make_report, run_plugin

    def test_masks_tokens():
        result = run_plugin(MyRedactor(), events=[make_log("token=abc123")], config={"mask": "#"})
        assert result.messages == ["token=#"]

:func:`run_plugin` builds a :class:`fgext._pipeline.Pipeline` (the one the agent runs) from the
plugin(s) under test plus a :class:`CaptureSink`, validates each plugin's ``config`` exactly as the
agent does, starts them, hands over the invokes and then each batch, flushes, shuts down and returns
a :class:`PluginRun`: what reached the sink, what processors dropped, which plugins failed. Strict mode
is on by default, so a plugin that raises fails the test with :class:`PluginFailure` carrying the
original exception; ``strict=False`` shows the isolation the agent applies instead.

The ``make_*`` factories write the platform's JSON (with its documented spellings) and parse it with
the agent's own parser, so a plugin sees exactly the types it will see in the sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from fgext._discovery import plugin_config
from fgext._events import AnyEvent, Invoke, LogEvent
from fgext._parse import parse_event, parse_invoke
from fgext._pipeline import Pipeline, PluginFailure
from fgext._plugin import Plugin, PluginContext, RegistrationInfo

__all__ = [
    "CaptureSink",
    "PluginFailure",
    "PluginRun",
    "arun_plugin",
    "make_done",
    "make_event",
    "make_invocation",
    "make_invoke",
    "make_log",
    "make_report",
    "make_start",
    "run_plugin",
]

_T0 = datetime(2025, 2, 8, 0, 0, 0, tzinfo=timezone.utc)
_URN = "urn:fss:cn-north-4:0123456789abcdef0123456789abcdef:function:default:hello:latest"
_clock_lock = threading.Lock()
_clock = [0]


def _when(at: Union[str, datetime, None]) -> str:
    if isinstance(at, str):
        return at
    if at is None:
        # Successive events get successive milliseconds, so their order survives sorting by time.
        with _clock_lock:
            _clock[0] += 1
            at = _T0 + timedelta(milliseconds=_clock[0])
    return at.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_event(obj: Mapping[str, Any]) -> AnyEvent:
    """Parse one raw platform object (as the Telemetry API would POST it) into a typed event."""
    return parse_event(dict(obj))


def make_log(message: str, *, category: str = "function", at: Union[str, datetime, None] = None) -> AnyEvent:
    """A function (or ``category="extension"``) log line; the ``[Function]`` marker is added."""
    if category not in ("function", "extension"):
        raise ValueError(f"category must be 'function' or 'extension', got {category!r}")
    marker = "[Function]" if category == "function" else "[Extension]"
    return parse_event({"name": category, "startTime": _when(at), "logs": marker + message})


def make_start(request_id: Optional[str] = None, *, phase: str = "invoke",
               at: Union[str, datetime, None] = None) -> AnyEvent:
    """``platform.start`` (or ``initStart``/``restoreStart`` with ``phase``)."""
    name = {"invoke": "platform.start", "init": "platform.initStart", "restore": "platform.restoreStart"}[phase]
    return parse_event({"name": name, "startTime": _when(at), "traceId": request_id or str(uuid.uuid4())})


def make_done(request_id: Optional[str] = None, *, status: str = "success", phase: str = "invoke",
              at: Union[str, datetime, None] = None) -> AnyEvent:
    """``platform.RuntimeDone`` (the document's spelling) or its init/restore siblings."""
    name = {"invoke": "platform.RuntimeDone", "init": "platform.initRuntimeDone",
            "restore": "platform.restoreRuntimeDone"}[phase]
    return parse_event({"name": name, "startTime": _when(at), "tracelId": request_id or str(uuid.uuid4()),
                        "status": status})


def make_report(request_id: Optional[str] = None, *, status: str = "success", duration_ms: float = 12.5,
                billing_duration_ms: Optional[float] = None, memory_used_mb: float = 32.0,
                memory_size_mb: int = 128, pod_name: str = "pool22-300-128-fusion-64774779-4g77v",
                phase: str = "invoke", at: Union[str, datetime, None] = None) -> AnyEvent:
    """``platform.report`` with ``reportMetrics`` as the document's example spells them."""
    name = {"invoke": "platform.report", "init": "platform.initReport", "restore": "platform.restoreReport"}[phase]
    start = _when(at)
    start_dt = datetime.fromisoformat(start.replace("Z", "+00:00"))
    end = _when(start_dt + timedelta(milliseconds=duration_ms))
    billing = billing_duration_ms if billing_duration_ms is not None else float(int(duration_ms) + 1)
    return parse_event({
        "name": name, "startTime": start, "endTime": end, "tracelId": request_id or str(uuid.uuid4()),
        "status": status,
        "reportMetrics": {"durationMs": duration_ms, "billingDurationMS": billing, "memoryUsed": memory_used_mb,
                          "memorySize": memory_size_mb, "podName": pod_name},
    })


def make_invocation(request_id: Optional[str] = None, *, logs: Sequence[str] = (), status: str = "success",
                    duration_ms: float = 12.5) -> List[AnyEvent]:
    """One invocation as the platform tells it: start, the function's log lines, done, report."""
    rid = request_id or str(uuid.uuid4())
    return [make_start(rid), *(make_log(line) for line in logs), make_done(rid, status=status),
            make_report(rid, status=status, duration_ms=duration_ms)]


def make_invoke(request_id: Optional[str] = None, function_urn: str = _URN) -> Invoke:
    """One ``POST /extension/invoke`` body (with the document's ``tracelId`` spelling), parsed."""
    return parse_invoke({"tracelId": request_id or str(uuid.uuid4()), "invokedFunctionUrn": function_urn},
                        time.time_ns())


class CaptureSink(Plugin):
    """A sink that keeps everything it is given: batches, invokes, and the lifecycle calls it saw."""

    name: ClassVar[str] = "capture"
    role: ClassVar[str] = "sink"

    def __init__(self) -> None:
        self.batches: List[List[AnyEvent]] = []
        self.invokes: List[Invoke] = []
        self.calls: List[str] = []

    @property
    def events(self) -> List[AnyEvent]:
        return [event for batch in self.batches for event in batch]

    async def start(self, context: PluginContext) -> None:
        self.calls.append("start")

    async def on_invoke(self, invoke: Invoke) -> None:
        self.invokes.append(invoke)

    async def on_telemetry(self, events: Sequence[AnyEvent]) -> None:
        self.batches.append(list(events))

    async def flush(self, timeout: Optional[float] = None) -> None:
        self.calls.append("flush")

    async def shutdown(self, timeout: float) -> None:
        self.calls.append("shutdown")


@dataclass(frozen=True)
class Failure:
    """One isolated plugin failure (``strict=False``): which plugin, which hook, what it raised."""

    plugin: str
    hook: str
    error: str


@dataclass
class PluginRun:
    """What :func:`run_plugin` saw."""

    sink: CaptureSink
    plugins: List[Plugin]
    dropped: List[AnyEvent] = field(default_factory=list)
    drops: List[Tuple[str, AnyEvent]] = field(default_factory=list)  # (processor name, original event)
    failures: List[Failure] = field(default_factory=list)
    disabled: List[str] = field(default_factory=list)
    stats: Dict[str, int] = field(default_factory=dict)
    log: List[Tuple[str, str, Dict[str, Any]]] = field(default_factory=list)

    @property
    def events(self) -> List[AnyEvent]:
        """Every event that reached the sink, in order."""
        return self.sink.events

    @property
    def batches(self) -> List[List[AnyEvent]]:
        return self.sink.batches

    @property
    def invokes(self) -> List[Invoke]:
        return self.sink.invokes

    @property
    def messages(self) -> List[str]:
        """The ``message`` of every log event that reached the sink: the usual thing to assert on."""
        return [e.message for e in self.sink.events if isinstance(e, LogEvent)]


class _RecordingLogger:
    """Stands in for the agent's structlog logger; the pipeline reports failures through it."""

    def __init__(self) -> None:
        self.lines: List[Tuple[str, str, Dict[str, Any]]] = []
        self._lock = threading.Lock()

    def _add(self, level: str, event: str, fields: Dict[str, Any]) -> None:
        with self._lock:
            self.lines.append((level, event, fields))

    def bind(self, **_fields: Any) -> _RecordingLogger:
        return self

    def debug(self, event: str, **fields: Any) -> None:
        self._add("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._add("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._add("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._add("error", event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        self._add("error", event, fields)


def _as_plugins(under_test: Any) -> List[Plugin]:
    items = under_test if isinstance(under_test, (list, tuple)) else [under_test]
    plugins: List[Plugin] = []
    for item in items:
        if isinstance(item, Plugin):
            plugins.append(item)
        elif callable(getattr(item, "as_plugins", None)):
            plugins.extend(item.as_plugins())
        else:
            raise TypeError(f"run_plugin takes Plugin instances or Extensions, got {item!r}")
    return plugins


def _batches(events: Optional[Sequence[AnyEvent]],
             batches: Optional[Sequence[Sequence[AnyEvent]]]) -> List[List[AnyEvent]]:
    if events is not None and batches is not None:
        raise ValueError("give events (one batch) or batches, not both")
    if batches is not None:
        return [list(b) for b in batches]
    return [list(events)] if events else []


async def arun_plugin(under_test: Any, events: Optional[Sequence[AnyEvent]] = None, *,
                      invokes: Sequence[Invoke] = (), batches: Optional[Sequence[Sequence[AnyEvent]]] = None,
                      config: Optional[Mapping[str, Any]] = None,
                      configs: Optional[Mapping[str, Mapping[str, Any]]] = None,
                      environ: Optional[Mapping[str, str]] = None, strict: bool = True,
                      registration: Optional[RegistrationInfo] = None, hook_timeout: float = 10.0,
                      shutdown_timeout: float = 5.0) -> PluginRun:
    """The coroutine behind :func:`run_plugin`, for tests that already run an event loop."""
    plugins = _as_plugins(under_test)
    names = {p.name or type(p).__name__ for p in plugins}
    sections: Dict[str, Any] = {name: dict(section) for name, section in (configs or {}).items()}
    if config is not None:
        if len(names) != 1:
            raise ValueError(f"config= is for one plugin; these are {sorted(names)}: use configs={{name: {{...}}}}")
        sections[next(iter(names))] = dict(config)
    file_config = {"plugins": sections}
    env = dict(environ or {})
    registration = registration or RegistrationInfo(
        extension_name="extensionFgext.sh", address="127.0.0.1:8081", function_name="hello",
        function_version="latest", telemetry_types=("platform", "function", "extension"), subscribed=True)
    log = _RecordingLogger()
    # Configuration is validated for every plugin before any starts, as in the agent.
    contexts = {
        id(p): PluginContext(name=p.name or type(p).__name__, registration=registration,
                             config=plugin_config(p, file_config, env), logger=log.bind(plugin=p.name),
                             stats={}, environ=env)
        for p in plugins
    }
    sink = CaptureSink()
    pipeline = Pipeline([*plugins, sink], logger=log, strict=strict, hook_timeout=hook_timeout)
    run = PluginRun(sink=sink, plugins=plugins, log=log.lines)

    def dropped(plugin: str, event: AnyEvent) -> None:
        run.dropped.append(event)
        run.drops.append((plugin, event))

    pipeline.on_drop = dropped
    await pipeline.start(lambda p: contexts[id(p)] if id(p) in contexts else PluginContext(
        name=p.name, registration=registration, logger=log, environ=env))
    try:
        for invoke in invokes:
            await pipeline.dispatch_invoke(invoke)
        for batch in _batches(events, batches):
            await pipeline.dispatch_telemetry(batch)
        await pipeline.flush(shutdown_timeout)
    except BaseException:
        # Plugins still get their shutdown, but the first failure is the one the test reports.
        with contextlib.suppress(Exception):
            await pipeline.shutdown(shutdown_timeout)
        raise
    await pipeline.shutdown(shutdown_timeout)
    run.stats = dict(pipeline.stats)
    run.failures = [Failure(f["plugin"], f["hook"], f["error"]) for level, event, f in log.lines
                    if event == "plugin failed"]
    run.disabled = [f["plugin"] for _level, event, f in log.lines if event == "plugin disabled"]
    return run


def run_plugin(under_test: Any, events: Optional[Sequence[AnyEvent]] = None, *,
               invokes: Sequence[Invoke] = (), batches: Optional[Sequence[Sequence[AnyEvent]]] = None,
               config: Optional[Mapping[str, Any]] = None,
               configs: Optional[Mapping[str, Mapping[str, Any]]] = None,
               environ: Optional[Mapping[str, str]] = None, strict: bool = True,
               registration: Optional[RegistrationInfo] = None, hook_timeout: float = 10.0,
               shutdown_timeout: float = 5.0) -> PluginRun:
    """Run plugin(s) or Extension(s) over invokes, then ``events`` (one batch) or ``batches``.

    ``config`` is the settings of the one plugin under test (as in ``plugins.<name>`` of the config
    file), ``configs`` maps several plugins' names to theirs, ``environ`` adds ``FGEXT_<NAME>_<KEY>``
    variables. Raises :class:`fgext.PluginError` for a bad setting and, with ``strict`` (the default),
    :class:`PluginFailure` for the first hook that raises. Must not be called from a running event
    loop: use :func:`arun_plugin` there.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("run_plugin was called inside a running event loop; await arun_plugin(...) instead")
    return asyncio.run(arun_plugin(
        under_test, events, invokes=invokes, batches=batches, config=config, configs=configs, environ=environ,
        strict=strict, registration=registration, hook_timeout=hook_timeout, shutdown_timeout=shutdown_timeout))

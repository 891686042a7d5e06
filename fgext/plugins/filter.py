"""``filter``: drop events by type, log level or rule, and sample successful invocations' logs.

A processor that runs first (``order`` 10), so nothing after it spends time on what is dropped.
Errors are always kept: a log line at level ERROR/CRITICAL/FATAL or holding a Python traceback, and a
platform done or report event whose status is not ``success``, pass whatever the settings say.

Settings (``plugins.filter`` in the config file, or ``FGEXT_FILTER_<KEY>``):

- ``drop_types``: events to drop, each a category (``platform``, ``function``, ``extension``), an
  event name (``platform.start``, ``platform.initReport``) or a class name (``RuntimeDone``);
- ``min_level``: drop log lines below this level (``debug``, ``info``, ``warning``, ``error``); the
  level is read from the line (``ERROR ...``, ``[WARN]``, ``level=info``, ``"level": "debug"``), and a
  line with no recognisable level counts as ``info``;
- ``drop_matching``: regular expressions; a log line matching any is dropped;
- ``keep_matching``: regular expressions; a log line matching any is kept, overriding the above;
- ``sample``: the fraction (0 to 1, default 1) of invocations whose log lines are kept. The choice
  is made per request ID (a hash, so every plugin and every run agrees) when ``platform.start``
  arrives, and applies to log lines until that invocation's done event. Logs carry no request ID, so
  this relies on a sandbox running one invocation at a time; lines already dropped cannot be brought
  back if the invocation then fails, but its error lines and platform events are always kept.

For a rule in code, subclass :class:`FilterPlugin` and override :meth:`FilterPlugin.rule`.
"""

from __future__ import annotations

import re
import threading
import zlib
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Pattern, Tuple

from fgext._errors import DropEvent, PluginError
from fgext._events import AnyEvent, LogEvent, ReportEvent, RuntimeDoneEvent, Start
from fgext._plugin import PluginContext, Processor

__all__ = ["LEVELS", "FilterPlugin", "log_level"]

LEVELS: Dict[str, int] = {"trace": 5, "debug": 10, "info": 20, "notice": 25, "warn": 30, "warning": 30,
                          "error": 40, "err": 40, "critical": 50, "fatal": 50, "panic": 50}
_LEVEL_WORD = re.compile(r"(?<![A-Za-z])(TRACE|DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|CRITICAL|FATAL|PANIC)(?![A-Za-z])")
_LEVEL_FIELD = re.compile(r"""(?i)["']?(?:level|severity|levelname|lvl)["']?\s*[:=]\s*["']?([a-z]+)""")
_TRACEBACK = "Traceback (most recent call last)"


def log_level(message: str) -> Optional[int]:
    """The level a log line states (``logging`` numbers), or ``None`` when it states none."""
    head = message[:160]
    field = _LEVEL_FIELD.search(head)
    if field is not None and field.group(1).lower() in LEVELS:
        return LEVELS[field.group(1).lower()]
    word = _LEVEL_WORD.search(head)
    if word is not None:
        return LEVELS[word.group(1).lower()]
    return None


def _patterns(setting: str, values: Any) -> List[Pattern[str]]:
    compiled = []
    for value in values or []:
        try:
            compiled.append(re.compile(str(value)))
        except re.error as error:
            raise PluginError(f"plugin 'filter': setting {setting!r}: {value!r} is not a valid regular "
                              f"expression: {error}") from None
    return compiled


class FilterPlugin(Processor):
    """Drops by type, level, pattern, rule and sampling; never drops an error."""

    name: ClassVar[str] = "filter"
    order: ClassVar[int] = 10
    config_schema: ClassVar[Dict[str, type]] = {
        "drop_types": list, "min_level": str, "drop_matching": list, "keep_matching": list, "sample": float,
    }

    def __init__(self) -> None:
        self._drop_types: Tuple[str, ...] = ()
        self._min_level = 0
        self._drop: List[Pattern[str]] = []
        self._keep: List[Pattern[str]] = []
        self._sample = 1.0
        self._lock = threading.Lock()
        self._unsampled: Optional[str] = None  # request ID of the invocation whose logs are skipped

    def start(self, context: PluginContext) -> None:
        self.configure(context.config)

    def configure(self, config: Mapping[str, Any]) -> None:
        """Apply settings (``start`` does; usable directly outside the agent)."""
        self._drop_types = tuple(str(t).strip().lower() for t in config.get("drop_types", []) if str(t).strip())
        level = str(config.get("min_level", "")).strip().lower()
        if level and level not in LEVELS:
            raise PluginError(f"plugin 'filter': setting 'min_level' must be one of debug, info, warning, error, "
                              f"critical; got {level!r}")
        self._min_level = LEVELS.get(level, 0)
        self._drop = _patterns("drop_matching", config.get("drop_matching"))
        self._keep = _patterns("keep_matching", config.get("keep_matching"))
        sample = float(config.get("sample", 1.0))
        if not 0.0 <= sample <= 1.0:
            raise PluginError(f"plugin 'filter': setting 'sample' must be between 0 and 1, got {sample}")
        self._sample = sample

    # ----------------------------------------------------------------------------------- decisions

    @staticmethod
    def is_error(event: AnyEvent) -> bool:
        """An event the filter never drops."""
        if isinstance(event, (RuntimeDoneEvent, ReportEvent)):
            return not event.ok
        if isinstance(event, LogEvent):
            level = log_level(event.message)
            return (level is not None and level >= LEVELS["error"]) or _TRACEBACK in event.message
        return False

    def sampled(self, request_id: str) -> bool:
        """Whether an invocation's logs are kept at the configured rate (stable per request ID)."""
        if self._sample >= 1.0:
            return True
        return zlib.crc32(request_id.encode()) / 2**32 < self._sample

    def rule(self, event: AnyEvent) -> Optional[bool]:
        """Override for a rule in code: ``True`` drops, ``False`` keeps, ``None`` leaves it to the settings."""
        return None

    def _type_dropped(self, event: AnyEvent) -> bool:
        if not self._drop_types:
            return False
        names = {event.category, event.name.lower(), type(event).__name__.lower()}
        canonical = getattr(event, "canonical_name", "")
        if canonical:
            names.add(canonical.lower())
        return any(t in names for t in self._drop_types)

    def _track(self, event: AnyEvent) -> bool:
        """Follow invocations for sampling; return whether a log line now falls in an unsampled one."""
        with self._lock:
            if isinstance(event, Start):
                self._unsampled = None if self.sampled(event.request_id) else event.request_id
            elif isinstance(event, RuntimeDoneEvent) and event.request_id == self._unsampled:
                self._unsampled = None
            return isinstance(event, LogEvent) and self._unsampled is not None

    def process(self, event: AnyEvent) -> AnyEvent:
        unsampled = self._track(event)
        if self.is_error(event):
            return event
        verdict = self.rule(event)
        if verdict is not None:
            if verdict:
                raise DropEvent
            return event
        message = event.message if isinstance(event, LogEvent) else None
        if message is not None and any(p.search(message) for p in self._keep):
            return event
        if self._type_dropped(event):
            raise DropEvent
        if message is not None:
            if self._min_level and (log_level(message) or LEVELS["info"]) < self._min_level:
                raise DropEvent
            if any(p.search(message) for p in self._drop):
                raise DropEvent
            if unsampled:
                raise DropEvent
        return event


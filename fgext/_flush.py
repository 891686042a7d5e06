"""When pending telemetry leaves the agent: the flush policy (``FGEXT_FLUSH``), its clock, and the
one question the pipeline asks after each batch - did this batch end an invocation?

The pipeline owns "when" for every sink alike; this module holds the rules it applies:

- ``end`` (the default): flush after every batch that ends an invocation;
- ``periodically,<ms>``: flush on a timer every ``<ms>``, and at the end of an invocation only when
  ``<ms>`` have passed since the last flush;
- ``continuously,<ms>``: flush on the timer and at the end of every invocation.

A batch ends an invocation when it holds a report (init, invoke or restore), or when it holds log
lines arriving after their invocation's report: no invocation is open and one has already been
reported. The sandbox may be frozen right after either, and a frozen sandbox runs no timer.

Standard library only at import time: the cold start imports this module for :func:`parse_flush`.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from fgext._errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Iterable, Optional, Tuple

    from fgext._events import AnyEvent

__all__ = ["FlushClock", "FlushPolicy", "InvocationTracker", "parse_flush"]

_MODES = ("end", "periodically", "continuously")


class FlushPolicy:
    """One of the three ``FGEXT_FLUSH`` policies; ``interval_s`` is 0 for ``end``. Immutable."""

    __slots__ = ("interval_s", "mode")

    mode: str
    interval_s: float

    def __init__(self, mode: str = "end", interval_s: float = 0.0) -> None:
        if mode not in _MODES:
            raise ValueError(f"unknown flush mode {mode!r}")
        if (mode == "end") != (interval_s == 0.0) or interval_s < 0:
            raise ValueError(f"flush mode {mode!r} does not take interval {interval_s!r}")
        object.__setattr__(self, "mode", mode)
        object.__setattr__(self, "interval_s", interval_s)

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError("FlushPolicy is read-only")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FlushPolicy):
            return NotImplemented
        return (self.mode, self.interval_s) == (other.mode, other.interval_s)

    def __hash__(self) -> int:
        return hash((self.mode, self.interval_s))

    def __repr__(self) -> str:
        return f"FlushPolicy({self.mode!r}, {self.interval_s!r})"

    def __str__(self) -> str:
        if self.mode == "end":
            return "end"
        return f"{self.mode},{round(self.interval_s * 1000)}"

    @property
    def timer_interval(self) -> Optional[float]:
        """Seconds between timer flushes; ``None`` under ``end`` (no timer)."""
        return None if self.mode == "end" else self.interval_s


def parse_flush(value: Optional[str]) -> FlushPolicy:
    """Parse ``FGEXT_FLUSH``: ``end``, ``periodically,<ms>`` or ``continuously,<ms>`` (any case, spaces allowed)."""
    if value is None or not value.strip():
        return FlushPolicy()
    text = value.strip().lower()
    if text == "end":
        return FlushPolicy()
    mode, _, interval = text.partition(",")
    mode = mode.strip()
    if mode in ("periodically", "continuously"):
        try:
            ms = int(interval.strip())
        except ValueError:
            ms = 0
        if ms > 0:
            return FlushPolicy(mode, ms / 1000)
    raise ConfigError(
        f"FGEXT_FLUSH={value!r} is not a flush strategy: use end, periodically,<ms> or continuously,<ms>"
        " (<ms> a positive integer)"
    )


class FlushClock:
    """The policy applied to one sink: answers "flush now?" at an invocation's end and on the timer.

    One per sink, because "the interval has passed" is counted from that sink's own last flush.
    """

    __slots__ = ("_clock", "_last", "policy")

    def __init__(self, policy: FlushPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._last = clock()

    def at_invocation_end(self) -> bool:
        """``end`` and ``continuously``: always; ``periodically``: once the interval has passed."""
        if self.policy.mode == "periodically":
            return self._clock() - self._last >= self.policy.interval_s
        return True

    def on_timer(self, received: bool) -> bool:
        """A timer tick: flush when the policy has a timer and the sink received something since its last flush."""
        return self.policy.mode != "end" and received

    def flushed(self) -> None:
        """A flush of this sink starts now."""
        self._last = self._clock()


_OTHER, _REPORT, _START, _DONE, _LOG = range(5)


class InvocationTracker:
    """Which invocations are open, by phase and request id, to tell when a batch ends one.

    Bounded: at most ``max_open`` open and ``max_reported`` recently reported invocations are kept
    (the oldest forgotten first), so a platform that never sends a report costs a fixed amount.
    """

    def __init__(self, max_open: int = 64, max_reported: int = 256) -> None:
        # Imported here, not at the top: the cold start imports this module (parse_flush) and must not
        # pay for the event classes before registering.
        from fgext._events import LogEvent, ReportEvent, RuntimeDoneEvent, StartEvent

        self._classes = (ReportEvent, StartEvent, RuntimeDoneEvent, LogEvent)
        self._roles: Dict[type, int] = {}
        self._open: OrderedDict[Tuple[str, str], None] = OrderedDict()
        self._reported: OrderedDict[Tuple[str, str], None] = OrderedDict()
        self._max_open = max_open
        self._max_reported = max_reported
        self.ever_reported = False

    @property
    def open(self) -> int:
        return len(self._open)

    def ends_invocation(self, events: Iterable[AnyEvent]) -> bool:
        """Note the batch's platform events; whether it holds a report, or log lines that came after
        their invocation's report (none open, one already reported)."""
        roles = self._roles
        report = logs = False
        typed: Iterable[Any] = events  # each event's role, by its class, says which fields it has
        for event in typed:
            role = roles.get(event.__class__)
            if role is None:
                role = self._role(event.__class__)
            if role == _LOG:
                logs = True
            elif role == _REPORT:
                key = (event.phase, event.request_id)
                self._open.pop(key, None)
                self._remember(self._reported, key, self._max_reported)
                self.ever_reported = report = True
            elif role == _START:
                key = (event.phase, event.request_id)
                self._reported.pop(key, None)  # a start is authoritative: the request runs (again)
                self._remember(self._open, key, self._max_open)
            elif role == _DONE:
                # A runtimeDone whose start was missed still means the invocation runs until its report;
                # one arriving after its report must not reopen it.
                key = (event.phase, event.request_id)
                if key not in self._reported:
                    self._remember(self._open, key, self._max_open)
        return report or (logs and not self._open and self.ever_reported)

    def _role(self, cls: type) -> int:
        """What a class of event means to the tracker, decided once per class (a dict lookup after)."""
        report_class, start_class, done_class, log_class = self._classes
        role = (_REPORT if issubclass(cls, report_class) else _START if issubclass(cls, start_class)
                else _DONE if issubclass(cls, done_class) else _LOG if issubclass(cls, log_class) else _OTHER)
        self._roles[cls] = role
        return role

    @staticmethod
    def _remember(table: OrderedDict[Tuple[str, str], None], key: Tuple[str, str], bound: int) -> None:
        table[key] = None
        table.move_to_end(key)
        while len(table) > bound:
            table.popitem(last=False)

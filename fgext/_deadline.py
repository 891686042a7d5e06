"""One deadline, passed down: how the agent shares the time it has for a flush or a shutdown.

The agent makes one :class:`Deadline` when ``SIGTERM`` arrives (``FGEXT_SHUTDOWN_TIMEOUT`` from now)
and hands it down; every layer asks it how long is left instead of splitting the time with
fractions of its own. A layer that must keep time for a last step (writing to the spool, closing a
connection) takes a :meth:`Deadline.before` it: an earlier deadline for the work that comes first.

Standard library only: the cold start imports it.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

__all__ = ["Deadline"]


class Deadline:
    """A moment on the monotonic clock; ``remaining()`` is never negative."""

    __slots__ = ("_at", "_clock")

    def __init__(self, at: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._at = at
        self._clock = clock

    @classmethod
    def after(cls, seconds: Optional[float], clock: Callable[[], float] = time.monotonic) -> Deadline:
        """The deadline ``seconds`` from now; ``None`` means none (an infinitely distant one)."""
        if seconds is None:
            return cls(float("inf"), clock)
        return cls(clock() + max(0.0, seconds), clock)

    @property
    def at(self) -> float:
        return self._at

    def remaining(self) -> float:
        """Seconds left, at least 0.0 (``inf`` for no deadline)."""
        return max(0.0, self._at - self._clock())

    def expired(self) -> bool:
        return self._clock() >= self._at

    def before(self, margin: float) -> Deadline:
        """A deadline ``margin`` seconds earlier (never before now): the time for the work that goes first,
        keeping ``margin`` for what must follow it."""
        now = self._clock()
        return Deadline(max(now, self._at - max(0.0, margin)), self._clock)

    def earliest(self, seconds: Optional[float]) -> Deadline:
        """This deadline or ``seconds`` from now, whichever comes first (a per-step cap)."""
        if seconds is None:
            return self
        return Deadline(min(self._at, self._clock() + max(0.0, seconds)), self._clock)

    def timeout(self) -> Optional[float]:
        """``remaining()`` as a timeout argument: ``None`` when there is no deadline."""
        return None if self._at == float("inf") else self.remaining()

    def __repr__(self) -> str:
        return f"Deadline(remaining={self.remaining():.3f}s)"

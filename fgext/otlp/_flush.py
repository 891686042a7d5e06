"""When pending telemetry is exported: the ``FGEXT_FLUSH`` strategies as one small state machine.

The sandbox may be frozen at any moment after an invocation ends, and a frozen sandbox runs no
timers; so every strategy also exports at the end of an invocation, and the strategies differ in how
often they do so and whether a timer exports during an invocation.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

from fgext.otlp._config import FlushPolicy

__all__ = ["FlushScheduler"]


class FlushScheduler:
    """Answers "export now?" at the end of an invocation and on the timer."""

    def __init__(self, policy: FlushPolicy, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._monotonic = monotonic
        self._last = monotonic()

    def at_invocation_end(self) -> bool:
        """``end`` and ``continuously``: always; ``periodically``: once the interval has passed."""
        if self.policy.mode == "periodically":
            return self._monotonic() - self._last >= self.policy.interval_s
        return True

    def timer_due(self) -> bool:
        """``continuously`` and ``periodically``: the interval passed since the last export."""
        return self.policy.mode != "end" and self._monotonic() - self._last >= self.policy.interval_s

    @property
    def timer_interval(self) -> Optional[float]:
        return self.policy.interval_s if self.policy.mode != "end" else None

    def exported(self) -> None:
        self._last = self._monotonic()

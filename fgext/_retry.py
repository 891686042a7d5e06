"""The one retry policy: what is worth retrying, and how long to wait before the next attempt.

Registration with the platform, OTLP export and the webhook plugin all ask this module, so "is this
answer transient?" and "how long do I back off?" have one answer each:

- retryable: HTTP 429, 502, 503 and 504, any connection error or timeout, and the gRPC codes the OTLP
  exporter specification lists as retryable; every other answer is final;
- the wait: capped exponential backoff with jitter (so many agents thawed at once do not retry in
  step), never shorter than a ``Retry-After`` the server sent.

Standard library only, and cheap to import: the cold start registers through it. ``random`` and
``email.utils`` are imported only when a retry actually happens.
"""

from __future__ import annotations

import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Optional

__all__ = ["RETRYABLE_GRPC", "RETRYABLE_HTTP", "Backoff", "retry_after", "retryable_grpc", "retryable_http"]

#: HTTP statuses worth asking again (OTLP exporter specification, "Retryable response codes").
RETRYABLE_HTTP = frozenset({429, 502, 503, 504})
#: gRPC status code names worth asking again (the same specification, for OTLP/gRPC).
RETRYABLE_GRPC = frozenset({
    "CANCELLED", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED", "OUT_OF_RANGE", "UNAVAILABLE",
    "DATA_LOSS",
})


def retryable_http(status: int) -> bool:
    """Whether an HTTP answer with ``status`` may succeed if asked again (2xx is not a failure at all)."""
    return status in RETRYABLE_HTTP


def retryable_grpc(code_name: str) -> bool:
    """Whether a gRPC failure with this status code name (``"UNAVAILABLE"``...) may succeed if asked again."""
    return code_name in RETRYABLE_GRPC


def retry_after(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds or an HTTP date), or ``None``."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if seconds == seconds and seconds != float("inf") else None
    try:
        import email.utils  # only for a date: email costs milliseconds of the cold start

        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        import datetime

        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


class Backoff:
    """Capped exponential backoff with jitter: ``first``, then doubling up to ``cap``.

    Each delay is drawn from ``[base * (1 - jitter), base]``, where ``base`` doubles with every failure
    since the last :meth:`reset`; a ``Retry-After`` longer than that wins.
    """

    __slots__ = ("_random", "cap", "failures", "first", "jitter")

    def __init__(self, first: float = 0.5, cap: float = 30.0, jitter: float = 0.5,
                 random: Optional[Callable[[], float]] = None) -> None:
        if first < 0 or cap < first or not 0.0 <= jitter <= 1.0:
            raise ValueError(f"backoff needs 0 <= first <= cap and 0 <= jitter <= 1, got {first}, {cap}, {jitter}")
        self.first = first
        self.cap = cap
        self.jitter = jitter
        self.failures = 0
        self._random = random

    def next_delay(self, retry_after: Optional[float] = None) -> float:
        """Count one more failure and return how long to wait before the next attempt."""
        base = min(self.cap, self.first * (2 ** min(self.failures, 32)))
        self.failures += 1
        if self.jitter:
            draw = self._random
            if draw is None:
                import random

                draw = self._random = random.random
            base *= 1.0 - self.jitter * draw()
        if retry_after is not None:
            base = max(base, retry_after)
        return float(base)

    def reset(self) -> None:
        """An attempt succeeded: the next failure starts from ``first`` again."""
        self.failures = 0

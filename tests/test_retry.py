"""Tests for fgext._retry: the one policy for what is retried and how long to back off."""

from __future__ import annotations

import subprocess
import sys
from email.utils import formatdate

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fgext._retry import Backoff, retry_after, retryable_grpc, retryable_http


class TestRetryable:
    @pytest.mark.parametrize("status", [429, 502, 503, 504])
    def test_transient_http_statuses(self, status: int) -> None:
        """429, 502, 503 and 504 are worth asking again."""
        assert retryable_http(status)

    @pytest.mark.parametrize("status", [200, 301, 307, 400, 401, 403, 404, 413, 500, 501])
    def test_other_http_statuses_are_final(self, status: int) -> None:
        """Every other status (a redirect, a client error, a 500) is final."""
        assert not retryable_http(status)

    def test_grpc_codes(self) -> None:
        """UNAVAILABLE and RESOURCE_EXHAUSTED are retried; INVALID_ARGUMENT and UNAUTHENTICATED are not."""
        assert retryable_grpc("UNAVAILABLE") and retryable_grpc("RESOURCE_EXHAUSTED")
        assert not retryable_grpc("INVALID_ARGUMENT") and not retryable_grpc("UNAUTHENTICATED")


class TestRetryAfter:
    def test_seconds(self) -> None:
        """Delta-seconds are read as they are; negative ones as 0."""
        assert retry_after("3") == 3.0 and retry_after(" 0.5 ") == 0.5 and retry_after("-2") == 0.0

    def test_http_date(self) -> None:
        """An HTTP date is the time left until then, measured from ``now``."""
        now = 1_700_000_000.0
        assert retry_after(formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30.0)
        assert retry_after(formatdate(now - 30, usegmt=True), now=now) == 0.0

    @pytest.mark.parametrize("value", [None, "", "soon", "nan", "inf"])
    def test_unreadable_is_none(self, value: object) -> None:
        """Missing or unreadable values impose no wait."""
        assert retry_after(value) is None  # type: ignore[arg-type]


class TestBackoff:
    def test_doubles_up_to_the_cap_without_jitter(self) -> None:
        """With jitter 0, delays are first, 2x, 4x... and never above the cap."""
        backoff = Backoff(0.5, 3.0, jitter=0.0)
        assert [backoff.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]

    @given(st.floats(0.0, 1.0), st.integers(1, 60))
    def test_jitter_stays_within_half_to_full_base(self, draw: float, failures: int) -> None:
        """Each jittered delay lies in [base / 2, base] for jitter 0.5."""
        backoff = Backoff(0.1, 10.0, jitter=0.5, random=lambda: draw)
        for _ in range(failures - 1):
            backoff.next_delay()
        base = min(10.0, 0.1 * 2 ** (failures - 1))
        assert base / 2 - 1e-9 <= backoff.next_delay() <= base + 1e-9

    def test_retry_after_wins_when_longer(self) -> None:
        """A Retry-After longer than the backoff is the delay; a shorter one does not shorten it."""
        backoff = Backoff(1.0, 8.0, jitter=0.0)
        assert backoff.next_delay(5.0) == 5.0
        assert backoff.next_delay(0.1) == 2.0

    def test_reset_starts_over(self) -> None:
        """After a success, the next failure waits ``first`` again."""
        backoff = Backoff(0.25, 8.0, jitter=0.0)
        backoff.next_delay()
        backoff.next_delay()
        backoff.reset()
        assert backoff.next_delay() == 0.25

    def test_bad_parameters(self) -> None:
        """A cap below the first delay or jitter outside [0, 1] is refused."""
        with pytest.raises(ValueError):
            Backoff(2.0, 1.0)
        with pytest.raises(ValueError):
            Backoff(0.1, 1.0, jitter=1.5)


def test_importing_the_policy_stays_cheap() -> None:
    """The cold start imports fgext._retry: it brings neither typing, random nor email with it."""
    code = ("import sys; import fgext._retry; "
            "print(','.join(m for m in ('typing', 'random', 'email.utils') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-S", "-c", f"import sys; sys.path[:0] = {sys.path!r}; {code}"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""

"""The one deadline object: remaining time, earlier sub-deadlines, per-step caps."""

from __future__ import annotations

from typing import List

from fgext._deadline import Deadline


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TestDeadline:
    def test_remaining_counts_down_and_never_goes_negative(self) -> None:
        """remaining() follows the clock and stops at zero."""
        clock = FakeClock()
        deadline = Deadline.after(2.0, clock)
        clock.now += 0.5
        assert deadline.remaining() == 1.5
        assert not deadline.expired()
        clock.now += 5
        assert deadline.remaining() == 0.0
        assert deadline.expired()

    def test_before_keeps_a_margin_for_what_follows(self) -> None:
        """before(margin) ends margin seconds earlier, but never before now."""
        clock = FakeClock()
        deadline = Deadline.after(2.0, clock)
        assert deadline.before(0.5).remaining() == 1.5
        assert deadline.before(10).remaining() == 0.0

    def test_earliest_caps_one_step(self) -> None:
        """earliest(seconds) is the sooner of the deadline and the cap."""
        clock = FakeClock()
        deadline = Deadline.after(2.0, clock)
        assert deadline.earliest(0.5).remaining() == 0.5
        assert deadline.earliest(9).remaining() == 2.0
        assert deadline.earliest(None) is deadline

    def test_no_deadline_is_infinitely_far(self) -> None:
        """after(None) never expires and gives no timeout."""
        clock = FakeClock()
        deadline = Deadline.after(None, clock)
        seen: List[object] = [deadline.timeout(), deadline.expired()]
        assert seen == [None, False]
        assert deadline.earliest(1.0).timeout() == 1.0

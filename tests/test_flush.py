"""The flush policy (FGEXT_FLUSH), its per-sink clock, and when a batch ends an invocation."""

from __future__ import annotations

from typing import Any, Dict, List

import pytest

from fgext._errors import ConfigError
from fgext._events import AnyEvent
from fgext._flush import FlushClock, FlushPolicy, InvocationTracker, parse_flush
from fgext._parse import parse_event


def platform(name: str, rid: str) -> AnyEvent:
    raw: Dict[str, Any] = {"name": name, "startTime": "2023-02-01T00:03:50Z", "traceId": rid}
    if "report" in name.lower() or "runtimedone" in name.lower():
        raw["status"] = "success"
    return parse_event(raw)


def line(text: str = "x") -> AnyEvent:
    return parse_event({"name": "function", "startTime": "2023-02-01T00:03:50Z", "logs": f"[Function]{text}"})


class TestParse:
    @pytest.mark.parametrize(("text", "expected"), [
        (None, FlushPolicy()), ("", FlushPolicy()), (" End ", FlushPolicy("end")),
        ("periodically,250", FlushPolicy("periodically", 0.25)),
        (" Continuously, 100 ", FlushPolicy("continuously", 0.1)),
    ])
    def test_accepted(self, text: Any, expected: FlushPolicy) -> None:
        """end, periodically,<ms> and continuously,<ms>, in any case and with spaces; unset means end."""
        assert parse_flush(text) == expected

    @pytest.mark.parametrize("text", ["sometimes", "periodically", "periodically,0", "continuously,-5",
                                      "continuously,1.5", "end,100", "periodically,abc"])
    def test_refused_with_the_variable_and_the_syntax(self, text: str) -> None:
        """Anything else is a ConfigError (exit 2) naming FGEXT_FLUSH, the value and the accepted forms."""
        with pytest.raises(ConfigError) as info:
            parse_flush(text)
        message = str(info.value)
        assert info.value.exit_code == 2 and "FGEXT_FLUSH" in message and repr(text) in message
        assert "end, periodically,<ms> or continuously,<ms>" in message and "\n" not in message

    def test_policy_prints_as_it_is_written(self) -> None:
        """str() gives the FGEXT_FLUSH spelling back, for the agent's log."""
        assert [str(parse_flush(t)) for t in ("end", "periodically,250", "continuously,1000")] == [
            "end", "periodically,250", "continuously,1000"]

    def test_policy_is_read_only(self) -> None:
        """A policy cannot be changed after it is made."""
        with pytest.raises(AttributeError):
            FlushPolicy().mode = "periodically"  # type: ignore[misc]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TestClock:
    def test_end_flushes_at_every_invocation_end_and_never_on_a_timer(self) -> None:
        """end: every invocation end, no timer."""
        now = Clock()
        clock = FlushClock(FlushPolicy(), now)
        assert clock.at_invocation_end() and not clock.on_timer(True)
        assert FlushPolicy().timer_interval is None

    def test_periodically_flushes_at_an_invocation_end_once_the_interval_has_passed(self) -> None:
        """periodically: an invocation end flushes only when the interval passed since the last flush."""
        now = Clock()
        clock = FlushClock(FlushPolicy("periodically", 10.0), now)
        assert not clock.at_invocation_end()
        now.now += 10.0
        assert clock.at_invocation_end()
        clock.flushed()
        now.now += 9.0
        assert not clock.at_invocation_end()

    def test_continuously_flushes_at_every_invocation_end(self) -> None:
        """continuously: every invocation end, whatever the interval."""
        clock = FlushClock(FlushPolicy("continuously", 10.0), Clock())
        assert clock.at_invocation_end()

    @pytest.mark.parametrize("mode", ["periodically", "continuously"])
    def test_timer_flushes_only_what_received_something(self, mode: str) -> None:
        """On a timer tick, a sink is flushed only if it received something since its last flush."""
        clock = FlushClock(FlushPolicy(mode, 0.5), Clock())
        assert clock.on_timer(True) and not clock.on_timer(False)
        assert FlushPolicy(mode, 0.5).timer_interval == 0.5


class TestTracker:
    def test_a_report_of_any_phase_ends_an_invocation(self) -> None:
        """init, invoke and restore reports each end one."""
        tracker = InvocationTracker()
        for name in ("platform.initReport", "platform.report", "platform.restoreReport"):
            assert tracker.ends_invocation([platform(name, "r")])

    def test_lines_after_their_report_end_it_again(self) -> None:
        """Log lines with no invocation open, after one was reported, end an invocation (late lines)."""
        tracker = InvocationTracker()
        assert not tracker.ends_invocation([platform("platform.start", "a"), line()])
        assert tracker.ends_invocation([platform("platform.runtimeDone", "a"), platform("platform.report", "a")])
        assert tracker.ends_invocation([line("late")])

    def test_lines_while_an_invocation_is_open_do_not(self) -> None:
        """Lines between a start (or a runtimeDone whose start was missed) and its report wait for the report."""
        tracker = InvocationTracker()
        tracker.ends_invocation([platform("platform.start", "a"), platform("platform.report", "a")])
        assert not tracker.ends_invocation([platform("platform.start", "b"), line()])
        assert tracker.ends_invocation([platform("platform.report", "b")])
        assert not tracker.ends_invocation([platform("platform.runtimeDone", "c"), line()])

    def test_lines_before_any_report_do_not(self) -> None:
        """Lines before anything was reported belong to an invocation whose report is still to come."""
        assert not InvocationTracker().ends_invocation([line(), line()])

    def test_a_runtime_done_after_its_report_does_not_reopen_it(self) -> None:
        """A runtimeDone arriving after its own report (out of order) leaves the invocation closed."""
        tracker = InvocationTracker()
        tracker.ends_invocation([platform("platform.start", "a"), platform("platform.report", "a")])
        assert tracker.ends_invocation([platform("platform.runtimeDone", "a"), line()])
        assert tracker.open == 0

    def test_init_and_invoke_of_one_request_id_are_apart(self) -> None:
        """The init report does not close the invocation of the same request id."""
        tracker = InvocationTracker()
        tracker.ends_invocation([platform("platform.initStart", "a"), platform("platform.start", "a")])
        tracker.ends_invocation([platform("platform.initReport", "a")])
        assert tracker.open == 1 and not tracker.ends_invocation([line()])

    def test_open_invocations_are_bounded(self) -> None:
        """Starts without reports are forgotten oldest first beyond the bound."""
        tracker = InvocationTracker(max_open=4)
        starts: List[AnyEvent] = [platform("platform.start", f"r{i}") for i in range(100)]
        tracker.ends_invocation(starts)
        assert tracker.open == 4
        tracker.ends_invocation([platform("platform.report", f"r{i}") for i in range(96, 100)])
        assert tracker.open == 0

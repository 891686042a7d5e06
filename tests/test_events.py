"""The event model (fgext._events): derived times, and every event as a JSON-ready dict."""

from __future__ import annotations

import json

from fgext._events import InitReport, event_to_dict
from fgext._parse import parse_event
from tests.test_parse import DONE, FUNCTION_LOG, REPORT, START, T0


class TestEvents:
    def test_to_dict_is_json_ready(self) -> None:
        """Every typed event converts to a JSON-serialisable dict with its raw object."""
        for raw in (START, DONE, REPORT, FUNCTION_LOG, {"name": "x"}):
            data = event_to_dict(parse_event(raw))
            assert json.loads(json.dumps(data))["raw"] == raw

    def test_times_are_derived_from_nanoseconds(self) -> None:
        """start_time and a report's end_time are aware UTC datetimes of start_ns and end_ns."""
        event = parse_event(REPORT)
        assert isinstance(event, InitReport)
        assert event.start_time == T0 and event.start_time.tzinfo is not None
        assert event.end_time is not None and event.end_ns is not None
        assert int(event.end_time.timestamp()) * 10**9 == event.end_ns

"""Timestamps (fgext._time): every ISO 8601 form, the range OTLP carries, and the cached fast path."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fgext._errors import MalformedEvent
from fgext._time import MAX_TIME_NS, parse_time, parse_time_ns


class TestTime:
    @pytest.mark.parametrize(("text", "expected_ns"), [
        ("2023-02-01T00:03:50.000Z", 1675209830 * 10**9),
        ("2023-02-01T00:03:50Z", 1675209830 * 10**9),
        ("2023-02-01T00:03:50.123456789Z", 1675209830 * 10**9 + 123456789),
        ("2023-02-01T08:03:50.5+08:00", 1675209830 * 10**9 + 500_000_000),
        ("2023-02-01T00:03:50", 1675209830 * 10**9),
        ("2023-02-01 00:03:50.1-0100", 1675213430 * 10**9 + 100_000_000),
    ])
    def test_iso_forms(self, text: str, expected_ns: int) -> None:
        """Z, offsets, no offset (UTC) and any fraction length parse to the same instant."""
        moment, ns = parse_time(text)
        assert ns == expected_ns
        assert moment.tzinfo is not None
        assert abs(moment.timestamp() * 10**9 - ns) < 1000

    @pytest.mark.parametrize("value", ["yesterday", "2023-13-01T00:00:00Z", "", 1675209830, None])
    def test_bad_times_are_malformed(self, value: object) -> None:
        """Anything but an ISO 8601 string is a malformed event, never an exception of another kind."""
        with pytest.raises(MalformedEvent):
            parse_time(value)


class TestBoundary:
    @pytest.mark.parametrize("text", [
        "1969-12-31T23:59:59.999Z",       # a log line dated 1969: negative Unix time
        "0001-01-01T00:00:00.000Z",       # year 0001
        "9999-12-31T23:59:59.999Z",       # year 9999: past fixed64 nanoseconds
        "2262-04-12T00:00:00.000Z",       # just past int64 nanoseconds
        "1970-01-01T00:30:00+01:00",      # an offset that moves it before the epoch
    ])
    def test_times_otlp_cannot_carry_are_malformed(self, text: str) -> None:
        """A time before 1970 or after 2262-04-11 is refused where it is parsed, on both paths."""
        with pytest.raises(MalformedEvent, match="out of range"):
            parse_time(text)
        with pytest.raises(MalformedEvent, match="out of range"):
            parse_time(text)  # a second time: no cache lets it through

    def test_range_edges_are_accepted(self) -> None:
        """The epoch and the last int64 nanosecond's second parse, on the full and the cached path."""
        assert parse_time("1970-01-01T00:00:00.000Z")[1] == 0
        last = "2262-04-11T23:47:16.854Z"
        assert parse_time(last)[1] == parse_time(last)[1] == 9223372036854000000

    def test_cached_minute_does_not_let_a_later_second_past_the_end(self) -> None:
        """2262-04-11T23:47 is cached by a valid time; a second of that minute past int64 is still refused."""
        parse_time("2262-04-11T23:47:00.000Z")
        with pytest.raises(MalformedEvent, match="out of range"):
            parse_time("2262-04-11T23:47:17.000Z")

    def test_the_bound_is_int64_nanoseconds(self) -> None:
        """MAX_TIME_NS is the last int64 nanosecond, and the last millisecond before it parses below it."""
        assert MAX_TIME_NS == 2**63 - 1
        assert 0 <= parse_time_ns("2262-04-11T23:47:16.854Z") <= MAX_TIME_NS


class TestTimeFastPath:
    @settings(max_examples=300, deadline=None)
    @given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)))
    def test_fast_path_agrees_with_full_parse(self, moment: datetime) -> None:
        """The platform's own form gives the same instant on the cached path as on the full parse."""
        text = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
        expected = int(moment.replace(tzinfo=timezone.utc).timestamp()) * 10**9 + moment.microsecond // 1000 * 10**6
        assert parse_time(text)[1] == expected  # first time: full parse, fills the minute cache
        assert parse_time(text)[1] == expected  # second time: fast path

    def test_fast_path_still_rejects_bad_seconds(self) -> None:
        """A cached minute does not let an impossible second through."""
        parse_time("2023-02-01T00:03:50.000Z")
        with pytest.raises(MalformedEvent):
            parse_time("2023-02-01T00:03:75.000Z")

    def test_caches_stay_within_their_bounds(self) -> None:
        """Thousands of distinct seconds and minutes keep both caches at their bounds; each still parses right."""
        from fgext import _time

        start = datetime(2023, 2, 1, tzinfo=timezone.utc)
        for second in range(0, 3 * _time._SECONDS_MAX * 61, 61):
            moment = datetime.fromtimestamp(start.timestamp() + second, timezone.utc)
            text = moment.strftime("%Y-%m-%dT%H:%M:%S.") + "007Z"
            assert parse_time_ns(text) == int(moment.timestamp()) * 10**9 + 7 * 10**6
            assert len(_time._SECONDS) <= _time._SECONDS_MAX and len(_time._MINUTES) <= _time._MINUTES_MAX
        assert _time._SECONDS and _time._MINUTES

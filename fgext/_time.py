"""Timestamps: ISO 8601 as the platform writes it, to Unix nanoseconds, checked against what OTLP carries.

A part of the parse step of every sink's path (listener handler -> parse (:mod:`fgext._parse`, which
calls :func:`parse_time_ns` for every event's ``startTime`` and a report's ``endTime``) -> pipeline ->
...). A time OTLP cannot carry is refused here, as :class:`~fgext._errors.MalformedEvent`, so that the
event holding it is dropped and counted alone and nothing further down has to guard against it.
Nothing here keeps state but two bounded caches (of minutes and of seconds) that make the platform's
own form cheap.
"""

from __future__ import annotations

import calendar
import re
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, Tuple

from fgext._errors import MalformedEvent

__all__ = ["MAX_TIME_NS", "ns_to_datetime", "parse_time", "parse_time_ns"]

_ISO = re.compile(
    r"\s*(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?"
    r"\s*(Z|z|[+-]\d{2}(?::?\d{2})?)?\s*\Z"
)


# "YYYY-MM-DDTHH:MM" -> Unix seconds of that minute in UTC. Events of one sandbox share a handful of
# minutes, so the calendar arithmetic and validation run once per minute instead of once per event.
# Both caches are emptied when full: each entry costs ~150 bytes for the life of the agent, and a
# larger bound only grew its RSS over hours (4096 seconds were ~0.6 MB) without a faster path.
_MINUTES: Dict[str, int] = {}
_MINUTES_MAX = 256
# "YYYY-MM-DDTHH:MM:SS" -> Unix nanoseconds of that second, for the platform's own form only. Lines of one
# invocation share a few seconds: one dictionary look-up and one int() per event on the hottest path.
_SECONDS: Dict[str, int] = {}
_SECONDS_MAX = 256


# What OTLP can carry: fixed64 Unix nanoseconds, and int64 where other code paths convert them; so from
# the epoch (nothing before 1970, no negative time) to 2262-04-11T23:47:16.854775807Z.
MAX_TIME_NS = 2**63 - 1


def _out_of_range(value: str) -> MalformedEvent:
    return MalformedEvent(f"timestamp {value[:64]!r} is out of range: OTLP carries 1970-01-01 to 2262-04-11 UTC")


def _minute_epoch(year: int, month: int, day: int, hour: int, minute: int) -> int:
    datetime(year, month, day, hour, minute)  # validates the fields: raises ValueError when out of range
    return calendar.timegm((year, month, day, hour, minute, 0))


def parse_time_ns(value: Any) -> int:
    """Parse an ISO 8601 timestamp into Unix nanoseconds; raise :class:`MalformedEvent` otherwise.

    The boundary check of every time: one before 1970 or after 2262-04-11 (what OTLP's fixed64
    nanoseconds, read as int64 by some collectors, can carry) is refused here, so the event holding it
    is dropped and counted as malformed instead of failing an export later. Python 3.9's
    ``fromisoformat`` accepts neither ``Z`` nor arbitrary fraction lengths, so the
    documented shape is parsed here. A timestamp without an offset is taken as UTC. The platform's
    own form (``2023-02-01T00:03:50.000Z``) takes a fast path: it is on every event.
    """
    platform_form = value.__class__ is str and len(value) == 24 and value[23] == "Z" and value[19] == "."
    if platform_form:
        second = _SECONDS.get(value[:19])
        if second is not None:
            millis = value[20:23]
            if millis.isdigit():
                return second + int(millis) * 10**6
    if not isinstance(value, str):
        raise MalformedEvent(f"timestamp must be an ISO 8601 string, got {type(value).__name__}")
    if platform_form and value[10] == "T":
        base = _MINUTES.get(value[:16])
        rest = value[17:19] + value[20:23]
        if base is not None and rest.isdigit() and value[16] == ":" and rest[0] < "6":
            second = base * 10**9 + int(rest[:2]) * 10**9
            if second + 999_000_000 <= MAX_TIME_NS:  # a cached minute is >= 0; its last second may not fit
                if len(_SECONDS) >= _SECONDS_MAX:
                    _SECONDS.clear()
                _SECONDS[value[:19]] = second  # the whole form was checked: only valid seconds get in
                return second + int(rest[2:]) * 10**6
    match = _ISO.match(value)
    if match is None:
        raise MalformedEvent(f"timestamp {value[:64]!r} is not ISO 8601")
    year, month, day, hour, minute = (int(match.group(i)) for i in range(1, 6))
    second = int(match.group(6) or 0)
    fraction = match.group(7) or ""
    nanos = int((fraction + "000000000")[:9]) if fraction else 0
    offset_text = match.group(8)
    offset_seconds = 0
    if offset_text and offset_text not in ("Z", "z"):
        digits = offset_text[1:].replace(":", "")
        offset_seconds = int(digits[:2]) * 3600 + int(digits[2:4] or 0) * 60
        if offset_text[0] == "-":
            offset_seconds = -offset_seconds
    if second > 59 or offset_seconds >= 86400 or offset_seconds <= -86400:
        raise MalformedEvent(f"timestamp {value[:64]!r} is out of range")
    try:
        base = _minute_epoch(year, month, day, hour, minute)
    except (ValueError, OverflowError) as error:
        raise MalformedEvent(f"timestamp {value[:64]!r} is out of range: {error}") from None
    ns = (base + second - offset_seconds) * 10**9 + nanos
    if ns < 0 or ns > MAX_TIME_NS:
        raise _out_of_range(value)
    if offset_seconds == 0 and value.strip()[10:11] == "T" and len(value.strip()) >= 16 and base >= 0:
        if len(_MINUTES) >= _MINUTES_MAX:
            _MINUTES.clear()
        _MINUTES[value.strip()[:16]] = base
    return ns


def ns_to_datetime(ns: int) -> datetime:
    """Unix nanoseconds as an aware UTC datetime (microsecond precision, as datetime has)."""
    return _EPOCH + timedelta(microseconds=ns // 1000)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def parse_time(value: Any) -> Tuple[datetime, int]:
    """Parse an ISO 8601 timestamp into an aware UTC datetime and Unix nanoseconds."""
    ns = parse_time_ns(value)
    return ns_to_datetime(ns), ns

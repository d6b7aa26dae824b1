"""Calendars: open hours on chosen week days in an IANA time zone, minus holidays.

Wall-clock hours are compared in the calendar's zone, so daylight-saving changes are honoured:
"08:00-19:00" in Europe/Berlin means 08:00 local in winter and in summer. A range that crosses
midnight ("22:00-06:00") belongs to the day it starts on: with ``days: mon-fri`` the Friday night
shift runs into Saturday morning, and Monday 03:00 is closed (it belongs to Sunday's shift).
A holiday closes the ranges that start on it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from monitor.timeutil import iana_zone

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_LONG_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_HOURS = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
CALENDAR_KEYS = ("timezone", "days", "hours", "holidays")


class CalendarError(ValueError):
    """A calendar definition problem; ``key`` names the offending key when known."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def _day(name: Any) -> int:
    text = str(name).strip().lower()
    if text in DAY_NAMES:
        return DAY_NAMES.index(text)
    if text in _LONG_DAYS:
        return _LONG_DAYS.index(text)
    raise ValueError(f"{name!r} is not a day (mon, tue, wed, thu, fri, sat, sun)")


def parse_days(value: Any) -> frozenset[int]:
    """``mon-fri`` (wrapping ranges like ``fri-mon`` too), ``sat``, or a list ``[mon, wed, sat]``."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        if not parts:
            raise ValueError("days is empty")
        days: set[int] = set()
        for part in parts:
            if "-" in part:
                first_text, _, last_text = part.partition("-")
                first, last = _day(first_text), _day(last_text)
                day = first
                days.add(day)
                while day != last:
                    day = (day + 1) % 7
                    days.add(day)
            else:
                days.add(_day(part))
        return frozenset(days)
    if isinstance(value, list):
        if not value:
            raise ValueError("days is empty")
        return frozenset(_day(item) for item in value)
    raise ValueError("days must be a range like mon-fri or a list like [mon, wed, sat]")


def _minute(hours: int, minutes: int, text: str) -> int:
    if minutes > 59 or hours > 24 or (hours == 24 and minutes):
        raise ValueError(f"{text!r} is not a time of day")
    return hours * 60 + minutes


def parse_hours(value: Any) -> tuple[tuple[int, int], ...]:
    """``"08:00-19:00"``, ``"22:00-06:00"`` (crosses midnight), or a list of such ranges."""
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ValueError("hours is empty")
    ranges = []
    for item in items:
        match = _HOURS.match(item) if isinstance(item, str) else None
        if not match:
            raise ValueError(f'{item!r} is not an hours range like "08:00-19:00"')
        start = _minute(int(match.group(1)), int(match.group(2)), item)
        end = _minute(int(match.group(3)), int(match.group(4)), item)
        if start == end or start == 24 * 60:
            raise ValueError(f"{item!r} is an empty range")
        ranges.append((start, end))
    return tuple(ranges)


def _holiday(value: Any) -> date:
    if isinstance(value, datetime):
        raise ValueError(f"holiday {value!r} must be a date YYYY-MM-DD")
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"holiday {value!r} is not a date YYYY-MM-DD") from None


@dataclass(frozen=True)
class Calendar:
    name: str
    tz: ZoneInfo
    days: frozenset[int]
    ranges: tuple[tuple[int, int], ...]  # minutes of the day; end < start crosses midnight
    holidays: frozenset[date]

    def contains(self, instant: datetime) -> bool:
        """Is this aware instant inside the open hours?"""
        local = instant.astimezone(self.tz)
        minute = local.hour * 60 + local.minute
        today = local.date()
        for start, end in self.ranges:
            if start < end:
                if start <= minute < end and self._open_day(today):
                    return True
            else:  # crosses midnight: the evening part belongs to today, the morning part to yesterday
                if minute >= start and self._open_day(today):
                    return True
                if minute < end and self._open_day(today - timedelta(days=1)):
                    return True
        return False

    def _open_day(self, day: date) -> bool:
        return day.weekday() in self.days and day not in self.holidays

    def open_minutes(self, day: date) -> bytearray:
        """``contains`` for every minute of the local date ``day`` at once: 1440 flags (1 = open), by
        local wall-clock minute. Off-hours over a month ask for 43,200 minutes: one time-zone conversion
        each made that a third of a second."""
        flags = bytearray(1440)
        for start, end in self.ranges:
            if start < end:
                if self._open_day(day):
                    flags[start:end] = b"\x01" * (end - start)
            else:  # crosses midnight, as in ``contains``
                if self._open_day(day):
                    flags[start:] = b"\x01" * (1440 - start)
                if end and self._open_day(day - timedelta(days=1)):
                    flags[:end] = b"\x01" * end
        return flags


def build_calendar(name: str, spec: Mapping[str, Any], default_timezone: str) -> Calendar:
    """Validate a calendar mapping; raise CalendarError naming the key."""
    if not isinstance(spec, Mapping):
        raise CalendarError("a calendar is a mapping with timezone, days, hours and holidays")
    for key in spec:
        if key not in CALENDAR_KEYS:
            raise CalendarError(f"unknown key {key!r} (expected {', '.join(CALENDAR_KEYS)})", key)
    zone_name = spec.get("timezone", default_timezone)
    try:
        tz = iana_zone(str(zone_name))
    except ValueError:
        raise CalendarError(
            f"{zone_name!r} is not an IANA time zone such as Europe/Berlin", "timezone"
        ) from None
    try:
        days = parse_days(spec["days"]) if "days" in spec else frozenset(range(7))
    except ValueError as exc:
        raise CalendarError(str(exc), "days") from None
    try:
        ranges = parse_hours(spec["hours"]) if "hours" in spec else ((0, 24 * 60),)
    except ValueError as exc:
        raise CalendarError(str(exc), "hours") from None
    holidays_value = spec.get("holidays", [])
    if not isinstance(holidays_value, list):
        raise CalendarError("holidays must be a list of dates YYYY-MM-DD", "holidays")
    try:
        holidays = frozenset(_holiday(item) for item in holidays_value)
    except ValueError as exc:
        raise CalendarError(str(exc), "holidays") from None
    return Calendar(name=name, tz=tz, days=days, ranges=ranges, holidays=holidays)

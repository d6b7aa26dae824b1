"""Calendars: day sets, hours crossing midnight, holidays, and daylight-saving changes both ways."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from monitor.engine.calendars import CalendarError, build_calendar, parse_days


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def test_day_ranges_lists_and_wrapping() -> None:
    assert parse_days("mon-fri") == {0, 1, 2, 3, 4}
    assert parse_days("fri-mon") == {4, 5, 6, 0}
    assert parse_days(["mon", "Wed", "saturday"]) == {0, 2, 5}
    assert parse_days("sat") == {5}
    assert parse_days("mon, thu-fri") == {0, 3, 4}


def test_open_hours_on_open_days() -> None:
    cal = build_calendar("office", {"timezone": "UTC", "days": "mon-fri", "hours": "08:00-19:00"}, "UTC")
    assert cal.contains(utc(2026, 3, 4, 8, 0))  # Wednesday, opening minute
    assert cal.contains(utc(2026, 3, 4, 18, 59, 59))
    assert not cal.contains(utc(2026, 3, 4, 19, 0))  # closing time is exclusive
    assert not cal.contains(utc(2026, 3, 4, 7, 59, 59))
    assert not cal.contains(utc(2026, 3, 7, 12, 0))  # Saturday


def test_hours_crossing_midnight_belong_to_the_day_they_start() -> None:
    night = build_calendar("night", {"timezone": "UTC", "days": "mon-fri", "hours": "22:00-06:00"}, "UTC")
    assert night.contains(utc(2026, 3, 6, 23, 0))  # Friday 23:00
    assert night.contains(utc(2026, 3, 7, 5, 59))  # Saturday 05:59: still Friday's shift
    assert not night.contains(utc(2026, 3, 7, 6, 0))
    assert not night.contains(utc(2026, 3, 7, 23, 0))  # Saturday's own shift: closed
    assert not night.contains(utc(2026, 3, 9, 3, 0))  # Monday 03:00 belongs to Sunday's shift
    assert night.contains(utc(2026, 3, 10, 3, 0))  # Tuesday 03:00 belongs to Monday's shift
    assert not night.contains(utc(2026, 3, 4, 12, 0))


def test_several_ranges_and_all_day_defaults() -> None:
    split = build_calendar("split", {"timezone": "UTC", "hours": ["08:00-12:00", "13:00-17:00"]}, "UTC")
    assert split.contains(utc(2026, 3, 7, 9, 0))  # every day by default
    assert not split.contains(utc(2026, 3, 7, 12, 30))
    always = build_calendar("always", {}, "UTC")
    assert always.contains(utc(2026, 3, 7, 0, 0)) and always.contains(utc(2026, 3, 7, 23, 59, 59))
    until_midnight = build_calendar("late", {"timezone": "UTC", "hours": "18:00-24:00"}, "UTC")
    assert until_midnight.contains(utc(2026, 3, 7, 23, 59)) and not until_midnight.contains(
        utc(2026, 3, 8, 0, 0)
    )


def test_holidays_close_the_day_and_the_shift_that_starts_on_it() -> None:
    cal = build_calendar(
        "office",
        {"timezone": "Europe/Berlin", "days": "mon-fri", "hours": "08:00-19:00", "holidays": ["2026-12-25"]},
        "UTC",
    )
    assert not cal.contains(utc(2026, 12, 25, 10, 0))  # Friday, Christmas
    assert cal.contains(utc(2026, 12, 24, 10, 0))
    night = build_calendar(
        "night",
        {"timezone": "UTC", "days": "mon-sun", "hours": "22:00-06:00", "holidays": ["2026-12-24"]},
        "UTC",
    )
    assert not night.contains(utc(2026, 12, 24, 23, 0))
    assert not night.contains(utc(2026, 12, 25, 3, 0))  # the morning of the holiday's shift
    assert night.contains(utc(2026, 12, 24, 3, 0))  # the shift of the 23rd runs into the 24th


def test_timezone_defaults_to_the_configured_one() -> None:
    cal = build_calendar("office", {"days": "mon-fri", "hours": "08:00-19:00"}, "America/New_York")
    assert not cal.contains(utc(2026, 3, 4, 10, 0))  # 05:00 in New York
    assert cal.contains(utc(2026, 3, 4, 14, 0))


BERLIN = {"timezone": "Europe/Berlin", "days": "mon-sun", "hours": "08:00-19:00"}


def test_dst_spring_forward_in_berlin() -> None:
    """2026-03-29, last Sunday of March: 02:00 CET jumps to 03:00 CEST; 08:00 local is 06:00Z, not 07:00Z."""
    cal = build_calendar("office", BERLIN, "UTC")
    assert not cal.contains(utc(2026, 3, 28, 6, 30))  # Saturday 07:30 CET: closed
    assert cal.contains(utc(2026, 3, 29, 6, 30))  # Sunday 08:30 CEST: open, the same UTC time of day
    assert cal.contains(utc(2026, 3, 29, 16, 59))  # 18:59 CEST
    assert not cal.contains(utc(2026, 3, 29, 17, 0))  # 19:00 CEST
    night = build_calendar("night", {"timezone": "Europe/Berlin", "hours": "02:00-03:00"}, "UTC")
    assert not night.contains(utc(2026, 3, 29, 1, 0))  # 01:00Z is 03:00 CEST: the hour that never happened
    assert night.contains(utc(2026, 3, 28, 1, 30))  # 02:30 CET the day before


def test_dst_fall_back_in_berlin() -> None:
    """2026-10-25, last Sunday of October: 03:00 CEST falls back to 02:00 CET; 08:00 local is 07:00Z."""
    cal = build_calendar("office", BERLIN, "UTC")
    assert cal.contains(utc(2026, 10, 24, 6, 30))  # Saturday 08:30 CEST
    assert not cal.contains(utc(2026, 10, 25, 6, 30))  # Sunday 07:30 CET: closed, the same UTC time of day
    assert cal.contains(utc(2026, 10, 25, 7, 0))  # 08:00 CET
    assert cal.contains(utc(2026, 10, 25, 17, 59))  # 18:59 CET
    assert not cal.contains(utc(2026, 10, 25, 18, 0))
    night = build_calendar("night", {"timezone": "Europe/Berlin", "hours": "02:00-03:00"}, "UTC")
    assert night.contains(utc(2026, 10, 25, 0, 30))  # 02:30 CEST, the first time
    assert night.contains(utc(2026, 10, 25, 1, 30))  # 02:30 CET, the second time
    assert not night.contains(utc(2026, 10, 25, 2, 0))  # 03:00 CET


@pytest.mark.parametrize(
    ("spec", "key", "message"),
    [
        ({"timezone": "Mars/Base"}, "timezone", "'Mars/Base' is not an IANA time zone such as Europe/Berlin"),
        ({"days": "mon-fry"}, "days", "'fry' is not a day (mon, tue, wed, thu, fri, sat, sun)"),
        ({"days": []}, "days", "days is empty"),
        ({"hours": "8-19"}, "hours", "'8-19' is not an hours range like \"08:00-19:00\""),
        ({"hours": "08:00-25:00"}, "hours", "'08:00-25:00' is not a time of day"),
        ({"hours": "08:00-08:00"}, "hours", "'08:00-08:00' is an empty range"),
        ({"holidays": ["2026-13-01"]}, "holidays", "holiday '2026-13-01' is not a date YYYY-MM-DD"),
        ({"holidays": "2026-12-25"}, "holidays", "holidays must be a list of dates YYYY-MM-DD"),
        (
            {"weekdays": "mon"},
            "weekdays",
            "unknown key 'weekdays' (expected timezone, days, hours, holidays)",
        ),
    ],
)
def test_calendar_errors(spec: dict, key: str, message: str) -> None:
    with pytest.raises(CalendarError) as caught:
        build_calendar("c", spec, "UTC")
    assert str(caught.value) == message
    assert caught.value.key == key

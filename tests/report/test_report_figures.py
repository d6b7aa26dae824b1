"""Figures of the fixture month (March 2026, Berlin) against numbers worked out by hand in report_data.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from report_data import IN_MONTH, NOW, fill_fixture, fixture_config, utc

from monitor.config import Config
from monitor.engine.calendars import build_calendar
from monitor.report import CATEGORIES, Period, category_of, compute_figures
from monitor.report.figures import (
    CRITICAL_TYPES,
    business_calendar,
    calendar_closed_intervals,
    closed_intervals,
)
from monitor.store import Store

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture
def store(config: Config, store_target: str) -> Iterator[Store]:
    """The report's figures are SQL over the archive: these tests run on both backends."""
    with Store.open(store_target) as opened:
        fill_fixture(opened)
        yield opened


def test_month_edges_are_local_midnights_and_respect_daylight_saving() -> None:
    march = Period.parse("2026-03", BERLIN)
    assert march.start == datetime(2026, 2, 28, 23, 0, tzinfo=UTC)  # 00:00 CET
    assert march.end == datetime(2026, 3, 31, 22, 0, tzinfo=UTC)  # 00:00 CEST
    assert march.hours == 743
    october = Period.parse("2026-10", BERLIN)
    assert october.hours == 745
    assert Period.parse("2026-02", ZoneInfo("UTC")).hours == 28 * 24
    lengths = {day: (end - start) / timedelta(hours=1) for day, start, end in march.days()}
    assert len(lengths) == 31 and lengths[date(2026, 3, 29)] == 23 and lengths[date(2026, 3, 28)] == 24
    october_lengths = {day: (end - start) / timedelta(hours=1) for day, start, end in october.days()}
    assert {day: hours for day, hours in october_lengths.items() if hours != 24} == {date(2026, 10, 25): 25}


def test_month_arithmetic_and_parsing() -> None:
    assert Period.parse("2026-01", BERLIN).previous().key == "2025-12"
    assert Period.parse("2026-12", BERLIN).next().key == "2027-01"
    assert Period.containing(datetime(2026, 3, 31, 22, 30, tzinfo=UTC), BERLIN).key == "2026-04"
    for bad in ("2026-13", "2026-3", "March", "2026-00"):
        with pytest.raises(ValueError, match="is not a month YYYY-MM"):
            Period.parse(bad, BERLIN)


def test_totals_and_categories(store: Store, config: Config) -> None:
    figures = compute_figures(store, config, Period.parse("2026-03", config.tz), now=NOW)
    assert figures.total == IN_MONTH == 14
    assert {c.name: c.count for c in figures.categories} == {
        "Workspace management": 3,  # Create Branch, set live branch, Update Workspace (staging)
        "Database": 3,  # Create Table, Update Record, Delete Table
        "API & functions": 2,  # Update Function, Run Query
        "Authentication & security": 4,  # Login, RBAC, Login Failed, Delete User
        "Configuration": 1,  # Update Environment Variable
        "Other": 1,  # Frobnicate Widget
    }
    assert [c.name for c in figures.categories] == list(CATEGORIES)
    assert sum(c.share for c in figures.categories) == pytest.approx(1.0)
    assert figures.complete


def test_security_critical_events_in_local_time(store: Store, config: Config) -> None:
    figures = compute_figures(store, config, Period.parse("2026-03", config.tz), now=NOW)
    assert figures.critical_total == 5
    assert [(e.time.strftime("%m-%d %H:%M %Z"), e.type, e.user, e.event_id) for e in figures.critical] == [
        ("03-01 00:01 CET", "Update RBAC Permissions", "ben@corp.io", 3),
        ("03-10 13:00 CET", "set live branch", "ben@corp.io", 16),  # types match case-insensitively
        ("03-27 19:30 CET", "Delete Table", "ben@corp.io", 7),
        ("03-29 03:30 CEST", "Update Environment Variable", "ana@corp.io", 9),
        ("03-31 23:59 CEST", "Delete User", "ana@corp.io", 13),
    ]
    assert figures.critical[0].workspace == "shop" and "#3" in figures.critical[0].message


def test_activity_per_user_with_off_hours_across_the_dst_change(store: Store, config: Config) -> None:
    figures = compute_figures(store, config, Period.parse("2026-03", config.tz), now=NOW)
    users = {u.email: u for u in figures.users}
    assert [u.email for u in figures.users] == ["ana@corp.io", "ben@corp.io", "mallory@evil.io", None]
    ana, ben = users["ana@corp.io"], users["ben@corp.io"]
    assert (ana.total, ana.off_hours) == (7, 4)  # Sun login, Sun 03:30 CEST, Tue 23:59 CEST, Sun (staging)
    assert ana.by_category == {
        "Workspace management": 2, "Database": 2, "API & functions": 0,
        "Authentication & security": 2, "Configuration": 1, "Other": 0,
    }  # fmt: skip
    # Fri 19:30 CET and Mon 19:30 CEST are off; Fri 08:30 CET is business; Mon 08:30 CEST (07:30 CET) too.
    assert (ben.total, ben.off_hours) == (5, 3)
    assert (users["mallory@evil.io"].off_hours, users[None].off_hours) == (1, 1)
    assert figures.off_hours_total == 9 and figures.users_total == 4
    assert "Mon-Fri 08:00-19:00 Europe/Berlin" in figures.calendar and "default" in figures.calendar


def test_off_hours_follow_the_configured_business_hours_calendar(tmp_path: Path, store: Store) -> None:
    config = fixture_config(
        tmp_path, rules={"calendars": {"business_hours": {"days": "mon-sun", "hours": "00:00-24:00"}}}
    )
    figures = compute_figures(store, config, Period.parse("2026-03", config.tz), now=NOW)
    assert figures.off_hours_total == 0
    assert "every day 00:00-24:00" in figures.calendar and "config" in figures.calendar


def test_closed_intervals_of_a_calendar_over_the_dst_night() -> None:
    calendar, _ = business_calendar(fixture_config(Path("/nonexistent")))
    day = Period.parse("2026-03", BERLIN).days()[28]  # Sunday 29 March, 23 hours long
    assert day[0] == date(2026, 3, 29)
    assert closed_intervals(calendar.contains, day[1], day[2]) == [
        (int(day[1].timestamp() * 1000), int(day[2].timestamp() * 1000))
    ]
    monday = Period.parse("2026-03", BERLIN).days()[29]
    runs = closed_intervals(calendar.contains, monday[1], monday[2])
    # Open 08:00-19:00 CEST = 06:00-17:00 UTC.
    assert runs == [
        (int(monday[1].timestamp() * 1000), int(utc("2026-03-30T06:00:00Z").timestamp() * 1000)),
        (int(utc("2026-03-30T17:00:00Z").timestamp() * 1000), int(monday[2].timestamp() * 1000)),
    ]


def test_activity_per_local_day(store: Store, config: Config) -> None:
    figures = compute_figures(store, config, Period.parse("2026-03", config.tz), now=NOW)
    busy = {d.day.day: d.count for d in figures.days if d.count}
    # Mar 30 holds the 00:30 CEST event that a CET (UTC+1) bucketing would put on the 29th.
    assert busy == {1: 2, 2: 2, 10: 1, 15: 1, 27: 2, 29: 2, 30: 3, 31: 1}
    assert len(figures.days) == 31 and sum(d.count for d in figures.days) == figures.total
    assert [d.day.day for d in figures.days if d.weekend][:2] == [1, 7]
    assert figures.peak_day is not None and figures.peak_day.day == date(2026, 3, 30)


def test_alerts_by_rule_and_severity_with_throttled_counts(store: Store, config: Config) -> None:
    figures = compute_figures(store, config, Period.parse("2026-03", config.tz), now=NOW)
    assert [(a.rule_id, a.severity, a.count, a.throttled) for a in figures.alert_counts] == [
        ("xano.destructive.off-hours", "critical", 1, 0),  # the Apr 1 00:00 and Feb 28 23:59 ones are out
        ("xano.auth.failed-login-burst", "high", 2, 4),
        ("monitor.retention_gap", "high", 1, 0),
    ]
    assert (figures.alerts_total, figures.throttled_total) == (4, 4)
    times = [a.time.strftime("%d %H:%M") for a in figures.alerts]
    assert times == ["05 10:00", "20 01:00", "27 19:30", "29 01:30"]


def test_coverage_states_gaps_and_sources_plainly(store: Store, config: Config) -> None:
    figures = compute_figures(store, config, Period.parse("2026-03", config.tz), now=NOW)
    kinds = [(g.source, g.kind, g.start) for g in figures.gaps]
    assert kinds == [
        ("prod", "polling", utc("2026-02-28T20:00:00Z")),  # overlaps the month's start: included
        ("prod", "polling", utc("2026-03-10T02:00:00Z")),
        ("staging", "ongoing", utc("2026-03-15T13:00:00Z")),  # silent since, at report time
        ("prod", "retention", utc("2026-03-20T00:00:00Z")),
    ]  # the February gap is left out
    retention = figures.gaps[3].statement
    assert "may be missing events" in retention and "2026-03-20 01:00:00 CET" in retention
    assert "none are missing" in figures.gaps[1].statement
    # Durations in words (the row's own detail says "3:00:00"); the plan's retention too.
    assert (
        "(source prod, 2026-03-10 03:00:00 CET to 2026-03-10 06:00:00 CET): no successful poll for 3 h."
        in (figures.gaps[1].statement)
    )
    assert any("plan keeps events for 7 d:" in note for note in figures.coverage_notes)
    sources = {s.name: s for s in figures.sources}
    assert sources["prod"].polled_in_month and sources["staging"].polled_in_month
    assert not sources["dev"].polled_in_month and sources["dev"].note == "never polled successfully"
    assert [s.name for s in figures.sources_without_poll] == ["dev"]
    # staging was first polled on Mar 15 and its plan keeps 7 days: the week before may be missing.
    assert any("2026-03-08 14:00:00 CET may have expired" in note for note in figures.coverage_notes)


def test_a_source_silent_all_month_is_named(tmp_path: Path) -> None:
    config = fixture_config(tmp_path)
    with Store.open(config.state.path) as store:
        from monitor.store import Cursor

        with store.transaction():
            store.save_cursor(Cursor("prod", last_id=1, last_success_at=utc("2026-02-20T10:00:00Z")))
        figures = compute_figures(store, config, Period.parse("2026-03", config.tz), now=NOW)
    prod = next(s for s in figures.sources if s.name == "prod")
    assert not prod.polled_in_month and prod.note == "no successful poll since 2026-02-20 11:00:00 CET"
    assert any(g.kind == "ongoing" and g.source == "prod" for g in figures.gaps)


def test_empty_month_has_zero_everywhere(store: Store, config: Config) -> None:
    figures = compute_figures(store, config, Period.parse("2026-05", config.tz), now=NOW)
    assert figures.total == 0 and figures.users == [] and figures.critical == []
    assert figures.alert_counts == [] and figures.alerts == []
    assert all(d.count == 0 for d in figures.days) and figures.peak_day is None
    assert not figures.complete  # May 2026 had not ended at NOW


def test_categories_cover_the_whole_documented_vocabulary() -> None:
    assert category_of("Delete Table") == "Database" and category_of("UPDATE RBAC PERMISSIONS") == (
        "Authentication & security"
    )
    assert category_of("Set Live Branch") == "Workspace management"
    assert category_of("Install Add-on") == "API & functions"
    assert category_of("Teleport Table") == "Other" and category_of("") == "Other"
    assert all(category_of(t) != "Other" for t in CRITICAL_TYPES)


def test_lists_are_capped_but_totals_are_not(store: Store, config: Config) -> None:
    figures = compute_figures(store, config, Period.parse("2026-03", config.tz), now=NOW, cap=2)
    assert len(figures.critical) == 2 and figures.critical_total == 5
    assert len(figures.users) == 2 and figures.users_total == 4
    assert len(figures.alerts) == 2 and figures.alerts_total == 4


def test_a_short_gap_reads_to_the_second_with_its_length_in_words(tmp_path: Path) -> None:
    # A 47-second outage: "06:27 CET to 06:27 CET" said nothing, "0:00:47.345672" was Python's repr.
    config = fixture_config(tmp_path)
    with Store.open(config.state.path) as store:
        with store.transaction():
            store.record_gap(
                "prod", "polling", utc("2026-03-10T05:27:03.100000Z"), utc("2026-03-10T05:27:50.445672Z"),
                "no successful poll for 0:00:47.345672", NOW,
            )  # fmt: skip
        figures = compute_figures(store, config, Period.parse("2026-03", config.tz), now=NOW)
    [gap] = [g for g in figures.gaps if g.kind == "polling"]
    assert gap.statement.startswith(
        "Polling gap (source prod, 2026-03-10 06:27:03 CET to 2026-03-10 06:27:50 CET): "
        "no successful poll for 47 s."
    )


def test_active_users_count_people_not_events_without_a_user(store: Store, config: Config) -> None:
    figures = compute_figures(store, config, Period.parse("2026-03", config.tz), now=NOW)
    # ana, ben and mallory; the "Run Query" event without a user is listed but is nobody.
    assert figures.active_users == 3 and figures.users_total == 4


def test_a_month_backfilled_while_upstream_still_held_it_counts_as_covered(tmp_path: Path) -> None:
    from report_data import archive, entry

    from monitor.store import Cursor

    config = fixture_config(
        tmp_path,
        sources=[{"name": "prod", "base_url": "http://127.0.0.1:1", "token": "t", "plan_retention": "40d"}],
    )
    first_poll = utc("2026-04-02T07:00:00Z")  # after March; 40 days back reaches 2026-02-21
    with Store.open(config.state.path) as store:
        archive(store, "prod", [entry(1, "2026-03-05T10:00:00Z", "Login", "ana@corp.io")], first_poll)
        with store.transaction():
            store.save_cursor(Cursor("prod", last_id=1, last_success_at=first_poll))
        figures = compute_figures(store, config, Period.parse("2026-03", config.tz), now=NOW)
    [prod] = figures.sources
    assert prod.polled_in_month and prod.how == "backfilled"
    assert "while Xano still held every event of the month" in prod.note
    assert figures.coverage_notes == [] and figures.sources_without_poll == []


@pytest.mark.parametrize(
    ("zone", "spec"),
    [
        ("Europe/Berlin", {"days": "mon-fri", "hours": "08:00-19:00", "holidays": ["2026-03-30"]}),
        ("Europe/Berlin", {"days": "fri-mon", "hours": ["22:30-06:15", "12:00-12:05"]}),
        ("America/New_York", {"days": "mon-sat", "hours": "00:00-24:00"}),
        ("Asia/Kathmandu", {"days": "sun-thu", "hours": "09:45-17:10"}),
        ("Australia/Lord_Howe", {"days": "mon-fri", "hours": ["01:30-02:30", "18:00-03:00"]}),
        ("UTC", {"days": "sat", "hours": "23:00-01:00"}),
    ],
)
def test_the_fast_closed_intervals_equal_the_minute_by_minute_ones(zone: str, spec: dict[str, Any]) -> None:
    """The dashboard's and the report's off-hours use the fast path; the per-minute sampling is the
    reference. Periods over DST changes (Berlin and New York in March, Lord Howe's half-hour shift in
    April), odd offsets (+05:45), ranges crossing midnight, a 5-minute window, holidays, unaligned bounds."""
    calendar = build_calendar("business_hours", spec, zone)
    periods = [
        (utc("2026-03-01T00:00:00Z"), utc("2026-04-10T00:00:00Z")),
        (utc("2026-03-28T13:17:42.123456Z"), utc("2026-04-06T07:01:00.000999Z")),
        (utc("2026-10-20T23:59:59.999999Z"), utc("2026-11-05T00:00:30Z")),
        (utc("2026-03-29T00:59:00Z"), utc("2026-03-29T01:01:00Z")),
        (utc("2026-03-29T01:00:00Z"), utc("2026-03-29T01:00:00Z")),
    ]
    for start, end in periods:
        assert calendar_closed_intervals(calendar, start, end) == closed_intervals(
            calendar.contains, start, end
        )

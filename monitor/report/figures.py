"""The monthly report's figures, computed in SQL over the archive.

A period is a calendar month in the configured time zone. Its edges are the local midnights of the
1st converted to UTC instants, so a Europe/Berlin March has 743 hours and an October 745; every query
selects ``created_ms`` in ``[start, end)`` through the ``created_ms`` index and lets SQLite do the
counting, so a month of a million events never sits in Python memory.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from monitor.alerts.model import severity_rank
from monitor.config import Config
from monitor.engine.calendars import Calendar, build_calendar
from monitor.events import format_timestamp
from monitor.store import Store
from monitor.timeutil import format_duration, format_time

# --- vocabulary --------------------------------------------------------------------------------------------

CATEGORIES = (
    "Workspace management",
    "Database",
    "API & functions",
    "Authentication & security",
    "Configuration",
    "Other",
)
OTHER = "Other"

# DESIGN.md's event vocabulary, grouped as the report shows it. A type not listed (Xano adds types over
# time) is counted under "Other" and still appears in the CSV under its own name.
CATEGORY_TYPES: dict[str, tuple[str, ...]] = {
    "Workspace management": (
        "Create Workspace", "Update Workspace", "Reset Workspace", "Read Workspace", "Delete Workspace",
        "Create Branch", "Merge Branch", "Delete Branch", "Set Live Branch",
    ),
    "Database": (
        "Create Table", "Update Table", "Delete Table", "Restore Table",
        "Create Record", "Update Record", "Delete Record",
        "Add Field", "Update Field", "Delete Field",
    ),
    "API & functions": (
        "Create API Group", "Update API Group", "Delete API Group",
        "Create Query", "Update Query", "Delete Query", "Run Query",
        "Create Function", "Update Function", "Delete Function",
        "Create Task", "Update Task", "Delete Task",
        "Install Add-on", "Update Add-on", "Remove Add-on",
    ),
    "Authentication & security": (
        "Login", "Login Failed", "Create User", "Update User", "Delete User", "Update RBAC Permissions",
        "Create Token", "Revoke Token", "Update Security Policy",
    ),
    "Configuration": (
        "Create Environment Variable", "Update Environment Variable", "Delete Environment Variable",
    ),
}  # fmt: skip

# The security-critical event types, each listed in full in the report: changes to who may do what
# (users, roles, tokens, security policy), to secrets (environment variables), to what runs in production
# (the live branch), and destruction of whole workspaces and tables. These are exactly the types of the
# bundled pack's critical-change rules (rules/critical-changes.yml), so the report and the alerts agree;
# routine deletes (records, feature branches) are left to the pattern rules (bulk, off-hours). One list
# for the SQL and the templates; matched case-insensitively, as rules match.
CRITICAL_TYPES: tuple[str, ...] = (
    "Delete Workspace",
    "Reset Workspace",
    "Set Live Branch",
    "Delete Table",
    "Create User",
    "Delete User",
    "Update RBAC Permissions",
    "Create Token",
    "Revoke Token",
    "Update Security Policy",
    "Create Environment Variable",
    "Update Environment Variable",
    "Delete Environment Variable",
)

_CATEGORY_OF = {t.lower(): category for category, types in CATEGORY_TYPES.items() for t in types}
_CRITICAL = frozenset(t.lower() for t in CRITICAL_TYPES)

# Long lists in the HTML and text body stop here (saying how many more); the CSV has every event.
DEFAULT_CAP = 200

# Used when the config does not define a business_hours calendar (rules.calendars).
DEFAULT_BUSINESS_HOURS: dict[str, Any] = {"days": "mon-fri", "hours": "08:00-19:00"}


def category_of(event_type: str) -> str:
    return _CATEGORY_OF.get(event_type.lower(), OTHER)


def is_critical(event_type: str) -> bool:
    return event_type.lower() in _CRITICAL


# --- the period --------------------------------------------------------------------------------------------

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


@dataclass(frozen=True)
class Period:
    """A calendar month in a time zone; ``start``/``end`` are UTC instants, ``end`` exclusive."""

    year: int
    month: int
    tz: ZoneInfo

    @classmethod
    def parse(cls, text: str, tz: ZoneInfo) -> Period:
        match = _MONTH.match(text.strip())
        if not match or not 1 <= int(match.group(2)) <= 12:
            raise ValueError(f"{text!r} is not a month YYYY-MM")
        return cls(int(match.group(1)), int(match.group(2)), tz)

    @classmethod
    def containing(cls, instant: datetime, tz: ZoneInfo) -> Period:
        local = instant.astimezone(tz)
        return cls(local.year, local.month, tz)

    @property
    def key(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def label(self) -> str:
        return date(self.year, self.month, 1).strftime("%B %Y")

    @property
    def start(self) -> datetime:
        # fold=0: a midnight that does not exist (a DST jump at 00:00) maps to the first instant of the day.
        return datetime(self.year, self.month, 1, tzinfo=self.tz).astimezone(UTC)

    @property
    def end(self) -> datetime:
        return self.next().start

    @property
    def hours(self) -> float:
        return (self.end - self.start) / timedelta(hours=1)

    def next(self) -> Period:
        return Period(self.year + self.month // 12, self.month % 12 + 1, self.tz)

    def previous(self) -> Period:
        return Period(self.year - (self.month == 1), (self.month - 2) % 12 + 1, self.tz)

    def days(self) -> list[tuple[date, datetime, datetime]]:
        """Every local day of the month with its UTC edges (23, 24 or 25 hours long)."""
        out = []
        day = date(self.year, self.month, 1)
        while day.month == self.month:
            following = day + timedelta(days=1)
            start = datetime(day.year, day.month, day.day, tzinfo=self.tz).astimezone(UTC)
            end = datetime(following.year, following.month, following.day, tzinfo=self.tz).astimezone(UTC)
            out.append((day, start, end))
            day = following
        return out


def _ms(instant: datetime) -> int:
    return int(instant.timestamp() * 1000)


# --- the figures -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CategoryCount:
    name: str
    count: int
    share: float  # of the month's total, 0..1


@dataclass(frozen=True)
class TypeCount:
    type: str
    category: str
    count: int
    critical: bool


@dataclass(frozen=True)
class UserActivity:
    email: str | None  # None: events without a user (system, scheduled tasks)
    total: int
    by_category: dict[str, int]
    off_hours: int


@dataclass(frozen=True)
class CriticalEvent:
    time: datetime  # in the configured zone
    type: str
    user: str | None
    workspace: str | None
    message: str
    source: str
    event_id: int


@dataclass(frozen=True)
class AlertCount:
    rule_id: str
    severity: str
    count: int
    throttled: int  # matches the rule's throttle held back (sum of suppressed_count)


@dataclass(frozen=True)
class AlertRow:
    time: datetime
    severity: str
    rule_id: str
    title: str
    source: str


@dataclass(frozen=True)
class Gap:
    source: str
    kind: str  # polling | retention | ongoing
    start: datetime
    end: datetime
    statement: str


@dataclass(frozen=True)
class SourceCoverage:
    name: str
    polled_in_month: bool  # the archive covers the month for this source (polled, or backfilled in time)
    last_success: datetime | None
    note: str
    how: str = "polled"  # polled | backfilled (first poll after the month, within retention) | no


@dataclass(frozen=True)
class DayCount:
    day: date
    count: int
    weekend: bool


@dataclass
class Figures:
    period: Period
    generated_at: datetime
    total: int = 0
    categories: list[CategoryCount] = field(default_factory=list)
    types: list[TypeCount] = field(default_factory=list)
    critical: list[CriticalEvent] = field(default_factory=list)  # capped
    critical_total: int = 0
    users: list[UserActivity] = field(default_factory=list)  # capped
    users_total: int = 0  # rows of the users table, "(no user)" included
    active_users: int = 0  # people: users with an email (events without a user are nobody's activity)
    off_hours_total: int = 0
    calendar: str = ""  # how off-hours were judged, in words
    alert_counts: list[AlertCount] = field(default_factory=list)
    alerts: list[AlertRow] = field(default_factory=list)  # capped
    alerts_total: int = 0
    throttled_total: int = 0
    gaps: list[Gap] = field(default_factory=list)  # capped
    gaps_total: int = 0
    sources: list[SourceCoverage] = field(default_factory=list)
    coverage_notes: list[str] = field(default_factory=list)
    days: list[DayCount] = field(default_factory=list)
    chain_head: str = ""  # the archive's hash-chain head when the report was made
    cap: int = DEFAULT_CAP

    @property
    def tz(self) -> ZoneInfo:
        return self.period.tz

    @property
    def complete(self) -> bool:
        """False while the month is still running (the report then covers it up to generated_at)."""
        return self.generated_at >= self.period.end

    @property
    def peak_day(self) -> DayCount | None:
        busiest = max(self.days, key=lambda d: d.count, default=None)
        return busiest if busiest is not None and busiest.count else None

    @property
    def sources_without_poll(self) -> list[SourceCoverage]:
        return [s for s in self.sources if not s.polled_in_month]


# --- calendars ---------------------------------------------------------------------------------------------


def business_calendar(config: Config, calendars: dict[str, Calendar] | None = None) -> tuple[Calendar, str]:
    """The ``business_hours`` calendar off-hours are judged against, and where it came from.

    ``calendars`` are the loaded rule set's (bundled pack merged with the config); without them the
    config's ``rules.calendars.business_hours`` is used, else mon-fri 08:00-19:00 in the configured zone.
    """
    if calendars and "business_hours" in calendars:
        return calendars["business_hours"], "business_hours calendar of the rule set"
    spec = config.rules.calendars.get("business_hours")
    if spec is not None:
        return build_calendar(
            "business_hours", spec, config.timezone
        ), "business_hours calendar of the config"
    calendar = build_calendar("business_hours", DEFAULT_BUSINESS_HOURS, config.timezone)
    return calendar, "default business hours"


def describe_calendar(calendar: Calendar) -> str:
    names = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
    days = ", ".join(names[d] for d in sorted(calendar.days))
    if calendar.days == frozenset(range(5)):
        days = "Mon-Fri"
    elif calendar.days == frozenset(range(7)):
        days = "every day"
    hours = ", ".join(f"{s // 60:02d}:{s % 60:02d}-{e // 60:02d}:{e % 60:02d}" for s, e in calendar.ranges)
    holidays = f", {len(calendar.holidays)} holidays" if calendar.holidays else ""
    return f"{days} {hours} {calendar.tz.key}{holidays}"


def closed_intervals(
    contains: Callable[[datetime], bool], start: datetime, end: datetime
) -> list[tuple[int, int]]:
    """The [start_ms, end_ms) runs of [start, end) where ``contains`` is False.

    Calendars open and close on whole minutes (and every current UTC offset is whole minutes), so
    sampling each minute is exact; it works with any calendar predicate, including DST days.
    """
    runs: list[tuple[int, int]] = []
    run_start: int | None = None
    step = timedelta(minutes=1)
    instant = start
    while instant < end:
        closed = not contains(instant)
        ms = _ms(instant)
        if closed and run_start is None:
            run_start = ms
        elif not closed and run_start is not None:
            runs.append((run_start, ms))
            run_start = None
        instant += step
    if run_start is not None:
        runs.append((run_start, _ms(end)))
    return runs


# --- computing ---------------------------------------------------------------------------------------------

# SQLite's host-parameter limit is 32766; stay far below it when passing interval lists.
_INTERVALS_PER_QUERY = 400


def compute_figures(
    store: Store,
    config: Config,
    period: Period,
    *,
    now: datetime,
    calendar: Calendar | None = None,
    calendar_origin: str | None = None,
    cap: int = DEFAULT_CAP,
) -> Figures:
    """All figures of ``period``. Call inside one read snapshot so they agree with the CSV."""
    if calendar is None:
        calendar, calendar_origin = business_calendar(config)
    figures = Figures(period=period, generated_at=now, cap=cap)
    figures.calendar = f"{describe_calendar(calendar)} ({calendar_origin or 'business_hours calendar'})"
    start_ms, end_ms = _ms(period.start), _ms(period.end)
    conn = store.conn
    tz = period.tz

    # One pass over the month: counts per (user, type). Users and types are few; events are many.
    by_type: Counter[str] = Counter()
    by_user: dict[str | None, Counter[str]] = {}
    for email, event_type, count in conn.execute(
        "SELECT user_email, type, count(*) FROM events INDEXED BY idx_events_created_ms "
        "WHERE created_ms >= ? AND created_ms < ? GROUP BY user_email, type",
        (start_ms, end_ms),
    ):
        by_type[event_type] += count
        by_user.setdefault(email, Counter())[category_of(event_type)] += count
    figures.total = sum(by_type.values())
    per_category: Counter[str] = Counter()
    for event_type, count in by_type.items():
        per_category[category_of(event_type)] += count
    figures.categories = [
        CategoryCount(name, per_category[name], per_category[name] / figures.total if figures.total else 0.0)
        for name in CATEGORIES
    ]
    figures.types = sorted(
        (TypeCount(t, category_of(t), c, is_critical(t)) for t, c in by_type.items()),
        key=lambda tc: (-tc.count, tc.type),
    )

    # Off-hours per user: join the calendar's closed runs (a few dozen a month) against the index.
    off_by_user: Counter[str | None] = Counter()
    closed = closed_intervals(calendar.contains, period.start, period.end) if figures.total else []
    for chunk_start in range(0, len(closed), _INTERVALS_PER_QUERY):
        chunk = closed[chunk_start : chunk_start + _INTERVALS_PER_QUERY]
        values = ", ".join("(?, ?)" for _ in chunk)
        params = [ms for interval in chunk for ms in interval]
        for email, count in conn.execute(
            f"WITH closed(s, e) AS (VALUES {values}) "  # noqa: S608 - placeholders only
            "SELECT user_email, count(*) FROM closed CROSS JOIN events INDEXED BY idx_events_created_ms "
            "ON events.created_ms >= closed.s AND events.created_ms < closed.e GROUP BY user_email",
            params,
        ):
            off_by_user[email] += count
    figures.off_hours_total = sum(off_by_user.values())
    users = [
        UserActivity(
            email=email,
            total=sum(counts.values()),
            by_category={name: counts[name] for name in CATEGORIES},
            off_hours=off_by_user[email],
        )
        for email, counts in by_user.items()
    ]
    users.sort(key=lambda u: (-u.total, u.email is None, u.email or ""))
    figures.users_total = len(users)
    figures.active_users = sum(1 for u in users if u.email is not None)
    figures.users = users[:cap]

    # Every security-critical event (the body lists the first ``cap``; the CSV has them all).
    critical_types = [t for t in by_type if is_critical(t)]
    figures.critical_total = sum(by_type[t] for t in critical_types)
    if critical_types:
        marks = ", ".join("?" for _ in critical_types)
        figures.critical = [
            CriticalEvent(
                time=datetime.fromisoformat(created_at).astimezone(tz),
                type=event_type,
                user=email,
                workspace=workspace,
                message=msg,
                source=source,
                event_id=event_id,
            )
            for created_at, event_type, email, workspace, msg, source, event_id in conn.execute(
                "SELECT created_at, type, user_email, workspace_name, msg, source, event_id "  # noqa: S608
                "FROM events INDEXED BY idx_events_created_ms "
                f"WHERE created_ms >= ? AND created_ms < ? AND type IN ({marks}) "
                "ORDER BY created_ms, created_at, source, event_id LIMIT ?",
                (start_ms, end_ms, *critical_types, cap),
            )
        ]

    _alert_figures(figures, conn, period, cap)
    _coverage_figures(figures, store, config, period, now, cap)

    # Activity per local day: one index-only count per day (23, 24 or 25 hours each).
    figures.days = [
        DayCount(
            day,
            int(
                conn.execute(
                    "SELECT count(*) FROM events WHERE created_ms >= ? AND created_ms < ?", (_ms(s), _ms(e))
                ).fetchone()[0]
            ),
            day.weekday() >= 5,
        )
        for day, s, e in period.days()
    ]
    figures.chain_head = store.head_hash()
    return figures


def _alert_figures(figures: Figures, conn: Any, period: Period, cap: int) -> None:
    # alerts.event_time is format_timestamp text (UTC, microseconds), so text comparison is time order.
    window = (format_timestamp(period.start), format_timestamp(period.end))
    counts = [
        AlertCount(rule_id, severity, count, int(throttled or 0))
        for rule_id, severity, count, throttled in conn.execute(
            "SELECT rule_id, severity, count(*), sum(suppressed_count) FROM alerts "
            "WHERE event_time >= ? AND event_time < ? GROUP BY rule_id, severity",
            window,
        )
    ]
    counts.sort(key=lambda a: (-_rank(a.severity), -a.count, a.rule_id))
    figures.alert_counts = counts
    figures.alerts_total = sum(a.count for a in counts)
    figures.throttled_total = sum(a.throttled for a in counts)
    figures.alerts = [
        AlertRow(datetime.fromisoformat(t).astimezone(period.tz), severity, rule_id, title, source)
        for t, severity, rule_id, title, source in conn.execute(
            "SELECT event_time, severity, rule_id, title, source FROM alerts "
            "WHERE event_time >= ? AND event_time < ? ORDER BY event_time, rule_id, id LIMIT ?",
            (*window, cap),
        )
    ]


def _rank(severity: str) -> int:
    try:
        return severity_rank(severity)
    except ValueError:
        return -1


def _coverage_figures(
    figures: Figures, store: Store, config: Config, period: Period, now: datetime, cap: int
) -> None:
    """Gaps and per-source polling, in words an auditor can act on: what the archive may be missing."""
    tz = period.tz
    until = min(period.end, now)
    gaps: list[Gap] = []
    for gap in store.gaps(period.start, period.end):
        where = f"source {gap['source']}, {format_time(gap['start'], tz)} to {format_time(gap['end'], tz)}"
        if gap["kind"] == "retention":
            statement = (
                f"Retention gap ({where}): polling stopped for longer than Xano keeps audit events, so "
                "events created in this window may have expired before the monitor could read them. The "
                "archive may be missing events from this window."
            )
        else:
            # The length from the gap's bounds, not its stored detail: rows written before durations were
            # worded for people say "0:00:47.345672".
            statement = (
                f"Polling gap ({where}): no successful poll for "
                f"{format_duration(gap['end'] - gap['start'])}. Events from this window were archived late, "
                "when polling resumed, and their alerts were delayed; none are missing unless a retention "
                "gap overlaps this window."
            )
        gaps.append(Gap(gap["source"], gap["kind"], gap["start"], gap["end"], statement))

    configured = {s.name: s for s in config.sources}
    names = sorted(set(configured) | {c.source for c in store.cursors()})
    notes: list[str] = []
    sources: list[SourceCoverage] = []
    for name in names:
        cursor = store.get_cursor(name)
        last = cursor.last_success_at if cursor else None
        first_row = store.conn.execute(
            "SELECT archived_at FROM events WHERE source = ? ORDER BY event_id LIMIT 1", (name,)
        ).fetchone()
        first_poll = datetime.fromisoformat(first_row[0]) if first_row else None
        source_config = configured.get(name)
        retention = source_config.plan_retention if source_config else None
        interval = source_config.poll_interval if source_config else timedelta(minutes=5)
        polled = True
        note = ""
        how = "polled"
        if last is None:
            polled, note = False, "never polled successfully"
        elif last < period.start:
            polled, note = False, f"no successful poll since {format_time(last, tz)}"
        elif first_poll is not None and first_poll >= period.end:
            if retention is not None and first_poll - retention <= period.start:
                # The backfill read the whole month while the plan still kept all of it: as complete as
                # polling it live (only its alerts came late).
                how = "backfilled"
                note = (
                    f"first polled on {format_time(first_poll, tz)}, after this month, while Xano still held "
                    f"every event of the month (plan retention {format_duration(retention)}): "
                    "backfilled complete"
                )
            else:
                polled = False
                note = (
                    f"first polled on {format_time(first_poll, tz)}, after this month: its events for this "
                    "month were backfilled then from what Xano still held"
                )
        else:
            for known in gaps:
                if (
                    known.source == name
                    and known.kind == "polling"
                    and known.start <= period.start
                    and known.end >= until
                ):
                    polled, note = False, "no successful poll in this month (see the polling gap)"
        if first_poll is not None and retention is not None and first_poll - retention > period.start:
            lost_before = min(first_poll - retention, until)
            notes.append(
                f"Source {name} was first polled on {format_time(first_poll, tz)} and its plan keeps events "
                f"for {format_duration(retention)}: events created before {format_time(lost_before, tz)} may "
                "have expired upstream before the first poll, so the archive may be missing some of them."
            )
        if cursor is not None and cursor.floor_time is not None and cursor.floor_time > period.start:
            notes.append(
                f"Source {name} is configured to backfill from {format_time(cursor.floor_time, tz)}: earlier "
                "events were deliberately not archived."
            )
        if last is not None and last < until and now - last > max(3 * interval, timedelta(seconds=30)):
            # An outage still going on when the report was made is not in the gaps table yet.
            gaps.append(
                Gap(
                    name,
                    "ongoing",
                    last,
                    now,
                    f"Ongoing outage (source {name}): no successful poll since {format_time(last, tz)} at "
                    "the time of this report. Events from then on are not archived yet; if the outage "
                    "outlasts Xano's retention, some may be lost.",
                )
            )
        sources.append(
            SourceCoverage(name, polled, last.astimezone(tz) if last else None, note, how if polled else "no")
        )

    if store.get_meta("chain_anchor_hash") is not None:
        row = store.conn.execute("SELECT created_at FROM events ORDER BY created_ms LIMIT 1").fetchone()
        oldest = row[0] if row else None
        if oldest is None or datetime.fromisoformat(oldest) > period.start:
            notes.append(
                "The archive has been pruned (state.retention_days): events older than "
                f"{format_time(datetime.fromisoformat(oldest), tz) if oldest else 'the prune point'} are no "
                "longer in it and are not counted here."
            )
    gaps.sort(key=lambda g: (g.start, g.source))
    figures.gaps_total = len(gaps)
    figures.gaps = gaps[:cap]
    figures.sources = sources
    figures.coverage_notes = notes


def fullest_recent_month(store: Store, tz: ZoneInfo, now: datetime) -> Period:
    """Of the previous and the current calendar month, the one holding more archived events.

    The demo's choice: its simulator covers the last ~35 days, so early in a month the previous month is
    the fuller picture and later on the current one (reported as "not over yet").
    """
    current = Period.containing(now, tz)
    previous = current.previous()

    def count(period: Period) -> int:
        return int(
            store.conn.execute(
                "SELECT count(*) FROM events WHERE created_ms >= ? AND created_ms < ?",
                (_ms(period.start), _ms(period.end)),
            ).fetchone()[0]
        )

    return previous if count(previous) >= count(current) else current

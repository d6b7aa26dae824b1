"""The monthly report's figures, computed in SQL over the archive.

A period is a calendar month in the configured time zone. Its edges are the local midnights of the
1st converted to UTC instants, so a Europe/Berlin March has 743 hours and an October 745; every query
selects ``created_ms`` in ``[start, end)`` through the ``created_ms`` index and lets SQLite do the
counting, so a month of a million events never sits in Python memory.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import itertools
import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import SecretStr

from monitor.alerts.model import ANCHOR_RULE, severity_rank
from monitor.config import Config
from monitor.engine.calendars import Calendar, build_calendar
from monitor.engine.errors import ErrorSink
from monitor.engine.loader import rule_files
from monitor.events import format_timestamp
from monitor.store import Store, VerifyResult
from monitor.store.lifecycle import STATUSES, alert_outcomes
from monitor.store.polls import poll_stats, recording_began
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

# Privileged-access changes (SOC 2 CC6.2/CC6.3): who may sign in, with which rights and tokens, and the
# secrets the workspace runs with.
PRIVILEGED_TYPES: tuple[str, ...] = (
    "Create User", "Update User", "Delete User", "Update RBAC Permissions", "Create Token", "Revoke Token",
    "Update Security Policy",
    "Create Environment Variable", "Update Environment Variable", "Delete Environment Variable",
)  # fmt: skip
# The change register (SOC 2 CC8.1): what goes live (live-branch switches, merges) and changes to schema,
# APIs, functions, tasks and add-ons. The audit log names each change's branch; which branch is live is
# known only from a "Set Live Branch" event, so every branch is listed with its label.
CHANGE_TYPES: tuple[str, ...] = (
    "Set Live Branch", "Merge Branch",
    "Create Table", "Update Table", "Delete Table", "Restore Table",
    "Add Field", "Update Field", "Delete Field",
    "Create API Group", "Update API Group", "Delete API Group",
    "Create Query", "Update Query", "Delete Query",
    "Create Function", "Update Function", "Delete Function", "Create Task", "Update Task", "Delete Task",
    "Install Add-on", "Update Add-on", "Remove Add-on",
)  # fmt: skip
# The bundled rule that flags a user's first administrative action (rules/suspicious-activity.yml).
FIRST_ADMIN_RULE = "xano.admin.first-action"

_CATEGORY_OF = {t.lower(): category for category, types in CATEGORY_TYPES.items() for t in types}
_CRITICAL = frozenset(t.lower() for t in CRITICAL_TYPES)
_PRIVILEGED = frozenset(t.lower() for t in PRIVILEGED_TYPES)
_CHANGES = frozenset(t.lower() for t in CHANGE_TYPES)

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
class PollCoverage:
    """A source's poll cycles started in the month (monitor/store/polls.py)."""

    source: str
    cycles: int
    ok: int
    failed: int
    failed_by_kind: dict[str, int]
    success_rate: float | None  # ok / cycles; None when no cycle is recorded for the month
    recorded_from: datetime | None  # when an upgraded archive began recording, if after the month started


@dataclass(frozen=True)
class Reconciliation:
    """Our count for a source's month against the ``itemsTotal`` Xano reports for the same range."""

    source: str
    status: str  # matches | differs | not reconciled
    ours: int  # events of the range in the archive
    xano: int | None  # itemsTotal, when asked and answered
    query: str  # the exact request: method, URL and body (no token)
    reason: str = ""  # why not reconciled, or what a difference may mean

    @property
    def difference(self) -> int | None:
        """Xano's count minus ours: positive when the archive holds fewer events than Xano reports."""
        return None if self.xano is None else self.xano - self.ours


@dataclass(frozen=True)
class DayCount:
    day: date
    count: int
    weekend: bool


@dataclass(frozen=True)
class ChainPoint:
    seq: int  # the chain row (events.seq or a prune record's seq); 0 = the genesis (empty archive)
    hash: str


@dataclass(frozen=True)
class Integrity:
    """The hash chain around the month: heads at its edges, the rows holding its events, the verify walk."""

    head_at_start: ChainPoint  # the newest link archived before the month began
    head_at_end: ChainPoint  # the newest link archived before the month ended
    head_at_report: ChainPoint  # when the report was made: the anchor written beside it
    first_row: int | None  # lowest seq holding an event of the month
    last_row: int | None  # highest seq holding an event of the month
    verify_ok: bool
    verify_rows: int
    verify_detail: str  # empty when ok; else the first bad row and why
    # The link the walk chained from: the month's opening head, or the row before its first event if
    # earlier (every row of the month and every later link is re-hashed); seq 0 is the genesis.
    verify_from: ChainPoint = ChainPoint(0, "0" * 64)
    verify_whole: bool = False  # the walk started at the beginning of the kept chain (nothing skipped)


@dataclass(frozen=True)
class IdContinuity:
    source: str
    first_id: int
    last_id: int
    events: int

    @property
    def unseen(self) -> int:
        """Ids between the first and last that the archive does not hold (Xano numbers events across the
        whole instance, so a workspace-scoped source skips the ids of other workspaces)."""
        return self.last_id - self.first_id + 1 - self.events


@dataclass(frozen=True)
class ChangeRow:
    time: datetime  # in the configured zone
    type: str
    user: str | None
    workspace: str | None
    branch: str | None
    message: str
    source: str
    event_id: int
    off_hours: bool


@dataclass(frozen=True)
class Delivery:
    channel: str
    status: str  # pending | sent | dead
    attempts: int
    sent_at: datetime | None
    error: str | None


@dataclass(frozen=True)
class AlertResponse:
    """One alert's detection, delivery and lifecycle: acknowledged/resolved times and disposition come from
    the alert history (None when no one acknowledged or resolved it; never guessed). ``status`` is the
    alert's state when the report was made; a silenced alert was sent to no channel."""

    alert_id: str
    rule_id: str
    severity: str
    title: str
    source: str
    event_time: datetime
    detected_at: datetime
    deliveries: list[Delivery]
    acknowledged_at: datetime | None = None
    resolved_at: datetime | None = None
    disposition: str | None = None
    status: str = "open"  # open | acknowledged | resolved | silenced
    silence_id: int | None = None
    silence_reason: str | None = None

    @property
    def mtta_seconds(self) -> float | None:
        return _seconds(self.detected_at, self.acknowledged_at)

    @property
    def mttr_seconds(self) -> float | None:
        return _seconds(self.detected_at, self.resolved_at)

    @property
    def delivered_at(self) -> datetime | None:
        sent = [d.sent_at for d in self.deliveries if d.sent_at is not None]
        return min(sent) if sent else None


@dataclass(frozen=True)
class DeliveryCount:
    channel: str
    status: str
    count: int


@dataclass(frozen=True)
class Control:
    framework: str  # SOC 2 | ISO 27001 | HIPAA
    control: str  # CC6.2, A.8.15, 164.312(b), ...
    title: str
    status: str  # evidence | review | exception
    summary: str
    section: str  # the report section holding the evidence


@dataclass(frozen=True)
class Cover:
    report_id: str
    monitor_version: str
    config_sha256: str  # of the effective config with secret values masked
    rules_sha256: str  # of the rule files in rules.paths (name and content, in load order)
    rule_files: int
    sources: list[dict[str, Any]]  # name, base_url, workspace_id (configured scope)
    workspaces: list[dict[str, Any]]  # source, workspace, events (seen in the month)


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
    polls: list[PollCoverage] = field(default_factory=list)  # per source
    reconciliation: list[Reconciliation] = field(default_factory=list)  # per source, filled by build_report
    days: list[DayCount] = field(default_factory=list)
    chain_head: str = ""  # the archive's hash-chain head when the report was made
    cap: int = DEFAULT_CAP
    cover: Cover | None = None
    controls: list[Control] = field(default_factory=list)
    id_continuity: list[IdContinuity] = field(default_factory=list)
    rejected: dict[str, int] = field(default_factory=dict)  # malformed entries refused, per source
    integrity: Integrity | None = None
    privileged: list[ChangeRow] = field(default_factory=list)  # capped
    privileged_total: int = 0
    first_admins: list[AlertRow] = field(default_factory=list)  # alerts of FIRST_ADMIN_RULE
    changes: list[ChangeRow] = field(default_factory=list)  # capped
    changes_total: int = 0
    changes_off_hours: int = 0  # of the listed changes
    responses: list[AlertResponse] = field(default_factory=list)  # capped like alerts
    deliveries: list[DeliveryCount] = field(default_factory=list)
    dead_letters: int = 0
    # The lifecycle over every alert of the month (not only the listed ones), status as at generated_at.
    status_counts: dict[str, int] = field(default_factory=dict)  # open | acknowledged | resolved | silenced
    dispositions: dict[str, int] = field(default_factory=dict)  # of the resolved alerts that gave one
    acknowledged_total: int = 0  # alerts ever acknowledged (resolved ones included)
    resolved_total: int = 0
    mtta_seconds: float | None = None  # mean detected -> first acknowledged, over acknowledged alerts
    mttr_seconds: float | None = None  # mean detected -> resolved, over resolved alerts
    silenced: list[AlertResponse] = field(default_factory=list)  # of the listed responses
    monitor_alerts: list[AlertCount] = field(default_factory=list)  # the monitor's own health (monitor.*)

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

    @property
    def still_open(self) -> int:
        """Alerts of the month not resolved (open or acknowledged) and not silenced, as at generated_at."""
        return self.status_counts.get("open", 0) + self.status_counts.get("acknowledged", 0)

    @property
    def silenced_total(self) -> int:
        return self.status_counts.get("silenced", 0)

    @property
    def response_text(self) -> str:
        """The lifecycle in one line (the control summary's CC7.3 / A.8.16 and the Response section)."""
        mtta = format_duration(self.mtta_seconds) if self.mtta_seconds is not None else "not measured"
        mttr = format_duration(self.mttr_seconds) if self.mttr_seconds is not None else "not measured"
        return (
            f"{self.acknowledged_total:,} acknowledged (MTTA {mtta}), {self.resolved_total:,} resolved "
            f"(MTTR {mttr}), {self.still_open:,} still open, {self.silenced_total:,} silenced"
        )

    @property
    def poll_totals(self) -> tuple[int, int]:
        """(ok, cycles) over every source."""
        return sum(p.ok for p in self.polls), sum(p.cycles for p in self.polls)

    @property
    def poll_success_rate(self) -> float | None:
        ok, cycles = self.poll_totals
        return ok / cycles if cycles else None

    @property
    def coverage_complete(self) -> bool:
        """No gap, no coverage note, every source covered: the archive holds every event Xano served."""
        return bool(self.sources) and not (
            self.gaps_total or self.coverage_notes or self.sources_without_poll
        )


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


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_DATE = _EPOCH.date()


def calendar_closed_intervals(calendar: Calendar, start: datetime, end: datetime) -> list[tuple[int, int]]:
    """``closed_intervals(calendar.contains, start, end)``, exactly, in a fraction of the time.

    The same minutes are sampled (``start`` and every whole minute after it), but a sample's local time is
    its UTC time plus the zone's offset, read once an hour (and for every minute of an hour in which it
    changes: zones change their offset at most once an hour), and the samples of one local day under one
    offset are consecutive minutes of the calendar's ``open_minutes`` of that day: runs are found by
    searching those flags, not by testing 43,200 minutes a month one by one.
    """
    step = timedelta(minutes=1)
    samples = 0 if end <= start else -(-(end - start) // step)
    if samples == 0:
        return []
    one_us = timedelta(microseconds=1)

    def offset_us(k: int) -> int:
        return ((start + k * step).astimezone(calendar.tz).utcoffset() or timedelta(0)) // one_us

    # (first sample, offset) wherever the offset changes.
    changes: list[tuple[int, int]] = [(0, offset_us(0))]
    for hour_start in range(0, samples, 60):
        hour_end = min(hour_start + 60, samples)
        if offset_us(hour_end - 1) != changes[-1][1]:
            for k in range(hour_start, hour_end):
                if (offset := offset_us(k)) != changes[-1][1]:
                    changes.append((k, offset))
    changes.append((samples, 0))
    start_us = (start - _EPOCH) // one_us
    day_us, minute_us = 86_400_000_000, 60_000_000
    runs: list[tuple[int, int]] = []
    run_start: int | None = None
    for (first, offset), (after, _next) in itertools.pairwise(changes):
        k = first
        while k < after:
            day_number, in_day = divmod(start_us + k * minute_us + offset, day_us)
            minute = in_day // minute_us
            length = min(1440 - minute, after - k)  # to the end of the local day or of this offset
            flags = calendar.open_minutes(_EPOCH_DATE + timedelta(days=day_number))[minute : minute + length]
            position = 0
            while position < length:
                if run_start is None:
                    found = flags.find(0, position)
                    if found < 0:
                        break
                    run_start, position = k + found, found
                else:
                    found = flags.find(1, position)
                    if found < 0:
                        break
                    runs.append((_ms(start + run_start * step), _ms(start + (k + found) * step)))
                    run_start, position = None, found
            k += length
    if run_start is not None:
        runs.append((_ms(start + run_start * step), _ms(end)))
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
    verify: bool = True,
) -> Figures:
    """All figures of ``period``. Call inside one read snapshot so they agree with the CSV.

    ``verify=False`` leaves the chain walk to the caller, who runs it elsewhere meanwhile (it reads the whole
    archive: half the report's time at a million events) and must then call ``apply_verify``."""
    if calendar is None:
        calendar, calendar_origin = business_calendar(config)
    figures = Figures(period=period, generated_at=now, cap=cap)
    figures.calendar = f"{describe_calendar(calendar)} ({calendar_origin or 'business_hours calendar'})"
    start_ms, end_ms = _ms(period.start), _ms(period.end)
    tz = period.tz

    # One pass over the month's index range: counts per (source, workspace, user, type). Those are few;
    # events are many.
    summary = store.month_summary(start_ms, end_ms)
    by_type: Counter[str] = Counter()
    by_user: dict[str | None, Counter[str]] = {}
    for _source, _workspace, email, event_type, count, *_ in summary:
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
    closed = calendar_closed_intervals(calendar, period.start, period.end) if figures.total else []
    for chunk_start in range(0, len(closed), _INTERVALS_PER_QUERY):
        for email, count in store.counts_by_user_within(
            closed[chunk_start : chunk_start + _INTERVALS_PER_QUERY]
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
            for created_at, event_type, email, workspace, _branch, msg, source, event_id in (
                store.first_events_of_types(
                    start_ms,
                    end_ms,
                    critical_types,
                    cap,
                    matching=figures.critical_total,
                    within=figures.total,
                )
            )
        ]

    _alert_figures(figures, store, period, cap)
    _coverage_figures(figures, store, config, period, now, cap)

    # Activity per local day: one index-only count per day (23, 24 or 25 hours each).
    figures.days = [
        DayCount(day, store.count_between(_ms(s), _ms(e)), day.weekday() >= 5) for day, s, e in period.days()
    ]
    figures.chain_head = store.head_hash()
    _evidence_figures(figures, store, config, period, summary, by_type, calendar, cap)
    if verify:
        apply_verify(figures, store.verify(after=walk_start(store, period)))
    return figures


def walk_start(store: Store, period: Period) -> int:
    """Where the report's chain walk starts: the month's opening head (the newest link archived before the
    month began, which the previous month's report printed as its closing head), or the row before the
    month's first event if that is earlier. Every row holding an event of the month, and every link after
    it, is then re-hashed and its columns re-derived; the links before it are earlier months' evidence,
    checked by their reports and by ``audit-monitor verify`` (the whole chain). Without this the report
    re-read the whole archive every month, so its time grew with the archive, not with the month."""
    opening = store.chain_head_before(period.start)[0]
    first_row = store.month_first_row(_ms(period.start), _ms(period.end))
    return opening if first_row is None else min(opening, first_row - 1)


def apply_verify(figures: Figures, verified: VerifyResult) -> None:
    """Record the chain walk's result in the integrity section, and the controls that depend on it."""
    assert figures.integrity is not None
    figures.integrity = replace(
        figures.integrity,
        verify_ok=verified.ok,
        verify_rows=verified.rows_checked,
        verify_detail="" if verified.ok else _verify_detail(verified),
        verify_from=ChainPoint(verified.start_seq, verified.start_hash),
        verify_whole=verified.whole,
    )
    figures.controls = _controls(figures)


def apply_reconciliation(figures: Figures, reconciliation: list[Reconciliation]) -> None:
    """Record the reconciliation with Xano's counts, and the controls that depend on it."""
    figures.reconciliation = reconciliation
    figures.controls = _controls(figures)


def monitor_version() -> str:
    try:
        return importlib.metadata.version("xano-audit-monitor")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        return "dev"


def config_digest(config: Config) -> str:
    """sha256 of the effective config. Secret values are masked first: a hash of a short password could be
    brute-forced from the report (and a secret whose variable is unset is never read)."""
    dumped = json.dumps(
        config.model_dump(mode="python", by_alias=True), sort_keys=True, ensure_ascii=False, default=_masked
    )
    return hashlib.sha256(dumped.encode("utf-8")).hexdigest()


def _masked(value: Any) -> str:
    # json.dumps calls this for what it cannot spell: secrets become a fixed mask, the rest (durations,
    # paths, addresses) their text.
    return "<secret>" if isinstance(value, SecretStr) else str(value)


def rules_digest(config: Config) -> tuple[str, int]:
    """sha256 over the rule files the monitor loads (each file's name and bytes), and how many there are."""
    digest = hashlib.sha256()
    files = rule_files(config.rules.paths, ErrorSink())
    for path in files:
        digest.update(path.name.encode("utf-8") + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest(), len(files)


def _matching(by_type: Counter[str], wanted: frozenset[str]) -> list[str]:
    # The archive's spellings of the wanted types (matched case-insensitively, as rules match).
    return sorted(t for t in by_type if t.lower() in wanted)


def _change_rows(
    store: Store, period: Period, types: list[str], calendar: Calendar, cap: int, within: int
) -> tuple[int, list[ChangeRow]]:
    total, rows = store.events_of_types(_ms(period.start), _ms(period.end), types, cap, within=within)
    out = []
    for created_at, event_type, email, workspace, branch, msg, source, event_id in rows:
        when = datetime.fromisoformat(created_at)
        out.append(
            ChangeRow(
                when.astimezone(period.tz), event_type, email, workspace, branch, msg, source, event_id,
                not calendar.contains(when),
            )
        )  # fmt: skip
    return total, out


def _evidence_figures(
    figures: Figures,
    store: Store,
    config: Config,
    period: Period,
    summary: list[tuple[Any, ...]],
    by_type: Counter[str],
    calendar: Calendar,
    cap: int,
) -> None:
    """The evidence-pack sections: cover, integrity, continuity, privileged access, changes, response.
    ``summary`` is ``Store.month_summary`` of the period."""
    workspaces: Counter[tuple[str, str | None]] = Counter()
    id_ranges: dict[str, list[int]] = {}  # source -> [lowest id, highest id, events]
    first_row: int | None = None
    last_row: int | None = None
    for source, workspace, _email, _type, count, low_id, high_id, low_seq, high_seq in summary:
        workspaces[source, workspace] += count
        ids = id_ranges.setdefault(source, [low_id, high_id, 0])
        ids[0], ids[1], ids[2] = min(ids[0], low_id), max(ids[1], high_id), ids[2] + count
        first_row = low_seq if first_row is None else min(first_row, low_seq)
        last_row = high_seq if last_row is None else max(last_row, high_seq)
    rules_sha, rule_count = rules_digest(config)
    head = store.head()
    report_id = hashlib.sha256(
        f"{period.key}\0{period.tz.key}\0{format_timestamp(figures.generated_at)}\0{head[1]}".encode()
    ).hexdigest()[:16]
    figures.cover = Cover(
        report_id=f"{period.key}-{report_id}",
        monitor_version=monitor_version(),
        config_sha256=config_digest(config),
        rules_sha256=rules_sha,
        rule_files=rule_count,
        sources=[
            {"name": s.name, "base_url": s.base_url, "workspace_id": s.workspace_id} for s in config.sources
        ],
        workspaces=[
            {"source": source, "workspace": name, "events": count}
            for (source, name), count in sorted(
                workspaces.items(), key=lambda item: (item[0][0], item[0][1] is not None, item[0][1] or "")
            )
        ],
    )
    figures.id_continuity = [IdContinuity(source, *id_ranges[source]) for source in sorted(id_ranges)]
    figures.rejected = store.rejected_counts(period.start, period.end)

    figures.integrity = Integrity(
        head_at_start=ChainPoint(*store.chain_head_before(period.start)),
        head_at_end=ChainPoint(*store.chain_head_before(period.end)),
        head_at_report=ChainPoint(*head),
        first_row=first_row,
        last_row=last_row,
        verify_ok=False,  # until apply_verify: never claimed without the walk
        verify_rows=0,
        verify_detail="not verified",
    )

    figures.privileged_total, figures.privileged = _change_rows(
        store, period, _matching(by_type, _PRIVILEGED), calendar, cap, figures.total
    )
    figures.changes_total, figures.changes = _change_rows(
        store, period, _matching(by_type, _CHANGES), calendar, cap, figures.total
    )
    figures.changes_off_hours = sum(1 for c in figures.changes if c.off_hours)
    figures.first_admins = [a for a in _all_alerts(store, period, cap) if a.rule_id == FIRST_ADMIN_RULE]

    outcomes = alert_outcomes(store, period.start, period.end, exclude_rule=ANCHOR_RULE)
    responses: dict[str, AlertResponse] = {}
    for (
        alert_id, rule_id, severity, title, source, event_time, recorded_at, channel, status, attempts,
        sent_at, error,
    ) in store.alert_deliveries(period.start, period.end, cap):  # fmt: skip
        response = responses.get(alert_id)
        if response is None:
            outcome = outcomes.get(alert_id)
            response = AlertResponse(
                alert_id, rule_id, severity, title, source,
                datetime.fromisoformat(event_time).astimezone(period.tz),
                datetime.fromisoformat(recorded_at).astimezone(period.tz), [],
                acknowledged_at=_local(outcome.acknowledged_at if outcome else None, period.tz),
                resolved_at=_local(outcome.resolved_at if outcome else None, period.tz),
                disposition=outcome.disposition if outcome else None,
                status=outcome.status if outcome else "open",
                silence_id=outcome.silence_id if outcome else None,
                silence_reason=outcome.silence_reason if outcome else None,
            )  # fmt: skip
            responses[alert_id] = response
        if channel is not None:
            response.deliveries.append(
                Delivery(
                    channel, status, int(attempts or 0),
                    datetime.fromisoformat(sent_at).astimezone(period.tz) if sent_at else None, error,
                )
            )  # fmt: skip
    figures.responses = list(responses.values())
    figures.deliveries = [DeliveryCount(*row) for row in store.delivery_counts(period.start, period.end)]
    figures.dead_letters = sum(d.count for d in figures.deliveries if d.status == "dead")
    figures.silenced = [r for r in figures.responses if r.status == "silenced"]
    figures.status_counts = dict.fromkeys(STATUSES, 0)
    dispositions: Counter[str] = Counter()
    to_ack: list[float] = []
    to_resolve: list[float] = []
    for outcome in outcomes.values():
        figures.status_counts[outcome.status] = figures.status_counts.get(outcome.status, 0) + 1
        if outcome.acknowledged_at is not None:
            to_ack.append((outcome.acknowledged_at - outcome.detected_at).total_seconds())
        if outcome.resolved_at is not None:
            to_resolve.append((outcome.resolved_at - outcome.detected_at).total_seconds())
            if outcome.disposition:
                dispositions[outcome.disposition] += 1
    figures.acknowledged_total, figures.resolved_total = len(to_ack), len(to_resolve)
    figures.mtta_seconds = sum(to_ack) / len(to_ack) if to_ack else None
    figures.mttr_seconds = sum(to_resolve) / len(to_resolve) if to_resolve else None
    figures.dispositions = dict(sorted(dispositions.items()))
    figures.monitor_alerts = [a for a in figures.alert_counts if a.rule_id.startswith("monitor.")]
    figures.controls = _controls(figures)


def _local(moment: datetime | None, tz: ZoneInfo) -> datetime | None:
    return moment.astimezone(tz) if moment is not None else None


def _seconds(start: datetime, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if end is not None else None


def _all_alerts(store: Store, period: Period, cap: int) -> list[AlertRow]:
    seen: dict[str, AlertRow] = {}
    for alert_id, rule_id, severity, title, source, event_time, *_ in store.alert_deliveries(
        period.start, period.end, cap
    ):
        seen.setdefault(
            alert_id,
            AlertRow(
                datetime.fromisoformat(event_time).astimezone(period.tz), severity, rule_id, title, source
            ),
        )
    return list(seen.values())


def _verify_detail(verified: VerifyResult) -> str:
    where = f"row {verified.bad_seq}" if verified.bad_seq is not None else "the chain"
    return f"{where}: {verified.reason or 'its hash does not match'}"


def _controls(f: Figures) -> list[Control]:
    """One line per control the report gives evidence for; status "exception" when the evidence shows a
    problem the reviewer must account for, "review" when there is activity to sign off, else "evidence"."""
    integrity_ok = f.integrity is not None and f.integrity.verify_ok
    differs = [r for r in f.reconciliation if r.status == "differs"]
    coverage = "evidence" if f.coverage_complete and integrity_ok and not differs else "exception"
    coverage_text = (
        "every source covered, no gaps, chain verified"
        if coverage == "evidence"
        else f"{f.gaps_total} gap(s), {len(f.coverage_notes)} coverage note(s), "
        f"{len(f.sources_without_poll)} source(s) not covered, "
        f"chain {'verified' if integrity_ok else 'FAILED'}"
        + (f", {len(differs)} source(s) differ from Xano's count" if differs else "")
    )
    coverage_text += f"; {_poll_rate_text(f)}; {_reconciled_text(f)}"
    access = "review" if f.privileged_total or f.first_admins else "evidence"
    changes = "review" if f.changes_total else "evidence"
    # A delivery given up is an exception; alerts still open are for the reviewer (the line counts them).
    response = "exception" if f.dead_letters else ("review" if f.alerts_total else "evidence")
    monitoring = f"{f.alerts_total} alert(s) from {len(f.alert_counts)} rule/severity pair(s)"
    delivered = (
        f"{f.dead_letters} dead letter(s)" if f.dead_letters else "every due alert delivered or pending"
    )
    delivered += f"; {f.response_text}"
    return [
        Control("SOC 2", "CC6.2", "Registration and authorisation of users", access,
                f"{f.privileged_total} privileged-access change(s)", "privileged-access"),
        Control("SOC 2", "CC6.3", "Role-based access changes", access,
                f"{len(f.first_admins)} first-time admin action(s)", "privileged-access"),
        Control("SOC 2", "CC7.2", "Monitoring for anomalies", coverage,
                f"{monitoring}; {coverage_text}", "detection"),
        Control("SOC 2", "CC7.3", "Evaluation of security events", response, delivered, "response"),
        Control("SOC 2", "CC8.1", "Change management", changes,
                f"{f.changes_total} change(s), {f.changes_off_hours} listed off-hours", "change-register"),
        Control("ISO 27001", "A.8.15", "Logging", coverage, coverage_text, "coverage"),
        Control("ISO 27001", "A.8.16", "Monitoring activities", response,
                f"{monitoring}; {delivered}", "detection"),
        Control("HIPAA", "164.312(b)", "Audit controls", coverage, coverage_text, "integrity"),
        Control("HIPAA", "164.308(a)(1)(ii)(D)", "Information system activity review", "review",
                "this report, reviewed and signed off below", "sign-off"),
    ]  # fmt: skip


def _poll_rate_text(f: Figures) -> str:
    ok, cycles = f.poll_totals
    if not cycles:
        return "poll success rate not recorded"
    return f"poll success {ok / cycles * 100:.1f}% ({ok:,} of {cycles:,} cycles)"


def _reconciled_text(f: Figures) -> str:
    if not f.reconciliation:
        return "not reconciled with Xano's counts"
    matched = sum(1 for r in f.reconciliation if r.status == "matches")
    return f"{matched} of {len(f.reconciliation)} source(s) reconciled with Xano's itemsTotal"


def _alert_figures(figures: Figures, store: Store, period: Period, cap: int) -> None:
    counts = [
        AlertCount(rule_id, severity, count, throttled)
        for rule_id, severity, count, throttled in store.alert_counts_between(period.start, period.end)
    ]
    counts.sort(key=lambda a: (-_rank(a.severity), -a.count, a.rule_id))
    figures.alert_counts = counts
    figures.alerts_total = sum(a.count for a in counts)
    figures.throttled_total = sum(a.throttled for a in counts)
    figures.alerts = [
        AlertRow(t.astimezone(period.tz), severity, rule_id, title, source)
        for t, severity, rule_id, title, source in store.alerts_between(period.start, period.end, cap)
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
        first_poll = store.first_archived_at(name)
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
        oldest = store.oldest_event_time()
        if oldest is None or oldest > period.start:
            notes.append(
                "The archive has been pruned (state.retention_days): events older than "
                f"{format_time(oldest, tz) if oldest else 'the prune point'} are no "
                "longer in it and are not counted here."
            )
    gaps.sort(key=lambda g: (g.start, g.source))
    figures.gaps_total = len(gaps)
    figures.gaps = gaps[:cap]
    figures.sources = sources
    figures.coverage_notes = notes
    figures.polls = _poll_coverage(store, names, period, now)


def _poll_coverage(store: Store, names: list[str], period: Period, now: datetime) -> list[PollCoverage]:
    """Poll cycles per source started in the month; a month before recording began says so."""
    stats = poll_stats(store, period.start, min(period.end, now))
    first = recording_began(store)
    recorded_from = first.astimezone(period.tz) if first is not None and first > period.start else None
    coverage = []
    for name in names:
        s = stats.get(name)
        coverage.append(
            PollCoverage(
                source=name,
                cycles=s.cycles if s else 0,
                ok=s.ok if s else 0,
                failed=s.failed if s else 0,
                failed_by_kind=dict(sorted(s.failed_by_kind.items())) if s else {},
                success_rate=s.success_rate if s else None,
                recorded_from=recorded_from,
            )
        )
    return coverage


def fullest_recent_month(store: Store, tz: ZoneInfo, now: datetime) -> Period:
    """Of the previous and the current calendar month, the one holding more archived events.

    The demo's choice: its simulator covers the last ~35 days, so early in a month the previous month is
    the fuller picture and later on the current one (reported as "not over yet").
    """
    current = Period.containing(now, tz)
    previous = current.previous()

    def count(period: Period) -> int:
        return store.count_between(_ms(period.start), _ms(period.end))

    return previous if count(previous) >= count(current) else current

"""Reconciling the archive with Xano: our count of a source's month against the ``itemsTotal`` Xano reports.

An auditor accepts a listing produced by the entity when it is reconciled to its source (AT-C 205.36). While
the whole month is still inside the plan's retention, the report asks each source's audit-log search for the
month's range (the poller's endpoint, a ``created_at`` filter, ``per_page`` 1) and sets Xano's
``itemsTotal`` beside the archive's count. Anything that prevents a sound comparison is said as
"not reconciled" with its reason, never as a match: the month is not over, it has left the plan's retention,
the archive was not brought up to date past the month's end, the token is not available, Xano cannot be
reached, the answer has no ``itemsTotal``, or the server did not apply the filter (the filter syntax is not
documented by Xano: the one entry served must lie inside the range, else its total counts something else).
Nothing here needs the token unless a query is really sent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Protocol

from monitor.config import Config, ConfigError, SourceConfig
from monitor.events import parse_timestamp
from monitor.logs import scrub
from monitor.report.figures import Figures, Reconciliation
from monitor.timeutil import format_duration, format_time
from monitor.xano import RangeCount, RetryPolicy, XanoClient, XanoError, describe_search, range_search_body

log = logging.getLogger("monitor.report")

NOT_RECONCILED = "not reconciled"
# A report waits about this long at most for one source's count: one request and two retries within a 5 s
# sleep budget, each request bounded by the timeout. A slow or unreachable Xano delays the report by seconds
# and is reported as "not reconciled"; it must not hold the report (the 30 s budget of a million events).
COUNT_ATTEMPTS = 3
COUNT_BUDGET_SECONDS = 5.0
COUNT_TIMEOUT_SECONDS = 15.0


class RangeCounter(Protocol):
    def count_range(self, since: datetime, until: datetime) -> RangeCount: ...


CounterFactory = Callable[[SourceConfig], AbstractContextManager[RangeCounter]]


def default_counter(source: SourceConfig) -> XanoClient:
    """A client for one count query; reading the token here raises ConfigError when it is not set."""
    return XanoClient(
        source.base_url,
        source.token.get_secret_value(),
        source_name=source.name,
        workspace_id=source.workspace_id,
        per_page=1,
        timeout=min(COUNT_TIMEOUT_SECONDS, source.timeout.total_seconds()),
        retry=RetryPolicy(max_attempts=COUNT_ATTEMPTS, budget=COUNT_BUDGET_SECONDS),
        verify=source.ca_file or True,
    )


def reconcile(
    figures: Figures, config: Config, *, counter: CounterFactory | None = default_counter
) -> list[Reconciliation]:
    """One line per configured source. ``counter=None``: asked not to contact Xano (said so per source)."""
    period, tz, now = figures.period, figures.tz, figures.generated_at
    ours = {c.source: c.events for c in figures.id_continuity}
    last_success = {s.name: s.last_success for s in figures.sources}
    results = []
    for source in config.sources:
        count = ours.get(source.name, 0)
        query = describe_search(
            source.base_url, source.workspace_id, range_search_body(period.start, period.end)
        )

        def skipped(reason: str, *, name: str = source.name, count: int = count, query: str = query) -> None:
            results.append(Reconciliation(name, NOT_RECONCILED, count, None, query, reason))

        retention = source.plan_retention
        last = last_success.get(source.name)
        if not figures.complete:
            skipped("the month is not over yet")
        elif retention is not None and now - retention > period.start:
            skipped(
                "the month is outside the plan's retention: Xano keeps events for "
                f"{format_duration(retention)}, so since {format_time(period.start + retention, tz)} it no "
                "longer holds the whole month"
            )
        elif last is None or last < period.end:
            skipped(
                "the archive was last brought up to date "
                f"{'never' if last is None else 'on ' + format_time(last, tz)}, before the month's end"
            )
        elif counter is None:
            skipped("Xano was not asked (reconciliation turned off for this run)")
        else:
            results.append(_ask(source, counter, period.start, period.end, count, query))
    return results


def _ask(
    source: SourceConfig,
    counter: CounterFactory,
    since: datetime,
    until: datetime,
    ours: int,
    query: str,
) -> Reconciliation:
    def skipped(reason: str) -> Reconciliation:
        return Reconciliation(source.name, NOT_RECONCILED, ours, None, query, reason)

    try:
        with counter(source) as client:
            answer = client.count_range(since, until)
    except ConfigError as exc:
        return skipped(f"the source's token is not available ({exc})")
    except XanoError as exc:
        return skipped(f"Xano could not be asked: {_scrubbed(str(exc), source)}")
    except ValueError as exc:  # e.g. a client refusing its settings
        return skipped(f"Xano could not be asked: {_scrubbed(str(exc), source)}")
    query = answer.query or query
    if answer.items_total is None:
        return Reconciliation(
            source.name, NOT_RECONCILED, ours, None, query, "Xano's answer holds no itemsTotal"
        )
    if answer.items_total > 0:
        created = _created_at(answer.newest)
        if created is None:
            return Reconciliation(
                source.name,
                NOT_RECONCILED,
                ours,
                None,
                query,
                f"Xano reports {answer.items_total} but served no readable entry to check that it applied "
                "the time-range filter",
            )
        if not since <= created < until:
            return Reconciliation(
                source.name,
                NOT_RECONCILED,
                ours,
                None,
                query,
                f"the server did not apply the time-range filter (it served an entry created "
                f"{created.isoformat()}, outside the range), so its itemsTotal ({answer.items_total}) counts "
                "something else",
            )
    if answer.items_total == ours:
        return Reconciliation(source.name, "matches", ours, answer.items_total, query)
    difference = answer.items_total - ours
    reason = (
        f"Xano reports {difference:,} event(s) more than the archive holds for this range"
        if difference > 0
        else f"the archive holds {-difference:,} event(s) more than Xano reports for this range"
    )
    return Reconciliation(source.name, "differs", ours, answer.items_total, query, reason)


def _created_at(entry: object) -> datetime | None:
    if not isinstance(entry, dict) or "created_at" not in entry:
        return None
    try:
        return parse_timestamp(entry["created_at"])
    except (ValueError, TypeError, OverflowError):
        return None


def _scrubbed(text: str, source: SourceConfig) -> str:
    try:
        return scrub(text, [source.token.get_secret_value()])
    except ConfigError:
        return text

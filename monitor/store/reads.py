"""Read queries for the monthly report, ``status`` and /metrics: named figures over the archive, so that
no module outside the store writes SQL. Times are compared as text where they are stored in the one
fixed-width UTC form (which sorts as time does), and as epoch milliseconds (``created_ms``, indexed)
where a range of event time is asked for."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from monitor.alerts.model import ANCHOR_RULE, TRIGGER
from monitor.events import format_timestamp
from monitor.store.chain import GENESIS_HASH
from monitor.store.connection import StoreCore


class ReadsMixin(StoreCore):
    # report reads (monitor/report/figures.py) -----------------------------------------------------------

    def chain_head_before(self, instant: datetime) -> tuple[int, str]:
        """The chain's newest link archived before ``instant``: (seq, hash); (0, genesis) if none.

        The chain follows archive order, so this is the head as it stood at that moment (a prune record
        counts from when it ran). Among events it is the one archived last before ``instant`` (ties: the
        highest seq), one seek of the (archived_at, seq) index; archive times follow the chain's order as
        long as the host's clock does not go back."""
        when = format_timestamp(instant)
        row = self.conn.execute(
            "SELECT seq, hash FROM (SELECT seq, hash FROM events WHERE archived_at < ? "
            "ORDER BY archived_at DESC, seq DESC LIMIT 1) AS e "
            "UNION ALL SELECT seq, hash FROM (SELECT seq, hash FROM prunes WHERE at < ? "
            "ORDER BY seq DESC LIMIT 1) AS p "
            "UNION ALL SELECT seq, hash FROM (SELECT seq, hash FROM alert_actions WHERE at < ? "
            "ORDER BY seq DESC LIMIT 1) AS a ORDER BY seq DESC LIMIT 1",
            (when, when, when),
        ).fetchone()
        return (int(row[0]), str(row[1])) if row else (0, GENESIS_HASH)

    def month_first_row(self, start_ms: int, end_ms: int) -> int | None:
        """The lowest chain row (seq) holding an event created in [start_ms, end_ms), None if none."""
        row = self.conn.execute(
            "SELECT min(seq) FROM events WHERE created_ms >= ? AND created_ms < ?", (start_ms, end_ms)
        ).fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def event_sources(self) -> list[str]:
        """Every source with archived events, by a loose scan of the (source, ...) index: one seek per
        source, whatever the archive's size."""
        return [
            str(r[0])
            for r in self.conn.execute(
                "WITH RECURSIVE s(x) AS (SELECT min(source) FROM events UNION ALL "
                "SELECT (SELECT min(source) FROM events WHERE source > s.x) FROM s WHERE s.x IS NOT NULL) "
                "SELECT x FROM s WHERE x IS NOT NULL"
            )
        ]

    def month_summary(self, start_ms: int, end_ms: int) -> list[tuple[Any, ...]]:
        """Events created in [start_ms, end_ms) grouped by (source, workspace name, user email, type):
        (source, workspace_name, user_email, type, events, lowest event id, highest event id, lowest seq,
        highest seq), in source order.

        The report's counts per user and type, its workspaces, event-id continuity and the chain rows
        holding the month all come from this one pass per source over the covering (source, created_ms,
        event_id, type, user_email, workspace_name) index: no row (with its raw entry) is read."""
        out: list[tuple[Any, ...]] = []
        for source in self.event_sources():
            out += [
                (source, *r)
                for r in self.conn.execute(
                    "SELECT workspace_name, user_email, type, count(*), min(event_id), max(event_id), "
                    "min(seq), max(seq) FROM events WHERE source = ? AND created_ms >= ? AND created_ms < ? "
                    "GROUP BY workspace_name, user_email, type",
                    (source, start_ms, end_ms),
                )
            ]
        return out

    def rejected_counts(self, since: datetime, until: datetime) -> dict[str, int]:
        """Entries refused as malformed per source, first seen in [since, until)."""
        return {
            str(source): int(count)
            for source, count in self.conn.execute(
                "SELECT source, count(*) FROM rejected WHERE seen_at >= ? AND seen_at < ? GROUP BY source",
                (format_timestamp(since), format_timestamp(until)),
            )
        }

    def events_of_types(
        self, start_ms: int, end_ms: int, types: Sequence[str], limit: int, *, within: int
    ) -> tuple[int, list[tuple[Any, ...]]]:
        """How many events of ``types`` (exact names) fall in [start_ms, end_ms), which holds ``within``
        events, and the first ``limit`` (``first_events_of_types``)."""
        if not types:
            return 0, []
        marks = ", ".join("?" for _ in types)
        total = int(
            self.conn.execute(
                f"SELECT count(*) FROM events WHERE created_ms >= ? AND created_ms < ? AND type IN ({marks})",  # noqa: S608
                (start_ms, end_ms, *types),
            ).fetchone()[0]
        )
        return total, self.first_events_of_types(
            start_ms, end_ms, types, limit, matching=total, within=within
        )

    def first_events_of_types(
        self, start_ms: int, end_ms: int, types: Sequence[str], limit: int, *, matching: int, within: int
    ) -> list[tuple[Any, ...]]:
        """The first ``limit`` events of ``types`` created in [start_ms, end_ms), in time order, as
        (created_at, type, user_email, workspace_name, branch_label, msg, source, event_id).

        ``matching`` of the range's ``within`` events are of these types (the caller has counted them). On
        SQLite, whose planner has no statistics to tell, few of them are read through the (type,
        created_ms) index and sorted; many, by walking the range in time order until ``limit`` are found,
        some limit * within / matching rows (a month's 10,000 first security-critical events among a
        million read so took a second; read by type, a twentieth of it)."""
        if not types:
            return []
        marks = ", ".join("?" for _ in types)
        by_type = matching * matching <= limit * within
        index = "events_type_time" if by_type else "idx_events_created_ms"
        return [
            tuple(r)
            for r in self.conn.execute(
                "SELECT created_at, type, user_email, workspace_name, branch_label, msg, source, event_id "  # noqa: S608
                f"FROM events {self.index_hint(index)} "
                f"WHERE created_ms >= ? AND created_ms < ? AND type IN ({marks}) "
                "ORDER BY created_ms, created_at, source, event_id LIMIT ?",
                (start_ms, end_ms, *types, limit),
            )
        ]

    def alert_deliveries(self, since: datetime, until: datetime, limit: int) -> list[tuple[Any, ...]]:
        """Alerts (not anchor notices) whose event time is in [since, until), first ``limit`` in time order,
        each with its trigger outbox rows (a resolve notice is not a delivery of the alert): (id, rule_id,
        severity, title, source, event_time, recorded_at, channel, status, attempts, sent_at, last_error);
        channel and the rest are None for an alert with no channel."""
        return [
            tuple(r)
            for r in self.conn.execute(
                "WITH picked AS (SELECT id, rule_id, severity, title, source, event_time, recorded_at "
                "FROM alerts WHERE event_time >= ? AND event_time < ? AND rule_id != ? "
                "ORDER BY event_time, rule_id, id LIMIT ?) "
                "SELECT p.id, p.rule_id, p.severity, p.title, p.source, p.event_time, p.recorded_at, "
                "o.channel, o.status, o.attempts, o.sent_at, o.last_error FROM picked p "
                "LEFT JOIN outbox o ON o.alert_id = p.id AND o.kind = ? "
                "ORDER BY p.event_time, p.rule_id, p.id, o.channel",
                (format_timestamp(since), format_timestamp(until), ANCHOR_RULE, limit, TRIGGER),
            )
        ]

    def delivery_counts(self, since: datetime, until: datetime) -> list[tuple[str, str, int]]:
        """(channel, status, count) of the trigger outbox rows of alerts with event time in [since, until)."""
        return [
            (str(r[0]), str(r[1]), int(r[2]))
            for r in self.conn.execute(
                "SELECT o.channel, o.status, count(*) FROM outbox o JOIN alerts a ON a.id = o.alert_id "
                "WHERE a.event_time >= ? AND a.event_time < ? AND a.rule_id != ? AND o.kind = ? "
                "GROUP BY o.channel, o.status ORDER BY o.channel, o.status",
                (format_timestamp(since), format_timestamp(until), ANCHOR_RULE, TRIGGER),
            )
        ]

    def count_between(self, start_ms: int, end_ms: int) -> int:
        """Events created in [start_ms, end_ms) (an index-only count)."""
        return int(
            self.conn.execute(
                "SELECT count(*) FROM events WHERE created_ms >= ? AND created_ms < ?", (start_ms, end_ms)
            ).fetchone()[0]
        )

    def nth_created_ms(self, start_ms: int, end_ms: int, offset: int) -> int | None:
        """The created_ms of the ``offset``-th event (from 0, in time order) created in [start_ms, end_ms)."""
        row = self.conn.execute(
            "SELECT created_ms FROM events WHERE created_ms >= ? AND created_ms < ? ORDER BY created_ms "
            "LIMIT 1 OFFSET ?",
            (start_ms, end_ms, offset),
        ).fetchone()
        return int(row[0]) if row else None

    def counts_by_user_within(self, intervals: Sequence[tuple[int, int]]) -> list[tuple[str | None, int]]:
        """(user email, events) created inside any of the [start_ms, end_ms) ``intervals`` (disjoint; a few
        dozen at most: they become one VALUES list joined against the covering (source, created_ms, ...)
        index, per source; no row is read). A user active in several sources appears once per source."""
        if not intervals:
            return []
        values = ", ".join("(?, ?)" for _ in intervals)
        params = [ms for interval in intervals for ms in interval]
        out: list[tuple[str | None, int]] = []
        for source in self.event_sources():
            out += [
                (email, int(count))
                for email, count in self.conn.execute(
                    f"WITH closed(s, e) AS (VALUES {values}) "  # noqa: S608 - placeholders only
                    # CROSS JOIN keeps SQLite's loop order (intervals outside, the index inside); the
                    # conditions go in WHERE, as PostgreSQL takes no ON after CROSS JOIN.
                    "SELECT user_email, count(*) FROM closed CROSS JOIN events "
                    "WHERE events.source = ? "
                    "AND events.created_ms >= closed.s AND events.created_ms < closed.e GROUP BY user_email",
                    [*params, source],
                )
            ]
        return out

    def alert_counts_between(self, since: datetime, until: datetime) -> list[tuple[str, str, int, int]]:
        """(rule id, severity, alerts, throttled) of alerts (not anchor notices) whose event time is in
        [since, until)."""
        return [
            (str(rule_id), str(severity), int(count), int(throttled or 0))
            for rule_id, severity, count, throttled in self.conn.execute(
                "SELECT rule_id, severity, count(*), sum(suppressed_count) FROM alerts "
                "WHERE event_time >= ? AND event_time < ? AND rule_id != ? GROUP BY rule_id, severity",
                (format_timestamp(since), format_timestamp(until), ANCHOR_RULE),
            )
        ]

    def alerts_between(
        self, since: datetime, until: datetime, limit: int
    ) -> list[tuple[datetime, str, str, str, str]]:
        """The first ``limit`` alerts (not anchor notices) whose event time is in [since, until), in time
        order, as (event time, severity, rule id, title, source)."""
        return [
            (datetime.fromisoformat(t), severity, rule_id, title, source)
            for t, severity, rule_id, title, source in self.conn.execute(
                "SELECT event_time, severity, rule_id, title, source FROM alerts "
                "WHERE event_time >= ? AND event_time < ? AND rule_id != ? "
                "ORDER BY event_time, rule_id, id LIMIT ?",
                (format_timestamp(since), format_timestamp(until), ANCHOR_RULE, limit),
            )
        ]

"""Alerts and their delivery outbox: one alert row per alert id, one outbox row per (alert, channel)
written in the same transaction; the outbox worker (monitor/alerts/outbox.py) moves rows through
pending -> sent | dead with the named updates below.

A row's ``kind`` is ``trigger`` (the alert) or ``resolve`` (the notice that it was resolved, enqueued by
``enqueue_resolve_notices`` in the lifecycle change's transaction). A resolve row is due only once its
channel's trigger row is sent, and dies with it when the trigger is given up, so no channel ever hears of a
resolution before the alert; requeueing the pair (dead letters are requeued per alert and channel) sends
them again in order."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from monitor.alerts.model import ANCHOR_RULE, RESOLVE, TRIGGER, Alert, Receipt, tells_resolve
from monitor.events import canonical_json, format_timestamp
from monitor.store import lifecycle
from monitor.store.chain import parse_time
from monitor.store.connection import StoreCore


@dataclass(frozen=True)
class DeadLetter:
    alert_id: str
    channel: str
    rule_id: str
    severity: str
    title: str
    attempts: int
    first_attempt_at: datetime | None
    failed_at: datetime
    last_error: str
    kind: str = TRIGGER


@dataclass(frozen=True)
class DueDelivery:
    """An outbox row due for sending; a resolve row carries what its channel answered to the trigger."""

    alert_id: str
    channel: str
    attempts: int
    first_attempt_at: datetime | None
    kind: str = TRIGGER
    trigger: Receipt | None = None


OutboxKey = tuple[str, str]  # (alert id, kind): one row of a channel


class AlertsMixin(StoreCore):
    # alerts -------------------------------------------------------------------------------------------

    def record_alert(self, alert: Alert, channels: Iterable[str], recorded_at: datetime) -> bool:
        """Inside a transaction: the alert and one outbox row per channel. False if already known."""
        inserted = self.conn.execute(
            """INSERT INTO alerts (id, rule_id, severity, title, text, source, event_time,
                   event_ids,
                   group_key, fields, context, suppressed_count, tags, recorded_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING""",
            (
                alert.id,
                alert.rule_id,
                alert.severity,
                alert.title,
                alert.text,
                alert.source,
                format_timestamp(alert.event_time),
                json.dumps(list(alert.event_ids)),
                alert.group_key,
                canonical_json(alert.fields),
                canonical_json(alert.context),
                alert.suppressed_count,
                json.dumps(list(alert.tags)),
                format_timestamp(recorded_at),
            ),
        ).rowcount
        if not inserted:
            return False
        silence = lifecycle.silence_for(self, alert, recorded_at)  # type: ignore[arg-type]
        if silence is not None:
            # Held back by a silence: recorded (and reported) as silenced, sent to no channel.
            lifecycle.mark_silenced(self, alert.id, silence.id)  # type: ignore[arg-type]
            return True
        self.conn.executemany(
            "INSERT INTO outbox (alert_id, channel, status, next_attempt_at) "
            "VALUES (?, ?, 'pending', ?) ON CONFLICT DO NOTHING",
            [(alert.id, channel, format_timestamp(recorded_at)) for channel in channels],
        )
        return True

    def enqueue_resolve_notices(self, alert_id: str, rule_id: str, now: datetime) -> list[str]:
        """Inside the transaction that resolves the alert: a pending resolve row for every channel that
        delivered the alert or still will (its trigger row is not dead) and is told of resolutions. Returns
        those channels. A silenced alert, or one routed nowhere, has no trigger row: nobody is told."""
        if rule_id == ANCHOR_RULE:
            return []  # a published chain head is no incident: nothing to resolve anywhere
        channels = [
            str(row[0])
            for row in self.conn.execute(
                "SELECT channel FROM outbox WHERE alert_id = ? AND kind = ? AND status != 'dead' "
                "ORDER BY channel",
                (alert_id, TRIGGER),
            )
            if tells_resolve(str(row[0]))
        ]
        self.conn.executemany(
            "INSERT INTO outbox (alert_id, channel, kind, status, next_attempt_at) "
            "VALUES (?, ?, ?, 'pending', ?) ON CONFLICT DO NOTHING",
            [(alert_id, channel, RESOLVE, format_timestamp(now)) for channel in channels],
        )
        return channels

    def load_alert(self, alert_id: str) -> Alert | None:
        row = self.conn.execute(
            "SELECT rule_id, severity, title, text, source, event_time, event_ids, group_key, fields, "
            "context, "
            "suppressed_count, tags FROM alerts WHERE id = ?",
            (alert_id,),
        ).fetchone()
        if row is None:
            return None
        return Alert(
            rule_id=row[0],
            severity=row[1],
            title=row[2],
            text=row[3],
            source=row[4],
            event_time=datetime.fromisoformat(row[5]),
            event_ids=tuple(json.loads(row[6])),
            group_key=row[7],
            fields=json.loads(row[8]),
            context=json.loads(row[9]),
            suppressed_count=row[10],
            tags=tuple(json.loads(row[11])),
        )

    def alert_count(self) -> int:
        """Alerts recorded, not counting chain-anchor notices: they sit in the alerts table only to travel
        through the outbox (monitor/anchors.py) and are not alerts."""
        return int(
            self.conn.execute("SELECT count(*) FROM alerts WHERE rule_id != ?", (ANCHOR_RULE,)).fetchone()[0]
        )

    def anchor_notice_count(self) -> int:
        """Chain-anchor notices queued for publishing (``anchors.to``)."""
        return int(
            self.conn.execute("SELECT count(*) FROM alerts WHERE rule_id = ?", (ANCHOR_RULE,)).fetchone()[0]
        )

    def outbox_counts(self) -> dict[str, int]:
        counts = {"pending": 0, "sent": 0, "dead": 0}
        for status, count in self.conn.execute("SELECT status, count(*) FROM outbox GROUP BY status"):
            counts[status] = count
        return counts

    def alert_exists(self, alert_id: str) -> bool:
        return self.conn.execute("SELECT 1 FROM alerts WHERE id = ?", (alert_id,)).fetchone() is not None

    def alert_counts(self) -> dict[tuple[str, str], int]:
        """Alerts recorded per (rule id, severity), chain-anchor notices left out (``alert_count``)."""
        return {
            (str(rule), str(severity)): int(count)
            for rule, severity, count in self.conn.execute(
                "SELECT rule_id, severity, count(*) FROM alerts WHERE rule_id != ? "
                "GROUP BY rule_id, severity",
                (ANCHOR_RULE,),
            )
        }

    # the outbox: the worker's steps -------------------------------------------------------------------

    def due_deliveries(self, now: datetime) -> list[DueDelivery]:
        """Pending rows due at ``now``; rows that failed before first, so a channel that is down is probed
        by its oldest failure. A resolve row only once its trigger row was sent (the order a reader needs:
        a PagerDuty resolve before its trigger would open an incident nobody closes)."""
        return [
            DueDelivery(
                alert_id,
                channel,
                attempts,
                parse_time(first),
                kind,
                Receipt(remote_id, reply_to) if kind == RESOLVE else None,
            )
            for alert_id, channel, kind, attempts, first, remote_id, reply_to in self.conn.execute(
                "SELECT o.alert_id, o.channel, o.kind, o.attempts, o.first_attempt_at, t.remote_id, "
                "t.reply_to FROM outbox o JOIN alerts a ON a.id = o.alert_id "
                "LEFT JOIN outbox t ON t.alert_id = o.alert_id AND t.channel = o.channel AND t.kind = ? "
                "WHERE o.status = 'pending' AND o.next_attempt_at <= ? AND (o.kind = ? OR t.status = 'sent') "
                "ORDER BY o.next_attempt_at, o.attempts DESC, a.event_time, o.alert_id, o.kind DESC",
                (TRIGGER, format_timestamp(now), TRIGGER),
            )
        ]

    def claim_deliveries(
        self, channel: str, keys: Sequence[OutboxKey], now: datetime, until: datetime
    ) -> list[OutboxKey]:
        """Inside a transaction: take the rows of ``channel`` with these keys that are still pending and
        due at ``now`` for one sender, by making them due at ``until``; returns the keys taken.

        Writers take turns (BEGIN IMMEDIATE; PostgreSQL's writer lock), so two processes never take the same
        row: the second finds it due later. ``mark_sent``/``mark_retry`` then settle it; a sender that dies
        in between leaves it to be taken again at ``until``."""
        stamp, later = format_timestamp(now), format_timestamp(until)
        taken = []
        for alert_id, kind in keys:
            updated = self.conn.execute(
                "UPDATE outbox SET next_attempt_at = ? WHERE alert_id = ? AND channel = ? AND kind = ? "
                "AND status = 'pending' AND next_attempt_at <= ?",
                (later, alert_id, channel, kind, stamp),
            ).rowcount
            if updated:
                taken.append((alert_id, kind))
        return taken

    def mark_sent(self, channel: str, keys: Sequence[OutboxKey], receipt: Receipt, now: datetime) -> None:
        """Inside a transaction: the channel accepted these rows (``receipt``: Slack ts and channel id,
        Message-ID, PagerDuty dedup key)."""
        stamp = format_timestamp(now)
        self.conn.executemany(
            "UPDATE outbox SET status = 'sent', attempts = attempts + 1, sent_at = ?, remote_id = ?, "
            "reply_to = ?, first_attempt_at = coalesce(first_attempt_at, ?), last_error = NULL "
            "WHERE alert_id = ? AND channel = ? AND kind = ? AND status = 'pending'",
            [
                (stamp, receipt.remote_id, receipt.reply_to, stamp, alert_id, channel, kind)
                for alert_id, kind in keys
            ],
        )

    def mark_retry(
        self, channel: str, keys: Sequence[OutboxKey], retry_at: datetime, error: str, now: datetime
    ) -> None:
        """Inside a transaction: a failed attempt; the rows are due again at ``retry_at``."""
        stamp = format_timestamp(now)
        self.conn.executemany(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, "
            "first_attempt_at = coalesce(first_attempt_at, ?), last_error = ? "
            "WHERE alert_id = ? AND channel = ? AND kind = ?",
            [(format_timestamp(retry_at), stamp, error, alert_id, channel, kind) for alert_id, kind in keys],
        )

    def mark_dead(self, channel: str, keys: Sequence[OutboxKey], error: str, now: datetime) -> None:
        """Inside a transaction: give the rows up (dead letters). A dead row's next_attempt_at records when
        it was given up. A trigger takes its pending resolve row with it: that notice would tell of an
        alert the channel never received (``requeue`` revives the two together)."""
        stamp = format_timestamp(now)
        self.conn.executemany(
            "UPDATE outbox SET status = 'dead', attempts = attempts + 1, last_error = ?, "
            "next_attempt_at = ?, first_attempt_at = coalesce(first_attempt_at, ?) "
            "WHERE alert_id = ? AND channel = ? AND kind = ?",
            [(error, stamp, stamp, alert_id, channel, kind) for alert_id, kind in keys],
        )
        self.conn.executemany(
            "UPDATE outbox SET status = 'dead', next_attempt_at = ?, last_error = ? "
            "WHERE alert_id = ? AND channel = ? AND kind = ? AND status = 'pending'",
            [
                (stamp, f"not sent: the alert itself was not delivered ({error})", alert_id, channel, RESOLVE)
                for alert_id, kind in keys
                if kind == TRIGGER
            ],
        )

    def resolve_waiting(self, channel: str, alert_ids: Sequence[str]) -> bool:
        """Whether a pending resolve notice of ``channel`` waits for one of these alerts (just sent)."""
        return any(
            self.conn.execute(
                "SELECT 1 FROM outbox WHERE alert_id = ? AND channel = ? AND kind = ? AND status = 'pending'",
                (alert_id, channel, RESOLVE),
            ).fetchone()
            for alert_id in alert_ids
        )

    def defer(self, rows: Iterable[tuple[str, str]], until: datetime) -> None:
        """Pending (alert id, channel) rows are not due before ``until`` (a later due time stays)."""
        with self.transaction():
            self.conn.executemany(
                "UPDATE outbox SET next_attempt_at = CASE WHEN next_attempt_at > ?1 THEN next_attempt_at "
                "ELSE ?1 END WHERE alert_id = ?2 AND channel = ?3 AND status = 'pending'",
                [(format_timestamp(until), alert_id, channel) for alert_id, channel in rows],
            )

    def alert_channels(self, alert_id: str) -> list[str]:
        """The channels the alert was routed to (has a trigger row for)."""
        return [
            str(row[0])
            for row in self.conn.execute(
                "SELECT channel FROM outbox WHERE alert_id = ? AND kind = ?", (alert_id, TRIGGER)
            )
        ]

    # dead letters -------------------------------------------------------------------------------------

    def dead_letter_count(self, channel: str) -> int:
        return int(
            self.conn.execute(
                "SELECT count(*) FROM outbox WHERE channel = ? AND status = 'dead'", (channel,)
            ).fetchone()[0]
        )

    def dead_letters(self, channel: str | None = None, limit: int | None = None) -> list[DeadLetter]:
        """Dead letters (of ``channel``), oldest first; with ``limit``, the newest ``limit`` of them, newest
        first."""
        sql = (
            "SELECT o.alert_id, o.channel, a.rule_id, a.severity, a.title, o.attempts, o.first_attempt_at, "
            "o.next_attempt_at, coalesce(o.last_error, ''), o.kind FROM outbox o "
            "JOIN alerts a ON a.id = o.alert_id "
            "WHERE o.status = 'dead'"
        )
        params: list[Any] = []
        if channel is not None:
            sql += " AND o.channel = ?"
            params.append(channel)
        if limit is None:
            sql += " ORDER BY o.next_attempt_at, o.alert_id, o.kind DESC"
        else:
            sql += " ORDER BY o.next_attempt_at DESC LIMIT ?"
            params.append(limit)
        return [
            DeadLetter(
                r[0], r[1], r[2], r[3], r[4], r[5], parse_time(r[6]), datetime.fromisoformat(r[7]), r[8], r[9]
            )
            for r in self.conn.execute(sql, params)
        ]

    def last_dead_letter_at(self) -> dict[str, datetime]:
        """Per channel, when its newest dead letter was given up."""
        return {
            str(channel): datetime.fromisoformat(at)
            for channel, at in self.conn.execute(
                "SELECT channel, max(next_attempt_at) FROM outbox WHERE status = 'dead' GROUP BY channel"
            )
            if at
        }

    def requeue(self, rows: Iterable[tuple[str, str]], now: datetime) -> None:
        """Dead (alert id, channel) rows become pending again, due ``now``, with a fresh retry budget: the
        trigger and the resolve notice together (the notice then waits for the trigger again)."""
        with self.transaction():
            self.conn.executemany(
                "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = ?, "
                "first_attempt_at = NULL WHERE alert_id = ? AND channel = ? AND status = 'dead'",
                [(format_timestamp(now), alert_id, channel) for alert_id, channel in rows],
            )

    def outbox_depth(self) -> dict[tuple[str, str], int]:
        """Outbox rows per (channel, status)."""
        return {
            (str(channel), str(status)): int(count)
            for channel, status, count in self.conn.execute(
                "SELECT channel, status, count(*) FROM outbox GROUP BY channel, status"
            )
        }

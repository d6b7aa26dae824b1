"""The outbox worker: sends due (alert, channel) rows, retries transient failures, dead-letters the rest.

A row is written (pending) in the poll transaction that recorded the alert; the worker marks it
sent only after the channel accepted it, so a crash between the two re-sends at most that one
message (at-least-once), and never loses one.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from monitor.alerts.model import Alert
from monitor.events import format_timestamp
from monitor.store import Store

log = logging.getLogger("monitor.outbox")

FIRST_RETRY = timedelta(seconds=5)
MAX_RETRY = timedelta(minutes=10)
GIVE_UP_AFTER = timedelta(hours=24)


class DeliveryError(Exception):
    """A channel could not deliver. ``permanent`` errors go straight to dead letters."""

    def __init__(self, message: str, *, permanent: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after


class Channel(Protocol):
    name: str

    def send(self, alert: Alert) -> str | None:
        """Deliver one alert; return the remote id (Slack ts, Message-ID) or None. Raise DeliveryError."""
        ...


@dataclass
class DeliveryReport:
    sent: int = 0
    retried: int = 0
    dead: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.retried > 0 or self.dead > 0


class OutboxWorker:
    def __init__(
        self,
        store: Store,
        channels: dict[str, Channel],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.channels = channels
        self.clock = clock
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not security

    def deliver_due(self) -> DeliveryReport:
        report = DeliveryReport()
        now = self.clock()
        rows = self.store.conn.execute(
            "SELECT alert_id, channel, attempts, first_attempt_at FROM outbox "
            "WHERE status = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at, alert_id",
            (format_timestamp(now),),
        ).fetchall()
        for alert_id, channel_name, attempts, first_attempt_at in rows:
            channel = self.channels.get(channel_name)
            alert = self.store.load_alert(alert_id)
            if alert is None:
                continue
            if channel is None:
                self._dead(alert_id, channel_name, now, f"channel {channel_name} is not configured any more")
                report.dead += 1
                continue
            try:
                remote_id = channel.send(alert)
            except DeliveryError as exc:
                first = datetime.fromisoformat(first_attempt_at) if first_attempt_at else now
                if exc.permanent or now - first >= GIVE_UP_AFTER:
                    self._dead(alert_id, channel_name, now, str(exc), first)
                    report.dead += 1
                else:
                    self._retry(alert_id, channel_name, attempts + 1, now, first, str(exc), exc.retry_after)
                    report.retried += 1
                report.errors.append(f"{channel_name}: {exc}")
                log.warning(
                    "delivery failed",
                    extra={"channel": channel_name, "alert_id": alert_id, "permanent": exc.permanent, "error": str(exc)},
                )
                continue
            with self.store.transaction():
                self.store.conn.execute(
                    "UPDATE outbox SET status = 'sent', attempts = attempts + 1, sent_at = ?, remote_id = ?, "
                    "first_attempt_at = coalesce(first_attempt_at, ?), last_error = NULL "
                    "WHERE alert_id = ? AND channel = ?",
                    (format_timestamp(now), remote_id, format_timestamp(now), alert_id, channel_name),
                )
            report.sent += 1
        return report

    def _retry(
        self,
        alert_id: str,
        channel: str,
        attempts: int,
        now: datetime,
        first: datetime,
        error: str,
        retry_after: float | None,
    ) -> None:
        backoff = min(MAX_RETRY, FIRST_RETRY * 2 ** (attempts - 1))
        delay = backoff * self.rng.uniform(0.8, 1.2)
        if retry_after is not None:
            delay = max(delay, timedelta(seconds=min(retry_after, MAX_RETRY.total_seconds())))
        with self.store.transaction():
            self.store.conn.execute(
                "UPDATE outbox SET attempts = ?, next_attempt_at = ?, first_attempt_at = ?, last_error = ? "
                "WHERE alert_id = ? AND channel = ?",
                (attempts, format_timestamp(now + delay), format_timestamp(first), error, alert_id, channel),
            )

    def _dead(self, alert_id: str, channel: str, now: datetime, error: str, first: datetime | None = None) -> None:
        with self.store.transaction():
            self.store.conn.execute(
                "UPDATE outbox SET status = 'dead', attempts = attempts + 1, last_error = ?, next_attempt_at = ?, "
                "first_attempt_at = coalesce(first_attempt_at, ?) WHERE alert_id = ? AND channel = ?",
                (error, format_timestamp(now), format_timestamp(first or now), alert_id, channel),
            )

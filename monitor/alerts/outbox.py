"""The outbox worker: sends due (alert, channel) rows, retries transient failures, dead-letters the rest.

A row is written (pending) in the poll transaction that recorded the alert; the worker marks it
sent only after the channel accepted it, so a crash between the two re-sends at most that one
message (at-least-once), and never loses one.

Per ``deliver_due`` call and channel:
- more than ``digest_after`` rows due for one destination (a Slack route, a recipient list) go as one
  digest (channels that offer ``send_digest``; the console prints every alert), and every row is marked
  sent with the digest's id;
- a transient failure backs the row off (5 s doubling, jitter, capped at 10 min, at least Retry-After)
  and defers the channel's other due rows to the same moment, so a channel that is down is probed once
  per backoff step instead of once per row (an SMTP timeout per row would stall the worker for hours);
- a permanent failure, or 24 h of failures, moves the row to dead letters and, once per episode, raises
  ``monitor.delivery_failing`` through the other channels; the channel's next success says it recovered.

Resolve notices (rows of kind ``resolve``, see monitor/store/alerts.py) travel the same way, one message
each (never in a digest), through the channel's ``send_resolved`` with what the channel answered to the
alert itself (the Slack thread, the Message-ID to reply to). The store hands one out only after its trigger
was sent; a pass that sends triggers therefore asks for another pass, which sends the notices that became
due.

On PostgreSQL several processes share one outbox (replicas; the leader elected among them sends, but a
fenced leader's last moments may overlap its successor's first): each batch is *claimed* in a write
transaction just before its send (its rows are made due ``CLAIM_FOR`` later, only if they are still pending
and due), so a row another process claimed first is not sent twice. A process killed during a send leaves its
claim to run out: the row is sent again after ``CLAIM_FOR``, with the same alert id (the receiver's
idempotency key). On SQLite the archive's writer lock already makes this process the only sender, so rows are
not claimed and a restart after a crash sends the interrupted row at once. Before every send ``may_send`` is
asked (the daemon: "am I still the leader?"): a fenced leader stops at once, mid-pass.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Protocol

from monitor import selfmon
from monitor.alerts.model import RESOLVE, TRIGGER, Alert, Receipt, Resolution
from monitor.alerts.render import one_line
from monitor.events import format_timestamp
from monitor.store import DeadLetter, Store, lifecycle
from monitor.timeutil import format_time

log = logging.getLogger("monitor.outbox")

FIRST_RETRY = timedelta(seconds=5)
MAX_RETRY = timedelta(minutes=10)
GIVE_UP_AFTER = timedelta(hours=24)
DEFAULT_DIGEST_AFTER = 10
# A pass may record monitor.delivery_failing (or its recovery), or send the trigger a resolve notice waits
# for; the next pass sends those.
MAX_PASSES = 4
# How long a claimed row stays out of every other sender's reach: longer than a send takes (a channel's
# timeout, 30 s at most by default) plus a leader's lease, so a live sender's claim never runs out under it.
CLAIM_FOR = timedelta(seconds=45)


class DeliveryError(Exception):
    """A channel could not deliver. ``permanent`` errors go straight to dead letters.

    The message is shown in logs, ``status`` and dead letters: it must never carry a secret.
    """

    def __init__(self, message: str, *, permanent: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after
        self.rate_limited = False  # a 429: the receiver asks to slow down, not to wait for a repair


class Channel(Protocol):
    """A way to deliver alerts. An HTTP channel never follows a redirect: a 3xx is a failed delivery
    (permanent), since following it would re-send credentials to another host and count an answer from there
    as delivered (see ``monitor.alerts.slack``)."""

    name: str

    def send(self, alert: Alert) -> str | Receipt | None:
        """Deliver one alert; return the remote id (Slack ts, Message-ID), a Receipt when a reply needs more
        than the id (Slack's channel id), or None. Raise DeliveryError."""
        ...


class ResolveChannel(Channel, Protocol):
    """A channel that is told when an alert is resolved (``monitor.alerts.model.tells_resolve``)."""

    def send_resolved(self, alert: Alert, resolution: Resolution, trigger: Receipt) -> str | None:
        """Say that ``alert`` was resolved; ``trigger`` is what the channel answered to the alert itself.
        Return the notice's remote id or None. Raise DeliveryError."""
        ...


class DigestChannel(Channel, Protocol):
    """A channel that can fold a burst into one message (Slack, email)."""

    def destination(self, alert: Alert) -> str:
        """Where this alert would go (a Slack channel, a recipient list): digests never mix destinations."""
        ...

    def send_digest(self, alerts: Sequence[Alert]) -> str | None: ...


@dataclass
class DeliveryReport:
    sent: int = 0
    retried: int = 0
    dead: int = 0
    deferred: int = 0  # due rows not attempted because their channel just failed transiently
    digests: int = 0
    errors: list[str] = field(default_factory=list)
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (channel, outcome) -> rows

    @property
    def failed(self) -> bool:
        return self.retried > 0 or self.dead > 0


@dataclass
class _Due:
    alert_id: str
    channel: str
    attempts: int
    first_attempt_at: datetime | None
    alert: Alert
    kind: str = TRIGGER
    trigger: Receipt | None = None  # resolve rows: what the channel answered to the alert
    resolution: Resolution | None = None  # resolve rows: who resolved it, when, why

    @property
    def key(self) -> tuple[str, str]:
        return (self.alert_id, self.kind)


@dataclass
class _Batch:
    items: list[_Due]  # all of one kind
    digest: bool

    @property
    def kind(self) -> str:
        return self.items[0].kind


class OutboxWorker:
    def __init__(
        self,
        store: Store,
        channels: dict[str, Channel],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
        digest_after: int | None = DEFAULT_DIGEST_AFTER,
        tz: tzinfo = UTC,
    ) -> None:
        self.store = store
        self.channels = channels
        self.clock = clock
        self.tz = tz  # the configured zone, for the times in monitor.delivery_failing's notices
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self.digest_after = digest_after
        # Asked before every send; the daemon sets it to "still the leader?" (a fenced leader stops at once).
        self.may_send: Callable[[], bool] = lambda: True
        self.claims = store.is_postgresql  # several senders can share the outbox only there

    def deliver_due(self) -> DeliveryReport:
        report = DeliveryReport()
        for _ in range(MAX_PASSES):
            if not self._pass(report):
                break
        return report

    # one pass --------------------------------------------------------------------------------------------

    def _pass(self, report: DeliveryReport) -> bool:
        """Send what is due now. True when it recorded new self-monitoring alerts (send them too)."""
        now = self.clock()
        by_channel: dict[str, list[_Due]] = {}
        for row in self.store.due_deliveries(now):
            alert = self.store.load_alert(row.alert_id)
            if alert is None:
                continue
            resolution = lifecycle.resolution_of(self.store, row.alert_id) if row.kind == RESOLVE else None
            by_channel.setdefault(row.channel, []).append(
                _Due(
                    row.alert_id,
                    row.channel,
                    row.attempts,
                    row.first_attempt_at,
                    alert,
                    row.kind,
                    row.trigger,
                    resolution,
                )
            )
        more = False
        for channel_name, due in by_channel.items():
            channel = self.channels.get(channel_name)
            if channel is None:
                # Removed from the config: keep the rows visible as dead letters (requeue after re-adding it).
                error = DeliveryError(f"channel {channel_name} is not configured any more", permanent=True)
                for kind in (TRIGGER, RESOLVE):
                    rows = [item for item in due if item.kind == kind]
                    if rows:
                        self._failed(channel_name, _Batch(rows, False), error, now, report, alarm=False)
                continue
            more |= self._deliver_channel(channel, channel_name, due, now, report)
        return more

    def _deliver_channel(
        self, channel: Channel, name: str, due: list[_Due], now: datetime, report: DeliveryReport
    ) -> bool:
        """Send the channel's due rows. True when another pass has work: a self-monitoring alert was
        recorded, or a trigger was sent (its resolve notice may be waiting)."""
        recorded = False
        batches = self._batches(channel, due)
        for index, batch in enumerate(batches):
            if not self.may_send():
                log.warning("delivery stopped: this process no longer leads", extra={"channel": name})
                return recorded
            claimed = self._claim(name, batch, now)
            if claimed is None:
                continue  # another process claimed (or sent) these rows first
            batch = claimed
            try:
                remote_id = self._send(channel, batch)
            except DeliveryError as exc:
                alarm, retry_at = self._failed(name, batch, exc, now, report)
                recorded |= alarm
                if not exc.permanent and retry_at is not None:
                    rest = [item for later in batches[index + 1 :] for item in later.items]
                    self._defer(rest, retry_at)
                    report.deferred += len(rest)
                    report.outcomes[(name, "deferred")] += len(rest)
                    break
                continue
            recorded |= self._sent(name, batch, remote_id, now, report)
            if batch.kind == TRIGGER:
                recorded |= self.store.resolve_waiting(name, [i.alert_id for i in batch.items])
        return recorded

    def _batches(self, channel: Channel, due: list[_Due]) -> list[_Batch]:
        send_digest = getattr(channel, "send_digest", None)
        destination = getattr(channel, "destination", None)
        digest_after = self.digest_after
        if send_digest is None or destination is None or digest_after is None:
            return [_Batch([item], False) for item in due]
        triggers = [item for item in due if item.kind == TRIGGER]
        # The threshold counts per destination (a Slack route, a recipient list): a burst for one channel must
        # not fold the few alerts due for a severity route into a digest, nor move one out of its route.
        # Resolve notices are never folded: each answers one alert (a thread reply, a PagerDuty resolve).
        groups: dict[str, list[_Due]] = {}
        for item in triggers:
            groups.setdefault(destination(item.alert), []).append(item)
        # In due order (the oldest failure first probes a channel that is down); a digest takes the place
        # of its first row.
        batches: list[_Batch] = []
        digested: set[str] = set()
        for item in due:
            if item.kind != TRIGGER:
                batches.append(_Batch([item], False))
                continue
            key = destination(item.alert)
            if len(groups[key]) <= digest_after:
                batches.append(_Batch([item], False))
            elif key not in digested:
                digested.add(key)
                batches.append(_Batch(groups[key], True))
        return batches

    def _claim(self, name: str, batch: _Batch, now: datetime) -> _Batch | None:
        """Claim the batch's rows for this process (those still pending and due); None when none is left."""
        if not self.claims:
            return batch
        with self.store.transaction():
            taken = set(self.store.claim_deliveries(name, [i.key for i in batch.items], now, now + CLAIM_FOR))
        items = [item for item in batch.items if item.key in taken]
        if not items:
            return None
        return _Batch(items, batch.digest and len(items) > 1)

    @staticmethod
    def _send(channel: Channel, batch: _Batch) -> str | Receipt | None:
        try:
            if batch.kind == RESOLVE:
                return OutboxWorker._send_resolved(channel, batch.items[0])
            if batch.digest:
                send_digest = getattr(channel, "send_digest")  # noqa: B009 - only DigestChannels get here
                return send_digest([item.alert for item in batch.items])  # type: ignore[no-any-return]
            return channel.send(batch.items[0].alert)
        except DeliveryError:
            raise
        except Exception as exc:
            # A bug in a channel (a template error, say) must not stop the other channels or lose the row.
            log.exception("channel crashed", extra={"channel": channel.name})
            raise DeliveryError(
                f"internal error in channel {channel.name}: {type(exc).__name__}", permanent=False
            ) from exc

    @staticmethod
    def _send_resolved(channel: Channel, item: _Due) -> str | None:
        send_resolved = getattr(channel, "send_resolved", None)  # a ResolveChannel's
        if send_resolved is None:  # never, while tells_resolve and the channel classes agree (tested)
            raise DeliveryError(f"channel {channel.name} is not told of resolutions", permanent=True)
        if item.resolution is None:  # the history is part of the chain: a missing record is damage
            raise DeliveryError(f"alert {item.alert_id} has no resolution in its history", permanent=True)
        trigger = item.trigger or Receipt(None)
        return send_resolved(item.alert, item.resolution, trigger)  # type: ignore[no-any-return]

    # outcomes --------------------------------------------------------------------------------------------

    def _sent(
        self, name: str, batch: _Batch, remote_id: str | Receipt | None, now: datetime, report: DeliveryReport
    ) -> bool:
        receipt = remote_id if isinstance(remote_id, Receipt) else Receipt(remote_id)
        with self.store.transaction():
            self.store.mark_sent(name, [item.key for item in batch.items], receipt, now)
            recovered = self._end_failing_episode(name, now)
        count = len(batch.items)
        report.sent += count
        report.outcomes[(name, "sent")] += count
        if batch.digest:
            report.digests += 1
            log.info("digest sent", extra={"channel": name, "alerts": count, "remote_id": receipt.remote_id})
        elif batch.kind == RESOLVE:
            log.info("resolve notice sent", extra={"channel": name, "alert_id": batch.items[0].alert_id})
        return recovered

    def _failed(
        self,
        name: str,
        batch: _Batch,
        exc: DeliveryError,
        now: datetime,
        report: DeliveryReport,
        *,
        alarm: bool = True,
    ) -> tuple[bool, datetime | None]:
        """Back off or dead-letter the batch's rows. Returns (alert recorded?, when the retry is due)."""
        error = str(exc)
        dead = [i for i in batch.items if exc.permanent or now - (i.first_attempt_at or now) >= GIVE_UP_AFTER]
        dead_keys = {i.key for i in dead}
        retry = [i for i in batch.items if i.key not in dead_keys]
        retry_at: datetime | None = None
        if retry:
            retry_at = now + self._delay(max(i.attempts for i in retry) + 1, exc.retry_after)
        recorded = False
        with self.store.transaction():
            if retry_at is not None:
                self.store.mark_retry(name, [i.key for i in retry], retry_at, error, now)
            self.store.mark_dead(name, [i.key for i in dead], error, now)
            if dead and alarm:
                recorded = self._start_failing_episode(name, error, now)
        report.retried += len(retry)
        report.dead += len(dead)
        report.outcomes[(name, "retried")] += len(retry)
        report.outcomes[(name, "dead")] += len(dead)
        report.errors.append(f"{name}: {error}")
        log.warning(
            "delivery failed",
            extra={
                "channel": name,
                "alerts": len(batch.items),
                "alert_id": batch.items[0].alert_id,
                "kind": batch.kind,
                "permanent": exc.permanent,
                "dead": len(dead),
                "retry_at": format_timestamp(retry_at) if retry_at else None,
                "error": error,
            },
        )
        return recorded, retry_at

    def _delay(self, attempts: int, retry_after: float | None) -> timedelta:
        backoff = FIRST_RETRY * 2 ** min(attempts - 1, 20)
        delay = min(MAX_RETRY, backoff * self.rng.uniform(0.8, 1.2))
        if retry_after is not None:
            delay = max(delay, timedelta(seconds=min(retry_after, MAX_RETRY.total_seconds())))
        return delay

    def _defer(self, items: list[_Due], until: datetime) -> None:
        if not items:
            return
        self.store.defer([(i.alert_id, i.channel) for i in items], until)

    # monitor.delivery_failing ----------------------------------------------------------------------------

    def _start_failing_episode(self, name: str, error: str, now: datetime) -> bool:
        """Inside a transaction: say once, through the other channels, that ``name`` dead-letters."""
        if self.store.state_get(selfmon.DELIVERY_FAILING, name) is not None:
            return False  # this episode was announced already
        others = [c for c in self.channels if c != name]
        alert = selfmon.delivery_failing(name, error, now)
        # Not filtered by min_severity: when a channel is broken, every remaining one should carry the news.
        self.store.record_alert(alert, others, now)
        self.store.state_put(
            selfmon.DELIVERY_FAILING, name, {"since": format_timestamp(now), "alert_id": alert.id}
        )
        log.error("delivery failing", extra={"channel": name, "notified": others, "error": error})
        return bool(others)

    def _end_failing_episode(self, name: str, now: datetime) -> bool:
        """Inside a transaction: the channel accepted a message; close an open failing episode."""
        state = self.store.state_get(selfmon.DELIVERY_FAILING, name)
        if state is None:
            return False
        dead = self.store.dead_letter_count(name)
        since = datetime.fromisoformat(state["since"])
        alert = selfmon.delivery_recovered(name, since, now, int(dead), self.tz)
        recorded = selfmon.record_recovery(self.store, state["alert_id"], alert, now)
        self.store.state_put(selfmon.DELIVERY_FAILING, name, None)
        log.info("delivery recovered", extra={"channel": name, "dead_letters": dead})
        return recorded


# --- dead letters ---------------------------------------------------------------------------------------


def list_dead_letters(store: Store, channel: str | None = None) -> list[DeadLetter]:
    return store.dead_letters(channel)


class AmbiguousAlertId(ValueError):
    """An id prefix given to requeue matches dead letters of more than one alert."""


class UnknownAlertId(ValueError):
    """An id given to requeue matches no dead letter (of the chosen channel)."""


def requeue_dead_letters(
    store: Store, now: datetime, *, alert_ids: Sequence[str] = (), channel: str | None = None
) -> int:
    """Make dead letters pending again, due now, with a fresh 24 h budget. Returns the number requeued.

    ``alert_ids`` may be unique prefixes (as ``dead-letters list`` shows them); with none given, every
    dead letter (of ``channel``, when set) is requeued.
    """
    letters = list_dead_letters(store, channel)
    if alert_ids:
        chosen: list[DeadLetter] = []
        for wanted in alert_ids:
            matches = {d.alert_id for d in letters if d.alert_id.startswith(wanted)}
            if not matches:
                raise UnknownAlertId(f"{wanted} is not a dead letter" + (f" of {channel}" if channel else ""))
            if len(matches) > 1:
                raise AmbiguousAlertId(f"{wanted} matches {len(matches)} alerts; give more of the id")
            chosen.extend(d for d in letters if d.alert_id in matches)
        letters = chosen
    store.requeue([(d.alert_id, d.channel) for d in letters], now)
    return len(letters)


def dead_letter_record(letter: DeadLetter) -> dict[str, object]:
    """A dead letter as plain JSON values (``dead-letters list --json``)."""
    return {
        "alert_id": letter.alert_id,
        "channel": letter.channel,
        "kind": letter.kind,
        "rule_id": letter.rule_id,
        "severity": letter.severity,
        "title": letter.title,
        "attempts": letter.attempts,
        "first_attempt_at": format_timestamp(letter.first_attempt_at) if letter.first_attempt_at else None,
        "failed_at": format_timestamp(letter.failed_at),
        "last_error": letter.last_error,
    }


def render_dead_letters(letters: Sequence[DeadLetter], tz: tzinfo) -> str:
    """The ``dead-letters list`` table; ids cut to 12 characters (``requeue`` takes the prefix)."""
    if not letters:
        return "no dead letters"
    header = ("ALERT", "CHANNEL", "SEVERITY", "RULE", "GIVEN UP", "ATTEMPTS", "ERROR")
    rows = [header] + [
        (
            d.alert_id[:12],
            d.channel if d.kind == TRIGGER else f"{d.channel} ({d.kind})",
            d.severity,
            d.rule_id,
            format_time(d.failed_at, tz),
            str(d.attempts),
            one_line(d.last_error)[:100],
        )
        for d in letters
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1] for r in rows
    ]
    by_channel = Counter(d.channel for d in letters)
    summary = ", ".join(f"{n} {c}" for c, n in sorted(by_channel.items()))
    lines.append("")
    lines.append(
        f"{len(letters)} dead letters ({summary}); re-send with: audit-monitor dead-letters requeue "
        "--channel CHANNEL (or ALERT_ID...)"
    )
    return "\n".join(lines)

"""Slack's rate limit (about one message per second per channel, then 429 with Retry-After: 1): short waits
are taken inside the delivery pass, so a burst arrives in order and nothing is left failed."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from alerts_support import (
    SlackStub,
    make_alert,
    make_config,
    ok,
    outbox_rows,
    ratelimited,
    record,
    slack_config,
)

from monitor.alerts.outbox import OutboxWorker
from monitor.alerts.slack import SlackChannel
from monitor.store import Store

NOW = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)


def channel_for(stub: SlackStub) -> SlackChannel:
    config = make_config(slack=slack_config(stub), digest_after=100)
    assert config.alerts.slack is not None
    return SlackChannel(config.alerts.slack, config.tz)


def test_a_burst_under_429_retry_after_1_is_delivered_in_order_in_one_pass(
    slack: SlackStub, store: Store
) -> None:
    alerts = [make_alert(title=f"alert {i}", event_time=NOW + timedelta(seconds=i)) for i in range(6)]
    record(store, alerts, ["slack"], NOW + timedelta(minutes=1))
    # Every second message is refused once with Retry-After: 1, as Slack does above ~1 message/s.
    slack.push(ok(), ratelimited(1), ok(), ratelimited(1), ok(), ratelimited(1), ok())
    started = time.monotonic()
    report = OutboxWorker(
        store, {"slack": channel_for(slack)}, clock=lambda: NOW + timedelta(minutes=1)
    ).deliver_due()
    elapsed = time.monotonic() - started
    assert report.sent == 6 and not report.failed, report.errors
    assert {row["status"] for row in outbox_rows(store)} == {"sent"}
    titles = [p.body["text"].split(": ", 1)[1].split(" (")[0] for p in slack.posts()]
    # A refused message is sent again after its wait, before the next one: Slack shows them in order.
    assert titles == [f"alert {i}" for i in (0, 1, 1, 2, 2, 3, 3, 4, 5)]
    assert elapsed >= 3  # the three waits were taken, not skipped


def test_a_long_retry_after_keeps_the_outbox_backoff(slack: SlackStub, store: Store) -> None:
    record(store, [make_alert()], ["slack"], NOW)
    slack.push(ratelimited(120))
    report = OutboxWorker(store, {"slack": channel_for(slack)}, clock=lambda: NOW).deliver_due()
    assert report.retried == 1
    (row,) = outbox_rows(store)
    assert datetime.fromisoformat(row["next_attempt_at"]) >= NOW + timedelta(seconds=120)


def test_stopping_cuts_a_rate_limit_wait_short(slack: SlackStub, store: Store) -> None:
    record(store, [make_alert()], ["slack"], NOW)
    slack.push(ratelimited(30))
    channel = channel_for(slack)
    channel.stop = threading.Event()
    threading.Timer(0.3, channel.stop.set).start()
    started = time.monotonic()
    report = OutboxWorker(store, {"slack": channel}, clock=lambda: NOW).deliver_due()
    assert time.monotonic() - started < 10
    assert report.retried == 1 and len(slack.posts()) == 1  # not re-sent while stopping; the outbox keeps it


class _RecordedWaits(threading.Event):
    """The channel's stop event, whose waits are recorded and return at once ("not stopped"): the boundary
    of a 30 s wait is checked without spending 30 s of real time."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        return False


def test_a_retry_after_of_exactly_30_s_is_waited_in_the_pass_and_31_s_defers(
    slack: SlackStub, store: Store
) -> None:
    """The documented cap (README: a Slack 429 asking for at most 30 s is waited out in the same pass):
    30 s waits and delivers; one second more goes to the outbox backoff, with the channel deferred."""
    record(store, [make_alert(title="at the cap")], ["slack"], NOW)
    slack.push(ratelimited(30), ok())
    channel = channel_for(slack)
    channel.stop = waits = _RecordedWaits()
    report = OutboxWorker(store, {"slack": channel}, clock=lambda: NOW).deliver_due()
    assert report.sent == 1 and not report.failed, report.errors
    assert waits.waits == [30.0] and len(slack.posts()) == 2

    later = NOW + timedelta(minutes=5)
    record(store, [make_alert(title="past the cap", event_time=later)], ["slack"], later)
    slack.push(ratelimited(31))
    channel.stop = waits = _RecordedWaits()
    report = OutboxWorker(store, {"slack": channel}, clock=lambda: later).deliver_due()
    assert report.retried == 1 and report.sent == 0
    assert waits.waits == [] and len(slack.posts()) == 3  # no wait in the pass, no second try
    pending = [row for row in outbox_rows(store) if row["status"] == "pending"]
    assert len(pending) == 1
    assert datetime.fromisoformat(pending[0]["next_attempt_at"]) >= later + timedelta(seconds=31)

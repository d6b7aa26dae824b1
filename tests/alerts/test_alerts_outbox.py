"""The outbox worker against real channels (Slack stub, aiosmtpd, console): exactly once across calls
and restarts, retry with backoff on a fake clock, dead letters, and monitor.delivery_failing through the
other channels."""

from __future__ import annotations

import io
import random
from datetime import datetime, timedelta

import pytest
from alerts_support import (
    Clock,
    SlackStub,
    SmtpServer,
    api_error,
    email_config,
    make_alert,
    make_config,
    outbox_rows,
    record,
    server_error,
    slack_config,
)

from monitor.alerts.console import ConsoleChannel
from monitor.alerts.email import EmailChannel
from monitor.alerts.outbox import (
    CLAIM_FOR,
    FIRST_RETRY,
    GIVE_UP_AFTER,
    MAX_RETRY,
    Channel,
    OutboxWorker,
    list_dead_letters,
    requeue_dead_letters,
)
from monitor.alerts.slack import SlackChannel
from monitor.store import Store


@pytest.fixture
def db_path(store_target: str) -> str:
    """The outbox's tests run on both backends: the archive is a file or a PostgreSQL database."""
    return store_target


def channels(slack: SlackStub | None = None, smtp: SmtpServer | None = None) -> dict[str, Channel]:
    config = make_config(
        slack=slack_config(slack) if slack else None, email=email_config(smtp) if smtp else None
    )
    out: dict[str, Channel] = {}
    if config.alerts.slack is not None:
        out["slack"] = SlackChannel(config.alerts.slack, config.tz)
    if config.alerts.email is not None:
        out["email"] = EmailChannel(config.alerts.email, config.tz)
    return out


def due_at(store: Store, alert_id: str, channel: str) -> datetime:
    row = store.conn.execute(
        "SELECT next_attempt_at FROM outbox WHERE alert_id = ? AND channel = ?", (alert_id, channel)
    ).fetchone()
    return datetime.fromisoformat(row[0])


def test_exactly_one_message_per_alert_across_calls_and_restart(
    slack: SlackStub, db_path: str, clock: Clock
) -> None:
    alerts = [make_alert(title=f"alert {i}") for i in range(3)]
    with Store.open(db_path) as store:
        record(store, alerts, ["slack"], clock())
        worker = OutboxWorker(store, channels(slack), clock=clock)
        assert worker.deliver_due().sent == 3
        assert worker.deliver_due().sent == 0
        # The same events processed again (a repeated cycle) derive the same alert ids: nothing new.
        record(store, alerts, ["slack"], clock())
        assert worker.deliver_due().sent == 0
    clock.advance(timedelta(hours=1))
    with Store.open(db_path) as reopened:  # a restart: new process, new worker, same file
        assert OutboxWorker(reopened, channels(slack), clock=clock).deliver_due().sent == 0
        assert {r["status"] for r in outbox_rows(reopened)} == {"sent"}
        assert sorted(r["remote_id"] for r in outbox_rows(reopened)) == [
            f"1772618400.{i:06d}" for i in (1, 2, 3)
        ]
    titles = sorted(p.body["text"].split(" (")[0] for p in slack.posts())
    assert titles == ["HIGH: alert 0", "HIGH: alert 1", "HIGH: alert 2"]


def test_a_crash_before_marking_sent_resends_at_most_that_row(
    slack: SlackStub, db_path: str, clock: Clock
) -> None:
    # At-least-once: if the process dies after Slack accepted but before the row is marked, the next
    # start sends that one message again, and only it: at once on SQLite (one sender per archive), on
    # PostgreSQL once the dead sender's claim on it ran out. Simulated by putting the row back to pending
    # (its claim stays as the send left it).
    with Store.open(db_path) as store:
        first, second = make_alert(), make_alert()
        record(store, [first, second], ["slack"], clock())
        OutboxWorker(store, channels(slack), clock=clock).deliver_due()
        with store.transaction():
            store.conn.execute("UPDATE outbox SET status = 'pending' WHERE alert_id = ?", (first.id,))
    with Store.open(db_path) as store:
        if store.is_postgresql:
            assert OutboxWorker(store, channels(slack), clock=clock).deliver_due().sent == 0  # claimed
            clock.advance(CLAIM_FOR)
        assert OutboxWorker(store, channels(slack), clock=clock).deliver_due().sent == 1
    assert len(slack.posts()) == 3


def test_retry_then_success_on_the_backoff_schedule(slack: SlackStub, store: Store, clock: Clock) -> None:
    alert = make_alert()
    record(store, [alert], ["slack"], clock())
    slack.push(server_error(500))
    worker = OutboxWorker(store, channels(slack), clock=clock, rng=random.Random(1))
    report = worker.deliver_due()
    assert (report.sent, report.retried) == (0, 1) and report.failed
    wait = due_at(store, alert.id, "slack") - clock()
    assert FIRST_RETRY * 0.8 <= wait <= FIRST_RETRY * 1.2
    assert worker.deliver_due().sent == 0 and len(slack.posts()) == 1  # not due yet: no request
    clock.advance(wait)
    assert worker.deliver_due().sent == 1
    assert len(slack.posts()) == 2
    (row,) = outbox_rows(store)
    assert row["status"] == "sent" and row["attempts"] == 2 and row["last_error"] is None


# The documented delivery limits (README "Alerts", docs/operations.md), written out rather than read from
# monitor.alerts.outbox: a test that derives its expectation from the product's constant passes whatever
# the constant says.
DOCUMENTED_FIRST_RETRY = timedelta(seconds=5)
DOCUMENTED_MAX_RETRY = timedelta(minutes=10)
DOCUMENTED_GIVE_UP_AFTER = timedelta(hours=24)


def test_the_documented_limits_are_the_products() -> None:
    assert (FIRST_RETRY, MAX_RETRY, GIVE_UP_AFTER) == (
        DOCUMENTED_FIRST_RETRY,
        DOCUMENTED_MAX_RETRY,
        DOCUMENTED_GIVE_UP_AFTER,
    )


def test_backoff_doubles_with_jitter_and_is_capped(slack: SlackStub, store: Store, clock: Clock) -> None:
    alert = make_alert()
    record(store, [alert], ["slack"], clock())
    worker = OutboxWorker(store, channels(slack), clock=clock, rng=random.Random(7))
    waits = []
    for _ in range(12):
        slack.push(server_error(503))
        assert worker.deliver_due().retried == 1
        wait = due_at(store, alert.id, "slack") - clock()
        waits.append(wait)
        clock.advance(wait)
    for attempt, wait in enumerate(waits, start=1):
        nominal = min(DOCUMENTED_MAX_RETRY, DOCUMENTED_FIRST_RETRY * 2 ** (attempt - 1))
        low, high = min(nominal * 0.8, DOCUMENTED_MAX_RETRY), min(nominal * 1.2, DOCUMENTED_MAX_RETRY)
        assert low <= wait <= high, (attempt, wait)
    assert DOCUMENTED_MAX_RETRY * 0.8 <= waits[-1] <= DOCUMENTED_MAX_RETRY
    assert len(slack.posts()) == 12


def test_a_failing_channel_is_probed_once_not_once_per_row(
    slack: SlackStub, store: Store, clock: Clock
) -> None:
    alerts = [make_alert() for _ in range(5)]
    record(store, alerts, ["slack"], clock())
    slack.push(server_error(502))
    worker = OutboxWorker(store, channels(slack), clock=clock)
    report = worker.deliver_due()
    assert (report.retried, report.deferred, report.sent) == (1, 4, 0)
    assert len(slack.posts()) == 1
    first_due = {due_at(store, a.id, "slack") for a in alerts}
    assert len(first_due) == 1  # everyone waits for the same probe
    clock.advance(MAX_RETRY)
    assert worker.deliver_due().sent == 5
    assert len(slack.posts()) == 6


def test_gives_up_after_24_hours_of_transient_failures(
    slack: SlackStub, smtp: SmtpServer, store: Store, clock: Clock
) -> None:
    alert = make_alert()
    record(store, [alert], ["slack"], clock())
    worker = OutboxWorker(store, channels(slack, smtp), clock=clock)
    start = clock()
    while True:
        slack.push(server_error(500))
        report = worker.deliver_due()
        if report.dead:
            break
        assert clock() - start < DOCUMENTED_GIVE_UP_AFTER + DOCUMENTED_MAX_RETRY * 2
        clock.advance(due_at(store, alert.id, "slack") - clock())
    assert clock() - start >= DOCUMENTED_GIVE_UP_AFTER
    (letter,) = list_dead_letters(store)
    assert letter.alert_id == alert.id and "HTTP 500" in letter.last_error
    # The operator hears about it through email, the other channel.
    subjects = [m["Subject"] for m in smtp.recorder.messages]
    assert subjects == ["[HIGH] Alert delivery through slack is failing (monitor)"]


# Slack error codes as README "Alerts" classifies them: rate limits and Slack's own failures are retried; a
# token or channel that is wrong, revoked or gone, and a code Slack has not documented, dead-letter at once.
DOCUMENTED_SLACK_CLASSES = {
    "ratelimited": "retry",
    "internal_error": "retry",
    "service_unavailable": "retry",
    "invalid_auth": "dead",
    "not_authed": "dead",
    "token_revoked": "dead",
    "token_expired": "dead",
    "account_inactive": "dead",
    "channel_not_found": "dead",
    "not_in_channel": "dead",
    "is_archived": "dead",
    "missing_scope": "dead",
    "some_code_slack_never_documented": "dead",
}


@pytest.mark.parametrize(("code", "outcome"), sorted(DOCUMENTED_SLACK_CLASSES.items()))
def test_each_documented_slack_error_is_retried_or_dead_lettered_as_documented(
    slack: SlackStub, store: Store, clock: Clock, code: str, outcome: str
) -> None:
    alert = make_alert()
    record(store, [alert], ["slack"], clock())
    slack.push(api_error(code))
    report = OutboxWorker(store, channels(slack), clock=clock).deliver_due()
    assert (report.dead, report.retried) == ((1, 0) if outcome == "dead" else (0, 1)), code
    (row,) = outbox_rows(store)
    assert row["status"] == ("dead" if outcome == "dead" else "pending")


def test_permanent_failure_dead_letters_and_warns_through_the_other_channel_once(
    slack: SlackStub, smtp: SmtpServer, store: Store, clock: Clock
) -> None:
    first, second = make_alert(title="first"), make_alert(title="second")
    record(store, [first], ["slack", "email"], clock())
    slack.push(api_error("invalid_auth"))
    worker = OutboxWorker(store, channels(slack, smtp), clock=clock)
    report = worker.deliver_due()
    assert report.dead == 1 and report.failed
    assert len(slack.posts()) == 1  # delivery_failing is never sent through the failing channel
    subjects = sorted(m["Subject"] for m in smtp.recorder.messages)
    assert subjects == ["[HIGH] Alert delivery through slack is failing (monitor)", "[HIGH] first (prod)"]
    failing = next(m for m in smtp.recorder.messages if "failing" in m["Subject"])
    body = failing.get_body(("plain",)).get_content()
    assert "invalid_auth" in body and "dead-letters requeue --channel slack" in body

    # Same episode: a second dead letter does not raise a second notice.
    clock.advance(timedelta(minutes=1))
    record(store, [second], ["slack"], clock())
    slack.push(api_error("invalid_auth"))
    assert worker.deliver_due().dead == 1
    assert len(smtp.recorder.messages) == 2
    assert [d.alert_id for d in list_dead_letters(store, "slack")] == [first.id, second.id]

    # The token is fixed; the dead letters are re-queued and go out; the recovery is announced once.
    clock.advance(timedelta(minutes=1))
    assert requeue_dead_letters(store, clock(), channel="slack") == 2
    report = worker.deliver_due()
    assert report.sent == 3  # two requeued to slack, the recovery notice by email
    recovered = [m for m in smtp.recorder.messages if "works again" in m["Subject"]]
    assert len(recovered) == 1
    assert "No dead letters for slack remain" in recovered[0].get_body(("plain",)).get_content()
    assert worker.deliver_due().sent == 0
    assert list_dead_letters(store) == []


def test_no_other_channel_means_the_notice_is_recorded_and_logged(
    slack: SlackStub, store: Store, clock: Clock
) -> None:
    record(store, [make_alert()], ["slack"], clock())
    slack.push(api_error("channel_not_found"))
    report = OutboxWorker(store, channels(slack), clock=clock).deliver_due()
    assert report.dead == 1
    (rule,) = [r[0] for r in store.conn.execute("SELECT rule_id FROM alerts WHERE rule_id LIKE 'monitor.%'")]
    assert rule == "monitor.delivery_failing"


def test_rows_for_a_channel_no_longer_configured_become_dead_letters(store: Store, clock: Clock) -> None:
    record(store, [make_alert()], ["slack"], clock())
    out = io.StringIO()
    report = OutboxWorker(
        store, {"console": ConsoleChannel(make_config().tz, out)}, clock=clock
    ).deliver_due()
    assert report.dead == 1
    (letter,) = list_dead_letters(store)
    assert letter.last_error == "channel slack is not configured any more"
    assert out.getvalue() == ""  # no delivery_failing for a channel that was removed on purpose


def test_requeue_by_id_prefix(slack: SlackStub, store: Store, clock: Clock) -> None:
    alerts = [make_alert(), make_alert()]
    record(store, alerts, ["slack"], clock())
    slack.push(api_error("is_archived"), api_error("is_archived"))
    worker = OutboxWorker(store, channels(slack), clock=clock)
    assert worker.deliver_due().dead == 2
    assert requeue_dead_letters(store, clock(), alert_ids=[alerts[1].id[:12]]) == 1
    assert worker.deliver_due().sent == 1
    assert [d.alert_id for d in list_dead_letters(store)] == [alerts[0].id]


def test_console_prints_readably_and_strips_control_characters(store: Store, clock: Clock) -> None:
    out = io.StringIO()
    alert = make_alert(title="Table deleted\x1b[2J\rfake", event_ids=(5, 6), suppressed_count=3)
    record(store, [alert], ["console"], clock())
    OutboxWorker(store, {"console": ConsoleChannel(make_config().tz, out)}, clock=clock).deliver_due()
    printed = out.getvalue()
    assert "[HIGH] Table deleted" in printed and "\x1b" not in printed and "\r" not in printed
    assert "rule xano.db.table-deleted · 2026-03-04 10:30:00 CET (2026-03-04 09:30:00 UTC)" in printed
    assert "user dana@corp.io · workspace Main · branch v1" in printed
    assert "events 5, 6" in printed and "3 similar matches were throttled" in printed


def test_a_crashing_channel_does_not_stop_the_others(slack: SlackStub, store: Store, clock: Clock) -> None:
    class Broken:
        name = "email"

        def send(self, alert: object) -> str | None:
            raise KeyError("template bug")

    record(store, [make_alert()], ["email", "slack"], clock())
    chans = {**channels(slack), "email": Broken()}
    report = OutboxWorker(store, chans, clock=clock).deliver_due()  # type: ignore[arg-type]
    assert report.sent == 1 and report.retried == 1
    assert {r["channel"]: r["status"] for r in outbox_rows(store)} == {"email": "pending", "slack": "sent"}

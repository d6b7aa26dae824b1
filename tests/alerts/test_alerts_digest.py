"""A burst of more than digest_after alerts due for one channel goes as one digest per destination;
every alert row is still recorded and marked sent with the digest's remote id."""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

from alerts_support import (
    Clock,
    SlackStub,
    SmtpServer,
    all_strings,
    email_config,
    make_alert,
    make_config,
    outbox_rows,
    record,
    server_error,
    slack_config,
)

from monitor.alerts.console import ConsoleChannel
from monitor.alerts.email import EmailChannel, digest_message_id
from monitor.alerts.model import Alert
from monitor.alerts.outbox import MAX_RETRY, OutboxWorker
from monitor.alerts.slack import DIGEST_LIST_MAX, MAX_BLOCKS, SlackChannel
from monitor.store import Store


def slack_channel(stub: SlackStub, **extra: object) -> SlackChannel:
    config = make_config(slack=slack_config(stub, **extra))
    assert config.alerts.slack is not None
    return SlackChannel(config.alerts.slack, config.tz)


def burst(n: int, title: str = "burst", **kwargs: Any) -> list[Alert]:
    return [make_alert(title=f"{title} {i}", rule_id=f"xano.rule-{i % 3}", **kwargs) for i in range(n)]


def test_more_than_digest_after_goes_as_one_slack_message(
    slack: SlackStub, store: Store, clock: Clock
) -> None:
    alerts = burst(12)
    record(store, alerts, ["slack"], clock())
    report = OutboxWorker(store, {"slack": slack_channel(slack)}, clock=clock, digest_after=10).deliver_due()
    assert (report.sent, report.digests) == (12, 1)
    (post,) = slack.posts()
    assert post.body["channel"] == "#sec"
    assert post.body["text"].startswith("Alert digest: 12 alerts (12 high)")
    text = "\n".join(all_strings(post.body["blocks"]))
    assert all(f"burst {i}" in text for i in range(12))
    assert "xano.rule-0: 4" in text
    rows = outbox_rows(store)
    assert {r["status"] for r in rows} == {"sent"} and {r["remote_id"] for r in rows} == {"1772618400.000001"}
    assert store.alert_count() == 12  # each alert is still recorded


def test_exactly_digest_after_is_sent_one_by_one(slack: SlackStub, store: Store, clock: Clock) -> None:
    record(store, burst(10), ["slack"], clock())
    report = OutboxWorker(store, {"slack": slack_channel(slack)}, clock=clock, digest_after=10).deliver_due()
    assert (report.sent, report.digests) == (10, 0)
    assert len(slack.posts()) == 10


def test_digests_keep_severity_routing(slack: SlackStub, store: Store, clock: Clock) -> None:
    critical = burst(11, severity="critical")
    medium = burst(11, severity="medium")
    lone = [make_alert(severity="high", title="the only high")]
    record(store, critical + medium + lone, ["slack"], clock())
    channel = slack_channel(slack, routes={"critical": "#oncall", "high": "#high"})
    report = OutboxWorker(store, {"slack": channel}, clock=clock, digest_after=10).deliver_due()
    assert (report.sent, report.digests) == (23, 2)
    by_channel: dict[str, list[str]] = {}
    for post in slack.posts():
        by_channel.setdefault(post.body["channel"], []).append(post.body["text"])
    assert [t[:27] for t in by_channel["#oncall"]] == ["Alert digest: 11 alerts (11"]
    assert [t[:27] for t in by_channel["#sec"]] == ["Alert digest: 11 alerts (11"]
    # A destination with a single due alert gets the ordinary message, even in a burst.
    assert [t[:19] for t in by_channel["#high"]] == ["HIGH: the only high"]


def test_the_digest_threshold_counts_per_route(slack: SlackStub, store: Store, clock: Clock) -> None:
    # A backfill: 3 critical alerts for the critical-only route and a burst for the default channel. The
    # route's 3 are not more than digest_after, so each arrives as its own message.
    critical = burst(3, title="critical", severity="critical")
    medium = burst(12, severity="medium")
    record(store, critical + medium, ["slack"], clock())
    channel = slack_channel(slack, routes={"critical": "#oncall"})
    report = OutboxWorker(store, {"slack": channel}, clock=clock, digest_after=10).deliver_due()
    assert (report.sent, report.digests) == (15, 1)
    by_channel: dict[str, list[str]] = {}
    for post in slack.posts():
        by_channel.setdefault(post.body["channel"], []).append(post.body["text"])
    assert sorted(t[:20] for t in by_channel["#oncall"]) == [f"CRITICAL: critical {i}" for i in range(3)]
    assert [t[:27] for t in by_channel["#sec"]] == ["Alert digest: 12 alerts (12"]


def test_a_large_burst_is_cut_to_block_kit_limits_but_every_row_is_sent(
    slack: SlackStub, store: Store, clock: Clock
) -> None:
    alerts = burst(150, text="x" * 3000)
    record(store, alerts, ["slack"], clock())
    report = OutboxWorker(store, {"slack": slack_channel(slack)}, clock=clock).deliver_due()
    assert (report.sent, report.digests) == (150, 1)
    (post,) = slack.posts()
    assert len(post.body["blocks"]) <= MAX_BLOCKS
    assert all(len(b["text"]["text"]) <= 3000 for b in post.body["blocks"] if b["type"] == "section")
    assert f"and {150 - DIGEST_LIST_MAX} more alerts" in "\n".join(all_strings(post.body["blocks"]))
    assert {r["status"] for r in outbox_rows(store)} == {"sent"}


def test_a_failed_digest_is_retried_as_one_digest(slack: SlackStub, store: Store, clock: Clock) -> None:
    record(store, burst(11), ["slack"], clock())
    slack.push(server_error(503))
    worker = OutboxWorker(store, {"slack": slack_channel(slack)}, clock=clock)
    report = worker.deliver_due()
    assert (report.sent, report.retried) == (0, 11)
    assert len({r["next_attempt_at"] for r in outbox_rows(store)}) == 1
    clock.advance(MAX_RETRY)
    assert worker.deliver_due().digests == 1
    assert len(slack.posts()) == 2


def test_digest_email(smtp: SmtpServer, store: Store, clock: Clock) -> None:
    alerts = burst(11, title="<b>x</b> & y")
    record(store, alerts, ["email"], clock())
    config = make_config(email=email_config(smtp))
    assert config.alerts.email is not None
    channel = EmailChannel(config.alerts.email, config.tz)
    report = OutboxWorker(store, {"email": channel}, clock=clock, digest_after=10).deliver_due()
    assert (report.sent, report.digests) == (11, 1)
    (message,) = smtp.recorder.messages
    assert message["Subject"] == "[DIGEST] 11 alerts: 11 high (prod)"
    assert message["Message-ID"] == digest_message_id([a.id for a in alerts], "monitor@example.com")
    html = message.get_body(("html",)).get_content()
    assert html.count("&lt;b&gt;x&lt;/b&gt; &amp; y") == 11 and "<b>x</b>" not in html
    assert {r["remote_id"] for r in outbox_rows(store)} == {message["Message-ID"]}


def test_console_never_digests(store: Store, clock: Clock) -> None:
    out = io.StringIO()
    record(store, burst(15), ["console"], clock())
    report = OutboxWorker(
        store, {"console": ConsoleChannel(make_config().tz, out)}, clock=clock, digest_after=10
    ).deliver_due()
    assert (report.sent, report.digests) == (15, 0)
    assert out.getvalue().count("[HIGH] burst") == 15


def test_rows_due_at_different_times_are_counted_per_call(
    slack: SlackStub, store: Store, clock: Clock
) -> None:
    worker = OutboxWorker(store, {"slack": slack_channel(slack)}, clock=clock, digest_after=10)
    for _ in range(3):
        record(store, burst(5), ["slack"], clock())
        assert worker.deliver_due().digests == 0
        clock.advance(timedelta(seconds=5))
    assert len(slack.posts()) == 15

"""Resolve notices: when a responder resolves an alert, every channel that carried it and is told of
resolutions gets one more message through the outbox (webhook ``alert.resolved``, PagerDuty ``resolve``, a
Slack thread reply, an email reply, a Teams card), with the outbox's guarantees: retried through an outage,
delivered once, never before the alert itself, kept across a restart.

Everything runs against real loopback servers: the recording receiver (webhooks, PagerDuty, Teams), the Slack
Web API stub behind slack-sdk, aiosmtpd. Signatures are checked with the ``standardwebhooks`` library."""

from __future__ import annotations

import base64
import json
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alerts_support import (
    Receiver,
    Reply,
    SlackStub,
    SmtpServer,
    all_strings,
    email_config,
    make_alert,
    make_config,
    record,
    slack_config,
)
from click.testing import CliRunner
from standardwebhooks import Webhook

from monitor.alerts.model import RESOLVE, TRIGGER, Alert, tells_resolve
from monitor.alerts.outbox import (
    OutboxWorker,
    dead_letter_record,
    list_dead_letters,
    render_dead_letters,
    requeue_dead_letters,
)
from monitor.cli import cli
from monitor.daemon import build_channels
from monitor.store import Store, lifecycle

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
ROUTING_KEY = "R0UT1NGKEY-SECRET-0123456789abcdef"
NOW = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)
RESOLVED_AT = NOW + timedelta(minutes=42)
HOSTILE_NOTE = "<!channel> *all* clear, see <https://evil.example|the runbook> @here `rm`"


def webhook_channels(receiver: Receiver) -> dict[str, Any]:
    config = make_config(webhooks=[{"name": "n8n", "url": receiver.url("/hook"), "secret": SECRET}])
    return build_channels(config)


def resolve(
    store: Store, alert: Alert, *, note: str | None = "maintenance window", at: datetime = RESOLVED_AT
) -> None:
    lifecycle.transition(store, alert.id, "resolved", actor="oncall", at=at, note=note, disposition="benign")


def deliver(
    store: Store, channels: dict[str, Any], now: datetime = RESOLVED_AT, digest_after: int = 10
) -> Any:
    return OutboxWorker(store, channels, clock=lambda: now, digest_after=digest_after).deliver_due()


def kinds(store: Store, channel: str) -> dict[str, str]:
    """kind -> status of the alert rows of ``channel`` (tests record one alert per store)."""
    rows = store.conn.execute("SELECT kind, status FROM outbox WHERE channel = ?", (channel,))
    return {str(kind): str(status) for kind, status in rows}


def verified(request: Any) -> dict[str, Any]:
    """The body, after the standardwebhooks library accepted its signature (it raises otherwise)."""
    headers = {k: v for k, v in request.headers.items() if k.startswith("webhook-")}
    payload = Webhook(SECRET).verify(request.raw.decode("utf-8"), headers)
    assert isinstance(payload, dict)
    return payload


# --- webhooks -----------------------------------------------------------------------------------------------


def test_webhook_gets_alert_resolved_signed_with_who_when_disposition_and_note(
    receiver: Receiver, store: Store
) -> None:
    alert = make_alert(severity="critical")
    record(store, [alert], ["webhook:n8n"], NOW)
    channels = webhook_channels(receiver)
    assert deliver(store, channels, NOW).sent == 1
    resolve(store, alert)
    report = deliver(store, channels)
    assert report.sent == 1 and not report.failed

    fired, resolved = receiver.requests
    assert verified(fired)["type"] == "alert.fired"
    body = verified(resolved)
    # Its own message id: a receiver that drops repeated webhook-ids keeps both messages of the alert.
    assert resolved.headers["webhook-id"] == f"{alert.id}.resolved" != fired.headers["webhook-id"]
    assert body["type"] == "alert.resolved"
    assert body["timestamp"] == "2026-03-04T10:42:00.000000+00:00"
    data = body["data"]
    assert data["id"] == alert.id and data["rule"]["id"] == alert.rule_id and data["status"] == "resolved"
    assert data["resolution"] == {
        "at": "2026-03-04T10:42:00.000000+00:00",
        "at_local": "2026-03-04T11:42:00+01:00",
        "by": "oncall",
        "disposition": "benign",
        "note": "maintenance window",
    }
    # Same envelope as alert.fired: the alert's data is all there.
    assert {k: v for k, v in data.items() if k not in ("status", "resolution")} == verified(fired)["data"]
    assert kinds(store, "webhook:n8n") == {TRIGGER: "sent", RESOLVE: "sent"}
    assert deliver(store, channels, RESOLVED_AT + timedelta(hours=1)).sent == 0  # nothing is sent twice


def test_resolve_before_the_trigger_went_out_keeps_the_order(receiver: Receiver, store: Store) -> None:
    alert = make_alert()
    record(store, [alert], ["webhook:n8n"], NOW)
    resolve(store, alert, at=NOW)  # resolved from the console before the worker's next pass
    report = deliver(store, webhook_channels(receiver), NOW)
    assert report.sent == 2 and not report.failed  # one deliver_due: the notice follows its trigger
    assert [r.json()["type"] for r in receiver.requests] == ["alert.fired", "alert.resolved"]


def test_resolve_waits_while_the_trigger_is_retried(receiver: Receiver, store: Store) -> None:
    alert = make_alert()
    record(store, [alert], ["webhook:n8n"], NOW)
    channels = webhook_channels(receiver)
    receiver.push(Reply(503), Reply(503))
    first = deliver(store, channels, NOW)
    assert first.retried == 1 and first.sent == 0
    # Resolved while the alert waits for its retry: the notice is due at once, the trigger is not.
    resolve(store, alert, at=NOW + timedelta(seconds=1))
    waiting = deliver(store, channels, NOW + timedelta(seconds=2))
    assert waiting.sent == 0 and waiting.retried == 0
    assert [r.json()["type"] for r in receiver.requests] == ["alert.fired"]  # the notice did not overtake
    later = deliver(store, channels, NOW + timedelta(seconds=7))
    assert later.retried == 1 and len(receiver.requests) == 2
    final = deliver(store, channels, NOW + timedelta(minutes=5))
    assert final.sent == 2
    assert [r.json()["type"] for r in receiver.requests] == ["alert.fired"] * 3 + ["alert.resolved"]


def test_outage_while_resolving_is_retried_and_delivered_once(receiver: Receiver, store: Store) -> None:
    alert = make_alert()
    record(store, [alert], ["webhook:n8n"], NOW)
    channels = webhook_channels(receiver)
    deliver(store, channels, NOW)
    resolve(store, alert)
    receiver.push(Reply(503), Reply(429, headers={"Retry-After": "30"}))
    assert deliver(store, channels).retried == 1
    assert deliver(store, channels, RESOLVED_AT + timedelta(seconds=10)).retried == 1
    assert deliver(store, channels, RESOLVED_AT + timedelta(seconds=20)).sent == 0  # Retry-After held it
    assert deliver(store, channels, RESOLVED_AT + timedelta(minutes=2)).sent == 1
    resolved = [r for r in receiver.requests if r.json()["type"] == "alert.resolved"]
    assert len(resolved) == 3  # two refused attempts, one accepted
    assert {r.headers["webhook-id"] for r in resolved} == {f"{alert.id}.resolved"}
    for attempt in resolved:
        verified(attempt)  # a fresh, valid signature on every retry
    assert kinds(store, "webhook:n8n") == {TRIGGER: "sent", RESOLVE: "sent"}
    assert deliver(store, channels, RESOLVED_AT + timedelta(hours=2)).sent == 0


def test_a_refused_notice_is_a_dead_letter_of_its_own_and_requeues_alone(
    receiver: Receiver, store: Store
) -> None:
    alert = make_alert()
    record(store, [alert], ["webhook:n8n"], NOW)
    channels = webhook_channels(receiver)
    deliver(store, channels, NOW)
    resolve(store, alert)
    receiver.push(Reply(400))
    assert deliver(store, channels).dead == 1
    (letter,) = list_dead_letters(store)
    assert (letter.alert_id, letter.kind) == (alert.id, RESOLVE)
    assert "webhook:n8n (resolve)" in render_dead_letters([letter], UTC)
    assert dead_letter_record(letter)["kind"] == RESOLVE
    assert kinds(store, "webhook:n8n") == {TRIGGER: "sent", RESOLVE: "dead"}
    assert requeue_dead_letters(store, RESOLVED_AT, alert_ids=[alert.id[:10]]) == 1
    deliver(store, channels, RESOLVED_AT + timedelta(minutes=1))
    types = [r.json()["type"] for r in receiver.requests]
    assert types == ["alert.fired", "alert.resolved", "alert.resolved"]  # the alert itself not again


def test_a_dead_trigger_takes_its_notice_along_and_requeue_sends_both_in_order(
    receiver: Receiver, store: Store
) -> None:
    alert = make_alert()
    record(store, [alert], ["webhook:n8n"], NOW)
    resolve(store, alert, at=NOW)
    channels = webhook_channels(receiver)
    receiver.push(Reply(400))
    assert deliver(store, channels, NOW).dead == 1
    assert kinds(store, "webhook:n8n") == {TRIGGER: "dead", RESOLVE: "dead"}
    letters = list_dead_letters(store)
    assert [d.kind for d in letters] == [TRIGGER, RESOLVE]
    assert "alert itself was not delivered" in letters[1].last_error
    assert [r.json()["type"] for r in receiver.requests] == ["alert.fired"]
    requeue_dead_letters(store, NOW, channel="webhook:n8n")
    assert deliver(store, channels, NOW + timedelta(minutes=1)).sent == 2
    assert [r.json()["type"] for r in receiver.requests] == ["alert.fired"] * 2 + ["alert.resolved"]


# --- who is told --------------------------------------------------------------------------------------------


def test_only_channels_that_carried_the_alert_and_tell_resolutions_get_a_notice(store: Store) -> None:
    routed = make_alert()
    nowhere = make_alert()
    given_up = make_alert()
    record(store, [routed], ["console", "slack", "webhook:n8n", "pagerduty"], NOW)
    record(store, [nowhere], [], NOW)
    record(store, [given_up], ["slack"], NOW)
    with store.transaction():
        store.mark_dead("slack", [(given_up.id, TRIGGER)], "Slack API error channel_not_found", NOW)
    for alert in (routed, nowhere, given_up):
        resolve(store, alert)
    rows = store.conn.execute(
        "SELECT alert_id, channel FROM outbox WHERE kind = ? ORDER BY channel", (RESOLVE,)
    ).fetchall()
    # The console is not told; an alert routed nowhere, or whose delivery was given up, tells nobody.
    assert rows == [(routed.id, "pagerduty"), (routed.id, "slack"), (routed.id, "webhook:n8n")]


def test_a_silenced_alert_tells_nobody(store: Store) -> None:
    lifecycle.add_silence(
        store, rule_id=None, match={"user": "dana@corp.io"}, until=NOW + timedelta(hours=1),
        reason="migration", actor="oncall", at=NOW - timedelta(minutes=1),
    )  # fmt: skip
    alert = make_alert()
    record(store, [alert], ["slack", "webhook:n8n"], NOW)
    with pytest.raises(lifecycle.LifecycleError):
        resolve(store, alert)  # silenced alerts are not in the triage flow
    assert store.conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0


def test_every_channel_that_can_be_told_is_told(
    receiver: Receiver, slack: SlackStub, smtp: SmtpServer
) -> None:
    """``tells_resolve`` (which rows are enqueued) and the channel classes (who can send them) agree."""
    config = make_config(
        console=True,
        slack=slack_config(slack),
        email=email_config(smtp),
        webhooks=[{"name": "n8n", "url": receiver.url("/hook"), "secret": SECRET}],
        teams={"webhook_url": receiver.url("/teams")},
        pagerduty={"routing_key": ROUTING_KEY, "base_url": receiver.url("")},
    )
    channels = build_channels(config)
    assert len(channels) == 6
    for name, channel in channels.items():
        assert hasattr(channel, "send_resolved") == tells_resolve(name), name
    assert not tells_resolve("console")


def test_the_reports_delivery_figures_count_alerts_not_notices(receiver: Receiver, store: Store) -> None:
    alert = make_alert()
    record(store, [alert], ["webhook:n8n"], NOW)
    channels = webhook_channels(receiver)
    deliver(store, channels, NOW)
    resolve(store, alert)
    deliver(store, channels)
    day = (NOW - timedelta(days=1), NOW + timedelta(days=1))
    assert store.delivery_counts(*day) == [("webhook:n8n", "sent", 1)]
    assert [row[7:9] for row in store.alert_deliveries(*day, 10)] == [("webhook:n8n", "sent")]
    shown = lifecycle.get_alert(store, alert.id)
    assert shown is not None
    assert [(d["channel"], d["kind"], d["status"]) for d in shown["deliveries"]] == [
        ("webhook:n8n", TRIGGER, "sent"),
        ("webhook:n8n", RESOLVE, "sent"),
    ]


# --- PagerDuty ----------------------------------------------------------------------------------------------


def test_pagerduty_resolves_the_incident_with_the_triggers_dedup_key(
    receiver: Receiver, store: Store
) -> None:
    receiver.default = Reply(202, '{"status":"success"}')
    config = make_config(pagerduty={"routing_key": ROUTING_KEY, "base_url": receiver.url("")})
    channels = build_channels(config)
    alert = make_alert(severity="critical")
    record(store, [alert], ["pagerduty"], NOW)
    resolve(store, alert, at=NOW)
    receiver.push(Reply(202), Reply(500))  # the trigger goes through, the resolve meets a PagerDuty outage
    assert deliver(store, channels, NOW).retried == 1
    assert deliver(store, channels, NOW + timedelta(minutes=1)).sent == 1
    trigger, failed, accepted = (r.json() for r in receiver.requests)
    assert trigger["event_action"] == "trigger"
    assert (
        failed == accepted == {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": alert.id}
    )
    assert {r.path for r in receiver.requests} == {"/v2/enqueue"}
    assert kinds(store, "pagerduty") == {TRIGGER: "sent", RESOLVE: "sent"}


# --- Slack --------------------------------------------------------------------------------------------------


def test_slack_bot_replies_in_the_alerts_thread_with_inert_text(slack: SlackStub, store: Store) -> None:
    channels = build_channels(make_config(slack=slack_config(slack, routes={"critical": "#oncall"})))
    alert = make_alert(severity="critical", title="Table <!here> deleted")
    record(store, [alert], ["slack"], NOW)
    deliver(store, channels, NOW)
    (posted,) = slack.posts()
    assert posted.body["channel"] == "#oncall" and "thread_ts" not in posted.body
    stored = store.conn.execute(
        "SELECT remote_id, reply_to FROM outbox WHERE kind = ?", (TRIGGER,)
    ).fetchone()
    assert stored == ("1772618400.000001", "C0123")  # the ts and the channel id Slack answered with

    lifecycle.transition(
        store, alert.id, "resolved", actor="<@U999> oncall", at=RESOLVED_AT, note=HOSTILE_NOTE,
        disposition="false_positive",
    )  # fmt: skip
    assert deliver(store, channels).sent == 1
    _, reply = slack.posts()
    assert reply.body["channel"] == "C0123" and reply.body["thread_ts"] == "1772618400.000001"
    assert not reply.body.get("reply_broadcast")
    text = json.dumps(reply.body)
    assert "false positive" in text and "oncall" in text and "11:42" in text
    # Nothing a person or an event wrote can mention, link or format: escaped, and never in mrkdwn.
    for value in all_strings(reply.body):
        assert "<!" not in value and "<@" not in value and "<http" not in value
    assert "&lt;!channel&gt;" in text and "&lt;!here&gt;" in text
    mrkdwn = [s["text"] for s in _text_objects(reply.body["blocks"]) if s["type"] == "mrkdwn"]
    assert not any("all* clear" in m or "U999" in m or "Table" in m for m in mrkdwn)
    assert reply.body["mrkdwn"] is False


def _text_objects(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        own = [node] if node.get("type") in ("mrkdwn", "plain_text") and "text" in node else []
        return own + [t for value in node.values() for t in _text_objects(value)]
    if isinstance(node, list):
        return [t for item in node for t in _text_objects(item)]
    return []


def test_slack_webhook_posts_a_message_that_names_the_alert(slack: SlackStub, store: Store) -> None:
    config = make_config(slack={"webhook_url": slack.webhook_url, "timeout": "5s"})
    channels = build_channels(config)
    alert = make_alert(title="Table users deleted")
    record(store, [alert], ["slack"], NOW)
    deliver(store, channels, NOW)
    resolve(store, alert)
    assert deliver(store, channels).sent == 1
    _, notice = slack.posts()
    assert notice.path.startswith("/services/") and "thread_ts" not in notice.body
    assert notice.body["text"].startswith("RESOLVED: Table users deleted (xano.db.table-deleted; prod;")
    assert alert.id in json.dumps(notice.body["blocks"])


def test_slack_thread_reply_after_a_restart_through_the_cli(
    slack: SlackStub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon sends the alert and stops; `alerts resolve` runs on the archive alone; the next start
    replies in the thread from what the archive kept."""
    db = tmp_path / "monitor.db"
    config_file = tmp_path / "audit-monitor.yaml"
    config_file.write_text(
        f"state: {{path: {db}}}\n"
        f"alerts:\n  console: false\n  slack: {{token: xoxb-test-token-0123456789, channel: '#sec', "
        f"base_url: '{slack.base_url}', timeout: 5s}}\n",
        encoding="utf-8",
    )
    config = make_config(slack=slack_config(slack), state_path=str(db))
    alert = make_alert()
    with Store.open(db) as first:
        record(first, [alert], ["slack"], NOW)
        deliver(first, build_channels(config), NOW)
    result = CliRunner().invoke(
        cli,
        ["--config", str(config_file), "alerts", "resolve", alert.id[:12], "--disposition", "true_positive",
         "--note", "rotated the key"],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with Store.open(db) as second:
        assert deliver(second, build_channels(config), datetime.now(UTC)).sent == 1
    first_post, reply = slack.posts()
    assert reply.body["thread_ts"] == "1772618400.000001" and reply.body["channel"] == "C0123"
    assert "rotated the key" in json.dumps(reply.body) and "true positive" in json.dumps(reply.body)


def test_a_resolve_under_a_digest_replies_in_the_digests_thread(slack: SlackStub, store: Store) -> None:
    channels = build_channels(make_config(slack=slack_config(slack)))
    burst = [make_alert(title=f"Table {n} deleted") for n in range(3)]
    record(store, burst, ["slack"], NOW)
    assert deliver(store, channels, NOW, digest_after=2).digests == 1
    resolve(store, burst[1])
    assert deliver(store, channels, digest_after=2).sent == 1
    digest, reply = slack.posts()
    assert reply.body["thread_ts"] == "1772618400.000001"
    assert "Table 1 deleted" in reply.body["text"]


# --- email and Teams ----------------------------------------------------------------------------------------


def test_email_notice_is_a_reply_to_the_alerts_message(smtp: SmtpServer, store: Store) -> None:
    config = make_config(email=email_config(smtp))
    channels = build_channels(config)
    alert = make_alert(title="Table users deleted")
    record(store, [alert], ["email"], NOW)
    deliver(store, channels, NOW)
    resolve(store, alert, note="<script>alert(1)</script> restored from backup")
    assert deliver(store, channels).sent == 1
    original, notice = smtp.recorder.messages
    assert notice["In-Reply-To"] == original["Message-ID"] == f"<{alert.id}@example.com>"
    assert notice["References"] == original["Message-ID"]
    assert notice["Message-ID"] == f"<{alert.id}.resolved@example.com>"
    assert notice["Subject"].startswith("Re: [HIGH] Table users deleted (prod)")
    text = notice.get_body(("plain",)).get_content()
    html = notice.get_body(("html",)).get_content()
    assert "Resolved by: oncall" in text and "Disposition: benign" in text and "restored from backup" in text
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_teams_gets_a_resolved_card_with_the_note_as_plain_text(receiver: Receiver, store: Store) -> None:
    config = make_config(teams={"webhook_url": receiver.url("/teams"), "min_severity": "low"})
    channels = build_channels(config)
    alert = make_alert()
    record(store, [alert], ["teams"], NOW)
    deliver(store, channels, NOW)
    resolve(store, alert, note="[click](https://evil.example) <at>all</at>")
    assert deliver(store, channels).sent == 1
    card = receiver.requests[1].json()["attachments"][0]["content"]
    runs = _runs(card["body"])
    assert "Resolved" in json.dumps(card) and alert.id in " ".join(runs)
    note = next(run for run in runs if "click" in run)
    assert "https://" not in note  # defanged: no client turns it into a link
    assert "msteams" not in card or "entities" not in card["msteams"]


def _runs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["text"]] if node.get("type") == "TextRun" else []
        return own + [t for value in node.values() for t in _runs(value)]
    if isinstance(node, list):
        return [t for item in node for t in _runs(item)]
    return []

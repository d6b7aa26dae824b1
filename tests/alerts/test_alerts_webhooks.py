"""Generic webhooks against a recording receiver on 127.0.0.1: the payload, Standard Webhooks signatures
(checked with the ``standardwebhooks`` library, not our code), GitHub signatures, the status table,
410 Gone, redirects, and the config errors."""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alerts_support import Receiver, Reply, make_alert, make_config, outbox_rows, record
from click.testing import CliRunner
from standardwebhooks import Webhook, WebhookVerificationError

from monitor import selfmon
from monitor.alerts.outbox import OutboxWorker
from monitor.alerts.routing import channels_for
from monitor.alerts.webhook import WebhookChannel
from monitor.cli import cli
from monitor.events import normalize
from monitor.store import Store

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
OLD_SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
NOW = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)


def hook(receiver: Receiver, **extra: Any) -> dict[str, Any]:
    return {"name": "n8n", "url": receiver.url("/webhook/xano-alerts"), "secret": SECRET, **extra}


def channel_for(receiver: Receiver, clock: Any = None, **extra: Any) -> WebhookChannel:
    config = make_config(webhooks=[hook(receiver, **extra)])
    kwargs = {"clock": clock} if clock is not None else {}
    return WebhookChannel(config.alerts.webhooks[0], config.tz, **kwargs)


def deliver(store: Store, channel: WebhookChannel, now: datetime = NOW) -> Any:
    return OutboxWorker(store, {channel.name: channel}, clock=lambda: now).deliver_due()


def test_standard_webhook_carries_the_alert_and_its_archived_events_and_verifies(
    receiver: Receiver, store: Store
) -> None:
    entry = {
        "id": 4242,
        "created_at": 1772616600000,
        "type": "Delete Table",
        "msg": "Deleted table users",
        "user": {"id": 7, "email": "dana@corp.io"},
        "workspace": {"id": 1, "name": "Main"},
        "branch": {"id": 1, "label": "v1"},
        "extra_key": [1, 2],
    }
    with store.transaction():
        store.archive(normalize("prod", entry), json.dumps(entry), store.head_hash(), NOW)
    alert = make_alert(event_ids=(4242,), suppressed_count=3, severity="critical")
    record(store, [alert], ["webhook:n8n"], NOW)
    config = make_config(webhooks=[hook(receiver)])
    channel = WebhookChannel(
        config.alerts.webhooks[0],
        config.tz,
        events=store.events_by_id,
        rule_titles=lambda rule_id: "Table deleted" if rule_id == alert.rule_id else None,
    )
    report = deliver(store, channel)
    assert report.sent == 1 and not report.failed

    (request,) = receiver.requests
    assert request.path == "/webhook/xano-alerts"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-id"] == alert.id
    payload = Webhook(SECRET).verify(request.raw, request.headers)  # raises when the signature is wrong
    assert payload["type"] == "alert.fired"
    assert datetime.fromisoformat(payload["timestamp"]) == alert.event_time
    data = payload["data"]
    assert data["id"] == alert.id
    assert data["rule"] == {"id": alert.rule_id, "title": "Table deleted"}
    assert (data["severity"], data["title"], data["text"], data["source"]) == (
        "critical",
        alert.title,
        alert.text,
        "prod",
    )
    assert data["event_time"].startswith("2026-03-04T09:30:00")
    assert data["event_time_local"] == "2026-03-04T10:30:00+01:00" and data["timezone"] == "Europe/Berlin"
    assert (data["user"], data["workspace"], data["branch"]) == ("dana@corp.io", "Main", "v1")
    assert data["throttled_count"] == 3 and data["event_ids"] == [4242]
    (event,) = data["events"]
    assert event["id"] == 4242 and event["type"] == "Delete Table" and event["user"] == "dana@corp.io"
    assert event["created_at"].startswith("2026-03-04T09:30:00")
    assert event["raw"] == entry  # the entry as Xano served it, unknown keys included


def test_a_retry_has_the_same_webhook_id_and_a_fresh_valid_signature(
    receiver: Receiver, store: Store
) -> None:
    receiver.push(Reply(503, "busy"))
    # Two attempts a minute apart (both inside the receivers' 5 minute tolerance).
    attempts = iter([datetime.now(UTC) - timedelta(seconds=60), datetime.now(UTC)])
    channel = channel_for(receiver, clock=lambda: next(attempts), previous_secret=OLD_SECRET)
    alert = make_alert()
    record(store, [alert], [channel.name], NOW)
    first = deliver(store, channel)
    assert first.retried == 1 and outbox_rows(store)[0]["status"] == "pending"
    second = deliver(store, channel, NOW + timedelta(minutes=5))
    assert second.sent == 1

    one, two = receiver.requests
    assert one.headers["webhook-id"] == two.headers["webhook-id"] == alert.id
    assert int(two.headers["webhook-timestamp"]) - int(one.headers["webhook-timestamp"]) == 60
    assert one.headers["webhook-signature"] != two.headers["webhook-signature"]
    for request in (one, two):
        # During rotation both the new and the previous secret verify on their own.
        assert len(request.headers["webhook-signature"].split(" ")) == 2
        Webhook(SECRET).verify(request.raw, request.headers)
        Webhook(OLD_SECRET).verify(request.raw, request.headers)
    # A receiver replaying the first attempt's signature with the second's timestamp is refused.
    forged = {**two.headers, "webhook-signature": one.headers["webhook-signature"]}
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(two.raw, forged)


def test_github_mode_signs_the_body_with_hex_hmac_and_sends_static_headers(
    receiver: Receiver, store: Store
) -> None:
    channel = channel_for(
        receiver, signature="github", secret="plain shared secret", headers={"x-make-apikey": "mk-123"}
    )
    record(store, [make_alert()], [channel.name], NOW)
    assert deliver(store, channel).sent == 1
    (request,) = receiver.requests
    expected = hmac.new(b"plain shared secret", request.raw, hashlib.sha256).hexdigest()
    assert request.headers["x-hub-signature-256"] == f"sha256={expected}"
    assert request.headers["x-make-apikey"] == "mk-123"
    assert "webhook-signature" not in request.headers


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, "sent"),
        (202, "sent"),
        (204, "sent"),
        (408, "retried"),
        (425, "retried"),
        (429, "retried"),
        (500, "retried"),
        (502, "retried"),
        (503, "retried"),
        (400, "dead"),
        (401, "dead"),
        (403, "dead"),
        (404, "dead"),
        (413, "dead"),
        (422, "dead"),
    ],
)
def test_status_table(receiver: Receiver, store: Store, status: int, outcome: str) -> None:
    receiver.push(Reply(status, "answer"))
    channel = channel_for(receiver)
    record(store, [make_alert()], [channel.name], NOW)
    report = deliver(store, channel)
    assert report.outcomes[(channel.name, outcome)] == 1, report.errors


def test_429_honours_retry_after(receiver: Receiver, store: Store) -> None:
    receiver.push(Reply(429, "slow down", {"Retry-After": "120"}))
    channel = channel_for(receiver)
    record(store, [make_alert()], [channel.name], NOW)
    deliver(store, channel)
    (row,) = outbox_rows(store)
    assert datetime.fromisoformat(row["next_attempt_at"]) >= NOW + timedelta(seconds=120)


def test_503_honours_a_retry_after_http_date(receiver: Receiver, store: Store) -> None:
    when = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=300), usegmt=True)
    receiver.push(Reply(503, "maintenance", {"Retry-After": when}))
    channel = channel_for(receiver)
    record(store, [make_alert()], [channel.name], NOW)
    deliver(store, channel)
    (row,) = outbox_rows(store)
    assert datetime.fromisoformat(row["next_attempt_at"]) >= NOW + timedelta(seconds=280)


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirects_are_never_followed(receiver: Receiver, store: Store, status: int) -> None:
    receiver.push(Reply(status, "", {"Location": receiver.url("/elsewhere")}))
    channel = channel_for(receiver)
    record(store, [make_alert()], [channel.name], NOW)
    report = deliver(store, channel)
    assert report.dead == 1
    assert [r.path for r in receiver.requests] == ["/webhook/xano-alerts"]  # nothing went to /elsewhere
    assert "redirect" in outbox_rows(store)[0]["last_error"]


def test_410_gone_dead_letters_disables_the_webhook_and_raises_delivery_failing(
    receiver: Receiver, store: Store
) -> None:
    receiver.push(Reply(410, "gone"))
    channel = channel_for(receiver)
    other = Receiver().start()
    try:
        config = make_config(
            webhooks=[hook(receiver), {"name": "other", "url": other.url(), "signature": "none"}]
        )
        channels = {
            "webhook:n8n": channel,
            "webhook:other": WebhookChannel(config.alerts.webhooks[1], config.tz),
        }
        record(store, [make_alert(), make_alert()], ["webhook:n8n"], NOW)
        report = OutboxWorker(store, channels, clock=lambda: NOW).deliver_due()
        assert report.dead == 2
        assert len(receiver.requests) == 1  # disabled after the 410: the second alert was not attempted
        notices = [r.json()["data"] for r in other.requests]
        assert [n["rule"]["id"] for n in notices] == [selfmon.DELIVERY_FAILING]
        assert "HTTP 410 Gone" in notices[0]["text"] and "webhook:n8n" in notices[0]["title"]
    finally:
        other.stop()


def test_a_network_error_is_transient(store: Store) -> None:
    closed = Receiver()
    url = closed.url()
    closed.server.server_close()  # nothing listens on the port any more
    config = make_config(webhooks=[{"name": "down", "url": url, "signature": "none"}])
    channel = WebhookChannel(config.alerts.webhooks[0], config.tz)
    record(store, [make_alert()], [channel.name], NOW)
    report = deliver(store, channel)
    assert report.retried == 1 and "unreachable" in report.errors[0]


def test_routing_by_each_webhook_min_severity(receiver: Receiver) -> None:
    config = make_config(
        webhooks=[
            {"name": "all", "url": receiver.url(), "signature": "none", "min_severity": "low"},
            {"name": "crit", "url": receiver.url(), "signature": "none", "min_severity": "critical"},
        ]
    )
    assert channels_for(make_alert(severity="high"), config) == ["webhook:all"]
    assert channels_for(make_alert(severity="critical"), config) == ["webhook:all", "webhook:crit"]


# --- config errors ------------------------------------------------------------------------------------------


@pytest.fixture
def config_file(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "audit-monitor.yaml"


@pytest.mark.parametrize(
    ("webhook", "message"),
    [
        (
            "name: n8n\n      secret: whsec_MDEyMzQ1Njc4OWFiY2RlZg==",
            "alerts.webhooks[0].url: required key is missing",
        ),
        (
            "name: n8n\n      url: http://n8n.example.com/webhook\n      signature: none",
            "alerts.webhooks[0].url: must be an https:// URL",
        ),
        (
            "name: n8n\n      url: https://n8n.example.com/webhook\n      secret: not-base64!",
            "alerts.webhooks[0].secret: is not a Standard Webhooks secret",
        ),
        (
            "name: n8n\n      url: https://n8n.example.com/webhook\n      signature: hmac\n      secret: x",
            "alerts.webhooks[0].signature: Input should be 'standard', 'github' or 'none'",
        ),
        # Headers the product sets itself (signature, id, framing), in any case: refused, naming the key.
        *(
            (
                f"name: n8n\n      url: https://n8n.example.com/webhook\n      signature: none\n"
                f"      headers: {{{name}: x}}",
                f"alerts.webhooks[0].headers: '{name}' is set by audit-monitor itself",
            )
            for name in (
                "webhook-id",
                "Webhook-Timestamp",
                "webhook-signature",
                "X-Hub-Signature-256",
                "content-type",
                "Content-Length",
                "Host",
                "User-Agent",
                "Transfer-Encoding",
            )
        ),
    ],
)
def test_bad_webhook_config_is_a_located_error_exit_2(config_file: Path, webhook: str, message: str) -> None:
    config_file.write_text(f"timezone: UTC\nalerts:\n  webhooks:\n    - {webhook}\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["--config", str(config_file), "status"])
    assert result.exit_code == 2, result.output
    (line,) = [x for x in result.output.splitlines() if x.strip()]
    assert f"{config_file}:" in line and message in line
    location = line.split("configuration error: ", 1)[1]
    assert location.split(":")[1].isdigit()  # FILE:LINE: key: message
    assert "not-base64" not in result.output  # a secret is never echoed


def test_http_to_loopback_is_allowed_and_a_secret_is_required_when_signing(receiver: Receiver) -> None:
    assert make_config(webhooks=[{"name": "x", "url": "http://localhost:9/x", "signature": "none"}])
    assert make_config(webhooks=[{"name": "x", "url": "http://[::1]:9/x", "signature": "none"}])
    with pytest.raises(Exception, match="signature standard needs secret"):
        make_config(webhooks=[{"name": "x", "url": receiver.url()}])
    with pytest.raises(Exception, match="used twice"):
        make_config(webhooks=[hook(receiver), hook(receiver)])

"""Slack delivery through slack-sdk against a local Web API stub: content, escaping, limits, routing,
the webhook transport and the error classification table (every row, over HTTP)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from alerts_support import (
    BOT_TOKEN,
    Clock,
    RecordingServer,
    SlackStub,
    all_strings,
    api_error,
    free_port,
    make_alert,
    make_config,
    ok,
    outbox_rows,
    ratelimited,
    record,
    redirect,
    server_error,
    slack_config,
)

from monitor.alerts.outbox import DeliveryError, OutboxWorker
from monitor.alerts.slack import (
    HEADER_TEXT_MAX,
    MAX_BLOCKS,
    SECTION_TEXT_MAX,
    SLACK_API_ERRORS,
    SlackChannel,
    slack_escape,
    webhook_status_is_permanent,
)
from monitor.store import Store

NOW = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)
HOSTILE = "<!channel> <!here> <@U123> <http://evil.example|click me> <b>bold</b> & co"


def channel_for(stub: SlackStub, **extra: object) -> SlackChannel:
    config = make_config(slack=slack_config(stub, **extra))
    assert config.alerts.slack is not None
    return SlackChannel(config.alerts.slack, config.tz)


def test_message_carries_every_fact_and_the_ts_is_stored(slack: SlackStub, store: Store) -> None:
    alert = make_alert(
        severity="critical",
        event_time=datetime(2026, 3, 4, 9, 30, tzinfo=UTC),
        event_ids=(41, 42),
        suppressed_count=7,
        fields={"user.email": "dana@corp.io"},
    )
    record(store, [alert], ["slack"], NOW)
    report = OutboxWorker(store, {"slack": channel_for(slack)}, clock=lambda: NOW).deliver_due()
    assert report.sent == 1 and not report.failed

    (post,) = slack.posts()
    assert post.path == "/api/chat.postMessage"
    assert post.headers["Authorization"] == f"Bearer {BOT_TOKEN}"
    body = post.body
    assert body["channel"] == "#sec"
    assert body["unfurl_links"] is False
    text = "\n".join(all_strings(body["blocks"]))
    for fact in (
        "CRITICAL",
        "Table users deleted",
        "xano.db.table-deleted",
        "2026-03-04 10:30:00 CET",  # Europe/Berlin
        "2026-03-04 09:30:00 UTC",
        "dana@corp.io",
        "Main",
        "v1",
        "Deleted table users",
        "41, 42",
        "7 similar matches were throttled",
        alert.id,
    ):
        assert fact in text, fact
    assert "Table users deleted" in body["text"] and "CRITICAL" in body["text"]  # the plain fallback
    (row,) = outbox_rows(store)
    assert row["status"] == "sent" and row["remote_id"] == "1772618400.000001"


def test_hostile_event_text_arrives_inert(slack: SlackStub, store: Store) -> None:
    alert = make_alert(
        title=f"Deleted {HOSTILE}",
        text=HOSTILE,
        context={"user": HOSTILE, "workspace": HOSTILE, "branch": HOSTILE, "msg": HOSTILE},
        fields={"obj.name": HOSTILE},
    )
    record(store, [alert], ["slack"], NOW)
    OutboxWorker(store, {"slack": channel_for(slack)}, clock=lambda: NOW).deliver_due()
    (post,) = slack.posts()
    strings = list(all_strings(post.body))
    for live in ("<!channel>", "<!here>", "<@U123>", "<http://evil.example|click me>", "<b>"):
        assert not any(live in s for s in strings), live
    assert not any("<" in s or ">" in s for s in strings)  # no control character survives anywhere
    joined = "\n".join(strings)
    assert "&lt;!channel&gt;" in joined and "&lt;@U123&gt;" in joined
    assert "&amp; co" in joined
    assert "&lt;!here&gt;" in post.body["text"]  # the notification fallback is escaped too


def test_escape_function() -> None:
    assert slack_escape("a & <b> <!channel>") == "a &amp; &lt;b&gt; &lt;!channel&gt;"


def test_long_and_many_values_are_cut_to_block_kit_limits(slack: SlackStub, store: Store) -> None:
    alert = make_alert(
        title="T" * 500 + "&" * 50,
        text=("x" * 100 + "\n") * 100 + "&<>" * 500,
        event_ids=tuple(range(1, 500)),
        fields={f"field{i}": "v&" * 400 for i in range(40)},
        context={"user": "u" * 5000, "workspace": "w" * 5000, "branch": "b" * 5000, "msg": "m&" * 5000},
    )
    record(store, [alert], ["slack"], NOW)
    report = OutboxWorker(store, {"slack": channel_for(slack)}, clock=lambda: NOW).deliver_due()
    assert report.sent == 1
    blocks = slack.posts()[0].body["blocks"]
    assert len(blocks) <= MAX_BLOCKS
    for block in blocks:
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= HEADER_TEXT_MAX
        if block["type"] == "section":
            if "text" in block:
                assert 0 < len(block["text"]["text"]) <= SECTION_TEXT_MAX
                assert not block["text"]["text"].rstrip("…").endswith(("&am", "&l", "&g", "&"))
            assert len(block.get("fields", [])) <= 10
            assert all(len(f["text"]) <= 2000 for f in block.get("fields", []))
    assert "(+479 more)" in json.dumps(blocks)  # 20 event ids shown, the rest counted


def test_routing_by_severity_to_slack_channels(slack: SlackStub, store: Store) -> None:
    channel = channel_for(slack, routes={"critical": "#sec-oncall"})
    critical = make_alert(severity="critical", title="critical one")
    medium = make_alert(severity="medium", title="medium one")
    record(store, [critical, medium], ["slack"], NOW)
    OutboxWorker(store, {"slack": channel}, clock=lambda: NOW).deliver_due()
    where = {p.body["text"].split(" (")[0]: p.body["channel"] for p in slack.posts()}
    assert where == {"CRITICAL: critical one": "#sec-oncall", "MEDIUM: medium one": "#sec"}


def test_webhook_transport_posts_blocks_and_keeps_the_url_secret(slack: SlackStub, store: Store) -> None:
    config = make_config(slack={"webhook_url": slack.webhook_url, "min_severity": "low"})
    assert config.alerts.slack is not None
    channel = SlackChannel(config.alerts.slack, config.tz)
    assert "SECRET" not in repr(channel)
    first, second = make_alert(), make_alert()
    record(store, [first, second], ["slack"], NOW)
    slack.push(ok(), api_error("no_service", status=404))
    report = OutboxWorker(store, {"slack": channel}, clock=lambda: NOW).deliver_due()
    assert (report.sent, report.dead) == (1, 1)
    assert all(p.path == "/services/T000/B000/SECRETwebhookPATH" for p in slack.posts())
    assert slack.posts()[0].body["blocks"][0]["type"] == "header"
    rows = {r["status"]: r for r in outbox_rows(store)}
    assert rows["sent"]["remote_id"] is None  # a webhook returns no ts
    assert rows["dead"]["last_error"] == "Slack webhook answered HTTP 404 no_service"
    assert not any("SECRET" in e for e in report.errors)


def test_routes_with_a_webhook_are_a_config_error(slack: SlackStub) -> None:
    from monitor.config import ConfigError

    with pytest.raises(ConfigError, match="alerts.slack: routes need token"):
        make_config(slack={"webhook_url": slack.webhook_url, "routes": {"critical": "#x"}})


# --- classification, table-driven over HTTP ---------------------------------------------------------------


@pytest.mark.parametrize(("code", "permanent"), sorted(SLACK_API_ERRORS.items()))
def test_every_slack_error_code_is_classified(slack: SlackStub, code: str, permanent: bool) -> None:
    slack.push(api_error(code))
    with pytest.raises(DeliveryError) as caught:
        channel_for(slack).send(make_alert())
    assert caught.value.permanent is permanent
    assert code in str(caught.value)
    assert BOT_TOKEN not in str(caught.value)


@pytest.mark.parametrize(
    ("reply", "permanent", "retry_after"),
    [
        (ratelimited(31), False, 31.0),  # longer than RATE_LIMIT_WAIT_MAX: back to the outbox
        (api_error("ratelimited", status=429), False, None),  # 429 without Retry-After
        (server_error(500), False, None),
        (server_error(502), False, None),
        (server_error(503), False, None),
        (api_error("internal_error", status=500), False, None),
        (api_error("invalid_auth", status=500), False, None),  # a 5xx is Slack's side whatever the body
        (api_error("some_new_error_code"), True, None),  # unknown: loud now, not 24 h of silent retries
        (api_error("invalid_auth", status=401), True, None),
    ],
)
def test_http_level_outcomes(
    slack: SlackStub, reply: object, permanent: bool, retry_after: float | None
) -> None:
    slack.push(reply)  # type: ignore[arg-type]
    with pytest.raises(DeliveryError) as caught:
        channel_for(slack).send(make_alert())
    assert caught.value.permanent is permanent
    assert caught.value.retry_after == retry_after
    assert "<" not in str(caught.value)  # an HTML error page is never copied into logs or the outbox


def test_connection_refused_is_transient() -> None:
    port = free_port()  # nothing listens there
    config = make_config(
        slack={"token": BOT_TOKEN, "channel": "#sec", "base_url": f"http://127.0.0.1:{port}/api/"}
    )
    assert config.alerts.slack is not None
    with pytest.raises(DeliveryError) as caught:
        SlackChannel(config.alerts.slack, config.tz).send(make_alert())
    assert caught.value.permanent is False
    assert "unreachable" in str(caught.value)


@pytest.mark.parametrize(
    ("status", "permanent"),
    [
        (400, True),
        (403, True),
        (404, True),
        (410, True),
        (408, False),
        (429, False),
        (500, False),
        (503, False),
    ],
)
def test_webhook_statuses_over_http(slack: SlackStub, status: int, permanent: bool) -> None:
    assert webhook_status_is_permanent(status) is permanent
    config = make_config(slack={"webhook_url": slack.webhook_url})
    assert config.alerts.slack is not None
    # 70 s: longer than the channel waits out itself, so the classification reaches the outbox.
    headers = {"Retry-After": "70"} if status == 429 else {}
    slack.push(api_error("invalid_payload", status=status, **headers))
    with pytest.raises(DeliveryError) as caught:
        SlackChannel(config.alerts.slack, config.tz).send(make_alert())
    assert caught.value.permanent is permanent
    assert caught.value.retry_after == (70.0 if status == 429 else None)


def test_ratelimited_waits_for_retry_after(slack: SlackStub, store: Store, clock: Clock) -> None:
    record(store, [make_alert()], ["slack"], clock())
    slack.push(ratelimited(120))
    worker = OutboxWorker(store, {"slack": channel_for(slack)}, clock=clock)
    assert worker.deliver_due().retried == 1
    clock.advance(timedelta(seconds=119))
    assert worker.deliver_due().sent == 0 and len(slack.posts()) == 1  # still waiting
    clock.advance(timedelta(seconds=2))
    assert worker.deliver_due().sent == 1 and len(slack.posts()) == 2


def test_token_never_in_repr(slack: SlackStub) -> None:
    assert BOT_TOKEN not in repr(channel_for(slack))


@pytest.mark.parametrize("transport", ["web-api", "webhook"])
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_a_failed_delivery_and_never_followed(
    slack: SlackStub, elsewhere: RecordingServer, store: Store, transport: str, status: int
) -> None:
    # Following a 302 would turn the POST into a GET to another host, with the bot token in Authorization,
    # and a 200 from there would mark the alert sent although nothing was posted.
    extra = (
        {"token": None, "channel": None, "webhook_url": slack.webhook_url} if transport == "webhook" else {}
    )
    config = make_config(slack={k: v for k, v in slack_config(slack, **extra).items() if v is not None})
    assert config.alerts.slack is not None
    slack.push(redirect(elsewhere.url, status))
    alert = make_alert()
    record(store, [alert], ["slack"], NOW)
    report = OutboxWorker(
        store, {"slack": SlackChannel(config.alerts.slack, config.tz)}, clock=lambda: NOW
    ).deliver_due()
    assert elsewhere.requests == []
    assert len(slack.posts()) == 1
    assert report.sent == 0 and report.dead == 1
    [row] = [r for r in outbox_rows(store) if r["alert_id"] == alert.id]
    assert row["status"] == "dead" and row["remote_id"] is None
    assert f"HTTP {status}" in row["last_error"] and "redirect" in row["last_error"]
    assert BOT_TOKEN not in row["last_error"] and "SECRETwebhookPATH" not in row["last_error"]

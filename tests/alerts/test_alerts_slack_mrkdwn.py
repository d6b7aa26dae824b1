"""Event text cannot format a Slack message: ``*``, ``_``, ``~`` and backticks from event data arrive in
``plain_text`` objects (Slack has no escape for them inside mrkdwn), alerts and digests alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alerts_support import SlackStub, make_alert, make_config, record, slack_config

from monitor.alerts.outbox import OutboxWorker
from monitor.alerts.slack import SlackChannel
from monitor.store import Store

NOW = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)
MARKUP = "*bold* _italic_ ~strike~ `code` ```block```"


def text_objects(node: Any) -> list[dict[str, Any]]:
    """Every Block Kit text object ({type: mrkdwn|plain_text, text})."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if node.get("type") in ("mrkdwn", "plain_text") and isinstance(node.get("text"), str):
            found.append(node)
        for value in node.values():
            found.extend(text_objects(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(text_objects(item))
    return found


def deliver(slack: SlackStub, store: Store, alerts: list[Any], digest_after: int) -> list[dict[str, Any]]:
    config = make_config(slack=slack_config(slack), digest_after=digest_after)
    assert config.alerts.slack is not None
    record(store, alerts, ["slack"], NOW)
    channel = SlackChannel(config.alerts.slack, config.tz)
    report = OutboxWorker(
        store, {"slack": channel}, clock=lambda: NOW, digest_after=digest_after
    ).deliver_due()
    assert not report.failed, report.errors
    return [p.body for p in slack.posts()]


def assert_inert(body: dict[str, Any]) -> None:
    objects = text_objects(body["blocks"])
    carrying = [o for o in objects if "bold" in o["text"] or "strike" in o["text"] or "code" in o["text"]]
    assert carrying, "the event text is in the message"
    for obj in carrying:
        assert obj["type"] == "plain_text", obj


def test_markup_in_event_text_does_not_format_an_alert(slack: SlackStub, store: Store) -> None:
    alert = make_alert(
        title=f"Deleted {MARKUP}",
        text=f"Rule text {MARKUP}",
        context={"user": MARKUP, "workspace": MARKUP, "branch": MARKUP, "msg": MARKUP, "type": MARKUP},
        fields={"obj.name": MARKUP},
    )
    (body,) = deliver(slack, store, [alert], digest_after=10)
    assert_inert(body)


def test_markup_in_event_text_does_not_format_a_digest(slack: SlackStub, store: Store) -> None:
    alerts = [
        make_alert(title=f"{i} {MARKUP}", event_time=NOW - timedelta(minutes=i), context={"user": MARKUP})
        for i in range(4)
    ]
    (body,) = deliver(slack, store, alerts, digest_after=2)
    assert_inert(body)


LINKISH = "see https://evil.example/login #general @channel <!here> <@U123|boss> [click](https://x.io)"


@pytest.mark.parametrize("transport", ["web-api", "webhook"])
@pytest.mark.parametrize("digest_after", [10, 2])
def test_no_text_object_turns_event_text_into_links_or_mentions(
    slack: SlackStub, store: Store, transport: str, digest_after: int
) -> None:
    """Slack links bare URLs and #channel names and parses mentions in mrkdwn unless it is ``verbatim``.
    Event text sits in plain_text objects; every mrkdwn object (our labels, rule ids, source names) is
    verbatim, `<` `>` `&` arrive escaped, and the notification fallback text is not read as mrkdwn."""
    alerts = [
        make_alert(title=f"{i} {LINKISH}", event_time=NOW - timedelta(minutes=i), context={"user": LINKISH})
        for i in range(3)
    ]
    extra = (
        {"token": None, "channel": None, "webhook_url": slack.webhook_url} if transport == "webhook" else {}
    )
    config = make_config(
        slack={k: v for k, v in slack_config(slack, **extra).items() if v is not None},
        digest_after=digest_after,
    )
    assert config.alerts.slack is not None
    record(store, alerts, ["slack"], NOW)
    report = OutboxWorker(
        store,
        {"slack": SlackChannel(config.alerts.slack, config.tz)},
        clock=lambda: NOW,
        digest_after=digest_after,
    ).deliver_due()
    assert not report.failed, report.errors
    bodies = [p.body for p in slack.posts()]
    assert len(bodies) == (1 if digest_after == 2 else 3)
    for body in bodies:
        objects = text_objects(body["blocks"])
        mrkdwn = [o for o in objects if o["type"] == "mrkdwn"]
        assert mrkdwn and all(o.get("verbatim") is True for o in mrkdwn), mrkdwn
        carrying = [o for o in objects if "evil.example" in o["text"]]
        assert carrying and all(o["type"] == "plain_text" for o in carrying)
        for obj in carrying:
            assert "<!here>" not in obj["text"] and "&lt;!here&gt;" in obj["text"]
        assert "<!here>" not in body["text"]
        if digest_after == 10:  # an alert's fallback quotes its title; a digest's only counts
            assert "&lt;!here&gt;" in body["text"]
        assert body["mrkdwn"] is False

"""Microsoft Teams (Workflows webhook) against a recording receiver on 127.0.0.1: the Adaptive Card, hostile
event text arriving inert, the 28 KB limit, digests as one card, and the status table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alerts_support import Receiver, Reply, all_strings, make_alert, make_config, record

from monitor.alerts.outbox import OutboxWorker
from monitor.alerts.routing import channels_for
from monitor.alerts.teams import CARD_MAX_BYTES, TeamsChannel, card_size
from monitor.store import Store

NOW = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)
HOSTILE = (
    "<at>Everyone</at> <!channel> @channel [click me](https://evil.example/x) **bold** _it_ "
    "<a href='https://evil.example'>html</a> <img src=x onerror=alert(1)> www.evil.example"
)


def channel_for(receiver: Receiver) -> TeamsChannel:
    config = make_config(teams={"webhook_url": receiver.url("/workflows/abc?sig=SECRETsig")}, digest_after=3)
    assert config.alerts.teams is not None
    return TeamsChannel(config.alerts.teams, config.tz)


def deliver(store: Store, channel: TeamsChannel, digest_after: int = 10) -> Any:
    return OutboxWorker(store, {"teams": channel}, clock=lambda: NOW, digest_after=digest_after).deliver_due()


def card_of(request: Any) -> dict[str, Any]:
    message = request.json()
    assert message["type"] == "message"
    (attachment,) = message["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    return card


def blocks(card: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == kind:
                found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(card)
    return found


def test_the_card_carries_what_the_slack_alert_carries(receiver: Receiver, store: Store) -> None:
    alert = make_alert(severity="critical", event_ids=(41, 42), suppressed_count=4, fields={"table": "users"})
    record(store, [alert], ["teams"], NOW)
    assert deliver(store, channel_for(receiver)).sent == 1
    (request,) = receiver.requests
    assert request.path == "/workflows/abc?sig=SECRETsig"
    text = "\n".join(all_strings(card_of(request)["body"]))
    for fact in (
        "CRITICAL",
        "Table users deleted",
        "Someone deleted the table users.",
        "xano.db.table-deleted",
        "2026-03-04 10:30:00 CET",
        "2026-03-04 09:30:00 UTC",
        "prod",
        "dana@corp.io",
        "Main",
        "v1",
        "Deleted table users",
        "41, 42",
        "4 similar matches were throttled",
        "table",
        "users",
        alert.id,
    ):
        assert fact in text, fact


def test_hostile_event_text_arrives_inert(receiver: Receiver, store: Store) -> None:
    alert = make_alert(
        title=f"Deleted {HOSTILE}",
        text=HOSTILE,
        context={"user": HOSTILE, "workspace": HOSTILE, "branch": HOSTILE, "msg": HOSTILE},
        fields={"note": HOSTILE},
    )
    record(store, [alert], ["teams"], NOW)
    assert deliver(store, channel_for(receiver)).sent == 1
    card = card_of(receiver.requests[0])
    # Markdown-capable elements carry none of the event's text; TextRuns (plain text) carry it.
    for block in blocks(card, "TextBlock") + blocks(card, "FactSet"):
        for value in all_strings(block):
            assert "evil" not in value and "<at>" not in value and "**" not in value
    runs = [run["text"] for run in blocks(card, "TextRun")]
    assert any("<at>Everyone</at>" in run for run in runs)  # shown as text ...
    assert "entities" not in str(card.get("msteams"))  # ... with no mention entity to resolve it
    for run in runs:
        assert "https://" not in run and "www.evil" not in run  # nothing a client would auto-link
    assert any("https:\u2060//evil.example" in run for run in runs)  # the text itself is still readable
    assert not blocks(card, "Action.OpenUrl") and "selectAction" not in str(card)


def test_a_huge_alert_is_cut_under_28_kb(receiver: Receiver, store: Store) -> None:
    big = "x" * 5000
    alert = make_alert(
        text=big,
        context={"user": big, "workspace": big, "branch": big, "msg": big},
        fields={f"f{i}": big for i in range(40)},
        event_ids=tuple(range(1, 500)),
    )
    record(store, [alert], ["teams"], NOW)
    assert deliver(store, channel_for(receiver)).sent == 1
    (request,) = receiver.requests
    assert len(request.raw) <= CARD_MAX_BYTES
    assert alert.id in "\n".join(all_strings(card_of(request)["body"]))  # the footer survives the cuts


def test_a_burst_is_one_card(receiver: Receiver, store: Store) -> None:
    alerts = [make_alert(title=f"alert {i}", event_time=NOW - timedelta(minutes=i)) for i in range(60)]
    record(store, alerts, ["teams"], NOW)
    report = deliver(store, channel_for(receiver), digest_after=10)
    assert report.sent == 60 and report.digests == 1
    (request,) = receiver.requests
    text = "\n".join(all_strings(card_of(request)["body"]))
    assert "60 alerts" in text and "20 more alerts" in text
    assert card_size(request.json()) <= CARD_MAX_BYTES


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(200, "sent"), (202, "sent"), (400, "dead"), (404, "dead"), (429, "retried"), (502, "retried")],
)
def test_status_table(receiver: Receiver, store: Store, status: int, outcome: str) -> None:
    receiver.push(Reply(status, "answer"))
    record(store, [make_alert()], ["teams"], NOW)
    report = deliver(store, channel_for(receiver))
    assert report.outcomes[("teams", outcome)] == 1, report.errors
    assert "SECRETsig" not in " ".join(report.errors)


def test_teams_routes_high_by_default_and_refuses_a_remote_http_url(receiver: Receiver) -> None:
    config = make_config(teams={"webhook_url": receiver.url()})
    assert "teams" not in channels_for(make_alert(severity="medium"), config)
    assert "teams" in channels_for(make_alert(severity="high"), config)
    with pytest.raises(Exception, match="must be an https:// URL") as caught:
        make_config(
            teams={"webhook_url": "http://prod-01.westeurope.logic.azure.com/workflows/x?sig=SECRETsig"}
        )
    assert "SECRETsig" not in str(caught.value)

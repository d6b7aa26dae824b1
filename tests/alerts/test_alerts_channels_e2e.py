"""The new channels end to end: the simulator over HTTP -> poller -> rules -> outbox -> receivers on 127.0.0.1
(webhook, Teams, PagerDuty) and the Slack stub, through Monitor.run_once and `run --once` in a subprocess."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alerts_support import BOT_TOKEN, Receiver, Reply, SlackStub, ok, ratelimited, slack_config
from standardwebhooks import Webhook

from monitor.alerts.routing import channels_for
from monitor.config import Config, parse_config
from monitor.daemon import Monitor
from monitor.simulator import Simulator

SECRET = "whsec_" + base64.b64encode(b"e2e-secret-0123456789abcdef-0123").decode()


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    start = datetime.now(UTC) - timedelta(days=10)
    with Simulator(seed=5, history_start=start, events_per_day=150, live_background=False) as simulator:
        yield simulator


@pytest.fixture
def teams() -> Iterator[Receiver]:
    server = Receiver(Reply(202, "")).start()
    yield server
    server.stop()


@pytest.fixture
def pagerduty() -> Iterator[Receiver]:
    server = Receiver(Reply(202, '{"status":"success"}')).start()
    yield server
    server.stop()


def config_for(sim: Simulator, state: Path, alerts: dict[str, Any]) -> Config:
    data = {
        "timezone": "Europe/Berlin",
        "state": {"path": str(state)},
        "sources": [{"name": "sim", "base_url": sim.base_url, "token": sim.token, "workspace_id": 1}],
        "alerts": {"digest_after": 100000, **alerts},
        "server": {"listen": ""},
        "rules": {"lists": {"allowed_email_domains": ["northwind.io", "northwind-labs.de"]}},
    }
    return parse_config(json.dumps(data), "test.yaml", {})


def delivered_ids(receiver: Receiver, channel: str) -> list[str]:
    """The alert id of every request the receiver answered 2xx (the first webhook one got a 503)."""
    ids: list[str] = []
    for index, request in enumerate(receiver.requests):
        if channel == "webhook" and index == 0:
            continue
        if channel == "webhook":
            ids.append(request.headers["webhook-id"])
        elif channel == "pagerduty":
            ids.append(request.json()["dedup_key"])
        else:
            footer = json.dumps(request.json()["attachments"][0]["content"]["body"][-1])
            match = re.search(r"alert ([0-9a-f]{32})", footer)
            assert match, footer
            ids.append(match.group(1))
    return ids


def test_every_planted_incident_reaches_each_routed_channel_once_per_alert_id(
    sim: Simulator, receiver: Receiver, teams: Receiver, pagerduty: Receiver, tmp_path: Path
) -> None:
    receiver.push(Reply(503, "warming up"))  # the first webhook attempt fails; its retry must match it
    config = config_for(
        sim,
        tmp_path / "e2e.db",
        {
            "webhooks": [{"name": "n8n", "url": receiver.url(), "secret": SECRET, "min_severity": "low"}],
            "teams": {"webhook_url": teams.url("/workflows/x?sig=s"), "min_severity": "high"},
            "pagerduty": {"routing_key": "PD-KEY", "base_url": pagerduty.url(""), "min_severity": "critical"},
        },
    )
    monitor = Monitor(config)
    try:
        first = monitor.run_once()
        assert all(p.ok for p in first.polls)
        assert first.delivery.retried == 1  # the 503; the webhook's other alerts wait for the same retry
        later = datetime.now(UTC) + timedelta(hours=1)
        monitor.outbox.clock = lambda: later
        second = monitor.outbox.deliver_due()
        assert not second.failed, second.errors
        alert_ids = [row[0] for row in monitor.store.conn.execute("SELECT id FROM alerts").fetchall()]
        alerts = [a for a in (monitor.store.load_alert(i) for i in alert_ids) if a is not None]
        expected = {
            name: {a.id for a in alerts if name in channels_for(a, config)} for name in ("teams", "pagerduty")
        }
        expected["webhook"] = {a.id for a in alerts if "webhook:n8n" in channels_for(a, config)}
        # Every planted incident fired, and its alerts are among those routed.
        for incident in sim.incidents:
            fired = [a for a in alerts if set(incident.event_ids) & set(a.event_ids)]
            assert fired, incident.kind
            assert {a.id for a in fired} <= expected["webhook"]
    finally:
        monitor.close()
    restarted = Monitor(config)  # a restart sends nothing again
    try:
        assert restarted.run_once().ok
    finally:
        restarted.close()

    assert expected["pagerduty"] and expected["teams"] - expected["pagerduty"]
    for name, server in (("webhook", receiver), ("teams", teams), ("pagerduty", pagerduty)):
        counts = Counter(delivered_ids(server, name))
        assert set(counts) == expected[name], name
        assert set(counts.values()) == {1}, name  # exactly once per alert id
    retried = receiver.requests[0].headers["webhook-id"]
    again = [r for r in receiver.requests[1:] if r.headers["webhook-id"] == retried]
    assert len(again) == 1
    # Signed for its own attempt (the same second may give the same signature; test_alerts_webhooks.py
    # checks a later attempt gets a new one).
    Webhook(SECRET).verify(again[0].raw, again[0].headers)


def test_webhooks_and_pagerduty_never_digest_and_pagerduty_carries_the_rules_title(
    sim: Simulator, receiver: Receiver, pagerduty: Receiver, tmp_path: Path
) -> None:
    """A backfill makes far more alerts due in one pass than digest_after (2): Slack, email and Teams would
    send one digest; a webhook and PagerDuty get one request per alert, each with its own id. PagerDuty's
    custom_details name the loaded rule's title (as the webhook's data does), not null."""
    config = config_for(
        sim,
        tmp_path / "nodigest.db",
        {
            "digest_after": 2,
            "webhooks": [{"name": "n8n", "url": receiver.url(), "signature": "none", "min_severity": "low"}],
            "pagerduty": {"routing_key": "PD-KEY", "base_url": pagerduty.url(""), "min_severity": "low"},
        },
    )
    monitor = Monitor(config)
    try:
        outcome = monitor.run_once()
        assert outcome.ok, outcome.delivery.errors
        alert_ids = [row[0] for row in monitor.store.conn.execute("SELECT id FROM alerts").fetchall()]
        alerts = [a for a in (monitor.store.load_alert(i) for i in alert_ids) if a is not None]
        titles = {rule.id: rule.title for rule in monitor.ruleset.all_rules}
    finally:
        monitor.close()
    routed = {a.id for a in alerts if "pagerduty" in channels_for(a, config)}
    assert len(routed) > 2 * 2  # a burst well past digest_after
    hook_ids = [request.headers["webhook-id"] for request in receiver.requests]
    assert sorted(hook_ids) == sorted({a.id for a in alerts if "webhook:n8n" in channels_for(a, config)})
    events = [request.json() for request in pagerduty.requests]
    assert sorted(e["dedup_key"] for e in events) == sorted(routed)  # one event per alert, none combined
    by_id = {a.id: a for a in alerts}
    for event in events:
        rule = event["payload"]["custom_details"]["rule"]
        assert rule["id"] == by_id[event["dedup_key"]].rule_id
        assert rule["title"] == titles.get(rule["id"]), rule  # None only for monitor.* notices
    assert any(e["payload"]["custom_details"]["rule"]["title"] for e in events)
    for request in receiver.requests:
        data = request.json()["data"]
        assert data["rule"]["title"] == titles.get(data["rule"]["id"])


def test_run_once_exits_0_when_slack_rate_limits_a_burst_and_everything_arrives_in_order(
    sim: Simulator, slack: SlackStub, tmp_path: Path
) -> None:
    path = tmp_path / "audit-monitor.yaml"
    config = {
        "timezone": "Europe/Berlin",
        "state": {"path": str(tmp_path / "burst.db")},
        "sources": [
            {"name": "sim", "base_url": sim.base_url, "token": "${XANO_META_TOKEN}", "workspace_id": 1}
        ],
        "alerts": {
            "digest_after": 100000,
            "slack": {**slack_config(slack, min_severity="high"), "token": "${T}"},
        },
        "server": {"listen": ""},
    }
    path.write_text(json.dumps(config), encoding="utf-8")
    # Slack refuses every other message for a second, as it does above ~1 message per second.
    slack.push(*[reply for _ in range(4) for reply in (ok(), ratelimited(1))])
    env = {"XANO_META_TOKEN": sim.token, "T": BOT_TOKEN, "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "--config", str(path), "run", "--once"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    texts = [p.body["text"] for p in slack.posts()]
    assert len(texts) >= 9  # the burst was longer than the four refusals
    refused = {1, 3, 5, 7}
    delivered = [t for i, t in enumerate(texts) if i not in refused]
    assert len(set(delivered)) == len(delivered)  # each alert once
    for i in refused:
        assert texts[i] == texts[i + 1]  # a refused message is sent again before the next one: order holds

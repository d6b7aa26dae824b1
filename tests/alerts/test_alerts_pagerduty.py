"""PagerDuty Events API v2 against a recording receiver on 127.0.0.1 (``base_url`` points at it)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from alerts_support import Receiver, Reply, make_alert, make_config, record

from monitor.alerts.outbox import OutboxWorker
from monitor.alerts.pagerduty import SUMMARY_MAX, PagerDutyChannel
from monitor.alerts.routing import channels_for
from monitor.store import Store

ROUTING_KEY = "R0UT1NGKEY-SECRET-0123456789abcdef"
NOW = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)


def channel_for(receiver: Receiver) -> PagerDutyChannel:
    config = make_config(pagerduty={"routing_key": ROUTING_KEY, "base_url": receiver.url("")})
    assert config.alerts.pagerduty is not None
    return PagerDutyChannel(config.alerts.pagerduty, config.tz)


def deliver(store: Store, channel: PagerDutyChannel) -> Any:
    return OutboxWorker(store, {"pagerduty": channel}, clock=lambda: NOW).deliver_due()


@pytest.mark.parametrize(
    ("severity", "mapped"),
    [("critical", "critical"), ("high", "error"), ("medium", "warning"), ("low", "info")],
)
def test_trigger_event_with_dedup_key_and_mapped_severity(
    receiver: Receiver, store: Store, severity: str, mapped: str
) -> None:
    receiver.default = Reply(202, '{"status":"success","dedup_key":"x"}')
    alert = make_alert(severity=severity, title="T" * 3000, suppressed_count=2)
    record(store, [alert], ["pagerduty"], NOW)
    report = deliver(store, channel_for(receiver))
    assert report.sent == 1 and not report.failed
    (request,) = receiver.requests
    assert request.path == "/v2/enqueue"
    event = request.json()
    assert event["routing_key"] == ROUTING_KEY
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == alert.id
    payload = event["payload"]
    assert payload["severity"] == mapped and payload["source"] == "prod"
    assert len(payload["summary"]) <= SUMMARY_MAX and payload["summary"].startswith(severity.upper())
    details = payload["custom_details"]
    assert details["id"] == alert.id and details["rule"]["id"] == alert.rule_id
    assert details["user"] == "dana@corp.io" and details["throttled_count"] == 2
    assert store.conn.execute("SELECT remote_id FROM outbox").fetchone()[0] == alert.id


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (202, "sent"),
        (400, "dead"),
        (403, "dead"),
        (404, "dead"),
        (429, "retried"),
        (500, "retried"),
        (503, "retried"),
    ],
)
def test_status_table(receiver: Receiver, store: Store, status: int, outcome: str) -> None:
    receiver.push(Reply(status, '{"status":"x"}'))
    record(store, [make_alert()], ["pagerduty"], NOW)
    report = deliver(store, channel_for(receiver))
    assert report.outcomes[("pagerduty", outcome)] == 1, report.errors
    assert ROUTING_KEY not in " ".join(report.errors)


def test_default_routes_only_critical_to_pagerduty(receiver: Receiver) -> None:
    config = make_config(pagerduty={"routing_key": ROUTING_KEY, "base_url": receiver.url("")})
    assert "pagerduty" not in channels_for(make_alert(severity="high"), config)
    assert "pagerduty" in channels_for(make_alert(severity="critical"), config)
    with pytest.raises(Exception, match="must be an https:// URL"):
        make_config(pagerduty={"routing_key": ROUTING_KEY, "base_url": "http://events.pagerduty.com"})

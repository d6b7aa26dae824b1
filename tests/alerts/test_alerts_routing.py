"""Routing: the global alerts.min_severity, then each channel's min_severity; console is the default only
when nothing else is configured. Checked as a table and end to end through the real channels."""

from __future__ import annotations

import pytest
from alerts_support import (
    Clock,
    SlackStub,
    SmtpServer,
    email_config,
    make_alert,
    make_config,
    slack_config,
)

from monitor.alerts.email import EmailChannel
from monitor.alerts.outbox import OutboxWorker
from monitor.alerts.routing import channels_for
from monitor.alerts.slack import SlackChannel
from monitor.store import Store

SLACK = {"token": "xoxb-x", "channel": "#sec", "min_severity": "medium"}
EMAIL = {
    "smtp": {"host": "mail.example.com"},
    "from": "m@example.com",
    "to": ["s@example.com"],
    "min_severity": "high",
}


@pytest.mark.parametrize(
    ("alerts", "severity", "expected"),
    [
        ({}, "info", []),  # below the global default floor (low)
        ({}, "low", ["console"]),  # nothing configured: the console
        ({"min_severity": "info"}, "info", ["console"]),
        ({"slack": SLACK}, "low", []),  # below slack's own floor; console is off when slack is set
        ({"slack": SLACK}, "medium", ["slack"]),
        ({"slack": SLACK, "email": EMAIL}, "medium", ["slack"]),
        ({"slack": SLACK, "email": EMAIL}, "high", ["slack", "email"]),
        ({"slack": SLACK, "email": EMAIL}, "critical", ["slack", "email"]),
        ({"slack": SLACK, "console": True}, "low", ["console"]),
        ({"slack": SLACK, "console": True}, "high", ["console", "slack"]),
        ({"console": False}, "critical", []),
        (
            {"min_severity": "critical", "slack": {**SLACK, "min_severity": "info"}},
            "high",
            [],
        ),  # global first
    ],
)
def test_channels_for(alerts: dict[str, object], severity: str, expected: list[str]) -> None:
    config = make_config(**_kwargs(alerts))
    assert channels_for(make_alert(severity=severity), config) == expected


def _kwargs(alerts: dict[str, object]) -> dict[str, object]:
    kwargs = dict(alerts)
    if "min_severity" not in kwargs:
        kwargs["min_severity"] = "low"
    return kwargs


def test_end_to_end_each_channel_gets_what_it_asked_for(
    slack: SlackStub, smtp: SmtpServer, store: Store, clock: Clock
) -> None:
    config = make_config(
        slack=slack_config(slack, min_severity="medium", routes={"critical": "#oncall"}),
        email={**email_config(smtp), "min_severity": "high"},
    )
    assert config.alerts.slack is not None and config.alerts.email is not None
    alerts = [make_alert(severity=s, title=f"{s} alert") for s in ("low", "medium", "high", "critical")]
    with store.transaction():
        for alert in alerts:
            store.record_alert(alert, channels_for(alert, config), clock())
    worker = OutboxWorker(
        store,
        {
            "slack": SlackChannel(config.alerts.slack, config.tz),
            "email": EmailChannel(config.alerts.email, config.tz),
        },
        clock=clock,
    )
    assert worker.deliver_due().sent == 5
    slack_seen = sorted((p.body["channel"], p.body["text"].split(":")[0]) for p in slack.posts())
    assert slack_seen == [("#oncall", "CRITICAL"), ("#sec", "HIGH"), ("#sec", "MEDIUM")]
    assert sorted(m["Subject"] for m in smtp.recorder.messages) == [
        "[CRITICAL] critical alert (prod)",
        "[HIGH] high alert (prod)",
    ]
    assert store.alert_count() == 4  # the low alert is recorded (for the report) but goes nowhere

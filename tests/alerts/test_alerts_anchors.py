"""Anchor publishing (``anchors: {every, to}``): the daemon sends the chain head off the machine through the
outbox, to the real SMTP server (aiosmtpd) and to a webhook receiver that checks the Standard Webhooks
signature with the ``standardwebhooks`` library; the published anchor then passes ``verify --anchor``
(a real subprocess), and fails it once rows are cut from the end of the archive."""

from __future__ import annotations

import base64
import io
import json
import secrets
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
import yaml
from alerts_support import Receiver, Reply, SmtpServer, email_config
from prometheus_client import generate_latest
from standardwebhooks import Webhook

from monitor.alerts.model import ANCHOR_RULE
from monitor.config import ConfigError, parse_config
from monitor.daemon import Monitor
from monitor.report import Period, compute_figures
from monitor.simulator import Simulator
from monitor.status import render_status_data, status_data

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
START = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
def sim(clock: Clock) -> Iterator[Simulator]:
    with Simulator(
        seed=3, clock=clock, history_start=START - timedelta(days=2), events_per_day=30, live_background=False
    ) as simulator:
        yield simulator


def _config_data(tmp_path: Path, sim: Simulator, smtp: SmtpServer, receiver: Receiver) -> dict[str, Any]:
    return {
        "timezone": "Europe/Berlin",
        "state": {"path": str(tmp_path / "archive.db")},
        "sources": [{"name": "sim", "base_url": sim.base_url, "token": sim.token, "plan_retention": "30d"}],
        "alerts": {
            "console": False,
            # Alerts go nowhere here (min_severity above every rule's): what arrives is the anchor only.
            "email": {**email_config(smtp), "min_severity": "critical"},
            "webhooks": [
                {
                    "name": "vault",
                    "url": receiver.url("/anchors"),
                    "secret": SECRET,
                    "min_severity": "critical",
                }
            ],
        },
        "anchors": {"every": "1d", "to": ["email", "webhook vault"]},
        "rules": {"paths": []},
        "server": {"listen": ""},
    }


def _monitor(data: dict[str, Any], clock: Clock) -> Monitor:
    return Monitor(parse_config(json.dumps(data), "test.yaml", {}), clock=clock, stdout=io.StringIO())


def _anchor_messages(smtp: SmtpServer) -> list[EmailMessage]:
    return [m for m in smtp.recorder.messages if m["X-Audit-Monitor-Rule"] == ANCHOR_RULE]


def _verify(tmp_path: Path, data: dict[str, Any], anchor_file: Path) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "verify.yaml"
    config.write_text(yaml.safe_dump({"state": data["state"]}), encoding="utf-8")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "monitor.cli",
            "--config",
            str(config),
            "verify",
            "--anchor",
            str(anchor_file),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin"},
    )


def test_the_daemon_publishes_the_head_by_email_and_signed_webhook_and_it_verifies(
    tmp_path: Path, sim: Simulator, smtp: SmtpServer, receiver: Receiver, clock: Clock
) -> None:
    data = _config_data(tmp_path, sim, smtp, receiver)
    monitor = _monitor(data, clock)
    try:
        assert monitor.poll(monitor.config.sources[0]).ok
        head_seq, head_hash = monitor.store.head()
        events = monitor.store.event_count()
        report = monitor.deliver()
        assert report.sent == 2 and not report.failed

        # email: one message, the anchor in the body and attached, parsed with the strict policy
        (message,) = _anchor_messages(smtp)
        strict = BytesParser(policy=policy.strict).parsebytes(message.as_bytes())
        assert (
            strict["Message-ID"] and strict["Subject"] == f"Chain anchor: row {head_seq} of the audit archive"
        )
        (attachment,) = list(strict.iter_attachments())
        assert attachment.get_content_type() == "application/json"
        assert attachment.get_filename() == f"audit-monitor-anchor-{head_seq}.json"
        anchor = json.loads(attachment.get_content())
        assert (anchor["seq"], anchor["hash"], anchor["events"]) == (head_seq, head_hash, events)
        assert anchor["hash"] in strict.get_body(("plain",)).get_content()

        # webhook: a distinct event type, signed like every delivery, carrying the same anchor
        (delivery,) = receiver.requests
        Webhook(SECRET).verify(delivery.raw, delivery.headers)  # raises when the signature is wrong
        body = delivery.json()
        assert body["type"] == "chain.anchor" and body["data"] == anchor

        # the published anchor passes verify --anchor, and fails it once rows are cut from the end
        anchor_file = tmp_path / attachment.get_filename()
        anchor_file.write_bytes(attachment.get_content())
        intact = _verify(tmp_path, data, anchor_file)
        assert intact.returncode == 0, intact.stderr
        assert "OK: present with the anchored hash" in intact.stdout

        # not again before `every`, and not for the same head after it (no duplicates)
        clock.now += timedelta(hours=1)
        assert monitor.deliver().sent == 0
        clock.now += timedelta(days=1)
        assert monitor.deliver().sent == 0
        assert len(_anchor_messages(smtp)) == 1 and len(receiver.requests) == 1

        # new events: the next anchor after `every` names the new head
        sim.add_event("Delete Table", created_at=clock.now - timedelta(minutes=1))
        assert monitor.poll(monitor.config.sources[0]).ok
        clock.now += timedelta(days=1)
        assert monitor.deliver().sent == 2
        assert len(receiver.requests) == 2 and receiver.requests[1].json()["data"]["seq"] > head_seq

        # anchor notices are not alerts: the report's detection and response figures leave them out
        figures = compute_figures(
            monitor.store, monitor.config, Period.parse("2026-03", monitor.config.tz), now=clock.now
        )
        assert all(a.rule_id != ANCHOR_RULE for a in figures.alert_counts) and not figures.deliveries
    finally:
        monitor.close()

    with sqlite3.connect(tmp_path / "archive.db") as conn:
        conn.execute("DELETE FROM events WHERE seq > ?", (head_seq - 3,))
    cut = _verify(tmp_path, data, anchor_file)
    assert cut.returncode == 1 and f"row {head_seq} is missing" in cut.stderr


def test_anchor_notices_are_not_counted_as_alerts_by_status_or_metrics(
    tmp_path: Path, sim: Simulator, smtp: SmtpServer, receiver: Receiver, clock: Clock
) -> None:
    """They sit in the alerts table to travel through the outbox; `status` and /metrics counted them as
    alerts (one "monitor.chain_anchor" alert per anchor published)."""
    data = _config_data(tmp_path, sim, smtp, receiver)
    data["rules"] = {}  # the bundled pack: the simulator's history fires real alerts beside the anchor
    data["alerts"]["console"] = False
    monitor = _monitor(data, clock)
    try:
        assert monitor.poll(monitor.config.sources[0]).ok
        assert monitor.deliver().sent >= 2
        rules = monitor.store.conn.execute("SELECT rule_id, count(*) FROM alerts GROUP BY rule_id").fetchall()
        real = sum(count for rule, count in rules if rule != ANCHOR_RULE)
        assert (ANCHOR_RULE, 1) in rules and real > 0  # one notice beside real alerts

        status = status_data(monitor.store, monitor.config, clock.now)
        assert (status["alerts"], status["anchor_notices"]) == (real, 1)
        assert "chain anchors: 1 published" in render_status_data(status, monitor.config.tz)

        exposition = generate_latest(monitor.metrics.registry).decode()
        assert ANCHOR_RULE not in exposition
        counted = sum(
            float(line.rsplit(" ", 1)[1])
            for line in exposition.splitlines()
            if line.startswith("audit_monitor_alerts_total{")
        )
        assert counted == real
    finally:
        monitor.close()


def test_an_anchor_is_delivered_at_least_once_through_failures(
    tmp_path: Path, sim: Simulator, smtp: SmtpServer, receiver: Receiver, clock: Clock
) -> None:
    data = _config_data(tmp_path, sim, smtp, receiver)
    smtp.recorder.data_replies.append("451 4.3.0 try again later")
    receiver.push(Reply(503, "busy"))
    monitor = _monitor(data, clock)
    try:
        assert monitor.deliver().retried == 0  # an empty archive has no head to publish yet
        assert monitor.poll(monitor.config.sources[0]).ok
        first = monitor.deliver()
        assert first.retried == 2 and first.sent == 0
        clock.now += timedelta(minutes=5)  # past the first backoff
        second = monitor.deliver()
        assert second.sent == 2
        clock.now += timedelta(minutes=30)
        assert monitor.deliver().sent == 0  # delivered: never again
    finally:
        monitor.close()
    assert len(_anchor_messages(smtp)) == 1
    ids = {r.headers["webhook-id"] for r in receiver.requests}
    assert len(receiver.requests) == 2 and len(ids) == 1  # the retry carries the same webhook-id
    assert all(r.json()["type"] == "chain.anchor" for r in receiver.requests)


@pytest.mark.parametrize(
    ("anchors", "expected"),
    [
        ({"to": ["webhook nope"]}, "anchors.to[0]: no webhook named 'nope' in alerts.webhooks (vault)"),
        ({"to": ["email", "pager"]}, "'pager' is not email or webhook NAME"),
        ({"to": []}, "anchors.to"),
        ({"every": "10s", "to": ["email"]}, "must be at least 1m"),
    ],
)
def test_anchor_settings_are_validated(
    tmp_path: Path,
    sim: Simulator,
    smtp: SmtpServer,
    receiver: Receiver,
    anchors: dict[str, Any],
    expected: str,
) -> None:
    data = {**_config_data(tmp_path, sim, smtp, receiver), "anchors": anchors}
    with pytest.raises(ConfigError) as caught:
        parse_config(json.dumps(data), "test.yaml", {})
    assert expected in str(caught.value) and "test.yaml" in str(caught.value)


def test_anchors_by_email_need_the_alert_email(
    tmp_path: Path, sim: Simulator, smtp: SmtpServer, receiver: Receiver
) -> None:
    data = _config_data(tmp_path, sim, smtp, receiver)
    del data["alerts"]["email"]
    with pytest.raises(ConfigError) as caught:
        parse_config(json.dumps(data), "test.yaml", {})
    assert "anchors.to[0]: email needs alerts.email" in str(caught.value)

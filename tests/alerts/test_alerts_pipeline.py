"""The whole path: simulator over HTTP -> poller -> rule engine -> outbox -> Slack stub / aiosmtpd,
through Monitor.run_once and through `audit-monitor run --once` in a subprocess."""

from __future__ import annotations

import io
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alerts_support import BOT_TOKEN, SlackStub, SmtpServer, api_error, email_config, free_port, slack_config

from monitor.config import Config, SourceConfig, parse_config
from monitor.daemon import Monitor
from monitor.poller import default_client_factory
from monitor.simulator import Simulator


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    start = datetime.now(UTC) - timedelta(days=10)
    with Simulator(seed=5, history_start=start, events_per_day=150, live_background=False) as simulator:
        yield simulator


def config_for(sim: Simulator, state: Path, alerts: dict[str, Any]) -> Config:
    data = {
        "timezone": "Europe/Berlin",
        "state": {"path": str(state)},
        "sources": [{"name": "sim", "base_url": sim.base_url, "token": sim.token, "workspace_id": 1}],
        "alerts": alerts,
        "server": {"listen": ""},
    }
    return parse_config(json.dumps(data), "test.yaml", {})


def slack_rows(monitor: Monitor) -> list[tuple[str, str, str | None]]:
    return monitor.store.conn.execute(
        "SELECT alert_id, status, remote_id FROM outbox WHERE channel = 'slack' ORDER BY alert_id"
    ).fetchall()


def test_each_alert_reaches_slack_once_across_cycles_and_a_restart(
    sim: Simulator, slack: SlackStub, tmp_path: Path
) -> None:
    config = config_for(
        sim, tmp_path / "a.db", {"digest_after": 100000, "slack": slack_config(slack, min_severity="info")}
    )
    monitor = Monitor(config)
    try:
        outcome = monitor.run_once()
        assert outcome.ok, (outcome.polls, outcome.delivery.errors)
        rows = slack_rows(monitor)
        assert rows and {status for _, status, _ in rows} == {"sent"}
        assert len(slack.posts()) == len(rows) == monitor.store.alert_count()
        assert len({remote for _, _, remote in rows}) == len(rows)  # one Slack message (ts) per alert
        assert monitor.run_once().ok
    finally:
        monitor.close()
    restarted = Monitor(config)
    try:
        assert restarted.run_once().ok
    finally:
        restarted.close()
    assert len(slack.posts()) == len(rows)
    texts = [p.body["text"] for p in slack.posts()]
    assert all(t.split(":")[0] in {"INFO", "LOW", "MEDIUM", "HIGH", "CRITICAL"} for t in texts)


def test_a_backfill_burst_arrives_as_digests_and_email_gets_its_share(
    sim: Simulator, slack: SlackStub, smtp: SmtpServer, tmp_path: Path
) -> None:
    config = config_for(
        sim,
        tmp_path / "b.db",
        {
            "digest_after": 10,
            "slack": slack_config(slack, min_severity="info", routes={"critical": "#oncall"}),
            "email": {**email_config(smtp), "min_severity": "critical"},
        },
    )
    monitor = Monitor(config)
    try:
        outcome = monitor.run_once()
        assert outcome.ok, outcome.delivery.errors
        alerts = monitor.store.alert_count()
        assert alerts > 10
        assert {s for _, s, _ in slack_rows(monitor)} == {"sent"}
        criticals = monitor.store.conn.execute(
            "SELECT count(*) FROM alerts WHERE severity = 'critical'"
        ).fetchone()[0]
    finally:
        monitor.close()
    # One digest per Slack destination with more than digest_after alerts, instead of one message per alert;
    # the critical route counts its own alerts (as email does).
    per_route = 0 if criticals == 0 else (1 if criticals > 10 else criticals)
    others = alerts - criticals
    assert others > 10
    assert len(slack.posts()) == 1 + per_route
    digests = {p.body["channel"] for p in slack.posts() if p.body["text"].startswith("Alert digest:")}
    assert "#sec" in digests
    assert len(smtp.recorder.messages) == per_route


def test_run_once_exits_1_when_delivery_fails_and_says_why(
    sim: Simulator, slack: SlackStub, tmp_path: Path
) -> None:
    path = tmp_path / "audit-monitor.yaml"
    path.write_text(
        f"""
timezone: Europe/Berlin
state: {{path: {tmp_path / "c.db"}}}
sources:
  - {{name: sim, base_url: "{sim.base_url}", token: "${{XANO_META_TOKEN}}", workspace_id: 1}}
alerts:
  slack: {{token: "${{SLACK_BOT_TOKEN}}", channel: "#sec", base_url: "{slack.base_url}", min_severity: info}}
server: {{listen: ""}}
"""
    )
    slack.push(*[api_error("invalid_auth")] * 50)
    env = {"XANO_META_TOKEN": sim.token, "SLACK_BOT_TOKEN": BOT_TOKEN, "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "--config", str(path), "run", "--once"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 1, done.stderr
    assert "delivery: slack: Slack API error invalid_auth" in done.stderr
    assert BOT_TOKEN not in done.stdout + done.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "--config", str(path), "dead-letters", "list", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert listed.returncode == 0 and listed.stdout.strip()
    assert all(json.loads(line)["channel"] == "slack" for line in listed.stdout.splitlines())


def test_source_unreachable_and_its_recovery_through_the_daemon(sim: Simulator, tmp_path: Path) -> None:
    # The outage is real: the client is pointed at a port where nothing listens (connection refused);
    # only the retry sleeps are skipped, and the monitor's clock is advanced instead of waited for.
    broken = {"on": False}
    dead_url = f"http://127.0.0.1:{free_port()}"

    def client_factory(source: SourceConfig) -> Any:
        target = source.model_copy(update={"base_url": dead_url}) if broken["on"] else source
        return default_client_factory(target, sleep=lambda _seconds: None)

    data = {
        "timezone": "Europe/Berlin",
        "state": {"path": str(tmp_path / "d.db")},
        "sources": [
            {
                "name": "sim",
                "base_url": sim.base_url,
                "token": sim.token,
                "workspace_id": 1,
                "poll_interval": "1m",
            }
        ],
        "alerts": {"console": True},
        "server": {"listen": ""},
    }
    config = parse_config(json.dumps(data), "test.yaml", {})
    now = {"t": datetime.now(UTC)}
    out = io.StringIO()
    monitor = Monitor(config, clock=lambda: now["t"], client_factory=client_factory, stdout=out)
    try:
        assert monitor.run_once().polls[0].ok
        broken["on"] = True
        for minute in range(1, 6):
            now["t"] += timedelta(minutes=1)
            outcome = monitor.run_once()
            assert not outcome.polls[0].ok
            fired = out.getvalue().count("[HIGH] Source sim unreachable")
            assert fired == (1 if minute > 3 else 0), minute
        broken["on"] = False
        now["t"] += timedelta(minutes=1)
        assert monitor.run_once().ok
        now["t"] += timedelta(minutes=1)
        assert monitor.run_once().ok
    finally:
        monitor.close()
    printed = out.getvalue()
    assert printed.count("[HIGH] Source sim unreachable") == 1
    assert printed.count("[INFO] Source sim recovered") == 1


def test_two_instances_with_the_same_event_ids_each_get_their_alerts(
    sim: Simulator, slack: SlackStub, tmp_path: Path
) -> None:
    # Event ids are unique per Xano instance only. Two sources serving the same log (same ids, same types)
    # must each get the alerts of the stateless rules; the second must not be taken for a replay of the first.
    # (Stateful rules and throttles share their state across sources unless they group by `source`.)
    data = {
        "timezone": "Europe/Berlin",
        "state": {"path": str(tmp_path / "two.db")},
        "sources": [
            {"name": name, "base_url": sim.base_url, "token": sim.token, "workspace_id": 1}
            for name in ("eu", "us")
        ],
        "alerts": {"digest_after": 100000, "slack": slack_config(slack, min_severity="info")},
        "server": {"listen": ""},
    }
    monitor = Monitor(parse_config(json.dumps(data), "test.yaml", {}))
    try:
        assert monitor.run_once().ok
        stateless = {
            rule.id
            for rule in monitor.ruleset.rules
            if rule.threshold is None and rule.new_value is None and rule.throttle is None
        }
        raised: dict[str, set[tuple[str, str]]] = {"eu": set(), "us": set()}
        for source, rule_id, event_ids in monitor.store.conn.execute(
            "SELECT source, rule_id, event_ids FROM alerts"
        ):
            if rule_id in stateless:
                raised[source].add((rule_id, event_ids))
        assert raised["eu"] and raised["eu"] == raised["us"]
        assert len(slack.posts()) == monitor.store.alert_count()
    finally:
        monitor.close()


def test_console_alerts_are_json_records_when_the_logs_are(sim: Simulator, tmp_path: Path) -> None:
    # stdout is a pipe here, as under Docker: the logs are JSON lines, and so must be the console alerts,
    # even with a log level that hides ordinary records.
    path = tmp_path / "audit-monitor.yaml"
    path.write_text(
        f"""
timezone: Europe/Berlin
state: {{path: {tmp_path / "e.db"}}}
sources:
  - {{name: sim, base_url: "{sim.base_url}", token: "{sim.token}", workspace_id: 1}}
alerts: {{console: true}}
server: {{listen: ""}}
"""
    )
    done = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "--config", str(path), "run", "--once", "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]  # every line is one JSON object
    alerts = [r for r in records if r["logger"] == "monitor.alert"]
    with sqlite3.connect(tmp_path / "e.db") as db:
        recorded = {row[0] for row in db.execute("SELECT id FROM alerts")}
    assert recorded and {a["alert_id"] for a in alerts} == recorded
    deleted = next(a for a in alerts if a["rule_id"] == "xano.table.deleted")
    assert deleted["event"] == "alert" and deleted["level"] == "error" and deleted["severity"] == "high"
    assert deleted["source"] == "sim" and deleted["user"] and deleted["title"] and deleted["event_ids"]

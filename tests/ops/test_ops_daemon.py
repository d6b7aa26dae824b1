"""The daemon in a subprocess against the simulator on 127.0.0.1: /healthz through an outage, /metrics
against the archive, JSON logs without secrets, SIGHUP with a broken rule, SIGTERM mid-backfill.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from monitor.simulator import Simulator
from tests.ops.conftest import REPO, RULE, Daemon, archived_ids, http_get, query, wait_until, write_config


def visible_ids(sim: Simulator) -> list[int]:
    return sorted(int(e["id"]) for e in sim.visible_events())


def healthz(daemon: Daemon) -> tuple[int, dict[str, object]]:
    status, body = http_get(daemon.base_url + "/healthz")
    return status, json.loads(body)


def test_healthz_follows_an_upstream_outage_and_metrics_match_the_archive(
    sim: Simulator, tmp_path: Path, daemon_factory: Callable[..., Daemon], token: str
) -> None:
    db = tmp_path / "a.db"
    daemon = daemon_factory(write_config(tmp_path / "c.yaml", sim, db))
    base = daemon.base_url

    # Before the first cycle completes the probe says "starting" (the image's HEALTHCHECK has a start period).
    first_status, first_body = healthz(daemon)
    assert first_status in (503, 200)
    if first_status == 503:
        assert first_body["status"] == "starting"

    wait_until(lambda: healthz(daemon)[0] == 200, 20, "healthz 200 after the first poll")
    status, body = healthz(daemon)
    assert body["status"] == "ok" and body["sources"]["sim"]["state"] == "ok"  # type: ignore[index]

    # /metrics parses and its counts are the archive's.
    assert archived_ids(db) == visible_ids(sim)
    families = {f.name: f for f in text_string_to_metric_families(http_get(base + "/metrics")[1].decode())}
    archived = {
        s.labels["source"]: s.value
        for s in families["audit_monitor_events_archived"].samples
        if s.name.endswith("_total")
    }
    assert archived == {"sim": len(archived_ids(db))}
    held = {s.labels["source"]: s.value for s in families["audit_monitor_archive_events"].samples}
    assert held == {"sim": len(archived_ids(db))}
    polls = {
        (s.labels["source"], s.labels["outcome"]): s.value
        for s in families["audit_monitor_polls"].samples
        if s.name.endswith("_total")
    }
    assert polls[("sim", "ok")] >= 1
    alerts_in_db = dict(
        ((r, s), n)
        for r, s, n in query(db, "SELECT rule_id, severity, count(*) FROM alerts GROUP BY rule_id, severity")
    )
    alerts_metric = {
        (s.labels["rule"], s.labels["severity"]): s.value
        for s in families["audit_monitor_alerts"].samples
        if s.name.endswith("_total")
    }
    fired = {key: value for key, value in alerts_metric.items() if value}
    assert fired == alerts_in_db and alerts_in_db  # the bundled rules fire on planted incidents
    # Rules that have not fired are there at zero, so their first alert is an increase Prometheus sees.
    assert 0 in alerts_metric.values()
    lag = [s.value for s in families["audit_monitor_lag_seconds"].samples if s.labels["source"] == "sim"]
    newest = max(datetime.fromisoformat(r[0]) for r in query(db, "SELECT max(created_at) FROM events"))
    assert lag and abs(lag[0] - (datetime.now(UTC) - newest).total_seconds()) < 30
    assert "audit_monitor_poll_duration_seconds" in families
    assert "audit_monitor_last_success_timestamp_seconds" in families

    # The upstream goes away: within stale_after (3 s here) the probe fails and names the source.
    port = int(sim.base_url.rsplit(":", 1)[1])
    sim.stop()
    wait_until(lambda: healthz(daemon)[0] == 503, 20, "healthz 503 after the simulator stopped")
    status, body = healthz(daemon)
    assert body["status"] == "unhealthy"
    assert any(str(r).startswith("source sim: last successful poll") for r in body["reasons"])  # type: ignore[union-attr]

    def poll_errors() -> float:
        families = text_string_to_metric_families(http_get(base + "/metrics")[1].decode())
        return sum(
            s.value
            for f in families
            for s in f.samples
            if s.name == "audit_monitor_poll_errors_total"
            and s.labels == {"source": "sim", "kind": "unavailable"}
        )

    wait_until(lambda: poll_errors() >= 1, 20, "a poll error counted in /metrics")

    # It comes back on the same address: the next cycle succeeds and the probe is green again.
    sim.port = port
    sim.start()
    new_id = sim.add_event("Update Function", user={"id": 1, "email": "ana@corp.io"})
    wait_until(lambda: healthz(daemon)[0] == 200, 20, "healthz 200 after the simulator returned")
    wait_until(lambda: new_id in archived_ids(db), 10, "the event added during the outage")

    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=15) == 0
    # Every stdout line is one JSON object, the token never appears, each cycle logs its summary.
    text = daemon.stdout_path.read_text()
    assert token not in text and token not in daemon.stderr_path.read_text()
    records = daemon.records()
    cycles = [r for r in records if r["event"] == "poll cycle"]
    assert cycles and all(
        {"source", "events", "new", "pages", "duration_s", "lag_s"} <= set(r) for r in cycles
    )
    assert any(r["event"] == "poll failed" and r["level"] == "error" for r in records)
    assert records[-1]["event"] == "daemon stopped"


def test_sighup_with_a_broken_rule_keeps_the_old_rules(
    sim: Simulator, tmp_path: Path, daemon_factory: Callable[..., Daemon]
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    rule_file = rules / "ops.yml"
    rule_file.write_text(RULE, encoding="utf-8")
    db = tmp_path / "a.db"
    daemon = daemon_factory(write_config(tmp_path / "c.yaml", sim, db, rules=rules))
    daemon.wait_event("poll cycle", 20)

    rule_file.write_text(RULE.replace("severity: high", "severity: hihg"), encoding="utf-8")
    daemon.signal(signal.SIGHUP)
    failed = daemon.wait_event("rules reload failed; the previous rules stay in force", 15)[0]
    assert failed["level"] == "error" and failed["rules_in_force"] == 1
    assert any("ops.yml:3: ops.table-delete:" in e and "hihg" in e for e in failed["errors"])

    # The old rule still fires.
    deleted = sim.add_event("Delete Table", user={"id": 2, "email": "bo@corp.io"})
    fired = wait_until(
        lambda: query(
            db, "SELECT rule_id, severity FROM alerts WHERE event_ids = ?", (json.dumps([deleted]),)
        ),
        15,
        "the old rule's alert",
    )
    assert fired == [("ops.table-delete", "high")]

    # A valid change is taken on the next SIGHUP.
    rule_file.write_text(RULE.replace("ops.table-delete", "ops.table-delete-v2"), encoding="utf-8")
    daemon.signal(signal.SIGHUP)
    reloaded = daemon.wait_event("rules reloaded", 15)[0]
    assert reloaded["rules"] == 1
    second = sim.add_event("Delete Table", user={"id": 2, "email": "bo@corp.io"})
    wait_until(
        lambda: query(
            db,
            "SELECT 1 FROM alerts WHERE rule_id = 'ops.table-delete-v2' AND event_ids = ?",
            (json.dumps([second]),),
        ),
        15,
        "the new rule's alert",
    )
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=15) == 0


def test_sigterm_mid_backfill_exits_zero_and_loses_nothing(
    token: str, tmp_path: Path, daemon_factory: Callable[..., Daemon]
) -> None:
    now = datetime.now(UTC)
    with Simulator(
        seed=5,
        token=token,
        history_start=now - timedelta(days=20),
        total_events=30_000,
        live_background=False,
        incidents=False,
    ) as big:
        db = tmp_path / "a.db"
        config = write_config(tmp_path / "c.yaml", big, db, per_page="100", poll_interval="1m")
        daemon = daemon_factory(config)
        # A few pages into the walk (300 pages in all), stop it.
        wait_until(lambda: big.request_count >= 5, 20, "the backfill to be under way")
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(timeout=10) == 0
        assert daemon.events("poll cancelled by shutdown; nothing committed")
        assert daemon.records()[-1]["event"] == "daemon stopped"
        assert query(db, "SELECT count(*) FROM events") == [(0,)]  # nothing half-committed

        # The next run repeats the walk from the unmoved cursor and completes it.
        write_config(config, big, db, per_page="5000", poll_interval="1m")
        once = subprocess.run(
            [sys.executable, "-m", "monitor.cli", "--config", str(config), "run", "--once"],
            cwd=tmp_path,
            env={**os.environ, "SIM_TOKEN": token, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert once.returncode == 0, once.stderr[-2000:]
        ids = archived_ids(db)
        assert len(ids) == len(set(ids)) == big.event_count()
        assert ids == visible_ids(big)
        verify = subprocess.run(
            [sys.executable, "-m", "monitor.cli", "--config", str(config), "verify"],
            cwd=tmp_path,
            env={**os.environ, "SIM_TOKEN": token, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert verify.returncode == 0 and verify.stdout.startswith(f"OK: {len(ids)} events")


def test_a_taken_port_is_a_configuration_error(tmp_path: Path, token: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "c.yaml"
        config.write_text(
            f"state: {{path: {tmp_path / 'a.db'}}}\n"
            "sources: [{name: s, base_url: 'http://127.0.0.1:9', token: '${SIM_TOKEN}'}]\n"
            f"server: {{listen: '127.0.0.1:{port}'}}\n",
            encoding="utf-8",
        )
        result = subprocess.run(
            [sys.executable, "-m", "monitor.cli", "--config", str(config), "run"],
            cwd=tmp_path,
            env={**os.environ, "SIM_TOKEN": token, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert f"server.listen 127.0.0.1:{port}: cannot listen" in result.stderr
    assert token not in result.stdout + result.stderr

"""The ingest commands as a user runs them: `run --once`, `status`, `verify`, `export`, in a subprocess."""

from __future__ import annotations

import csv
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monitor.events import normalize
from monitor.simulator import Simulator


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    start = datetime.now(UTC) - timedelta(days=2)
    with Simulator(seed=11, history_start=start, events_per_day=400) as simulator:
        yield simulator


def write_config(tmp_path: Path, sim: Simulator, token: str) -> Path:
    path = tmp_path / "audit-monitor.yaml"
    path.write_text(
        f"""
timezone: Europe/Berlin
state: {{path: {tmp_path / "archive.db"}}}
sources:
  - name: prod
    base_url: {sim.base_url}
    token: ${{XANO_META_TOKEN}}
    workspace_id: 1
    per_page: 200
alerts: {{console: false}}
server: {{listen: ""}}
"""
    )
    return path


def cli(
    config: Path,
    *args: str,
    token: str = "sim-token",  # noqa: S107 - the simulator's test token
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor.cli", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={"XANO_META_TOKEN": token, "PATH": "/usr/bin:/bin"},
    )


def test_run_once_then_verify_then_tamper(tmp_path: Path, sim: Simulator) -> None:
    config = write_config(tmp_path, sim, sim.token)
    done = cli(config, "run", "--once", token=sim.token)
    assert done.returncode == 0, done.stderr
    assert sim.token not in done.stdout + done.stderr
    status = cli(config, "status")
    assert status.returncode == 0 and "prod" in status.stdout
    verified = cli(config, "verify")
    assert verified.returncode == 0 and verified.stdout.startswith("OK: ")

    with sqlite3.connect(tmp_path / "archive.db") as conn:
        seq, event_id = conn.execute(
            "SELECT seq, event_id FROM events ORDER BY seq LIMIT 1 OFFSET 10"
        ).fetchone()
        conn.execute(
            'UPDATE events SET raw = replace(raw, \'"msg":"\', \'"msg":"edited \') WHERE seq = ?', (seq,)
        )
    tampered = cli(config, "verify")
    assert tampered.returncode == 1
    assert f"row {seq}" in tampered.stderr and f"event id {event_id}" in tampered.stderr


def test_wrong_token_exits_1_with_plain_message(tmp_path: Path, sim: Simulator) -> None:
    config = write_config(tmp_path, sim, "wrong")
    done = cli(config, "run", "--once", token="wrong-token-value")
    assert done.returncode == 1
    assert "may have expired" in done.stderr and "Workspace Log: Read" in done.stderr
    assert "wrong-token-value" not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


def test_export_round_trips(tmp_path: Path, sim: Simulator) -> None:
    config = write_config(tmp_path, sim, sim.token)
    assert cli(config, "run", "--once", token=sim.token).returncode == 0
    since = (datetime.now(UTC) - timedelta(days=3)).date().isoformat()
    until = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    jsonl, csv_out = tmp_path / "out.jsonl", tmp_path / "out.csv"
    assert (
        cli(
            config, "export", "--since", since, "--until", until, "--format", "jsonl", "--out", str(jsonl)
        ).returncode
        == 0
    )
    assert cli(config, "export", "--since", since, "--until", until, "--out", str(csv_out)).returncode == 0

    exported = [json.loads(line) for line in jsonl.read_text().splitlines()]
    served = {int(e["id"]): e for e in sim.visible_events()}
    archived_ids = {int(e["id"]) for e in exported}
    assert archived_ids <= set(served) and len(archived_ids) == len(exported) > 100
    for record in exported[:50]:
        original = normalize("prod", served[int(record["id"])])
        again = normalize("prod", record)
        assert again.created_at == original.created_at  # ISO with offset round-trips to the same instant
        assert record["type"] == original.type and record["msg"] == original.msg
        assert record.get("user") == served[int(record["id"])].get("user")

    with csv_out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(exported)
    for column in (
        "created_at",
        "type",
        "msg",
        "user.email",
        "workspace.name",
        "branch.label",
        "id",
        "source",
    ):
        assert column in rows[0]
    assert datetime.fromisoformat(rows[0]["created_at"]).utcoffset() is not None


def test_bad_date_is_a_usage_error(tmp_path: Path, sim: Simulator) -> None:
    config = write_config(tmp_path, sim, sim.token)
    done = cli(config, "export", "--since", "last tuesday", "--until", "2026-01-01")
    assert done.returncode == 2 and "last tuesday" in done.stderr

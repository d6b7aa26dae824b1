"""`audit-monitor status` as an operator runs it (subprocess): the table and `--json` for scripts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from monitor.alerts.model import Alert
from monitor.events import canonical_json, format_timestamp, normalize
from monitor.store import Cursor, Store
from tests.ops.conftest import REPO


def run_status(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor.cli", "--config", str(config), "status", *args],
        env={**os.environ, "PYTHONPATH": str(REPO), "XANO_META_TOKEN": "xmt-never-shown-0001"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_status_table_and_json(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    now = datetime.now(UTC)
    with Store.open(db) as store:
        with store.transaction():
            prev = store.head_hash()
            for i in range(12):
                raw = {
                    "id": 100 + i,
                    "created_at": format_timestamp(now - timedelta(minutes=60 - i)),
                    "type": "Delete Table",
                    "msg": "m",
                    "user": {"id": 1, "email": "ana@corp.io"},
                }
                prev = store.archive(normalize("prod", raw), canonical_json(raw), prev, now)
            store.save_cursor(
                Cursor(
                    source="prod",
                    last_id=111,
                    last_created_at=now - timedelta(minutes=49),
                    last_success_at=now - timedelta(minutes=5),
                )
            )
            alert = Alert(
                rule_id="xano.db.table-deleted",
                severity="high",
                title="t",
                text="t",
                source="prod",
                event_time=now,
                event_ids=(111,),
            )
            store.record_alert(alert, ["slack", "console"], now)
            store.conn.execute(
                "UPDATE outbox SET status = 'dead', attempts = 3, last_error = 'channel_not_found' "
                "WHERE channel = 'slack'"
            )
        store.record_poll_failure(
            "prod", at=now - timedelta(minutes=1), kind="unavailable", message="HTTP 503 from the gateway"
        )
    config = tmp_path / "c.yaml"
    config.write_text(
        f"state: {{path: {db}}}\n"
        "sources:\n  - {name: prod, base_url: 'https://x.xano.io', token: '${XANO_META_TOKEN}'}\n"
        "  - {name: staging, base_url: 'https://y.xano.io', token: '${XANO_META_TOKEN}'}\n",
        encoding="utf-8",
    )

    table = run_status(config)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["SOURCE", "CURSOR", "LAST", "SUCCESS", "LAG", "ARCHIVED", "LAST", "ERROR"]
    prod = next(line for line in lines if line.startswith("prod "))
    assert " 111 " in prod and " 12 " in prod and "[unavailable] HTTP 503 from the gateway" in prod
    assert next(line for line in lines if line.startswith("staging")).split()[1:3] == ["-", "never"]
    assert "outbox: 1 pending, 0 sent, 1 dead letters" in table.stdout
    assert any(line.split() == ["slack", "0", "0", "1"] for line in lines)
    assert (
        "slack  xano.db.table-deleted" in table.stdout
        and "after 3 attempts: channel_not_found" in table.stdout
    )
    assert "archive: 12 events" in table.stdout and "kept forever" in table.stdout

    as_json = run_status(config, "--json")
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    source = data["sources"][0]
    assert (source["source"], source["cursor_id"], source["archived"]) == ("prod", 111, 12)
    assert source["last_error_kind"] == "unavailable" and 2900 < source["lag_seconds"] < 3100
    assert data["outbox"]["channels"] == {
        "console": {"pending": 1, "sent": 0, "dead": 0},
        "slack": {"pending": 0, "sent": 0, "dead": 1},
    }
    assert data["recent_dead_letters"][0]["error"] == "channel_not_found"
    assert data["archive"]["events"] == 12 and data["archive"]["bytes"] > 0
    assert "xmt-never-shown-0001" not in as_json.stdout + table.stdout

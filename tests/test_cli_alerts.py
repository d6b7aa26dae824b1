"""`alerts list|show|ack|resolve` and `silences add|list|expire` on an archive whose alerts the store recorded
as the poller does. The commands run in this process through click's runner (twenty subprocesses would take
minutes on a busy machine); `verify` at the end runs as a subprocess, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner

from monitor.alerts.model import Alert
from monitor.cli import cli as main_cli
from monitor.store import Store, lifecycle

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str


def cli(config: Path, *args: str) -> Outcome:
    result = CliRunner().invoke(main_cli, ["--config", str(config), *args], catch_exceptions=False)
    return Outcome(result.exit_code, result.stdout, result.stderr)


def test_triage_from_the_shell(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    config = tmp_path / "c.yml"
    config.write_text(f"state: {{path: {db}}}\n", encoding="utf-8")
    now = datetime.now(UTC)
    made = [
        Alert(rule_id="r.delete", severity="high", title=f"Table {n} deleted", text="x", source="prod",
              event_time=now - timedelta(minutes=n), event_ids=(n,), context={"user": "ana@corp.io"})
        for n in (1, 2)
    ]  # fmt: skip
    with Store.open(db) as store, store.transaction():
        for alert in made:
            store.record_alert(alert, ["slack"], now)
    listed = cli(config, "alerts", "list")
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) == 2
    assert made[0].id[:12] in listed.stdout and "Table 1 deleted" in listed.stdout
    ack = cli(config, "alerts", "ack", made[0].id[:10], "--note", "on it")
    assert ack.returncode == 0, ack.stderr
    again = cli(config, "alerts", "ack", made[0].id[:10])
    assert again.returncode == 1 and "cannot be acknowledged" in again.stderr
    resolved = cli(config, "alerts", "resolve", made[0].id, "--disposition", "benign")
    assert resolved.returncode == 0
    shown = json.loads(cli(config, "alerts", "show", made[0].id[:8]).stdout)
    assert shown["status"] == "resolved"
    assert [h["action"] for h in shown["history"]] == ["alert.acknowledged", "alert.resolved"]
    assert all(h["actor"].startswith("cli:") for h in shown["history"])
    assert shown["history"][0]["note"] == "on it"
    assert cli(config, "alerts", "show", "zzzz").returncode == 2
    assert cli(config, "alerts", "list").stdout.count("\n") == 1
    assert cli(config, "alerts", "list", "--status", "all").stdout.count("\n") == 2

    until = (now + timedelta(hours=2)).isoformat()
    added = cli(config, "silences", "add", "--rule", "r.delete", "--match", "user=ana@corp.io",
                "--until", until, "--reason", "maintenance")  # fmt: skip
    assert added.returncode == 0 and added.stdout.startswith("silence 1 until"), added.stderr
    assert "r.delete" in cli(config, "silences", "list").stdout
    with Store.open(db) as store, store.transaction():
        late = Alert(rule_id="r.delete", severity="high", title="t", text="x", source="prod", event_time=now,
                     event_ids=(9,), context={"user": "ana@corp.io"})  # fmt: skip
        store.record_alert(late, ["slack"], datetime.now(UTC))  # while the silence is active
    with Store.open(db) as store:
        assert lifecycle.get_alert(store, late.id)["status"] == "silenced"  # type: ignore[index]
    assert cli(config, "silences", "add", "--until", until, "--reason", "x").returncode == 2
    assert (
        cli(config, "silences", "add", "--rule", "r", "--until", "2001-01-01", "--reason", "x").returncode
        == 2
    )
    assert cli(config, "silences", "expire", "1").returncode == 0
    assert cli(config, "silences", "expire", "1").returncode == 1
    assert cli(config, "silences", "list").stdout == ""
    assert "ended" in cli(config, "silences", "list", "--all").stdout
    verify = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "--config", str(config), "verify"],
        capture_output=True, text=True, cwd=REPO, timeout=100,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_reading_alerts_never_creates_an_archive(tmp_path: Path) -> None:
    db = tmp_path / "none.db"
    config = tmp_path / "c.yml"
    config.write_text(f"state: {{path: {db}}}\n", encoding="utf-8")
    for args in (
        ("alerts", "list"),
        ("alerts", "show", "abc"),
        ("silences", "list"),
        ("alerts", "ack", "abc"),
    ):
        outcome = cli(config, *args)
        assert outcome.returncode == 2 and "no archive at this path" in outcome.stderr, args
    assert not db.exists()

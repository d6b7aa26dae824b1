"""The command line's promises, run as a user runs it (`python -m monitor.cli` in a subprocess, the simulator
over HTTP on 127.0.0.1): clear one-line errors with exit 2, secrets resolved only by the commands that use
them, `--config` anywhere, `--version`, private export files.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monitor.simulator import Simulator

TODAY = datetime.now(UTC).date()
# A week of history, whatever today is: the simulated team works weekdays, and a day back from a Saturday
# afternoon holds too few events for the export check.
HISTORY_DAYS = 7
SINCE = (TODAY - timedelta(days=HISTORY_DAYS + 1)).isoformat()
UNTIL = (TODAY + timedelta(days=2)).isoformat()


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(
        seed=4, history_start=datetime.now(UTC) - timedelta(days=HISTORY_DAYS), events_per_day=120
    ) as simulator:
        yield simulator


def write_config(tmp_path: Path, sim: Simulator, extra: str = "") -> Path:
    path = tmp_path / "audit-monitor.yaml"
    path.write_text(
        f"""\
state: {{path: {tmp_path / "archive.db"}}}
sources:
  - name: prod
    base_url: {sim.base_url}
    token: ${{XANO_META_TOKEN}}
alerts:
  console: false
  email:
    smtp: {{host: 127.0.0.1, port: 1, security: none, username: mon, password: "${{SMTP_PASSWORD}}"}}
    from: monitor@example.com
    to: [security@example.com]
report: {{to: [compliance@example.com], out_dir: {tmp_path / "reports"}}}
server: {{listen: ""}}
{extra}""",
        encoding="utf-8",
    )
    return path


# Every secret the config names (the token only matters to `run`, which the fixture gives the real one).
SECRETS = {"XANO_META_TOKEN": "unused-token", "SMTP_PASSWORD": "pw"}


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", **(SECRETS if env is None else env)},
    )


def assert_usage_error(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    for needle in needles:
        assert needle in done.stderr, done.stderr


@pytest.fixture
def archived(tmp_path: Path, sim: Simulator) -> Path:
    config = write_config(tmp_path, sim)
    done = cli(
        "--config", str(config), "run", "--once", env={"XANO_META_TOKEN": sim.token, "SMTP_PASSWORD": "pw"}
    )
    # Nothing listens on the SMTP port: an alert mailed there fails (exit 1); the archive is what counts.
    assert done.returncode in (0, 1) and "source prod" not in done.stderr, done.stderr
    assert "events" in cli("--config", str(config), "status").stdout
    return config


# [11.5] read commands need no secret; the commands that use one name the key when it is missing.
def test_read_commands_run_without_any_secret(archived: Path, tmp_path: Path) -> None:
    config = str(archived)
    assert cli("--config", config, "status", env={}).returncode == 0
    assert cli("--config", config, "verify", env={}).returncode == 0
    export = cli("--config", config, "export", "--since", SINCE, "--until", UNTIL, env={})
    assert export.returncode == 0 and export.stdout.count("\n") > 50
    month = TODAY.strftime("%Y-%m")
    report = cli("--config", config, "report", "--month", month, "--out", str(tmp_path / "r"), env={})
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "r" / f"compliance-report-{month}.html").exists()


def test_commands_that_use_a_secret_name_the_missing_key(archived: Path) -> None:
    config = str(archived)
    run = cli("--config", config, "run", "--once", env={"SMTP_PASSWORD": "pw"})
    assert_usage_error(run, f"{config}:5: sources[0].token: environment variable XANO_META_TOKEN is not set")
    month = TODAY.strftime("%Y-%m")
    send = cli("--config", config, "report", "--month", month, "--send", env={"XANO_META_TOKEN": "x"})
    assert_usage_error(send, f"{config}:9: alerts.email.smtp.password: environment variable SMTP_PASSWORD")


# [11.15] clear usage errors instead of tracebacks or silent empty answers.
def test_export_to_a_missing_folder_is_a_usage_error(archived: Path) -> None:
    done = cli(
        "--config",
        str(archived),
        "export",
        "--since",
        SINCE,
        "--until",
        UNTIL,
        "--out",
        "/nonexistent/dir/x.csv",
    )
    assert_usage_error(done, "/nonexistent/dir/x.csv", "No such file or directory")


def test_since_after_until_is_a_usage_error(archived: Path) -> None:
    done = cli("--config", str(archived), "export", "--since", UNTIL, "--until", SINCE)
    assert_usage_error(done, "--since", "--until")


def test_unknown_source_is_a_usage_error(archived: Path) -> None:
    done = cli("--config", str(archived), "export", "--since", SINCE, "--until", UNTIL, "--source", "prdo")
    assert_usage_error(done, "--source", "'prdo'", "prod")


@pytest.mark.parametrize("command", [["list"], ["requeue", "--all"]])
def test_unknown_channel_is_a_usage_error(archived: Path, command: list[str]) -> None:
    done = cli("--config", str(archived), "dead-letters", *command, "--channel", "slakc")
    assert_usage_error(done, "--channel", "'slakc'", "email")


def test_report_for_a_month_not_started_is_a_usage_error(archived: Path) -> None:
    future = (TODAY.replace(day=1) + timedelta(days=40)).strftime("%Y-%m")
    done = cli("--config", str(archived), "report", "--month", future)
    assert_usage_error(done, "--month", future, "not started")


def test_config_after_the_subcommand(archived: Path) -> None:
    done = cli("verify", "--config", str(archived))
    assert done.returncode == 0 and done.stdout.startswith("OK: "), done.stderr
    status = cli("status", "--json", "--config", str(archived))
    assert status.returncode == 0 and '"prod"' in status.stdout
    rules = cli("rules", "check", "--config", str(archived))
    assert rules.returncode == 0 and rules.stdout.startswith("OK: ")


def test_version() -> None:
    from importlib.metadata import version

    done = cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"audit-monitor {version('xano-audit-monitor')}"


def test_export_onto_an_existing_file_makes_it_private(archived: Path, tmp_path: Path) -> None:
    out = tmp_path / "existing.csv"
    out.write_text("old\n")
    os.chmod(out, 0o644)
    done = cli("--config", str(archived), "export", "--since", SINCE, "--until", UNTIL, "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert out.read_text().startswith("source,id,created_at")


# [11.17] a disabled id that no rule has is a configuration error, not a warning nobody reads.
def test_disabling_an_unknown_rule_is_a_configuration_error(tmp_path: Path, sim: Simulator) -> None:
    config = write_config(tmp_path, sim, "rules: {disable: [xano.table.deleted, unknown.rule]}\n")
    done = cli(
        "--config", str(config), "run", "--once", env={"XANO_META_TOKEN": sim.token, "SMTP_PASSWORD": "pw"}
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"{config}:14: rules.disable[1]: no rule has the id 'unknown.rule'" in done.stderr
    assert "xano.table.deleted" not in done.stderr  # the known id is fine


# [14.5] a public address without any token: refused before the archive is opened, so nothing is created.
def test_run_refuses_a_public_address_without_tokens_before_creating_the_archive(tmp_path: Path) -> None:
    archive = tmp_path / "state" / "archive.db"
    config = tmp_path / "audit-monitor.yaml"
    config.write_text(
        f"state: {{path: {archive}}}\n"
        "sources:\n  - {name: prod, base_url: 'http://127.0.0.1:9', token: t}\n"
        "server: {listen: '0.0.0.0:9108'}\n",
        encoding="utf-8",
    )
    done = cli("--config", str(config), "run", env={})
    assert_usage_error(done, str(config), "server.listen is 0.0.0.0:9108", "server.tokens", "127.0.0.1")
    assert not archive.exists() and not archive.parent.exists()

"""Read commands fail closed and never change the archive.

- With no config file and no archive (a cron `verify` run from the wrong folder), every read command exits 2
  naming the config file and the archive it looked for, and creates nothing.
- With a config whose archive does not exist, they exit 2 naming the file, and create nothing.
- On a copy an auditor cannot (or must not) write: a read-only folder, a file without write permission,
  they work, and the file's bytes and mtime stay as they were, with no -wal/-shm beside it. The read-only
  folder and file are recognised by their permission bits, which the monitor honours for root too, so these
  tests mean the same as root and as an ordinary user.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from monitor.cli import cli
from monitor.store import Store
from tests.test_store import archive, entry

READ_COMMANDS = {
    "verify": ["verify"],
    "status": ["status"],
    "export": ["export", "--since", "2026-01-01", "--until", "2026-02-01"],
    "report": ["report", "--month", "2026-01"],
    "anchor": ["anchor"],
    "dead-letters list": ["dead-letters", "list"],
    "rules backtest": ["rules", "backtest", "--since", "2026-01-01", "--until", "2026-02-01"],
}


@pytest.fixture
def empty_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.delenv("AUDIT_MONITOR_CONFIG", raising=False)
    return folder


@pytest.mark.parametrize("command", READ_COMMANDS.values(), ids=READ_COMMANDS.keys())
def test_a_read_command_without_config_or_archive_exits_2_naming_both_and_creates_nothing(
    empty_folder: Path, command: list[str]
) -> None:
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 2, result.output
    assert "no config file audit-monitor.yaml" in result.output
    assert "./data/audit-monitor.db" in result.output
    assert "Traceback" not in result.output
    assert list(empty_folder.iterdir()) == []  # no ./data, no archive, no lock


@pytest.mark.parametrize("command", READ_COMMANDS.values(), ids=READ_COMMANDS.keys())
def test_a_read_command_whose_configured_archive_is_missing_exits_2_naming_it(
    empty_folder: Path, command: list[str]
) -> None:
    config = empty_folder / "monitor.yaml"
    archive_path = empty_folder / "state" / "a.db"
    config.write_text(f"state: {{path: {archive_path}}}\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["--config", str(config), *command])
    assert result.exit_code == 2, result.output
    assert f"{config}: state.path: {archive_path}: no archive at this path" in result.output
    assert not (empty_folder / "state").exists()


def test_requeue_does_not_create_an_archive_either(empty_folder: Path) -> None:
    result = CliRunner().invoke(cli, ["dead-letters", "requeue", "--all"])
    assert result.exit_code == 2, result.output
    assert list(empty_folder.iterdir()) == []


# --- read-only copies ------------------------------------------------------------------------------------


def _fingerprint(folder: Path) -> dict[str, tuple[str, int]]:
    return {
        path.name: (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
        for path in sorted(folder.iterdir())
    }


@pytest.fixture(params=["read-only folder", "read-only file"])
def read_only_copy(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """An archive of three events, copied as an auditor would, then made read-only; and its config."""
    original = tmp_path / "live" / "a.db"
    with Store.open(original) as store:
        archive(store, [entry(1, 10), entry(2, 20), entry(3, 30)])
    folder = tmp_path / "copy"
    folder.mkdir()
    copy = folder / "a.db"
    shutil.copyfile(original, copy)  # the main file only: the writer checkpointed its log at close
    config = tmp_path / "audit.yaml"
    config.write_text(f"timezone: UTC\nstate: {{path: {copy}}}\n", encoding="utf-8")
    copy.chmod(0o444)
    if request.param == "read-only folder":
        folder.chmod(0o555)
    try:
        yield copy, config
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize(
    "command",
    [
        ["verify"],
        ["status"],
        ["export", "--since", "2025-01-01", "--until", "2027-01-01", "--format", "jsonl"],
        ["anchor"],
    ],
    ids=lambda c: c[0],
)
def test_read_commands_work_on_a_read_only_copy_and_change_nothing(
    read_only_copy: tuple[Path, Path], command: list[str]
) -> None:
    copy, config = read_only_copy
    before = _fingerprint(copy.parent)
    result = CliRunner().invoke(cli, ["--config", str(config), *command])
    assert result.exit_code == 0, result.output
    if command[0] == "verify":
        assert result.output.startswith("OK: 3 events")
    if command[0] == "export":
        assert result.output.count('"id"') >= 3
    assert _fingerprint(copy.parent) == before  # same bytes, same mtime, no -wal/-shm appeared
    assert stat.S_IMODE(copy.stat().st_mode) == 0o444


def test_the_report_works_on_a_read_only_copy(read_only_copy: tuple[Path, Path], tmp_path: Path) -> None:
    copy, config = read_only_copy
    before = _fingerprint(copy.parent)
    out = tmp_path / "reports"
    month = entry(1, 10)["created_at"]
    assert isinstance(month, str)
    result = CliRunner().invoke(
        cli, ["--config", str(config), "report", "--month", month[:7], "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("3 events in")
    assert _fingerprint(copy.parent) == before


def test_a_read_command_beside_a_writer_sees_its_committed_rows(tmp_path: Path) -> None:
    """The daemon's own folder stays writable: read commands open it mode=ro (not immutable), so rows
    committed into the write-ahead log by a writer that still has the file open are seen."""
    path = tmp_path / "a.db"
    config = tmp_path / "audit.yaml"
    config.write_text(f"state: {{path: {path}}}\n", encoding="utf-8")
    with Store.open(path) as writer:
        archive(writer, [entry(1, 10), entry(2, 20)])
        assert os.path.getsize(f"{path}-wal") > 0  # still in the log, not yet in the main file
        result = CliRunner().invoke(cli, ["--config", str(config), "verify"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("OK: 2 events")

"""The archive file under real processes: one writer at a time, private modes, and a file deleted or replaced
under a running daemon. The daemon is `audit-monitor run` in a subprocess against the simulator over HTTP on
127.0.0.1; the second writer is another real `audit-monitor` process.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from monitor.cli import cli as main_cli
from monitor.simulator import Simulator
from monitor.store import Store
from monitor.store.files import ArchiveLocked, acquire_writer_lock, tighten_modes
from tests.ops.conftest import REPO, Daemon, archived_ids, http_get, query, wait_until, write_config


def cli(config: Path, token: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor.cli", "--config", str(config), *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO), "SIM_TOKEN": token},
        capture_output=True,
        text=True,
        timeout=120,
    )


def visible_ids(sim: Simulator) -> list[int]:
    return sorted(int(e["id"]) for e in sim.visible_events())


def healthz(daemon: Daemon) -> tuple[int, dict[str, object]]:
    status, body = http_get(daemon.base_url + "/healthz")
    return status, json.loads(body)


# --- one writer ---------------------------------------------------------------------------------------------


def test_a_second_writer_exits_2_naming_the_pid_and_the_daemon_archives_every_event_once(
    sim: Simulator, tmp_path: Path, daemon_factory: Callable[..., Daemon], token: str
) -> None:
    db = tmp_path / "state" / "a.db"
    config = write_config(tmp_path / "c.yaml", sim, db, per_page="20")  # a walk of ~15 pages
    daemon = daemon_factory(config)
    wait_until(lambda: sim.request_count >= 3, 30, "the daemon's walk to be under way")

    second = cli(config, token, "run", "--once", cwd=tmp_path)
    assert second.returncode == 2, second.stderr
    assert f"in use by process {daemon.proc.pid}" in second.stderr
    assert f"{db}.lock" in second.stderr and "Traceback" not in second.stderr

    # Read commands take no lock: they work beside the daemon.
    daemon.wait_event("poll cycle", 60)
    status = cli(config, token, "status", "--json", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert cli(config, token, "verify", cwd=tmp_path).returncode == 0

    # The second writer changed nothing: new events keep arriving and the daemon archives each exactly once.
    assert cli(config, token, "run", "--once", cwd=tmp_path).returncode == 2
    for _ in range(5):
        sim.add_event("Delete Table")
    expected = visible_ids(sim)
    wait_until(lambda: archived_ids(db) == expected, 60, "the daemon to archive every event")
    daemon.stop()
    assert archived_ids(db) == expected  # each id once, none missing
    assert query(db, "SELECT count(*) FROM staging") == [(0,)]


def test_a_writer_killed_with_sigkill_does_not_block_the_next_start(
    sim: Simulator, tmp_path: Path, daemon_factory: Callable[..., Daemon], token: str
) -> None:
    db = tmp_path / "a.db"
    config = write_config(tmp_path / "c.yaml", sim, db)
    daemon = daemon_factory(config)
    daemon.wait_event("poll cycle", 60)
    os.kill(daemon.proc.pid, signal.SIGKILL)
    daemon.proc.wait(timeout=10)
    assert Path(f"{db}.lock").read_text().strip() == str(daemon.proc.pid)  # the dead holder's pid stays

    after = cli(config, token, "run", "--once", cwd=tmp_path)
    assert after.returncode == 0, after.stderr
    assert archived_ids(db) == visible_ids(sim)


def test_the_writer_lock_is_exclusive_between_two_holders_and_released_with_it(tmp_path: Path) -> None:
    """flock locks belong to the open file, so even two holders in one process exclude each other."""
    archive = tmp_path / "a.db"
    with acquire_writer_lock(archive):
        with pytest.raises(ArchiveLocked) as caught:
            acquire_writer_lock(archive)
        assert caught.value.holder == os.getpid()
    acquire_writer_lock(archive).release()  # free again once released


def test_a_second_demo_in_the_same_folder_exits_2_and_leaves_the_first_ones_archive(tmp_path: Path) -> None:
    out = tmp_path / "demo-out"
    out.mkdir()
    with Store.open(out / "demo.db") as store:
        store.set_meta("marker", "first demo")
    with acquire_writer_lock(out / "demo.db"):  # the first demo, still running
        second = subprocess.run(
            [sys.executable, "-m", "monitor.cli", "demo", "--out", str(out), "--seconds", "1"],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert second.returncode == 2, second.stderr
    assert f"in use by process {os.getpid()}" in second.stderr
    assert query(out / "demo.db", "SELECT value FROM meta WHERE key = 'marker'") == [("first demo",)]


# --- modes --------------------------------------------------------------------------------------------------


def test_a_writer_tightens_the_archive_its_wal_and_shm_and_the_state_folder(
    sim: Simulator, tmp_path: Path, token: str
) -> None:
    folder = tmp_path / "state"
    db = folder / "a.db"
    Store.open(db).close()
    os.chmod(db, 0o644)
    os.chmod(folder, 0o755)  # noqa: S103 - the loose mode the writer must tighten
    config = write_config(tmp_path / "c.yaml", sim, db)
    # A reader holding the file open keeps its -wal and -shm, created with the archive's loose mode.
    reader = sqlite3.connect(db)
    try:
        reader.execute("SELECT count(*) FROM events").fetchone()
        for suffix in ("-wal", "-shm"):
            os.chmod(f"{db}{suffix}", 0o644)
        run = cli(config, token, "run", "--once", cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        modes = {path: stat.S_IMODE(os.stat(path).st_mode) for path in (db, f"{db}-wal", f"{db}-shm")}
    finally:
        reader.close()
    assert modes == {db: 0o600, f"{db}-wal": 0o600, f"{db}-shm": 0o600}
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    logged = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    tightened = {
        r["path"]: (r["mode_before"], r["mode"])
        for r in logged
        if r["event"] == "archive file mode tightened"
    }
    assert tightened == {
        str(db): ("0644", "0600"),
        f"{db}-wal": ("0644", "0600"),
        f"{db}-shm": ("0644", "0600"),
        str(folder): ("0755", "0700"),
    }
    # Already tight: the next start changes nothing and says nothing.
    again = cli(config, token, "run", "--once", cwd=tmp_path)
    assert again.returncode == 0 and "archive file mode tightened" not in again.stdout


# --- deleted or replaced under a running daemon ----------------------------------------------------------


def _file_digest(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


@pytest.mark.parametrize("change", ["deleted", "replaced"])
def test_an_archive_deleted_or_replaced_under_the_daemon_fails_every_cycle_loudly(
    sim: Simulator, tmp_path: Path, daemon_factory: Callable[..., Daemon], token: str, change: str
) -> None:
    db = tmp_path / "a.db"
    config = write_config(tmp_path / "c.yaml", sim, db, stale_after="1h")  # 503 must not come from staleness
    daemon = daemon_factory(config)
    wait_until(lambda: healthz(daemon)[0] == 200, 60, "healthz 200 after the first poll")

    if change == "deleted":
        db.unlink()
    else:  # an older copy put in its place (a restore, a mistaken copy)
        replacement = tmp_path / "restored.db"
        with (
            sqlite3.connect(f"file:{db}?mode=ro", uri=True) as source,
            sqlite3.connect(replacement) as target,
        ):
            source.backup(target)
        os.replace(replacement, db)
        before = _file_digest(db)
    sim.add_event("Delete Table")

    failed = daemon.wait_event("poll failed", 30, where=lambda r: r.get("error_kind") == "store")[0]
    assert f"{db}: the archive file was {change}" in failed["error"]
    status, body = healthz(daemon)
    assert status == 503
    assert body["reasons"][0].startswith(f"archive: {db}: the archive file was {change}")  # type: ignore[index]
    daemon.wait_event("poll failed", 30, where=lambda r: r.get("error_kind") == "store", count=2)
    if change == "deleted":
        assert not db.exists()  # never silently recreated
    else:
        assert _file_digest(db) == before  # the daemon wrote nothing into the file that replaced its own
    daemon.assert_running()


def test_tightening_only_removes_bits_and_leaves_a_shared_sticky_folder_alone(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)  # noqa: S103 - a /tmp-like folder other users rely on
    frozen = shared / "a.db"
    frozen.write_bytes(b"")
    os.chmod(frozen, 0o444)  # its owner made it read-only: tightening must not make it writable
    changes = tighten_modes(frozen)
    assert [(c.path, c.before, c.after) for c in changes] == [(str(frozen), 0o444, 0o400)]
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777


def test_requeue_runs_beside_a_writer_holding_the_lock(tmp_path: Path) -> None:
    """dead-letters requeue is one transaction of its own: it must work while the daemon runs."""
    db = tmp_path / "a.db"
    Store.open(db).close()
    config = tmp_path / "c.yaml"
    config.write_text(f"state: {{path: {db}}}\n", encoding="utf-8")
    with acquire_writer_lock(db):
        result = CliRunner().invoke(main_cli, ["--config", str(config), "dead-letters", "requeue", "--all"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "0 dead letters re-queued"

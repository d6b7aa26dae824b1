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

from monitor.events import canonical_json, normalize
from monitor.simulator import Simulator
from monitor.store import GENESIS_HASH, chain_hash


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


def test_verify_fails_when_the_cursor_says_events_were_archived_but_none_are(
    tmp_path: Path, sim: Simulator
) -> None:
    config = write_config(tmp_path, sim, sim.token)
    assert cli(config, "run", "--once", token=sim.token).returncode == 0
    with sqlite3.connect(tmp_path / "archive.db") as conn:
        conn.execute("DELETE FROM events")
    emptied = cli(config, "verify")
    assert emptied.returncode == 1, emptied.stdout
    assert "source prod" in emptied.stderr and "holds none of its events" in emptied.stderr


def copy_archive(tmp_path: Path, sim: Simulator, name: str) -> tuple[Path, sqlite3.Connection]:
    """A copy of tmp_path's archive in its own folder, with a config pointing at it."""
    folder = tmp_path / name
    folder.mkdir()
    conn = sqlite3.connect(folder / "archive.db", isolation_level=None)
    with sqlite3.connect(tmp_path / "archive.db") as source:
        source.backup(conn)
    return write_config(folder, sim, sim.token), conn


def rewrite_chain_from(conn: sqlite3.Connection, seq: int) -> None:
    """What a forger with the code does: edit a row, then recompute every hash after it."""
    conn.execute(
        "UPDATE events SET msg = 'nothing happened', raw = json_set(raw, '$.msg', 'nothing happened') "
        "WHERE seq = ?",
        (seq,),
    )
    prev = conn.execute("SELECT hash FROM events WHERE seq < ? ORDER BY seq DESC LIMIT 1", (seq,)).fetchone()
    link = prev[0] if prev else GENESIS_HASH
    rows = conn.execute("SELECT seq, source, event_id, raw FROM events WHERE seq >= ? ORDER BY seq", (seq,))
    for row_seq, source, event_id, raw in rows.fetchall():
        link = chain_hash(link, source, event_id, canonical_json(json.loads(raw)))
        conn.execute(
            "UPDATE events SET raw = ?, hash = ? WHERE seq = ?",
            (canonical_json(json.loads(raw)), link, row_seq),
        )


def test_verify_anchor_finds_rows_cut_from_the_end_a_rewritten_chain_and_a_deleted_row(
    tmp_path: Path, sim: Simulator
) -> None:
    config = write_config(tmp_path, sim, sim.token)
    assert cli(config, "run", "--once", token=sim.token).returncode == 0
    first = tmp_path / "first.json"
    taken = cli(config, "anchor", "--out", str(first))
    assert taken.returncode == 0, taken.stderr
    anchor = json.loads(first.read_text())
    assert set(anchor) == {"seq", "hash", "at", "events"}
    with sqlite3.connect(tmp_path / "archive.db") as conn:
        assert conn.execute("SELECT max(seq), count(*) FROM events").fetchone() == (
            anchor["seq"],
            anchor["events"],
        )
        assert (
            conn.execute("SELECT hash FROM events WHERE seq = ?", (anchor["seq"],)).fetchone()[0]
            == (anchor["hash"])
        )
    assert datetime.fromisoformat(anchor["at"]) <= datetime.now(UTC)
    printed = cli(config, "anchor")
    assert printed.returncode == 0 and json.loads(printed.stdout)["hash"] == anchor["hash"]

    # an intact archive passes, with the anchor and a newer one after more events
    sim.add_event("Delete Table", user={"id": 2, "email": "bo@corp.io"})
    assert cli(config, "run", "--once", token=sim.token).returncode == 0
    second = tmp_path / "second.json"
    assert cli(config, "anchor", "--out", str(second)).returncode == 0
    assert json.loads(second.read_text())["seq"] > anchor["seq"]
    intact = cli(config, "verify", "--anchor", str(first), "--anchor", str(second))
    assert intact.returncode == 0, intact.stderr
    assert intact.stdout.count(": OK: present with the anchored hash") == 2

    seq = anchor["seq"]
    truncated, conn = copy_archive(tmp_path, sim, "truncated")
    conn.execute("DELETE FROM events WHERE seq > ?", (seq - 3,))
    assert cli(truncated, "verify").returncode == 0  # the file alone cannot tell
    done = cli(truncated, "verify", "--anchor", str(first))
    assert done.returncode == 1
    assert f"row {seq} is missing: the archive ends at seq {seq - 3}" in done.stderr

    rewritten, conn = copy_archive(tmp_path, sim, "rewritten")
    rewrite_chain_from(conn, seq - 20)
    assert cli(rewritten, "verify").returncode == 0  # recomputed hashes: the file alone cannot tell
    done = cli(rewritten, "verify", "--anchor", str(first))
    assert done.returncode == 1
    assert f"row {seq} now has hash" in done.stderr and "the chain was rewritten" in done.stderr

    deleted, conn = copy_archive(tmp_path, sim, "deleted")
    conn.execute("DELETE FROM events WHERE seq = ?", (seq - 10,))
    done = cli(deleted, "verify", "--anchor", str(first))
    assert done.returncode == 1
    assert (
        f"FAILED at row {seq - 9} " in done.stderr and f"row {seq - 10} before it is missing" in done.stderr
    )


def test_deleting_the_oldest_rows_and_editing_meta_fails_verify_and_verify_anchor(
    tmp_path: Path, sim: Simulator
) -> None:
    config = write_config(tmp_path, sim, sim.token)
    assert cli(config, "run", "--once", token=sim.token).returncode == 0
    anchor = tmp_path / "head.json"
    assert cli(config, "anchor", "--out", str(anchor)).returncode == 0
    with sqlite3.connect(tmp_path / "archive.db") as conn:
        cut_hash = conn.execute("SELECT hash FROM events WHERE seq = 40").fetchone()[0]
        conn.execute("DELETE FROM events WHERE seq <= 40")
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('chain_anchor_hash', ?), "
            "('chain_anchor_pruned_at', '2026-01-01T00:00:00.000000+00:00')",
            (cut_hash,),
        )
    for args in (("verify",), ("verify", "--anchor", str(anchor))):
        done = cli(config, *args)
        assert done.returncode == 1, done.stdout
        assert "rows 1-40 before it are missing and no prune record" in done.stderr


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ("not json", "not JSON"),
        ('{"seq": 1, "at": "2026-01-01T00:00:00+00:00", "events": 1}', "missing key 'hash'"),
        ('{"seq": 1, "hash": "abc", "at": "2026-01-01T00:00:00+00:00", "events": 1}', "key 'hash'"),
        (
            '{"seq": -1, "hash": "' + "a" * 64 + '", "at": "2026-01-01T00:00:00+00:00", "events": 1}',
            "key 'seq'",
        ),
        ('{"seq": 1, "hash": "' + "a" * 64 + '", "at": "2026-01-01", "events": 1}', "key 'at'"),
    ],
)
def test_a_bad_anchor_file_is_a_usage_error_naming_file_and_key(
    tmp_path: Path, sim: Simulator, content: str, named: str
) -> None:
    config = write_config(tmp_path, sim, sim.token)
    bad = tmp_path / "anchor.json"
    bad.write_text(content)
    done = cli(config, "verify", "--anchor", str(bad))
    assert done.returncode == 2
    assert str(bad) in done.stderr and named in done.stderr and "Traceback" not in done.stderr

"""The evidence pack on disk: the sha256sum manifest, the JSON of every figure, the chain anchor."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from report_data import IN_MONTH, NOW

from monitor.anchors import ChainAnchor, check_anchor
from monitor.config import Config
from monitor.report import Period, build_report
from monitor.store import Store

SHA256SUM = shutil.which("sha256sum")


@pytest.mark.skipif(SHA256SUM is None, reason="sha256sum (coreutils) is not installed")
def test_sha256sum_checks_the_pack_and_catches_one_changed_byte(
    store: Store, config: Config, tmp_path: Path
) -> None:
    files = build_report(store, config, Period.parse("2026-03", config.tz), tmp_path, now=NOW)
    assert files.manifest is not None
    listed = [line.split("  ", 1)[1] for line in files.manifest.read_text(encoding="utf-8").splitlines()]
    assert sorted(listed) == sorted(
        p.name for p in tmp_path.iterdir() if p.name.startswith("compliance-report-") and p != files.manifest
    )
    ok = subprocess.run([SHA256SUM, "-c", files.manifest.name], cwd=tmp_path, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.count(": OK") == 5
    data = bytearray(files.csv.read_bytes())
    data[-2] ^= 0x01  # one byte of the last row
    files.csv.write_bytes(bytes(data))
    bad = subprocess.run([SHA256SUM, "-c", files.manifest.name], cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode == 1 and f"{files.csv.name}: FAILED" in bad.stdout


def test_json_holds_every_figure_and_matches_the_csv(store: Store, config: Config, tmp_path: Path) -> None:
    files = build_report(store, config, Period.parse("2026-03", config.tz), tmp_path, now=NOW, cap=2)
    assert files.json is not None
    doc = json.loads(files.json.read_text(encoding="utf-8"))
    assert doc["schema"] == "xano-audit-monitor/compliance-report" and doc["schema_version"] == 1
    assert doc["period"] == {
        "key": "2026-03",
        "label": "March 2026",
        "timezone": "Europe/Berlin",
        "start_utc": "2026-02-28T23:00:00.000000+00:00",
        "end_utc": "2026-03-31T22:00:00.000000+00:00",
        "start_local": "2026-03-01T00:00:00+01:00",
        "end_local": "2026-04-01T00:00:00+02:00",
        "hours": 743.0,
        "complete": True,
    }
    assert doc["summary"]["events"] == IN_MONTH == doc["evidence"]["csv"]["rows"]
    assert doc["summary"]["active_users"] == 3
    # The body stops at 2 rows; the JSON lists every one.
    critical = doc["activity"]["security_critical"]
    assert critical["total"] == critical["listed"] == 5 and len(critical["rows"]) == 5
    assert doc["integrity"]["files"][files.csv.name] == files.digests[files.csv.name]
    assert doc["integrity"]["head_at_end"]["seq"] == 17 and doc["integrity"]["verify_ok"] is True
    assert doc["report_id"] == doc["cover"]["report_id"] and doc["report_id"] in files.html.read_text()
    assert [c["control"] for c in doc["controls"]][:2] == ["CC6.2", "CC6.3"]
    # Lifecycle fields exist for the alert lifecycle to fill later; today they say "not recorded".
    first = doc["response"]["alerts"]["rows"][0]
    assert {k: first[k] for k in ("acknowledged_at", "resolved_at", "disposition", "mtta_seconds")} == {
        "acknowledged_at": None,
        "resolved_at": None,
        "disposition": None,
        "mtta_seconds": None,
    }
    assert doc["sign_off"] == {"name": None, "date": None, "decision": None}


def test_the_anchor_beside_the_report_is_checked_by_verify(
    store: Store, config: Config, tmp_path: Path
) -> None:
    files = build_report(store, config, Period.parse("2026-03", config.tz), tmp_path, now=NOW)
    assert files.anchor is not None
    anchor = ChainAnchor.load(files.anchor)
    assert (anchor.seq, anchor.hash) == store.head() and anchor.events == 17
    assert check_anchor(store, anchor).ok
    with store.transaction():
        store.conn.execute(
            "DELETE FROM events WHERE seq = 17"
        )  # rows cut from the end, outside the store API
    assert not check_anchor(store, anchor).ok


@pytest.mark.parametrize("tampered", [5, 14])  # in the first and in the second half of the walk
def test_the_chain_walk_in_a_worker_process_reports_a_broken_chain(
    store: Store, config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tampered: int
) -> None:
    """A large archive is walked by spawned processes (two halves, split at seq 9 here) while the CSV is
    written; their verdict must still reach the integrity section, the controls, and the JSON."""
    from monitor.report import evidence

    monkeypatch.setattr(evidence, "available_cpus", lambda: 2)
    period = Period.parse("2026-03", config.tz)
    clean = build_report(store, config, period, tmp_path / "clean", now=NOW, parallel_min_events=1)
    assert clean.figures.integrity is not None and clean.figures.integrity.verify_ok
    # The walk from row 1 (the row before the month's first event, row 2): rows 2-17.
    assert clean.figures.integrity.verify_rows == 16 and clean.figures.integrity.verify_from.seq == 1
    with store.transaction():
        store.conn.execute("UPDATE events SET msg = 'edited' WHERE seq = ?", (tampered,))  # outside the API
    files = build_report(store, config, period, tmp_path / "bad", now=NOW, parallel_min_events=1)
    integrity = files.figures.integrity
    assert integrity is not None and not integrity.verify_ok
    assert integrity.verify_detail.startswith(f"row {tampered}")
    assert {c.control: c.status for c in files.figures.controls}["164.312(b)"] == "exception"
    assert files.json is not None
    assert json.loads(files.json.read_text(encoding="utf-8"))["integrity"]["verify_ok"] is False
    assert "does not verify" in files.html.read_text(encoding="utf-8")


def test_csv_bom_for_excel_keeps_the_rows_and_the_manifest(store: Store, tmp_path: Path) -> None:
    from report_data import fixture_config

    config = fixture_config(tmp_path, report={"out_dir": str(tmp_path / "r"), "csv_bom": True})
    files = build_report(store, config, Period.parse("2026-03", config.tz), tmp_path / "out", now=NOW)
    data = files.csv.read_bytes()
    assert data.startswith(b"\xef\xbb\xbfsource,id,created_at")  # Excel reads UTF-8 only after a BOM
    assert data.count(b"\xef\xbb\xbf") == 1
    plain = build_report(
        store, fixture_config(tmp_path), Period.parse("2026-03", config.tz), tmp_path / "p", now=NOW
    )
    assert data[3:] == plain.csv.read_bytes() and files.rows == IN_MONTH
    assert files.manifest is not None and files.digests[files.csv.name] in files.manifest.read_text()

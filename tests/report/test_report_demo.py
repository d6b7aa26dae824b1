"""`audit-monitor demo` ends with the report of the simulated month (the simulator over HTTP on 127.0.0.1)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from monitor.demo import run_demo


def test_demo_writes_the_simulated_months_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_demo(tmp_path, seconds=0) == 0
    out = capsys.readouterr().out
    report_line = next(line for line in out.splitlines() if line.startswith("report: "))
    assert "(Europe/Berlin)" in report_line and "security-critical" in report_line
    [html] = sorted(tmp_path.glob("compliance-report-*.html"))
    month = html.stem.removeprefix("compliance-report-")
    for suffix in ("html", "txt", "csv"):
        path = tmp_path / f"compliance-report-{month}.{suffix}"
        assert f"  {path}" in out and path.stat().st_size > 0
    with open(tmp_path / f"compliance-report-{month}.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and f"{len(rows)} events" in report_line
    assert all(row["created_at"][:7] == month for row in rows)  # local month, local times


def test_demo_report_matches_its_simulator(tmp_path: Path) -> None:
    """The demo's simulator serves its whole history: the report must not claim a missed month or
    events expired upstream, and counts only people as active users."""
    assert run_demo(tmp_path, seconds=0) == 0
    [text] = sorted(tmp_path.glob("compliance-report-*.txt"))
    body = text.read_text(encoding="utf-8")
    assert "NOT polled this month" not in body and "may have expired" not in body
    with open(text.with_suffix(".csv"), encoding="utf-8", newline="") as handle:
        people = {row["user.email"] for row in csv.DictReader(handle)} - {""}
    assert f"Active users:       {len(people)}\n" in body

"""The benchmarks still run: `python -m bench --quick` (scaled-down sizes, ~10 s) prints the whole table.

Not a timed test: the figures are not checked against their targets (quick sizes say nothing about them),
only that every benchmark ran to the end and produced its rows.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROWS = [
    "Ingest: `run --once` backfill of 2,000 events vs the floor",
    "Rule engine: bundled pack",
    "Monthly report: 5,000-event month",
    "Peak RSS, 5,500 events archived: `run --once` (incremental poll)",
    "Peak RSS, 5,500 events archived: `verify`",
    "Peak RSS, 5,500 events archived: `export` of the month to a file",
    "API: `GET /api/v1/events?user=U&limit=100`, 5,500 events archived",
    "Console: dashboard for 30 days, 5,500 events archived",
    "Alert delay: poll that sees the event -> Slack stub (median / max of 2)",
    "Slack burst: 3 alerts, Slack limiting to 1 message/s",
    "5 sources at poll_interval 2 s in one process, one trickling: time between polls",
    "That daemon: SIGTERM to exit (a trickling request in flight); peak RSS",
]


@pytest.mark.timeout(150)
def test_quick_bench_prints_every_row(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick"],
        cwd=REPO,
        env={**os.environ, "TMPDIR": str(tmp_path)},  # every archive and config of the run lands here
        capture_output=True,
        text=True,
        timeout=140,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = done.stdout.split("## Summary", 1)[1]
    assert "Machine: " in summary and "Python " in summary
    for row in ROWS:
        assert f"| {row}" in summary, f"missing row {row!r} in\n{summary}"
    assert "failed" not in summary

"""Archive benchmark: peak RSS of the daemon's commands when the archive already holds a million events.

The archive is bench/month_archive.py's (N events in March 2026 plus 10 % around it, built in a child
process). Then, each as a subprocess whose peak RSS is read with ``os.wait4``:

- ``run --once``: an incremental poll. A simulator on 127.0.0.1 (in this process) continues the archive:
  ids above its newest, ``--new-events`` events after its cursor; the poll archives them onto the chain,
  runs the bundled rules and advances the cursor.
- ``status``; ``verify`` (the whole hash chain, streamed); ``export`` of the month as CSV to a file.

Target: under 100 MB for each.

    python -m bench.bench_archive [--events 1000000] [--new-events 300] [--keep DIR]
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
from datetime import timedelta
from pathlib import Path

from bench.common import MeasuredRun, monitor_command, run_measured
from bench.month_archive import (
    MONTH,
    MONTH_SINCE,
    MONTH_UNTIL,
    SOURCE,
    MonthArchive,
    ensure_archive,
    write_config,
)
from monitor.events import parse_timestamp
from monitor.simulator import Simulator

TARGET_RSS_MB = 100


def archive_head(db: Path) -> tuple[int, str]:
    """The source's highest archived id and its cursor's created_at (where the next poll continues)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        (max_id,) = conn.execute("SELECT max(event_id) FROM events WHERE source = ?", (SOURCE,)).fetchone()
        (created_at,) = conn.execute(
            "SELECT last_created_at FROM cursors WHERE source = ?", (SOURCE,)
        ).fetchone()
        return int(max_id), str(created_at)


def archived_above(db: Path, event_id: int) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        (count,) = conn.execute(
            "SELECT count(*) FROM events WHERE source = ? AND event_id > ?", (SOURCE, event_id)
        ).fetchone()
        return int(count)


def poll_new_events(archive: MonthArchive, workdir: Path, new_events: int) -> MeasuredRun:
    """``run --once`` against a simulator holding ``new_events`` events newer than the archive's cursor."""
    max_id, cursor_created_at = archive_head(archive.db)
    start = parse_timestamp(cursor_created_at) + timedelta(seconds=1)
    now = start + timedelta(minutes=30)
    with Simulator(
        seed=23,
        clock=lambda: now,
        history_start=start,
        total_events=new_events,
        incidents=False,
        live_background=False,
        ids_after=max_id,
    ) as sim:
        config = write_config(
            workdir, archive.db, base_url=sim.base_url, token=sim.token, name="audit-monitor-poll.yaml"
        )
        run = run_measured(monitor_command(config, "run", "--once", "--log-level", "warning")).check()
    archived = archived_above(archive.db, max_id)
    if archived != new_events:
        raise SystemExit(f"run --once archived {archived} new events, expected {new_events}")
    return run


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the archive's month")
    parser.add_argument("--new-events", type=int, default=300, help="events the incremental poll archives")
    parser.add_argument(
        "--keep", type=Path, help="Build the archive in this folder and keep it (reused if there)."
    )
    args = parser.parse_args(argv)
    if args.keep:
        return measure(args, args.keep)
    with tempfile.TemporaryDirectory(prefix="bench-archive-") as tmp:  # a million events: ~0.9 GB
        return measure(args, Path(tmp))


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    archive = ensure_archive(workdir, args.events)
    export_path = workdir / f"export-{MONTH}.csv"

    runs: dict[str, MeasuredRun] = {"run --once": poll_new_events(archive, workdir, args.new_events)}
    runs["status"] = run_measured(monitor_command(archive.config, "status")).check()
    runs["verify"] = run_measured(monitor_command(archive.config, "verify")).check()
    if not runs["verify"].stdout.startswith("OK: "):
        raise SystemExit(f"verify did not pass: {runs['verify'].stdout}")
    export = ["export", "--since", MONTH_SINCE, "--until", MONTH_UNTIL]
    runs["export"] = run_measured(monitor_command(archive.config, *export, "--out", str(export_path))).check()
    exported = int(runs["export"].stderr.split()[0])
    if exported != archive.events_in_month:
        raise SystemExit(f"export wrote {exported} events, the month holds {archive.events_in_month}")
    export_path.unlink()

    print(f"archive: {archive.events_total:,} events ({archive.events_in_month:,} in {MONTH}), "
          f"{archive.db.stat().st_size / 1e6:.0f} MB; target < {TARGET_RSS_MB} MB per command\n")  # fmt: skip
    # The last column is the floor of the figure (a child starts from its parent's peak RSS): it must
    # stay well below the peak for the peak to be the command's own.
    print("| command | wall | peak RSS | this process's peak at spawn |")
    print("| --- | ---: | ---: | ---: |")
    for name, run in runs.items():
        print(
            f"| {name} | {run.seconds:.1f} s | {run.peak_rss_mb:.0f} MB | {run.parent_peak_rss_mb:.0f} MB |"
        )
    print(f"\n{runs['verify'].stdout.split(',')[0]}; {exported:,} events exported; "
          f"run --once archived {args.new_events} new events")  # fmt: skip
    result: dict[str, float] = {"events": float(archive.events_total)}
    for name, run in runs.items():
        key = name.replace(" --", "_").replace(" ", "_")
        result[f"{key}_rss_mb"] = run.peak_rss_mb
        result[f"{key}_seconds"] = run.seconds
    return result


if __name__ == "__main__":
    main()

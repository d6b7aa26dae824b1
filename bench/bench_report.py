"""Monthly report benchmark: `audit-monitor report` for a month of N events (default 1,000,000).

The archive is bench/month_archive.py's: March 2026 in Europe/Berlin (743 hours, a DST change) with N
events, 10 % more in the neighbouring months, alerts and a gap; real archive rows inserted directly.

The report runs as a subprocess (``python -m monitor.cli report``), its reconciliation answered by a
simulator on 127.0.0.1: wall time; peak RSS read with ``os.wait4`` (the report process, or a worker if
larger), and the summed RSS and PSS of the report and its workers sampled from /proc. Then, in this
process, the figures, the chain walk and the CSV are each timed alone, to show where the time goes
(``--no-breakdown`` skips that). Targets: under 30 s and under 150 MB peak RSS.

    python -m bench.bench_report [--events 1000000] [--keep DIR] [--no-breakdown]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

from bench.common import monitor_command, run_measured
from bench.month_archive import MONTH, TZ, MonthArchive, ensure_archive, write_config
from monitor.simulator import Simulator

TARGET_SECONDS = 30
TARGET_RSS_MB = 150


class TreeRss(threading.Thread):
    """Samples the summed memory of a process and its children (the report's workers) every 250 ms (reading
    smaps_rollup every 20 ms took ~3 s of the two cores the report runs on, and the peaks last seconds): RSS,
    which counts the pages they share (libraries) once per process, and PSS, which shares them out."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.pid = 0
        self.peak_kib = 0
        self.peak_pss_kib = 0
        self.stop = threading.Event()

    def watch(self, pid: int) -> None:
        self.pid = pid
        self.start()

    def finish(self) -> tuple[float, float]:
        """Stop sampling; the peaks of the summed RSS and PSS in MB."""
        self.stop.set()
        self.join()
        return self.peak_kib / 1024, self.peak_pss_kib / 1024

    def run(self) -> None:
        while not self.stop.wait(0.25):
            rss = pss = 0
            for pid in [self.pid, *self.children(self.pid)]:
                rss += self.field(f"/proc/{pid}/status", "VmRSS:")
                pss += self.field(f"/proc/{pid}/smaps_rollup", "Pss:")
            self.peak_kib = max(self.peak_kib, rss)
            self.peak_pss_kib = max(self.peak_pss_kib, pss)

    @staticmethod
    def field(path: str, name: str) -> int:
        """A kB figure of a /proc file; 0 when the process has gone."""
        try:
            text = Path(path).read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            if line.startswith(name):
                return int(line.split()[1])
        return 0

    @staticmethod
    def children(pid: int) -> list[int]:
        found = []
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                found += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
        return found


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument(
        "--keep", type=Path, help="Build the archive in this folder and keep it (reused if there)."
    )
    parser.add_argument(
        "--no-breakdown", action="store_true", help="Skip timing the figures and the CSV in this process."
    )
    args = parser.parse_args(argv)
    if args.keep:
        return measure(args, args.keep)
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:  # a million events: ~0.9 GB
        return measure(args, Path(tmp))


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    # Built in a child process: this one stays small, so the report child it starts next starts small too.
    archive = ensure_archive(workdir, args.events)

    load_before = os.getloadavg()[0]
    tree = TreeRss()
    # The report asks Xano for the month's count (its reconciliation): a simulator on 127.0.0.1 answers, in
    # one round trip as Xano would. The archive's own config names no server, and the report would wait out
    # its retries there (5 s) instead.
    with Simulator(total_events=100, incidents=False, live_background=False) as sim:
        config = write_config(
            workdir, archive.db, base_url=sim.base_url, token=sim.token, name="audit-monitor-report.yaml"
        )
        run = run_measured(monitor_command(config, "report", "--month", MONTH), on_spawn=tree.watch).check()
    tree_mb, tree_pss_mb = tree.finish()
    csv_path = workdir / "reports" / f"compliance-report-{MONTH}.csv"
    html_path = workdir / "reports" / f"compliance-report-{MONTH}.html"
    print(run.stdout.splitlines()[0])
    print(f"report (subprocess, end to end): {run.seconds:.1f} s ({run.cpu_seconds:.1f} s CPU), "
          f"peak RSS {run.peak_rss_mb:.0f} MB "
          f"(all its processes together: RSS {tree_mb:.0f} MB, PSS {tree_pss_mb:.0f} MB; "
          f"this process's peak at spawn, the figure's "
          f"floor: {run.parent_peak_rss_mb:.0f} MB) "
          f"(targets: < {TARGET_SECONDS} s, < {TARGET_RSS_MB} MB); "
          f"CSV {csv_path.stat().st_size / 1e6:.0f} MB, "
          f"HTML {html_path.stat().st_size / 1e3:.0f} kB; "
          f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after "
          f"(the machine's other work shares the cores)")  # fmt: skip
    result = {
        "events": float(archive.events_in_month),
        "seconds": run.seconds,
        "cpu_seconds": run.cpu_seconds,
        "peak_rss_mb": run.peak_rss_mb,
        "tree_rss_mb": tree_mb,
        "tree_pss_mb": tree_pss_mb,
        "html_kb": html_path.stat().st_size / 1e3,
        "load_before": load_before,
    }
    if args.no_breakdown:
        return result

    figures_s, walk_s, csv_s = breakdown(archive)
    return {**result, "figures_seconds": figures_s, "walk_seconds": walk_s, "csv_seconds": csv_s}


def breakdown(archive: MonthArchive) -> tuple[float, float, float]:
    """Time the report's three large parts alone, one after the other in this process, where the report
    runs them at once in several: the figures (SQL), the chain walk and the CSV. (figures, walk, CSV) s."""
    # Imported only now: until the report has run, this process stays small (a child's peak RSS starts
    # at its parent's, bench/common.py).
    from monitor.config import load_config
    from monitor.export import write_events_csv
    from monitor.report import Period, compute_figures
    from monitor.report.figures import walk_start
    from monitor.store import Store

    config = load_config(archive.config)
    period = Period.parse(MONTH, TZ)
    with Store.open(archive.db) as store:
        started = time.perf_counter()
        now = period.end + timedelta(days=12)
        figures = compute_figures(store, config, period, now=now, verify=False)
        figures_s = time.perf_counter() - started
        started = time.perf_counter()
        walk = store.verify(after=walk_start(store, period))
        walk_s = time.perf_counter() - started
        started = time.perf_counter()
        with open(os.devnull, "w", encoding="utf-8", newline="") as sink:
            rows = write_events_csv(store, period.start, period.end, sink, config.tz)
        csv_s = time.perf_counter() - started
    print(f"  alone, in one process: figures (SQL) {figures_s:.1f} s for {figures.total:,} events; "
          f"chain walk {walk_s:.1f} s for {walk.rows_checked:,} rows; "
          f"CSV {csv_s:.1f} s for {rows:,} rows (to /dev/null)")  # fmt: skip
    return figures_s, walk_s, csv_s


if __name__ == "__main__":
    main()

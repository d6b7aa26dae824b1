"""`make bench`: run every benchmark, then one table (benchmark | figure | target | met?) and the machine.

Each benchmark runs in a process of its own, so that peak-RSS figures of one never include another's
children: ``python -m bench --one MODULE FIGURES.json ARGS...`` calls ``MODULE.main(ARGS)`` and writes the
figures it returns as JSON. The report and archive benchmarks share one synthetic archive (building a
million events takes about a minute); the report runs first, as the archive benchmark adds events to it.

    python -m bench [--quick]

``--quick`` runs scaled-down sizes in well under a minute: a smoke check that every benchmark still
works, not a measurement (the targets are for the full sizes).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.common import machine_description

Figures = dict[str, float]
Row = tuple[str, str, str, bool | None]  # benchmark, figure, target, met (None: no target)


@dataclass(frozen=True)
class Benchmark:
    name: str
    module: str
    args: Callable[[bool, Path], list[str]]  # (quick, shared archive folder) -> argv
    rows: Callable[[Figures], list[Row]]


def _ingest_rows(f: Figures) -> list[Row]:
    ratio, rss = f["ratio"], f["peak_rss_mb"]
    return [
        (
            f"Ingest: `run --once` backfill of {f['events']:,.0f} events vs the floor",
            f"ratio {ratio:.2f} ({f['monitor_events_per_s']:,.0f} vs {f['floor_events_per_s']:,.0f} ev/s)",
            ">= 0.33",
            ratio >= 1 / 3,
        ),
        ("Ingest: peak RSS of that `run --once`", f"{rss:.0f} MB", "< 100 MB", rss < 100),
    ]


def _rules_rows(f: Figures) -> list[Row]:
    rate = f["events_per_s"]
    return [
        (
            f"Rule engine: bundled pack ({f['rules']:.0f} rules), {f['events']:,.0f} events",
            f"{rate:,.0f} events/s",
            ">= 100,000 events/s",
            rate >= 100_000,
        )
    ]


def _report_rows(f: Figures) -> list[Row]:
    seconds, rss = f["seconds"], f["peak_rss_mb"]
    return [
        (
            f"Monthly report: {f['events']:,.0f}-event month (CPU time of its processes)",
            f"{seconds:.1f} s ({f['cpu_seconds']:.1f} s CPU)",
            "< 30 s",
            seconds < 30,
        ),
        ("Monthly report: peak RSS (largest process)", f"{rss:.0f} MB", "< 150 MB", rss < 150),
    ]


def _archive_rows(f: Figures) -> list[Row]:
    commands = [
        ("run_once", "`run --once` (incremental poll)"),
        ("status", "`status`"),
        ("verify", "`verify`"),
        ("export", "`export` of the month to a file"),
    ]
    return [
        (
            f"Peak RSS, {f['events']:,.0f} events archived: {label}",
            f"{f[f'{key}_rss_mb']:.0f} MB ({f[f'{key}_seconds']:.1f} s)",
            "< 100 MB",
            f[f"{key}_rss_mb"] < 100,
        )
        for key, label in commands
    ]


def _web_rows(f: Figures) -> list[Row]:
    total = f"{f['events_total']:,.0f} events archived"
    return [
        (
            f"API: `GET /api/v1/events?user=U&limit=100`, {total} ({f['user_requests']:.0f} requests)",
            f"p95 {f['user_p95_ms']:.0f} ms (median {f['user_p50_ms']:.0f} ms)",
            "p95 < 300 ms",
            f["user_p95_ms"] < 300,
        ),
        (
            f"Console: dashboard for 30 days, {total}",
            f"{f['dashboard_median_s']:.2f} s median, {f['dashboard_max_s']:.2f} s worst of 5",
            "< 1 s",
            f["dashboard_max_s"] < 1,
        ),
        (
            f"API: walking all {f['walked']:,.0f} events, 1,000 a page",
            f"{f['walk_events_per_s']:,.0f} events/s ({f['walk_seconds']:.0f} s)",
            ">= 20,000 events/s",
            f["walk_events_per_s"] >= 20_000,
        ),
        (
            "Daemon: peak RSS with the web server up and idle",
            f"{f['idle_rss_mb']:.0f} MB (after the load above: {f['after_load_rss_mb']:.0f} MB)",
            "< 120 MB",
            f["idle_rss_mb"] < 120,
        ),
    ]


def _delay_rows(f: Figures) -> list[Row]:
    of = f"median / max of {f['repeat']:.0f}"
    return [
        (
            f"Alert delay: poll that sees the event -> Slack stub ({of})",
            f"{f['poll_to_slack_median_s']:.2f} s / {f['poll_to_slack_max_s']:.2f} s",
            "<= 5 s",
            f["poll_to_slack_max_s"] <= 5,
        ),
        (
            f"Alert delay: insertion -> Slack stub, poll interval {f['poll_interval_s']:g} s ({of})",
            f"{f['insert_to_slack_median_s']:.2f} s / {f['insert_to_slack_max_s']:.2f} s",
            "-",
            None,
        ),
    ]


def _slack_burst_rows(f: Figures) -> list[Row]:
    n = f["alerts"]
    ok = f["delivered"] == n and f["in_order"] == 1 and f["failed"] == 0
    return [
        (
            f"Slack burst: {n:.0f} alerts, Slack limiting to 1 message/s (429 Retry-After: 1), one pass",
            f"{f['seconds_to_last']:.1f} s to the last; {f['refused_429']:.0f} x 429; "
            + ("all in order" if ok else "NOT all delivered in order"),
            "<= 25 s for 20, all in order" if n == 20 else "all in order",
            ok and (n != 20 or f["seconds_to_last"] <= 25),
        )
    ]


def _sources_rows(f: Figures) -> list[Row]:
    interval = f["poll_interval_s"]
    target = interval * 7 / 6  # 70 s at the 60 s interval
    p95 = f["gap_p95_s"]
    polled = f["healthy_sources_polled"] == f["healthy_sources"] and f["healthy_failed_polls"] == 0
    return [
        (
            f"{f['sources']:.0f} sources at poll_interval {interval:g} s in one process, one trickling: "
            "time between polls of each healthy source",
            f"p95 {p95:.1f} s, worst source's p95 {f['worst_source_p95_s']:.1f} s, "
            f"max {f['gap_max_s']:.1f} s "
            f"({f['intervals']:.0f} intervals; poll errors: {f['healthy_failed_polls']:.0f})",
            f"p95 < {target:.0f} s, every source polled",
            p95 < target and polled,
        ),
        (
            "That daemon: SIGTERM to exit (a trickling request in flight); peak RSS",
            f"{f['sigterm_to_exit_s']:.1f} s; {f['peak_rss_mb']:.0f} MB",
            "< 10 s",
            f["sigterm_to_exit_s"] < 10,
        ),
    ]


def _sizes(quick: bool) -> dict[str, str]:
    """Each benchmark's size; the report and archive benchmarks must agree, as they share the archive."""
    if quick:
        return {
            "ingest": "2000",
            "rules": "10000",
            "month": "5000",
            "repeat": "2",
            "burst": "3",
            "sources": "5",
            "interval": "2",
            "seconds": "8",
        }
    return {
        "ingest": "200000",
        "rules": "1000000",
        "month": "1000000",
        "repeat": "10",
        "burst": "20",
        "sources": "100",
        "interval": "60",
        "seconds": "300",
    }


BENCHMARKS = [
    Benchmark(
        "ingest",
        "bench.bench_ingest",
        lambda quick, _: ["--events", _sizes(quick)["ingest"], "--per-page", "500"],
        _ingest_rows,
    ),
    Benchmark(
        "rules",
        "bench.bench_rules",
        lambda quick, _: ["--events", _sizes(quick)["rules"], "--scales", "1", "--no-index-comparison"],
        _rules_rows,
    ),
    Benchmark(
        "report",
        "bench.bench_report",
        lambda quick, shared: ["--events", _sizes(quick)["month"], "--keep", str(shared), "--no-breakdown"],
        _report_rows,
    ),
    Benchmark(
        "archive",
        "bench.bench_archive",
        lambda quick, shared: ["--events", _sizes(quick)["month"], "--keep", str(shared)],
        _archive_rows,
    ),
    Benchmark(
        "web",
        "bench.bench_web",
        lambda quick, shared: [
            "--events",
            _sizes(quick)["month"],
            "--keep",
            str(shared),
            "--idle",
            "1" if quick else "5",
        ],
        _web_rows,
    ),  # fmt: skip
    Benchmark(
        "delay",
        "bench.bench_delay",
        lambda quick, _: ["--repeat", _sizes(quick)["repeat"], "--poll-interval", "1"],
        _delay_rows,
    ),
    Benchmark(
        "slack-burst",
        "bench.bench_slack_burst",
        lambda quick, _: ["--alerts", _sizes(quick)["burst"]],
        _slack_burst_rows,
    ),
    Benchmark(
        "sources",
        "bench.bench_sources",
        lambda quick, _: [
            "--sources",
            _sizes(quick)["sources"],
            "--poll-interval",
            _sizes(quick)["interval"],
            "--seconds",
            _sizes(quick)["seconds"],
        ],
        _sources_rows,
    ),
]


def run_one(module: str, figures_path: Path, argv: list[str]) -> None:
    """In the benchmark's own process: call its main and keep the figures for the parent."""
    figures = importlib.import_module(module).main(argv)
    figures_path.write_text(json.dumps(figures), encoding="utf-8")


def table(rows: list[Row]) -> str:
    met = {True: "yes", False: "**no**", None: "-"}
    lines = ["| benchmark | figure | target | met? |", "| --- | --- | --- | --- |"]
    lines += [f"| {name} | {figure} | {target} | {met[ok]} |" for name, figure, target, ok in rows]
    return "\n".join(lines)


def run_all(quick: bool) -> int:
    machine = machine_description()  # before the run: the load average says what else was running
    started = time.perf_counter()
    rows: list[Row] = []
    failed = []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        shared = Path(tmp) / "month-archive"
        for bench in BENCHMARKS:
            figures_path = Path(tmp) / f"{bench.name}.json"
            argv = bench.args(quick, shared)
            print(f"\n== {bench.name}: python -m {bench.module} {' '.join(argv)}", flush=True)
            command = [sys.executable, "-m", "bench", "--one", bench.module, str(figures_path), *argv]
            bench_started = time.perf_counter()
            returncode = subprocess.run(command, check=False).returncode
            print(f"== {bench.name}: {time.perf_counter() - bench_started:.0f} s", flush=True)
            if returncode != 0 or not figures_path.exists():
                failed.append(bench.name)
                rows.append((f"{bench.name} (see its output above)", "failed", "-", False))
                continue
            rows += bench.rows(json.loads(figures_path.read_text(encoding="utf-8")))
    wall = time.perf_counter() - started
    print(
        "\n## Summary" + (" (--quick: scaled-down sizes, a smoke check; targets are for full sizes)" * quick)
    )
    load_after = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    print(f"\nMachine: {machine} (at the start), load {load_after} at the end. "
          f"Wall time of the whole run: {wall / 60:.1f} min.\n")  # fmt: skip
    print(table(rows))
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--quick", action="store_true", help="scaled-down sizes: a smoke check")
    parser.add_argument("--one", nargs=2, metavar=("MODULE", "FIGURES"), help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    if args.one:
        run_one(args.one[0], Path(args.one[1]), rest)
        return 0
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return run_all(args.quick)


if __name__ == "__main__":
    sys.exit(main())

"""Many sources, one of them trickling: does every healthy source keep its poll interval?

An agency monitors its clients' Xano instances from one process. Real parts: ``audit-monitor run`` as a
subprocess polling ``--sources`` sources at ``--poll-interval``; the healthy ones are served by a few
simulators on 127.0.0.1 in this process (ten sources per simulator, each source its own cursor and
archive rows), and one source is a server that answers 200 at once and then sends its body a byte every
2 s (``timeout: 5s``, so each request runs to its deadline and is retried, cycle after cycle). After
``--seconds``, SIGTERM; the daemon's JSON log gives each cycle's start (its end minus its duration).

Figures: the time between the starts of consecutive cycles of each healthy source (p95 over all of them,
and the worst), the failed polls of healthy sources, the daemon's peak RSS, and the time from SIGTERM to
the exit. Target: p95 < 70 s at a 60 s interval (the interval plus a sixth, scaled for shorter ones).

    python -m bench.bench_sources [--sources 100] [--poll-interval 60] [--seconds 300]
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import monitor_command
from monitor.simulator import Simulator, TricklingUpstream

SOURCES_PER_SIMULATOR = 10
TOKEN = "bench-sources-token"  # noqa: S105 - the simulators' own test token


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_sources", description=__doc__)
    parser.add_argument("--sources", type=int, default=100, help="sources in all, one of them trickling")
    parser.add_argument("--poll-interval", type=float, default=60.0, help="seconds")
    parser.add_argument("--seconds", type=float, default=300.0, help="how long the daemon runs")
    args = parser.parse_args(argv)
    healthy_count = max(1, args.sources - 1)
    simulators: list[Simulator] = []
    upstream = TricklingUpstream(gap=2.0)
    try:
        for _ in range(math.ceil(healthy_count / SOURCES_PER_SIMULATOR)):
            sim = Simulator(
                seed=len(simulators) + 1,
                token=TOKEN,
                history_start=datetime.now(UTC) - timedelta(days=1),
                events_per_day=100,
                live_background=False,
            )
            sim.start()
            simulators.append(sim)
        with tempfile.TemporaryDirectory(prefix="bench-sources-") as tmp:
            figures = _run(args, healthy_count, simulators, upstream, Path(tmp))
    finally:
        upstream.stop()
        for sim in simulators:
            sim.stop()
    print(json.dumps(figures, indent=2))
    return figures


def _run(
    args: argparse.Namespace,
    healthy_count: int,
    simulators: list[Simulator],
    upstream: TricklingUpstream,
    tmp: Path,
) -> dict[str, float]:
    interval = f"{args.poll_interval:g}s"
    sources: list[dict[str, Any]] = [
        {
            "name": "trickling",
            "base_url": f"http://127.0.0.1:{upstream.server_address[1]}",
            "token": TOKEN,
            "poll_interval": interval,
            "timeout": "5s",
        }
    ]
    sources += [
        {
            "name": f"client-{n:03d}",
            "base_url": simulators[n // SOURCES_PER_SIMULATOR].base_url,
            "token": TOKEN,
            "poll_interval": interval,
            "plan_retention": "60d",
        }
        for n in range(healthy_count)
    ]
    config = tmp / "audit-monitor.yaml"
    config.write_text(
        json.dumps(
            {
                "state": {"path": str(tmp / "archive.db")},
                "sources": sources,
                "alerts": {"console": False},
                "server": {"listen": ""},
            }
        ),
        encoding="utf-8",
    )
    log_path = tmp / "daemon.log"
    with open(log_path, "wb") as log, open(tmp / "daemon.err", "wb") as err:
        daemon = subprocess.Popen(monitor_command(config, "run"), cwd=tmp, stdout=log, stderr=err)
        try:
            time.sleep(args.seconds)
            rss = peak_rss_mb(daemon.pid)
            stopping = time.monotonic()
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=60)
            stop_seconds = time.monotonic() - stopping
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()
    starts: dict[str, list[float]] = {}
    failed = 0
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        source = record.get("source", "")
        if not source.startswith("client-"):
            continue
        if record.get("event") == "poll failed":
            failed += 1
        elif record.get("event") == "poll cycle":
            ended = datetime.fromisoformat(record["ts"]).timestamp()
            starts.setdefault(source, []).append(ended - float(record["duration_s"]))
    gaps = [b - a for times in starts.values() for a, b in zip(times, times[1:], strict=False)]
    if not gaps:
        raise SystemExit("no healthy source was polled twice: run longer than two poll intervals")
    worst_p95 = max(
        percentile([b - a for a, b in zip(t, t[1:], strict=False)], 0.95)
        for t in starts.values()
        if len(t) > 1
    )
    return {
        "sources": float(args.sources),
        "poll_interval_s": args.poll_interval,
        "seconds": args.seconds,
        "healthy_sources_polled": float(len(starts)),
        "healthy_sources": float(healthy_count),
        "intervals": float(len(gaps)),
        "gap_p50_s": percentile(gaps, 0.50),
        "gap_p95_s": percentile(gaps, 0.95),
        "gap_max_s": max(gaps),
        "worst_source_p95_s": worst_p95,
        "healthy_failed_polls": float(failed),
        "peak_rss_mb": rss,
        "sigterm_to_exit_s": stop_seconds,
    }


if __name__ == "__main__":
    main()

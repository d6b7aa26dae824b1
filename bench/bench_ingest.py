"""Ingest benchmark: a backfill of N simulated events with `run --once` against a floor from the same run.

The floor is the least any ingester must do: parse the same JSON pages and `executemany` the rows into
SQLite, with nothing else (no HTTP, no normalisation, no hash chain, no rules). The monitor's figure is
end to end: HTTP from the simulator on 127.0.0.1, staging, normalisation, the hash chain, the bundled rules,
the cursor, in a subprocess whose peak RSS is measured. The monitor reads the very pages the floor parsed,
over HTTP from a replay server in this process: the simulator builds each entry on request (~28 us an
event, more than half the monitor's own time), and that cost is the simulator's, not the monitor's.
``--live`` reads from the simulator instead, for comparison.

    python -m bench.bench_ingest [--events 200000] [--per-page 500] [--incremental 1000] [--postgresql]

``--postgresql`` archives into PostgreSQL (``state.url``) instead of an SQLite file: a private server
started from the system's binaries (tests/postgres.py), or the empty database ``--postgresql-url`` names.
The floor stays SQLite's, so the figure to read there is the monitor's events/s (target >= 5,000).

``--incremental N`` then adds N events to the log and measures a second `run --once` against the archive
the backfill left: an ordinary cycle's time and peak RSS with the whole backfill already archived.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from monitor.simulator import Simulator
from monitor.store import Store


def fetch_pages(sim: Simulator, per_page: int) -> list[bytes]:
    pages = []
    url = f"{sim.base_url}/api:meta/workspace/1/audit_log/search"
    with httpx.Client(headers={"Authorization": f"Bearer {sim.token}"}, timeout=60) as client:
        page: int | None = 1
        while page:
            body = {
                "page": page,
                "per_page": per_page,
                "include_data": True,
                "sort": {"id": "desc"},
                "search": [],
            }
            response = client.post(url, json=body)
            response.raise_for_status()
            pages.append(response.content)
            page = response.json()["nextPage"]
    return pages


def floor(pages: list[bytes], db_path: Path) -> tuple[int, float]:
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, created_at TEXT, type TEXT, raw TEXT)")
    started = time.perf_counter()
    count = 0
    with conn:
        for body in pages:
            items = json.loads(body)["items"]
            conn.executemany(
                "INSERT INTO events VALUES (?, ?, ?, ?)",
                [(i["id"], str(i["created_at"]), i["type"], json.dumps(i)) for i in items],
            )
            count += len(items)
    elapsed = time.perf_counter() - started
    conn.close()
    return count, elapsed


class ReplayServer:
    """Serves recorded audit-log pages on 127.0.0.1, as the simulator served them (same bytes, same paging).

    It refuses a request that is not the walk the pages were recorded for, so the bench cannot quietly
    measure something else."""

    def __init__(self, pages: list[bytes], token: str, per_page: int) -> None:
        expected = {"per_page": per_page, "include_data": True, "sort": {"id": "desc"}, "search": []}

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - the stdlib's naming
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                page = request.pop("page", None)
                ok = (
                    self.path == "/api:meta/workspace/1/audit_log/search"
                    and self.headers.get("Authorization") == f"Bearer {token}"
                    and request == expected
                    and isinstance(page, int)
                    and 1 <= page <= len(pages)
                )
                body = pages[page - 1] if ok else b'{"code": "ERROR_CODE_BAD_REQUEST"}'
                self.send_response(200 if ok else 400)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.token = token
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# Runs a command and writes its wall time and peak RSS to a file. The monitor must be started from this small
# process rather than from the bench itself: Linux seeds a child's ru_maxrss with the high-water mark of the
# address space it had before exec, so a child forked from the bench (which holds the simulator and, for a
# while, every fetched page) would report the bench's peak, not its own.
_MEASURE = """
import json, resource, subprocess, sys, time
started = time.perf_counter()
code = subprocess.run(sys.argv[2:]).returncode
elapsed = time.perf_counter() - started
peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
with open(sys.argv[1], "w") as out:
    json.dump({"code": code, "seconds": elapsed, "peak_kb": peak_kb}, out)
sys.exit(code)
"""


def measured_run(command: list[str], workdir: Path) -> tuple[float, int]:
    """Run ``command``; return its wall time in seconds and its own peak RSS in bytes (its stdout is
    kept in ``workdir/stdout.txt``)."""
    report = workdir / "measure.json"
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(report), *command],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[2:])} failed: {done.stderr[-2000:]}")
    (workdir / "stdout.txt").write_text(done.stdout)
    measured = json.loads(report.read_text())
    return measured["seconds"], measured["peak_kb"] * 1024


def write_config(sim: Simulator | ReplayServer, per_page: int, workdir: Path, url: str | None = None) -> Path:
    config = workdir / "audit-monitor.yaml"
    state = f'{{url: "{url}"}}' if url else f"{{path: {workdir / 'archive.db'}}}"
    config.write_text(
        f"state: {state}\n"
        f"sources:\n  - name: bench\n    base_url: {sim.base_url}\n    token: {sim.token}\n"
        f"    workspace_id: 1\n    per_page: {per_page}\n"
        "alerts: {console: false}\nserver: {listen: ''}\n"
    )
    return config


def monitor_run_once(
    sim: Simulator | ReplayServer,
    per_page: int,
    workdir: Path,
    url: str | None = None,
    log_level: str = "warning",
) -> tuple[int, float, int]:
    """`audit-monitor run --once` against the simulator: events archived, seconds, peak RSS in bytes."""
    config = write_config(sim, per_page, workdir, url)
    command = [sys.executable, "-m", "monitor.cli", "--config", str(config), "run", "--once"]
    elapsed, peak = measured_run([*command, "--log-level", log_level], workdir)
    if url:
        with Store.open(url, readonly=True) as store:
            return store.event_count(), elapsed, peak
    with sqlite3.connect(workdir / "archive.db") as conn:
        archived = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    return archived, elapsed, peak


def cycle_seconds(stdout: Path) -> float:
    """The duration the `poll cycle` log line gives: the cycle itself, without starting the program."""
    for line in stdout.read_text().splitlines():
        if line.startswith("{") and json.loads(line).get("event") == "poll cycle":
            return float(json.loads(line)["duration_s"])
    raise SystemExit(f"no poll cycle line in {stdout}")


@contextlib.contextmanager
def postgresql_database(url: str | None) -> Iterator[str]:
    """The empty database ``url``, or one of a private server started for the run (stopped after it)."""
    if url:
        yield url
        return
    from tests.postgres import running_server

    with running_server() as server:
        yield server.new_database()


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--per-page", type=int, default=500)
    parser.add_argument("--incremental", type=int, default=0, metavar="N")
    parser.add_argument("--live", action="store_true", help="read from the simulator, not recorded pages")
    parser.add_argument("--postgresql", action="store_true", help="archive into PostgreSQL (state.url)")
    parser.add_argument("--postgresql-url", metavar="URL", help="an empty database to use with --postgresql")
    args = parser.parse_args(argv)
    now = datetime.now(UTC)
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(postgresql_database(args.postgresql_url)) if args.postgresql else None
        return _run(args, now, url)


def _run(args: argparse.Namespace, now: datetime, url: str | None) -> dict[str, float]:
    with (
        Simulator(
            seed=5, total_events=args.events, history_start=now - timedelta(days=30), clock=lambda: now
        ) as sim,
        tempfile.TemporaryDirectory() as tmp,
    ):
        workdir = Path(tmp)
        pages = fetch_pages(sim, args.per_page)
        floor_count, floor_s = floor(pages, workdir / "floor.db")
        if args.live:
            del pages
            archived, monitor_s, peak = monitor_run_once(sim, args.per_page, workdir, url)
        else:
            replay = ReplayServer(pages, sim.token, args.per_page)
            try:
                archived, monitor_s, peak = monitor_run_once(replay, args.per_page, workdir, url)
            finally:
                replay.close()
            del pages
        if args.incremental:
            for _ in range(args.incremental):
                sim.add_event("Update Function", created_at=now)
            total, incremental_s, incremental_peak = monitor_run_once(
                sim, args.per_page, workdir, url, log_level="info"
            )
            cycle_s = cycle_seconds(workdir / "stdout.txt")
            if total != archived + args.incremental:
                raise SystemExit(
                    f"the incremental cycle left {total} events, not {archived + args.incremental}"
                )
    if archived != floor_count:
        raise SystemExit(f"archived {archived} events but the log holds {floor_count}")
    floor_rate, monitor_rate = floor_count / floor_s, archived / monitor_s
    result = {
        "events": archived,
        "floor_events_per_s": floor_rate,
        "monitor_events_per_s": monitor_rate,
        "ratio": monitor_rate / floor_rate,
        "peak_rss_mb": peak / 2**20,
        "monitor_seconds": monitor_s,
    }
    # SQLite's targets are relative to the floor; PostgreSQL's is an absolute rate (issue 12).
    backend, rate_target, ratio_target, rss_target = (
        (" (PostgreSQL)", " (target >= 5,000)", "", "")
        if url
        else ("", "", " (target >= 0.33)", " (target < 100)")
    )
    print(
        f"ingest{backend}: {archived} events; floor {floor_rate:,.0f} ev/s; "
        f"run --once {monitor_rate:,.0f} ev/s{rate_target} "
        f"({monitor_s:.1f} s); ratio {result['ratio']:.2f}{ratio_target}; "
        f"peak RSS {result['peak_rss_mb']:.0f} MB{rss_target}"
    )
    if args.incremental:
        result.update(
            incremental_seconds=incremental_s, incremental_peak_rss_mb=incremental_peak / 2**20, archive=total
        )
        result["incremental_cycle_seconds"] = cycle_s
        print(
            f"then run --once with {args.incremental} new events against an archive of {archived:,}: "
            f"{incremental_s:.2f} s (the poll cycle itself {cycle_s:.2f} s), "
            f"peak RSS {result['incremental_peak_rss_mb']:.0f} MB"
        )
    return result


if __name__ == "__main__":
    main()

"""Web benchmark: the daemon's API and console over HTTP with 1.1 million events archived.

The shared month archive (bench/month_archive.py: N events in March 2026 and 10 % around it) is migrated
first, in a process of its own, so the daemon's start is not the migration. Then ``audit-monitor run``
serves it on 127.0.0.1 (its one source points at a closed port: polling fails quietly and costs nothing),
and this process measures over HTTP with httpx:

- the daemon's peak RSS (VmHWM) after it has been idle for a few seconds with the web server up (and its
  verify of the hash chain at start, which the daemon runs before it is idle, has finished: measuring
  beside that walk would measure two cores' worth of work on two cores);
- ``GET /api/v1/events?user=U&limit=100``: first pages and pages further down, for every user, p95;
- the console's dashboard for 30 days (signed in), median and worst of a few;
- walking every event through ``/api/v1/events?limit=1000`` from the first page to the last: events/s,
  each answer decoded with orjson (a client's JSON decoder is not the API's cost: the stdlib's took a
  third of the walk's time); the first 200 pages are also walked decoding with the stdlib, for comparison.

    python -m bench.bench_web --events 1000000 [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.common import own_peak_rss_mb, stop_process
from bench.month_archive import USERS, ensure_archive

VIEWER_TOKEN = "bench-viewer-token-0123456789"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events inside the month")
    parser.add_argument("--keep", type=Path, help="folder for the shared archive (reused when it matches)")
    parser.add_argument(
        "--idle", type=float, default=5, help="seconds the daemon idles before its RSS is read"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        work = args.keep or Path(tmp) / "month-archive"
        archive = ensure_archive(work, args.events)
        migrate = [
            sys.executable,
            "-c",
            f"from monitor.store import Store; Store.open({str(archive.db)!r}).close()",
        ]
        started = time.perf_counter()
        subprocess.run(migrate, check=True)
        migrate_seconds = time.perf_counter() - started
        port = free_port()
        config = Path(tmp) / "web.yaml"
        text = archive.config.read_text(encoding="utf-8").replace(
            "server: {listen: ''}",
            f"server: {{listen: '127.0.0.1:{port}', tokens: [{{name: bench, token: {VIEWER_TOKEN}}}]}}",
        )
        config.write_text(text, encoding="utf-8")
        log = open(Path(tmp) / "daemon.log", "wb")  # noqa: SIM115 - closed below
        daemon = subprocess.Popen(
            [sys.executable, "-m", "monitor.cli", "--config", str(config), "run"], stdout=log, stderr=log
        )
        try:
            figures = measure(f"http://127.0.0.1:{port}", daemon.pid, args.idle, Path(tmp) / "daemon.log")
        finally:
            stop_process(daemon, grace=30)
            log.close()
        figures.update(
            events_total=float(archive.events_total),
            migrate_seconds=migrate_seconds,
            bench_process_rss_mb=own_peak_rss_mb(),
        )
        return figures


def wait_for_verify(log_path: Path, timeout: float = 1800) -> float:
    """Seconds the daemon's verify at start took (from its log), once it has finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            if '"hash chain verified"' in line or '"hash chain does not verify"' in line:
                return float(json.loads(line).get("seconds", 0.0))
        time.sleep(1)
    raise SystemExit(f"the daemon did not finish its verify within {timeout:.0f} s")


def walk(client: httpx.Client, decode: Any, pages: int | None = None) -> tuple[int, float]:
    """(events, seconds) walking /api/v1/events 1000 a page, from the first page (``pages`` of them)."""
    walked, cursor, done = 0, None, 0
    started = time.perf_counter()
    while pages is None or done < pages:
        params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        response = client.get("/api/v1/events", params=params)
        response.raise_for_status()
        body = decode(response.content)
        walked += len(body["items"])
        done += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    return walked, time.perf_counter() - started


def measure(base: str, pid: int, idle: float, log_path: Path) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {VIEWER_TOKEN}"}
    client = httpx.Client(base_url=base, headers=headers, timeout=60)
    deadline = time.monotonic() + 120
    while True:
        try:
            if client.get("/api/v1/status").status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("the daemon did not answer within 120 s")
        time.sleep(0.5)
    verify_seconds = wait_for_verify(log_path)
    time.sleep(idle)  # idle: the first poll has failed, the scheduler waits
    idle_rss = vm_hwm_mb(pid)

    # Events of one user, 100 a page: the first page and the next four, for every user.
    latencies: list[float] = []
    for user in USERS:
        cursor = None
        for _ in range(5):
            params: dict[str, Any] = {"user": user, "limit": 100}
            if cursor:
                params["cursor"] = cursor
            started = time.perf_counter()
            response = client.get("/api/v1/events", params=params)
            latencies.append(time.perf_counter() - started)
            response.raise_for_status()
            cursor = response.json()["next_cursor"]
            if cursor is None:
                break

    # The dashboard for 30 days, signed in as a person would be.
    console = httpx.Client(base_url=base, timeout=60)
    nonce = re.search(r'name="csrf" value="([^"]+)"', console.get("/login").text)
    assert nonce is not None
    signed = console.post("/login", data={"csrf": nonce.group(1), "token": VIEWER_TOKEN})
    assert signed.status_code == 303, signed.text
    dashboard: list[float] = []
    for _ in range(5):
        started = time.perf_counter()
        page = console.get("/", params={"since": "2026-03-01", "until": "2026-03-31"})
        dashboard.append(time.perf_counter() - started)
        page.raise_for_status()

    # The first 200 pages decoded by the stdlib (the client of the earlier figures), then every event.
    stdlib_walked, stdlib_seconds = walk(client, json.loads, pages=200)
    walked, walk_seconds = walk(client, orjson.loads)
    return {
        "verify_at_start_s": verify_seconds,
        "idle_rss_mb": idle_rss,
        "after_load_rss_mb": vm_hwm_mb(pid),
        "user_requests": float(len(latencies)),
        "user_p50_ms": statistics.median(latencies) * 1000,
        "user_p95_ms": percentile(latencies, 0.95) * 1000,
        "dashboard_median_s": statistics.median(dashboard),
        "dashboard_max_s": max(dashboard),
        "walked": float(walked),
        "walk_seconds": walk_seconds,
        "walk_events_per_s": walked / walk_seconds,
        "walk_stdlib_json_events_per_s": stdlib_walked / stdlib_seconds,
        "load_average_1m": os.getloadavg()[0],
        "cpus": float(os.cpu_count() or 0),
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))

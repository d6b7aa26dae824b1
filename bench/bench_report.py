"""Monthly report benchmark: `audit-monitor report` for a month of N events (default 1,000,000).

The archive is synthetic: rows are inserted directly with ``executemany`` (a month of polling would take
hours), but they are real archive rows, the same columns and raw JSON the poller writes and a valid hash
chain, so the report reads exactly what it would read in production. The month is March 2026 in
Europe/Berlin (743 hours, a DST change); a further 10% of events sit in the neighbouring months so the
month's range has to be found, not just scanned. Alerts and gaps are added in proportion.

The report runs as a subprocess (``python -m monitor.cli report``): wall time; peak RSS read with
``os.wait4`` (the report process, or its CSV worker if larger), and the summed RSS of the report and its
worker sampled from /proc. Then, in this process, the figures alone and the CSV alone (one process) are
timed, to show where the time goes. Targets: under 30 s and under 150 MB peak RSS.

    python -m bench.bench_report [--events 1000000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from monitor.alerts.model import Alert
from monitor.config import load_config
from monitor.events import canonical_json, format_timestamp
from monitor.export import write_csv
from monitor.report import Period, compute_figures
from monitor.store import GENESIS_HASH, Cursor, Store, chain_hash

TZ = ZoneInfo("Europe/Berlin")
MONTH = "2026-03"

# (type, weight): a busy team's mix; a few unknown types land under "Other".
TYPES = [
    ("Run Query", 24), ("Update Record", 14), ("Create Record", 10), ("Login", 10), ("Update Function", 7),
    ("Update Query", 5), ("Delete Record", 5), ("Update Table", 3), ("Add Field", 2), ("Update Field", 2),
    ("Create Function", 2), ("Create Query", 2), ("Update API Group", 1.5), ("Login Failed", 2),
    ("Create Branch", 0.5), ("Merge Branch", 0.5), ("Update Task", 1), ("Create Task", 0.5),
    ("Update Environment Variable", 0.3), ("Create Token", 0.2), ("Update User", 0.3), ("Create User", 0.1),
    ("Delete Table", 0.1), ("Update RBAC Permissions", 0.1), ("Set Live Branch", 0.2), ("Delete User", 0.05),
    ("Read Workspace", 1), ("Install Add-on", 0.1), ("Export Data", 0.3), ("Sync Schema", 0.2),
]  # fmt: skip
USERS = [f"dev{i:02d}@corp.io" for i in range(40)] + ["ci@corp.io", "ops@corp.io"]
WORKSPACES = ["shop", "billing", "crm", "analytics"]
BATCH = 50_000


def synth_entry(event_id: int, created: datetime, event_type: str, rng: random.Random) -> dict[str, object]:
    user = None if rng.random() < 0.03 else {"id": rng.randrange(1, 500), "email": rng.choice(USERS)}
    workspace = rng.choice(WORKSPACES)
    return {
        "id": event_id,
        "created_at": created.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "updated_at": created.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "type": event_type,
        "msg": f"{event_type} in {workspace}: object {rng.randrange(1, 10_000)}",
        "label": ["api"] if event_type.endswith("Query") else [],
        "obj": {"type": event_type.split(" ", 1)[-1].lower(), "id": rng.randrange(1, 5000)},
        "user": user,
        "workspace": {"id": WORKSPACES.index(workspace) + 1, "name": workspace},
        "branch": {"id": 1, "label": "v1"},
        "data": {
            "ip": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
            "ua": "Mozilla/5.0",
        },
    }


def build_archive(path: Path, events: int, seed: int = 11) -> int:
    """Insert ``events`` in the month plus 10% around it; returns the number inside the month."""
    rng = random.Random(seed)  # noqa: S311 - synthetic data
    period = Period.parse(MONTH, TZ)
    before = period.start - timedelta(days=10)
    outside = events // 10
    span_ms = int((period.end - period.start).total_seconds() * 1000)
    instants = sorted(
        [int(period.start.timestamp() * 1000) + rng.randrange(span_ms) for _ in range(events)]
        + [int(before.timestamp() * 1000) + rng.randrange(10 * 86_400_000) for _ in range(outside // 2)]
        + [
            int(period.end.timestamp() * 1000) + rng.randrange(10 * 86_400_000)
            for _ in range(outside - outside // 2)
        ]
    )
    names, weights = zip(*TYPES, strict=True)
    archived_at = format_timestamp(period.end + timedelta(days=11))
    prev = GENESIS_HASH
    with Store.open(path) as store:
        store.conn.execute("PRAGMA synchronous=OFF")
        for offset in range(0, len(instants), BATCH):
            rows = []
            for index, ms in enumerate(instants[offset : offset + BATCH], start=offset + 1):
                created = datetime.fromtimestamp(ms / 1000, UTC)
                event_type = rng.choices(names, weights)[0]
                entry = synth_entry(index, created, event_type, rng)
                raw = canonical_json(entry)
                prev = chain_hash(prev, "prod", index, raw)
                user = entry["user"]
                rows.append(
                    (
                        "prod", index, format_timestamp(created), ms, event_type, entry["msg"],
                        user["email"] if isinstance(user, dict) else None,
                        entry["workspace"]["name"], "v1", raw, archived_at, prev,  # type: ignore[index]
                    )
                )  # fmt: skip
            with store.transaction():
                store.conn.executemany(
                    "INSERT INTO events (source, event_id, created_at, created_ms, type, msg, user_email, "
                    "workspace_name, branch_label, raw, archived_at, hash) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    rows,
                )
        with store.transaction():
            for number in range(max(1, events // 200)):
                at = period.start + timedelta(seconds=rng.randrange(int(span_ms / 1000)))
                store.record_alert(
                    Alert(
                        rule_id=rng.choice(["xano.auth.failed-login-burst", "xano.destructive.off-hours",
                                            "xano.records.bulk-delete", "xano.user.created"]),
                        severity=rng.choice(["medium", "high", "critical"]),
                        title=f"synthetic alert {number}",
                        text="",
                        source="prod",
                        event_time=at,
                        event_ids=(number,),
                        suppressed_count=rng.randrange(3),
                    ),
                    [],
                    at,
                )  # fmt: skip
            gap = period.start + timedelta(days=12)
            store.record_gap(
                "prod", "polling", gap, gap + timedelta(hours=2), "no successful poll for 2:00:00", gap
            )
            store.save_cursor(
                Cursor("prod", last_id=len(instants), last_success_at=period.end + timedelta(days=11))
            )
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return events


class TreeRss(threading.Thread):
    """Samples the summed RSS of a process and its children (the report's CSV workers) every 20 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kib = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.02):
            total = 0
            for pid in [self.pid, *self.children(self.pid)]:
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                for line in status.splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            self.peak_kib = max(self.peak_kib, total)

    @staticmethod
    def children(pid: int) -> list[int]:
        found = []
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                found += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
        return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument(
        "--keep", type=Path, help="Build the archive in this folder and keep it (reused if there)."
    )
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="bench-report-"))
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "archive.db"
    if args.build_only:
        started = time.perf_counter()
        build_archive(db, args.events)
        took = time.perf_counter() - started
        print(f"archive: {args.events:,} events in {MONTH} (+10% around it) in {took:.0f}s, "
              f"{db.stat().st_size / 1e6:.0f} MB")  # fmt: skip
        return
    config_path = workdir / "audit-monitor.yaml"
    config_path.write_text(
        f"timezone: Europe/Berlin\nstate: {{path: {db}}}\n"
        "sources:\n  - {name: prod, base_url: 'http://127.0.0.1:9', token: t, plan_retention: 24h}\n"
        f"report: {{out_dir: {workdir / 'reports'}}}\nserver: {{listen: ''}}\n",
        encoding="utf-8",
    )
    if not db.exists():
        # In a child process: this one stays small, so the report child it forks next starts small too
        # (a forked child's peak RSS counts the parent's pages it had before exec).
        build = [sys.executable, "-m", "bench.bench_report", "--build-only", "--events", str(args.events)]
        subprocess.run([*build, "--keep", str(workdir)], check=True)

    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "monitor.cli", "--config", str(config_path), "report", "--month", MONTH],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stderr is not None
    sampler = TreeRss(child.pid)
    sampler.start()
    stdout, stderr = child.stdout.read(), child.stderr.read()  # a few lines: no pipe can fill up
    # wait4: this child's own rusage (RUSAGE_CHILDREN would also count the archive builder).
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"report failed: {stderr[-2000:]}")
    peak_mb = usage.ru_maxrss / 1024  # Linux: KiB; the largest of the report process and its workers
    sampler.stop.set()
    sampler.join()
    csv_path = workdir / "reports" / f"compliance-report-{MONTH}.csv"
    html_path = workdir / "reports" / f"compliance-report-{MONTH}.html"
    print(stdout.splitlines()[0])
    print(f"report (subprocess, end to end): {elapsed:.1f} s, peak RSS {peak_mb:.0f} MB "
          f"(all its processes together: {sampler.peak_kib / 1024:.0f} MB) "
          f"(targets: < 30 s, < 150 MB); CSV {csv_path.stat().st_size / 1e6:.0f} MB, "
          f"HTML {html_path.stat().st_size / 1e3:.0f} kB")  # fmt: skip

    config = load_config(config_path)
    period = Period.parse(MONTH, TZ)
    with Store.open(db) as store:
        started = time.perf_counter()
        figures = compute_figures(store, config, period, now=period.end + timedelta(days=12))
        figures_s = time.perf_counter() - started
        started = time.perf_counter()
        with open(os.devnull, "w", encoding="utf-8", newline="") as sink:
            rows = write_csv(store.iter_events(period.start, period.end), sink, config.tz)
        csv_s = time.perf_counter() - started
    print(f"  in one process: figures (SQL) {figures_s:.1f} s for {figures.total:,} events; "
          f"CSV {csv_s:.1f} s for {rows:,} rows (to /dev/null)")  # fmt: skip


if __name__ == "__main__":
    main()

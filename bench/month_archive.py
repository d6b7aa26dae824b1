"""A synthetic archive of a busy month, for the report and archive benchmarks.

Rows are inserted directly with ``executemany`` (a month of polling would take hours), but they are real
archive rows: the columns and canonical raw JSON the poller writes (~370 bytes an entry) and a valid hash
chain, so the commands read exactly what they would read in production. N events fall in March 2026 in
Europe/Berlin (743 hours, a DST change); a further 10 % sit in the ten days either side, so a month's
range has to be found, not just scanned. Alerts (one per 200 events), a polling gap and the source's
cursor (as the poller leaves it) are added too.

Build it in a process of its own (``ensure_archive`` does): the process that then measures commands must
stay small, because a child inherits its parent's peak RSS until ``exec`` (see bench/common.py).

    python -m bench.month_archive --events 1000000 --out DIR
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

TIMEZONE = "Europe/Berlin"
TZ = ZoneInfo(TIMEZONE)
MONTH = "2026-03"
MONTH_SINCE, MONTH_UNTIL = "2026-03-01", "2026-04-01"  # the month as `export --since/--until` dates
SOURCE = "prod"
ARCHIVE_NAME = "archive.db"
MANIFEST_NAME = "archive.json"  # what the archive beside it was built with
# Raised when the rows built change, so that an archive kept from an earlier recipe is built again.
RECIPE = 2  # 2: each event archived two minutes after it happened (1: all at once, after the month)

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
# When an event is archived: a poll every few minutes. The report's chain walk starts at the month's opening
# head (the last link archived before the month began), as it would in production.
ARCHIVED_AFTER = timedelta(minutes=2)


@dataclass(frozen=True)
class MonthArchive:
    """A built archive: the database, and the config file every command of the benchmarks runs with."""

    db: Path
    config: Path
    events_in_month: int
    events_total: int


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
    """Insert ``events`` in the month plus 10 % around it, ids 1, 2, ...; returns how many rows in all."""
    # Imported here, not at the top: the benchmark processes that only call ensure_archive spawn the
    # commands they measure, and a child's peak RSS starts at its parent's (bench/common.py).
    from monitor.alerts.model import Alert
    from monitor.events import canonical_json, format_timestamp
    from monitor.report import Period
    from monitor.store import GENESIS_HASH, Cursor, Store, chain_hash

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
                prev = chain_hash(prev, SOURCE, index, raw)
                user = entry["user"]
                rows.append(
                    (
                        SOURCE, index, format_timestamp(created), ms, event_type, entry["msg"],
                        user["email"] if isinstance(user, dict) else None,
                        entry["workspace"]["name"], "v1", raw,  # type: ignore[index]
                        format_timestamp(created + ARCHIVED_AFTER), prev,
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
                        source=SOURCE,
                        event_time=at,
                        event_ids=(number,),
                        suppressed_count=rng.randrange(3),
                    ),
                    [],
                    at,
                )  # fmt: skip
            gap = period.start + timedelta(days=12)
            store.record_gap(
                SOURCE, "polling", gap, gap + timedelta(hours=2), "no successful poll for 2:00:00", gap
            )
            newest = datetime.fromtimestamp(instants[-1] / 1000, UTC)
            store.save_cursor(
                Cursor(
                    SOURCE,
                    last_id=len(instants),
                    last_created_at=newest,
                    last_success_at=period.end + timedelta(days=11),
                )
            )
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return len(instants)


def write_config(
    workdir: Path,
    db: Path,
    *,
    base_url: str = "http://127.0.0.1:9",
    token: str = "unused",  # noqa: S107 - no server behind the default URL
    name: str = "audit-monitor.yaml",
) -> Path:
    """The config the commands run with: the month's zone, the archive, one source named like its rows.

    ``plan_retention`` is long: the archive's last poll lies months back, and a retention-gap alert is not
    what these benchmarks measure.
    """
    path = workdir / name
    path.write_text(
        f"timezone: {TIMEZONE}\nstate: {{path: {db}}}\n"
        f"sources:\n  - {{name: {SOURCE}, base_url: '{base_url}', token: {token}, plan_retention: 3650d,"
        " per_page: 500}\n"
        f"report: {{out_dir: {workdir / 'reports'}}}\nalerts: {{console: false}}\nserver: {{listen: ''}}\n",
        encoding="utf-8",
    )
    return path


def ensure_archive(workdir: Path, events: int) -> MonthArchive:
    """The archive of ``events`` in ``workdir``, built (in a child process) unless it is there already."""
    workdir.mkdir(parents=True, exist_ok=True)
    db, manifest = workdir / ARCHIVE_NAME, workdir / MANIFEST_NAME
    built = json.loads(manifest.read_text()) if manifest.exists() and db.exists() else None
    if built is None or built["events_in_month"] != events or built.get("recipe") != RECIPE:
        for stale in (db, manifest, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            stale.unlink(missing_ok=True)
        command = [
            sys.executable,
            "-m",
            "bench.month_archive",
            "--events",
            str(events),
            "--out",
            str(workdir),
        ]
        subprocess.run(command, check=True)
        built = json.loads(manifest.read_text())
    return MonthArchive(db, write_config(workdir, db), built["events_in_month"], built["events_total"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events inside the month")
    parser.add_argument("--out", type=Path, required=True, help="folder for archive.db")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    db = args.out / ARCHIVE_NAME
    started = time.perf_counter()
    total = build_archive(db, args.events)
    took = time.perf_counter() - started
    (args.out / MANIFEST_NAME).write_text(
        json.dumps({"events_in_month": args.events, "events_total": total, "month": MONTH, "recipe": RECIPE}),
        encoding="utf-8",
    )
    print(f"archive: {args.events:,} events in {MONTH} (+10% around it) in {took:.0f} s, "
          f"{db.stat().st_size / 1e6:.0f} MB")  # fmt: skip


if __name__ == "__main__":
    main()

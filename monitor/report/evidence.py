"""The CSV evidence: every event of the month, in ``audit-monitor export``'s format (``write_csv``).

Parsing each archived entry and formatting its row costs some 25 microseconds of Python per event, so a
month of a million events takes half a minute in one process. Large months are therefore cut into
consecutive time slices of equal event counts: this process writes the first slice while a spawned worker
process writes the second to a part file, which is then appended (its header line dropped). The result
is byte for byte what a single ``write_csv`` would write.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO
from zoneinfo import ZoneInfo

from monitor.export import write_csv
from monitor.store import Store

# Below this many events one process is done before a worker would have started (~1 s to spawn).
PARALLEL_MIN_EVENTS = 200_000
# One worker beside this process: twice as fast on two cores, and a worker holds ~60 MB of its own, so
# more of them would break the report's memory budget (150 MB for a month of a million events).
MAX_PROCESSES = 2
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # honours a container's CPU set
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def slices(
    store: Store, start: datetime, end: datetime, total: int, parts: int
) -> list[tuple[datetime, datetime]]:
    """``parts`` consecutive [since, until) slices of [start, end) with about equal event counts.

    Bounds fall on whole milliseconds (an event's ``created_ms``), so ``created_at >= bound`` puts every
    event in exactly one slice.
    """
    start_ms, end_ms = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
    bounds = [start]
    for index in range(1, parts):
        row = store.conn.execute(
            "SELECT created_ms FROM events WHERE created_ms >= ? AND created_ms < ? ORDER BY created_ms "
            "LIMIT 1 OFFSET ?",
            (start_ms, end_ms, total * index // parts),
        ).fetchone()
        if row is None:
            break
        bound = _EPOCH + timedelta(milliseconds=row[0])
        if bounds[-1] < bound < end:
            bounds.append(bound)
    bounds.append(end)
    return list(zip(bounds, bounds[1:], strict=False))


def _write_part(db_path: str, since: str, until: str, tz_name: str, out_path: str) -> int:
    """A worker: one slice into its own file, with its own connection (never one shared across processes)."""
    with Store.open(db_path) as store, open(out_path, "w", encoding="utf-8", newline="") as handle:
        events = store.iter_events(datetime.fromisoformat(since), datetime.fromisoformat(until))
        return write_csv(events, handle, ZoneInfo(tz_name))


def write_month_csv(
    store: Store,
    start: datetime,
    end: datetime,
    tz: ZoneInfo,
    out: TextIO,
    *,
    total: int,
    scratch: Path,
    parallel_min_events: int = PARALLEL_MIN_EVENTS,
) -> int:
    """Write every event with start <= created_at < end to ``out``; return the number of rows.

    ``total`` (the figures' count) decides whether to use workers, whose part files go to ``scratch``
    (the report folder); the caller still checks the row count.
    """
    workers = min(MAX_PROCESSES, available_cpus()) - 1
    if total < parallel_min_events or workers < 1 or store.path == ":memory:":
        return write_csv(store.iter_events(start, end), out, tz)
    parts = slices(store, start, end, total, workers + 1)
    if len(parts) == 1:
        return write_csv(store.iter_events(start, end), out, tz)
    part_paths = [scratch / f".report-part-{os.getpid()}-{index}.csv" for index in range(1, len(parts))]
    try:
        context = multiprocessing.get_context("spawn")  # fork is unsafe in the threaded daemon
        with ProcessPoolExecutor(max_workers=len(part_paths), mp_context=context) as pool:
            futures = [
                pool.submit(_write_part, store.path, since.isoformat(), until.isoformat(), tz.key, str(path))
                for (since, until), path in zip(parts[1:], part_paths, strict=True)
            ]
            rows = write_csv(store.iter_events(*parts[0]), out, tz)
            rows += sum(future.result() for future in futures)
        for path in part_paths:
            with open(path, encoding="utf-8", newline="") as part:
                part.readline()  # the header, already written once
                shutil.copyfileobj(part, out, 1024 * 1024)
        return rows
    finally:
        for path in part_paths:
            path.unlink(missing_ok=True)

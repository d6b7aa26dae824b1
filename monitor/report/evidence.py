"""The evidence pack: the CSV of every event of the month (``audit-monitor export``'s format), the JSON of
every figure and table (``report_json``, schema in docs/report-schema.md), and the ``sha256sum`` manifest.

The CSV: every event of the month, in ``audit-monitor export``'s format (``write_events_csv``).

Reading each archived entry's values and formatting its row costs some 15-30 microseconds per event, so a
month of a million events takes half a minute or more in one process. A large month is therefore cut into
consecutive time slices of equal event counts (``start_month_csv``), jobs that worker processes take
from the start of the report, one after the other, beside the chain walk's two halves (``start_verify``),
each slice into a part file; this process computes the figures meanwhile, then joins the parts (the
header kept once). The result is byte for byte what a single ``write_events_csv`` would write. While
they start, a thread asks the kernel to load the archive file (``start_read_ahead``): a cold archive is
then read in large chunks instead of page by page.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import multiprocessing
import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

import orjson

from monitor.anchors import ChainAnchor
from monitor.events import format_timestamp
from monitor.export import CSV_COLUMNS, write_events_csv, write_events_csv_file
from monitor.report.figures import Figures
from monitor.store import Store, VerifyResult
from monitor.store.files import read_ahead

SCHEMA = "xano-audit-monitor/compliance-report"
SCHEMA_VERSION = 1

# Below this many events one process is done before a worker would have started and read its share.
PARALLEL_MIN_EVENTS = 200_000
# Worker processes beside this one, which computes the figures meanwhile: one per core, up to this many.
# Each takes the next job when it is done with one. A worker imports the store and the export only
# (~35 MB). On two cores, a third worker only shared them: ~1 s more of CPU, and no sooner done.
MAX_WORKERS = 4
# A large month's CSV is written in this many slices, jobs for the workers: small enough that the last one
# to finish keeps one core busy for a few seconds at most.
CSV_SLICES = 8
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BOM = "\ufeff"  # Excel opens a CSV as UTF-8 only after a byte-order mark (report.csv_bom)


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
        created_ms = store.nth_created_ms(start_ms, end_ms, total * index // parts)
        if created_ms is None:
            break
        bound = _EPOCH + timedelta(milliseconds=created_ms)
        if bounds[-1] < bound < end:
            bounds.append(bound)
    bounds.append(end)
    return list(zip(bounds, bounds[1:], strict=False))


def worker_pool(store: Store, parallel_min_events: int = PARALLEL_MIN_EVENTS) -> ProcessPoolExecutor | None:
    """The report's worker processes, spawned (fork is unsafe in the threaded daemon), for the chain walk
    (``start_verify``) and the CSV (``start_month_csv``). None when everything is done in this process: an
    archive too small to be worth a worker (told by its head's seq, which is never below its row count:
    counting the rows took 0.4 s at a million, before any worker began), a single CPU, or PostgreSQL (a
    worker would need the password handed to it)."""
    cpus = available_cpus()
    if not store.reopenable or cpus < 2 or store.head()[0] < parallel_min_events:
        return None
    workers = min(cpus, MAX_WORKERS)
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


def start_read_ahead(store: Store) -> threading.Event:
    """Load the archive file into the page cache from a thread while the report's processes begin
    (``files.read_ahead``); setting the returned event stops it."""
    stop = threading.Event()
    threading.Thread(
        target=read_ahead, args=(store.path, stop), name="archive read-ahead", daemon=True
    ).start()
    return stop


class ChainWalk:
    """The report's chain walk, running in worker processes: ``result()`` waits for it."""

    def __init__(self, parts: list[Future[VerifyResult]]) -> None:
        self.parts = parts

    def result(self) -> VerifyResult:
        results = [part.result() for part in self.parts]
        return functools.reduce(VerifyResult.then, results)


def start_verify(
    store: Store, after: int, pool: ProcessPoolExecutor | None, parallel_min_events: int = PARALLEL_MIN_EVENTS
) -> ChainWalk | None:
    """The chain walk from link ``after`` (``figures.walk_start``) in worker processes while this one
    computes the figures: it re-hashes and re-derives every row of the month, so done in line it would
    nearly double the report's time. A long walk is cut in two halves at a seq, walked at once: each row's
    check needs only its predecessor's stored hash, so the second half chains from the stored hash where
    the first ends, and the first checks that hash. None without workers (the figures walk in line)."""
    if pool is None:
        return None
    head = store.head()[0]
    stretches: list[tuple[int, int | None]] = [(after, None)]
    if head - after >= parallel_min_events:
        middle = after + (head - after) // 2
        stretches = [(after, middle), (middle, None)]
    return ChainWalk(
        [
            pool.submit(Store.verify_read_only, store.path, after=start, through=through)
            for start, through in stretches
        ]
    )


class MonthCsv:
    """The month's CSV: written by this process (``write``), or by worker processes in slices, part files
    that ``write`` then joins."""

    def __init__(
        self,
        store: Store,
        tz: ZoneInfo,
        month: tuple[datetime, datetime],
        parts: list[tuple[Future[int], Path]],
    ) -> None:
        self.store, self.tz, self.month, self.parts = store, tz, month, parts

    def write(self, out: TextIO, *, bom: bool = False) -> tuple[int, str | None]:
        """Write every event of the month to ``out``, after a byte-order mark if ``bom``. Return the number
        of rows (the caller checks it) and, when the parts were joined, the sha256 of what was written (None:
        the caller hashes the file)."""
        if not self.parts:
            if bom:
                out.write(BOM)
            return write_events_csv(self.store, *self.month, out, self.tz), None
        digest = hashlib.sha256()
        out.flush()
        if bom:
            out.buffer.write(BOM.encode())
            digest.update(BOM.encode())
        rows = 0
        for index, (future, path) in enumerate(self.parts):
            # Each part joined (and hashed) as soon as it is done, while the workers write the later ones.
            rows += future.result()
            with open(path, "rb") as part:
                if index:
                    part.readline()  # the header, written once by the first part
                # Bytes to bytes: the part is the same UTF-8 text, no need to decode and encode it again.
                while chunk := part.read(1024 * 1024):
                    out.buffer.write(chunk)
                    digest.update(chunk)
            if index < len(self.parts) - 1:
                # On the disk while the workers write the later parts: the caller's fsync, at the end of
                # the report, then waits for the last part only.
                out.buffer.flush()
                os.fsync(out.fileno())
        return rows, digest.hexdigest()

    def close(self) -> None:
        """Remove the part files: a job not begun is cancelled, one running is waited for (a worker would
        otherwise write its file after it was removed)."""
        for future, path in self.parts:
            if not future.cancel():
                future.exception()  # waits; its error, if any, was the report's or is moot now
            path.unlink(missing_ok=True)


def start_month_csv(
    store: Store,
    start: datetime,
    end: datetime,
    tz: ZoneInfo,
    *,
    scratch: Path,
    pool: ProcessPoolExecutor | None,
    parallel_min_events: int = PARALLEL_MIN_EVENTS,
) -> MonthCsv:
    """The CSV of every event with start <= created_at < end. For a large month its CSV_SLICES consecutive
    time slices, of equal event counts, are jobs for the workers, each writing a part file to ``scratch``
    (the report folder); they begin as soon as the chain walk's halves are under way."""
    start_ms, end_ms = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
    total = store.count_between(start_ms, end_ms) if pool is not None else 0
    if pool is None or total < parallel_min_events:
        return MonthCsv(store, tz, (start, end), [])
    parts = slices(store, start, end, total, CSV_SLICES)
    paths = [scratch / f".report-part-{os.getpid()}-{index}.csv" for index in range(len(parts))]
    futures = [
        pool.submit(
            write_events_csv_file, store.path, since.isoformat(), until.isoformat(), tz.key, str(path)
        )
        for (since, until), path in zip(parts, paths, strict=True)
    ]
    return MonthCsv(store, tz, (start, end), list(zip(futures, paths, strict=True)))


# --- digests and the manifest ------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_text(paths: Sequence[Path], digests: dict[str, str] | None = None) -> str:
    """``sha256sum``'s own format ("<hex>  <name>", two spaces: binary-safe text mode), names relative to the
    folder, so ``sha256sum -c`` run in the report folder checks every file. ``digests`` (by name) are files
    already hashed since they were written, the CSV of hundreds of megabytes among them."""
    known = digests or {}
    return "".join(f"{known.get(path.name) or sha256_file(path)}  {path.name}\n" for path in paths)


# --- the JSON ----------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """Dataclasses, datetimes and dates as JSON values: instants as ISO 8601 with their offset."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _utc(instant: datetime | None) -> str | None:
    return format_timestamp(instant) if instant is not None else None


def _listed(rows: Sequence[Any], total: int) -> dict[str, Any]:
    # The rows as they are (dataclasses): up to 10,000 of them per list, which orjson spells itself, as
    # _plain does (instants as ISO 8601 with their offset), some 30 times faster (report_json_bytes).
    return {"total": total, "listed": len(rows), "rows": list(rows)}


def report_json_bytes(document: dict[str, Any]) -> bytes:
    """``report_json``'s document as JSON text (UTF-8), indented."""
    return orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)


def report_json(
    figures: Figures, *, csv_name: str, csv_rows: int, csv_sha256: str, anchor: ChainAnchor
) -> dict[str, Any]:
    """Every figure and table of the report as one JSON document (docs/report-schema.md)."""
    period, f = figures.period, figures
    integrity = f.integrity
    responses = []
    for r in f.responses:
        # Its fields as they are, for orjson to spell (as _plain would): thousands of alerts, each walked
        # by _plain, took half a second at the end of the report.
        item = {field.name: getattr(r, field.name) for field in dataclasses.fields(r)}
        item.update(
            delivered_at=_plain(r.delivered_at),
            mtta_seconds=r.mtta_seconds,
            mttr_seconds=r.mttr_seconds,
            open=r.status in ("open", "acknowledged"),
            silenced=r.status == "silenced",
        )
        responses.append(item)
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "report_id": f.cover.report_id if f.cover else None,
        "period": {
            "key": period.key,
            "label": period.label,
            "timezone": period.tz.key,
            "start_utc": _utc(period.start),
            "end_utc": _utc(period.end),
            "start_local": period.start.astimezone(period.tz).isoformat(),
            "end_local": period.end.astimezone(period.tz).isoformat(),
            "hours": period.hours,
            "complete": f.complete,
        },
        "generated_at": _utc(f.generated_at),
        "cover": _plain(f.cover),
        "controls": _plain(f.controls),
        "summary": {
            "events": f.total,
            "security_critical": f.critical_total,
            "alerts": f.alerts_total,
            "throttled": f.throttled_total,
            "off_hours": f.off_hours_total,
            "active_users": f.active_users,
        },
        "coverage": {
            "complete": f.coverage_complete,
            "sources": _plain(f.sources),
            "gaps": _listed(f.gaps, f.gaps_total),
            "notes": list(f.coverage_notes),
            "id_continuity": [{**_plain(c), "unseen": c.unseen} for c in f.id_continuity],
            "rejected": dict(f.rejected),
            "poll_success_rate": f.poll_success_rate,
            "polls": [{**_plain(p), "recorded_from": _utc(p.recorded_from)} for p in f.polls],
            "reconciliation": [{**_plain(r), "difference": r.difference} for r in f.reconciliation],
        },
        "integrity": {
            **(_plain(integrity) if integrity else {}),
            "anchor": json.loads(anchor.to_json()),
            "files": {csv_name: csv_sha256},
        },
        "privileged_access": {
            "changes": _listed(f.privileged, f.privileged_total),
            "first_admins": _plain(f.first_admins),
        },
        "change_register": {**_listed(f.changes, f.changes_total), "off_hours_listed": f.changes_off_hours},
        "detection": {
            "alerts_total": f.alerts_total,
            "throttled_total": f.throttled_total,
            "by_rule": _plain(f.alert_counts),
            "alerts": _listed(f.alerts, f.alerts_total),
        },
        "response": {
            "alerts": {"total": f.alerts_total, "listed": len(responses), "rows": responses},
            "deliveries": _plain(f.deliveries),
            "dead_letters": f.dead_letters,
            "statuses": dict(f.status_counts),
            "still_open": f.still_open,
            "silenced": f.silenced_total,
            "acknowledged": f.acknowledged_total,
            "resolved": f.resolved_total,
            "mtta_seconds": f.mtta_seconds,
            "mttr_seconds": f.mttr_seconds,
            "dispositions": dict(f.dispositions),
        },
        "health": {"monitor_alerts": _plain(f.monitor_alerts)},
        "activity": {
            "categories": _plain(f.categories),
            "types": _plain(f.types),
            "users": _listed(f.users, f.users_total),
            "off_hours_calendar": f.calendar,
            "days": _plain(f.days),
            "security_critical": _listed(f.critical, f.critical_total),
        },
        "evidence": {"csv": {"file": csv_name, "rows": csv_rows, "columns": list(CSV_COLUMNS)}},
        "sign_off": {"name": None, "date": None, "decision": None},
    }

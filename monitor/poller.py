"""One poll cycle for one source: fetch -> stage -> dedupe -> evaluate -> commit in one transaction.

The walk reads newest-first from page 1 until it has seen an event older than the cursor minus
the overlap window (or, on a first backfill, to the end of the log). Every page is staged in
SQLite (with the columns normalisation derived, so the commit parses nothing again), so a backlog of
millions never sits in memory; after page 1 the next page is read on a worker thread while this one is
staged. Only when the walk is complete does one transaction archive the new events in id order, run
the rules, record alerts and outbox rows, and advance the cursor. Any failure before the COMMIT leaves
the cursor where it was and the (source, id) dedupe plus stable alert ids make a repeat harmless.

A walk is resumable: each staged page records, in the same transaction, how far the walk got. A cycle that
fails (retries spent, a restart, ``kill -9``) keeps its staged pages, and the next cycle re-reads the last
staged page (events arriving upstream meanwhile push entries down, onto later pages, never up: one page of
overlap and the id dedupe cover it) and continues from there. So a long backfill against a rate-limited or
flaky server progresses with every cycle instead of starting again from page 1.

An entry that cannot be archived (not normalisable, or failing while its rules run) is recorded in
``rejected`` with its reason, and the rest are archived; a cycle that fails for any reason is recorded on
the cursor (``status`` shows it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

from monitor import selfmon
from monitor.alerts.model import Alert
from monitor.alerts.routing import channels_for
from monitor.config import Config, SourceConfig
from monitor.events import (
    AuditEvent,
    NormalizationError,
    StagedEvent,
    archive_json,
    format_timestamp,
    normalize,
)
from monitor.logs import scrub
from monitor.store import Cursor, DatabaseError, SqliteStateStore, Store, StoreError, StoreInterrupted
from monitor.store.polls import record_poll
from monitor.timeutil import format_duration, format_time
from monitor.xano import Page, RetryPolicy, XanoAuthError, XanoClient, XanoConfigError, XanoError

log = logging.getLogger("monitor.poller")

Clock = Callable[[], datetime]


class Evaluator(Protocol):
    """What the poller needs of the rule engine."""

    def evaluate(self, event: AuditEvent, state: SqliteStateStore) -> list[Alert]: ...


class PageSource(Protocol):
    def iter_pages(
        self, *, newest_first: bool = True, include_data: bool = True, start_page: int = 1
    ) -> Iterator[Page]: ...


ClientFactory = Callable[[SourceConfig], AbstractContextManager[PageSource]]


def default_client_factory(
    source: SourceConfig,
    *,
    sleep: Callable[[float], None] = time.sleep,
    deadline: float | None = None,
    check_stop: Callable[[], None] | None = None,
) -> XanoClient:
    """``sleep`` waits between retries and ``check_stop`` is called between chunks of an answer; the daemon
    passes ones that raise at shutdown. ``deadline`` (a ``time.monotonic()`` value) bounds the cycle's
    reading: no request or retry runs past it."""
    return XanoClient(
        source.base_url,
        source.token.get_secret_value(),
        source_name=source.name,
        workspace_id=source.workspace_id,
        per_page=source.per_page,
        timeout=source.timeout.total_seconds(),
        retry=RetryPolicy(budget=min(600.0, source.poll_interval.total_seconds())),
        verify=source.ca_file or True,
        sleep=sleep,
        deadline=deadline,
        check_stop=check_stop,
    )


@dataclass(frozen=True)
class PollResult:
    source: str
    ok: bool
    pages: int = 0
    fetched: int = 0
    new: int = 0
    rejected: int = 0
    alerts: int = 0
    duration: float = 0.0
    error: str | None = None
    error_kind: str | None = None  # auth | config | unavailable | store | internal | cancelled
    lag_seconds: float | None = None
    newest_event_at: datetime | None = None  # the source's newest archived event (for the lag metric)


class PollCancelled(Exception):
    """The daemon is stopping: the cycle was abandoned before its commit, so nothing moved."""


@dataclass
class _Walk:
    pages: int = 0
    fetched: int = 0
    rejected: int = 0
    max_id: int | None = None
    max_created_at: datetime | None = None
    resumed_at: int | None = None  # the page a resumed walk started from


@dataclass(frozen=True)
class WalkProgress:
    """How far a walk got, saved with each staged page (``Store.stage``) so another cycle can resume it.

    ``basis`` names what the walk's pages depend on (the endpoint, the page size and the cursor it started
    from); a walk whose basis no longer matches starts again from page 1. ``unsorted`` is sticky: once any
    page showed ids out of descending order the walk never stops early. ``ordered_pairs`` counts id pairs
    seen in descending order: a walk stops early only with evidence that the server sorts (a one-entry page
    proves nothing).
    """

    basis: str
    last_page: int = 0
    unsorted: bool = False
    ordered_pairs: int = 0

    def to_text(self) -> str:
        return json.dumps(
            {
                "basis": self.basis,
                "last_page": self.last_page,
                "unsorted": self.unsorted,
                "ordered_pairs": self.ordered_pairs,
            }
        )

    @classmethod
    def from_text(cls, text: str | None) -> WalkProgress | None:
        """The saved progress, or None when there is none or it is not readable (then the walk restarts)."""
        if not text:
            return None
        try:
            data = json.loads(text)
            return cls(
                basis=str(data["basis"]),
                last_page=int(data["last_page"]),
                unsorted=bool(data["unsorted"]),
                ordered_pairs=int(data["ordered_pairs"]),
            )
        except (ValueError, KeyError, TypeError):
            return None


class _EntryFailed(Exception):
    """One staged entry failed while its rules ran: the commit is rolled back and redone without it."""

    def __init__(self, event_id: int, reason: str) -> None:
        super().__init__(reason)
        self.event_id = event_id
        self.reason = reason


READ_AHEAD_SWITCH_INTERVAL = 0.0005  # seconds


class _SwitchInterval:
    """The interpreter's switch interval lowered while any walk reads ahead, restored when the last ends.

    The setting is process-wide and the daemon walks several sources at once: each walk saving and restoring
    it by itself would leave it at whatever the walk that ended last had saved."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._walks = 0
        self._saved = 0.0

    @contextlib.contextmanager
    def lowered(self, interval: float) -> Iterator[None]:
        with self._lock:
            if self._walks == 0:
                self._saved = sys.getswitchinterval()
                sys.setswitchinterval(min(self._saved, interval))
            self._walks += 1
        try:
            yield
        finally:
            with self._lock:
                self._walks -= 1
                if self._walks == 0:
                    sys.setswitchinterval(self._saved)


_SWITCH_INTERVAL = _SwitchInterval()


def _read_ahead(pages: Iterator[Page]) -> Generator[Page, None, None]:
    """The pages of ``pages``; from the second on, the next one is read while the caller stages this one.

    Waiting for the server is a good part of a long walk, so a worker thread fetches page n+1 (HTTP and
    JSON decoding) while the walk normalises and stages page n. A walk that ends on page 1 (the usual
    incremental cycle) makes one request, as before; a longer one reads at most one page past its end.
    An error reading a page is raised here, in the caller's thread, in page order. Close the iterator
    (the walk does, also when it stops early or fails) to wait for a read in flight.
    """
    first = next(pages, None)
    if first is None:
        return
    yield first
    # The reader needs the GIL for a moment after every chunk it receives; with the default 5 ms switch
    # interval it queues behind the walk's normalising for most of that time and falls behind.
    with (
        _SWITCH_INTERVAL.lowered(READ_AHEAD_SWITCH_INTERVAL),
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="page-reader") as reader,
    ):
        ahead = reader.submit(next, pages, None)
        while (page := ahead.result()) is not None:
            ahead = reader.submit(next, pages, None)
            yield page


class Poller:
    def __init__(
        self,
        store: Store,
        config: Config,
        evaluator: Evaluator | None,
        *,
        clock: Clock = lambda: datetime.now(UTC),
        client_factory: ClientFactory = default_client_factory,
    ) -> None:
        self.store = store
        self.config = config
        self.evaluator = evaluator
        self.clock = clock
        self.client_factory = client_factory
        # Set by the daemon at shutdown: a long walk (a backfill) stops between pages instead of
        # holding SIGTERM for minutes. Nothing is committed, so the next start repeats the walk.
        self.cancel: threading.Event | None = None
        # When each source's walk last received a page (this process): a long first backfill is slow, not
        # unreachable, and self-monitoring must not say otherwise while pages keep arriving.
        self.page_received_at: dict[str, datetime] = {}

    def poll(self, source: SourceConfig) -> PollResult:
        started = time.monotonic()
        now = self.clock()
        try:
            cursor = self.store.get_cursor(source.name) or Cursor(source=source.name)
        except (StoreError, *DatabaseError) as exc:  # a database that went away: fails like a commit would
            return self._failed(source, Cursor(source=source.name), now, started, "store", str(exc))
        try:
            walk = self._walk(source, cursor)
            new, alerts = self._commit_rejecting_failed_entries(source, cursor, walk, now)
        except XanoAuthError as exc:
            return self._failed(source, cursor, now, started, "auth", str(exc))
        except XanoConfigError as exc:
            return self._failed(source, cursor, now, started, "config", str(exc))
        except XanoError as exc:
            return self._failed(source, cursor, now, started, "unavailable", str(exc))
        except (PollCancelled, StoreInterrupted):
            # Shutdown (or fencing: no longer the leader): a page boundary, a retry's sleep or a wait for
            # the write lock ended the cycle.
            log.info("poll cancelled by shutdown; nothing committed", extra={"source": source.name})
            elapsed = time.monotonic() - started
            return PollResult(source.name, False, duration=elapsed, error="cancelled", error_kind="cancelled")
        except (StoreError, *DatabaseError) as exc:
            # e.g. a read-only file or a full disk: the transaction rolled back, the cursor stays.
            return self._failed(source, cursor, now, started, "store", str(exc))
        except Exception as exc:  # noqa: BLE001 - out of file descriptors, a bug: recorded, never a silent crash
            message = f"{type(exc).__name__}: {exc}"
            return self._failed(source, cursor, now, started, "internal", message, exc_info=exc)
        newest = self.store.newest_event_time(source.name)
        result = PollResult(
            source=source.name,
            ok=True,
            pages=walk.pages,
            fetched=walk.fetched,
            new=new,
            rejected=walk.rejected,
            alerts=alerts,
            duration=time.monotonic() - started,
            lag_seconds=(now - newest).total_seconds() if newest else None,
            newest_event_at=newest,
        )
        log.info(
            "poll cycle",
            extra={
                "source": source.name,
                "events": walk.fetched,
                "new": new,
                "pages": walk.pages,
                "resumed_at_page": walk.resumed_at,
                "rejected": walk.rejected,
                "alerts": alerts,
                "duration_s": round(result.duration, 3),
                "lag_s": round(result.lag_seconds, 1) if result.lag_seconds is not None else None,
            },
        )
        return result

    # the walk -----------------------------------------------------------------------------------------

    @staticmethod
    def _basis(source: SourceConfig, cursor: Cursor) -> str:
        return json.dumps(
            [source.base_url, source.workspace_id, source.per_page, source.backfill, cursor.last_id]
        )

    def _walk(self, source: SourceConfig, cursor: Cursor) -> _Walk:
        first_run = cursor.last_id is None
        backfill_none = first_run and source.backfill == "none"
        cutoff = self._cutoff(source, cursor)
        walk = _Walk()
        basis = self._basis(source, cursor)
        progress = WalkProgress.from_text(self.store.walk_progress(source.name))
        if backfill_none or progress is None or progress.basis != basis or progress.last_page < 1:
            self.store.clear_staging(source.name)
            progress = WalkProgress(basis)
            start = 1
        else:
            # Re-read the last staged page: entries only move down as new events arrive, so that page and
            # the next hold everything not staged yet; what is read twice is deduped by id.
            start = walk.resumed_at = progress.last_page
            log.info("resuming walk", extra={"source": source.name, "page": start})
        previous_ids: list[int] | None = None  # the page before, when this cycle read it
        with (
            self.client_factory(source) as client,
            contextlib.closing(_read_ahead(client.iter_pages(newest_first=True, start_page=start))) as pages,
        ):
            for page in pages:
                self._check_cancel()
                self.page_received_at[source.name] = self.clock()
                walk.pages += 1
                staged, page_ids, page_times = [], [], []
                entries: dict[int, str] = {}  # this page's ids and their JSON
                for entry in page.items:
                    walk.fetched += 1
                    try:
                        event = normalize(source.name, entry)
                        raw_json = archive_json(entry, may_hold_floats=page.holds_floats)
                    except NormalizationError as exc:
                        walk.rejected += 1
                        self._reject(source.name, entry, str(exc))
                        continue
                    if event.id in entries:
                        if entries[event.id] != raw_json:
                            walk.rejected += 1
                            self._conflict(source.name, event.id, entry, raw_json)
                        continue
                    entries[event.id] = raw_json
                    page_ids.append(event.id)
                    page_times.append(event.created_at)
                    if walk.max_id is None or event.id > walk.max_id:
                        walk.max_id, walk.max_created_at = event.id, event.created_at
                    staged.append(Store.staging_row(event, raw_json))
                if backfill_none:
                    # First run without backfill: only learn where the log ends now.
                    break
                progress = self._judge_order(progress, page_ids, previous_ids, page.number)
                for event_id in self.store.stage(staged, (source.name, progress.to_text())):
                    walk.rejected += 1
                    self._conflict(source.name, event_id, None, entries[event_id])
                previous_ids = page_ids
                if self._walk_done(page_ids, page_times, cutoff, cursor.floor_id, cursor.last_id, progress):
                    break
        if backfill_none:
            self.store.clear_staging(source.name)
        return walk

    def _check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise PollCancelled

    def _cutoff(self, source: SourceConfig, cursor: Cursor) -> datetime | None:
        if cursor.last_created_at is not None:
            # An event dated in the future (a clock gone wrong upstream, or a forged entry) must not carry
            # the cutoff with it: every event after the last successful poll is still to be read.
            newest = cursor.last_created_at
            if cursor.last_success_at is not None:
                newest = min(newest, cursor.last_success_at)
            return newest - source.overlap
        floor = cursor.floor_time or self._backfill_floor(source)
        return floor

    def _backfill_floor(self, source: SourceConfig) -> datetime | None:
        if source.backfill in ("all", "none"):
            return None
        return datetime.combine(date.fromisoformat(source.backfill), datetime.min.time(), self.config.tz)

    @staticmethod
    def _judge_order(
        progress: WalkProgress, ids: list[int], previous: list[int] | None, number: int
    ) -> WalkProgress:
        """The walk's progress after this page: its number, and what the page says about the server's order.

        Ids must fall strictly within a page, and the ids a page adds must lie below the page before it.
        Entries the page before already held may come again: new events push entries down a page.
        """
        unsorted = progress.unsorted or any(a <= b for a, b in zip(ids, ids[1:], strict=False))
        pairs = progress.ordered_pairs + max(0, len(ids) - 1)
        if previous and ids:
            seen = set(previous)
            added = [i for i in ids if i not in seen]
            if added and added[0] >= min(previous):
                unsorted = True
            elif added:
                pairs += 1
        return replace(progress, last_page=number, unsorted=unsorted, ordered_pairs=pairs)

    @staticmethod
    def _walk_done(
        ids: list[int],
        times: list[datetime],
        cutoff: datetime | None,
        floor_id: int | None,
        last_id: int | None,
        progress: WalkProgress,
    ) -> bool:
        """True once this page reaches past the cutoff, provided the server really sorts newest-first.

        A walk that saw ids out of descending order (on a page or from one page to the next) means the
        server ignored the sort: then we never stop early and read the whole log, which is slower but loses
        nothing; nor before the walk has seen two ids in order (a one-entry page is no evidence). Nor do we
        stop on a page whose ids are all above the cursor's: those events are new whatever their times say
        (a newest event dated in the far future would otherwise end every later walk at page 1).
        """
        if not ids or progress.unsorted or progress.ordered_pairs < 1:
            return False
        if floor_id is not None and ids[-1] <= floor_id:
            return True
        if last_id is not None and ids[-1] > last_id:
            return False
        return cutoff is not None and min(times) < cutoff

    def _reject(self, source: str, entry: object, reason: str) -> None:
        log.warning("entry rejected", extra={"source": source, "reason": reason})
        with self.store.transaction():
            self.store.reject(source, entry, reason, self.clock())

    def _conflict(self, source: str, event_id: int, entry: object | None, raw_json: str) -> None:
        """The id came again with other content: keep the first version, record this one and alert."""
        reason = f"id {event_id} was served before with other content; the first version is kept"
        log.warning("entry conflicts", extra={"source": source, "event_id": event_id})
        now = self.clock()
        digest = hashlib.sha256(raw_json.encode("utf-8", "backslashreplace")).hexdigest()
        with self.store.transaction():
            self.store.reject(source, entry if entry is not None else json.loads(raw_json), reason, now)
            self._record(selfmon.event_conflict(source, event_id, digest, now), now)

    # the commit ---------------------------------------------------------------------------------------

    def _commit_rejecting_failed_entries(
        self, source: SourceConfig, cursor: Cursor, walk: _Walk, now: datetime
    ) -> tuple[int, int]:
        """The commit; an entry that fails while its rules run is rejected and the commit redone without it.

        Failures of single entries are rare (a date at the end of the calendar, a rule tripping over odd
        data), so rolling back and redoing the commit costs less than guarding every event with a savepoint.
        """
        while True:
            try:
                return self._commit(source, cursor, walk, now)
            except _EntryFailed as failed:
                log.warning(
                    "entry rejected at commit",
                    extra={"source": source.name, "event_id": failed.event_id, "reason": failed.reason},
                )
                with self.store.transaction():
                    raw = self.store.staged_raw(source.name, failed.event_id)
                    entry = json.loads(raw) if raw is not None else {"id": failed.event_id}
                    self.store.reject(source.name, entry, failed.reason, now)
                    self.store.unstage_event(source.name, failed.event_id)
                walk.rejected += 1

    def _commit(self, source: SourceConfig, cursor: Cursor, walk: _Walk, now: datetime) -> tuple[int, int]:
        first_run = cursor.last_id is None
        new = alerts = 0
        with self.store.transaction():
            newest = self.store.newest_staged(source.name)
            if newest is not None:
                walk.max_id, walk.max_created_at = newest
            if first_run and source.backfill == "none":
                floor_id = walk.max_id if walk.max_id is not None else 0
                next_cursor = replace(
                    cursor, last_id=floor_id, last_created_at=walk.max_created_at, floor_id=floor_id
                )
            else:
                floor_time = cursor.floor_time or (self._backfill_floor(source) if first_run else None)
                new, alerts = self._archive_staged(source, cursor.floor_id, floor_time, now)
                advance = walk.max_id is not None and (cursor.last_id is None or walk.max_id > cursor.last_id)
                next_cursor = replace(
                    cursor,
                    last_id=walk.max_id if advance else (cursor.last_id if cursor.last_id is not None else 0),
                    last_created_at=walk.max_created_at if advance else cursor.last_created_at,
                    floor_time=floor_time,
                )
                alerts += self._record_gaps(source, cursor, now)
            self.store.save_cursor(
                replace(
                    next_cursor,
                    last_success_at=now,
                    last_attempt_at=now,
                    last_error=None,
                    last_error_at=None,
                    error_kind=None,
                )
            )
            self.store.unstage(source.name)
            # The outcome with the cursor, in the same transaction: the report's poll success rate.
            record_poll(self.store, source.name, started=now, ended=self.clock(), ok=True)
        return new, alerts

    def _archive_staged(
        self, source: SourceConfig, floor_id: int | None, floor_time: datetime | None, now: datetime
    ) -> tuple[int, int]:
        for event_id, raw in self.store.staged_conflicting_with_archive(source.name):
            self._conflict_in_commit(source.name, event_id, raw, now)
        self.store.drop_archived_from_staging(source.name)
        prev_hash = self.store.head_hash()
        state = SqliteStateStore(self.store)
        # One rule set for the whole commit, even if a SIGHUP reload swaps it meanwhile (another thread).
        evaluator = self.evaluator
        archived_at = format_timestamp(now)
        new = alerts = 0
        pending: list[tuple[Any, ...]] = []
        # The walk staged each event with the columns normalisation derived, so nothing is parsed twice;
        # the rules get a StagedEvent, whose raw entry is decoded only if a rule looks at it.
        for staged in self.store.iter_staged(source.name, above_id=floor_id, not_before=floor_time):
            prev_hash, row = self.store.archive_staged_row(source.name, staged, prev_hash, archived_at)
            pending.append(row)
            if len(pending) >= 1000:  # executemany in batches: a third of the per-row insert cost
                self.store.insert_archived(pending)
                pending.clear()
            new += 1
            if new % 5000 == 0:
                self._check_cancel()  # a huge backfill's commit rolls back whole instead of holding SIGTERM
            if evaluator is not None:
                event_id, created_at, _ms, event_type, msg, *_derived, raw = staged
                event = StagedEvent(
                    source.name, event_id, datetime.fromisoformat(created_at), event_type, msg, raw
                )
                try:
                    for alert in evaluator.evaluate(event, state):
                        alerts += self._record(alert, now)
                except (PollCancelled, StoreError, *DatabaseError):
                    raise  # the cycle's failures, not the entry's
                except Exception as exc:  # noqa: BLE001 - e.g. OverflowError for a date at the calendar's end
                    raise _EntryFailed(
                        event_id, f"rules could not be evaluated: {type(exc).__name__}: {exc}"[:500]
                    ) from exc
        self.store.insert_archived(pending)
        return new, alerts

    def _conflict_in_commit(self, source: str, event_id: int, raw: str, now: datetime) -> None:
        """Inside the commit: a staged entry differs from the archived one with its id."""
        log.warning("entry conflicts with the archive", extra={"source": source, "event_id": event_id})
        reason = f"id {event_id} is archived with other content; the archived version is kept"
        self.store.reject(source, json.loads(raw), reason, now)
        digest = hashlib.sha256(raw.encode("utf-8", "backslashreplace")).hexdigest()
        self._record(selfmon.event_conflict(source, event_id, digest, now), now)

    def _record(self, alert: Alert, now: datetime) -> int:
        # Recorded at the clock of the commit, not the cycle's start (``now``): a silence created while the
        # walk ran is in force for the alerts this commit records (it was, by the time they were raised).
        recorded_at = max(now, self.clock())
        return int(self.store.record_alert(alert, channels_for(alert, self.config), recorded_at))

    def _record_gaps(self, source: SourceConfig, cursor: Cursor, now: datetime) -> int:
        """Inside the commit: note polling and retention gaps since the last success."""
        last = cursor.last_success_at
        if last is None:
            return 0
        silence = now - last
        if silence > max(3 * source.poll_interval, timedelta(seconds=30)):
            self.store.record_gap(
                source.name, "polling", last, now, f"no successful poll for {format_duration(silence)}", now
            )
        retention = source.plan_retention
        if retention is None or silence <= retention:  # None: unlimited, nothing expires upstream
            return 0
        lost_until = now - retention
        self.store.record_gap(
            source.name,
            "retention",
            last,
            lost_until,
            f"events created between the last successful poll and {format_time(lost_until, self.config.tz)} "
            f"may have expired upstream (plan retention {format_duration(retention)})",
            now,
        )
        log.warning(
            "retention gap",
            extra={"source": source.name, "gap_start": last.isoformat(), "gap_end": now.isoformat()},
        )
        alert = selfmon.retention_gap(source.name, last, lost_until, retention, now, self.config.tz)
        return self._record(alert, now)

    # failures -----------------------------------------------------------------------------------------

    def _failed(
        self,
        source: SourceConfig,
        cursor: Cursor,
        now: datetime,
        started: float,
        kind: str,
        message: str,
        exc_info: BaseException | None = None,
    ) -> PollResult:
        """``exc_info``: an unexpected exception, whose traceback the one ``poll failed`` line carries."""
        # The one place a cycle's error becomes cursors.last_error, status, /healthz, the log line and the
        # exit message: whatever raised it, no form of the source's token goes further.
        message = scrub(message, [source.token.get_secret_value()])
        log.error(
            "poll failed",
            extra={"source": source.name, "error_kind": kind, "error": message},
            exc_info=exc_info,
        )
        alerts = 0
        try:
            self.store.record_poll_failure(source.name, at=now, kind=kind, message=message)
            record_poll(self.store, source.name, started=now, ended=self.clock(), ok=False, error_kind=kind)
            if kind == "auth":
                with self.store.transaction():
                    alert = selfmon.auth_failed(source.name, message, cursor.last_success_at, now)
                    alerts = self._record(alert, now)
        except (StoreError, *DatabaseError) as exc:  # the store itself is failing: nothing more we can record
            log.error("cannot record the poll failure", extra={"source": source.name, "error": str(exc)})
        return PollResult(
            source=source.name,
            ok=False,
            alerts=alerts,
            duration=time.monotonic() - started,
            error=message,
            error_kind=kind,
        )

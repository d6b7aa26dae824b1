"""The SQLite store: archive (hash chain), cursors, staging, rule state, alerts, outbox, gaps.

One file, WAL mode, schema versions in ``PRAGMA user_version`` applied by ``MIGRATIONS``.
Every write of a poll cycle happens inside ``Store.transaction()`` (BEGIN IMMEDIATE), so the
archive, the rule state, the alerts and the cursor move together or not at all.

Tamper evidence: each archived row carries ``hash = sha256(prev_hash + canonical_json(record))``
where record is ``{"source", "id", "entry"}`` and ``entry`` the raw API entry. A prune is itself a
link of the chain (a row of ``prunes``, in the same ``seq`` order as the events): it names the last
row it cut and that row's hash, where the kept chain starts. ``verify()`` re-walks the chain from
there; nothing in ``meta`` is trusted.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import sqlite_utils

from monitor.alerts.model import ANCHOR_RULE, Alert
from monitor.events import (
    AuditEvent,
    NormalizationError,
    canonical_json,
    format_timestamp,
    nested_str,
    normalize,
)
from monitor.store import lifecycle
from monitor.store.files import FileIdentity, identity_problem, readonly_uri
from monitor.store.polls import migration_7

GENESIS_HASH = "0" * 64


class StoreError(Exception):
    """The store cannot be opened or written (read-only file, disk full, newer schema)."""


class ArchiveMissing(StoreError):
    """A read command was pointed at an archive that does not exist (it never creates one)."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"{path}: no archive at this path (a read command never creates one)")


class StoreInterrupted(StoreError):
    """A wait for the write lock was ended by ``Store.interrupt`` (the daemon is stopping)."""


# --- schema ----------------------------------------------------------------------------------------------


def _migration_1(db: sqlite_utils.Database) -> None:
    db.execute(
        """CREATE TABLE events (
            seq INTEGER PRIMARY KEY,            -- archive order; the hash chain follows it
            source TEXT NOT NULL,
            event_id INTEGER NOT NULL,
            created_at TEXT NOT NULL,           -- ISO 8601 UTC, microseconds: sorts as text
            created_ms INTEGER NOT NULL,        -- epoch ms, for range queries
            type TEXT NOT NULL,
            msg TEXT NOT NULL,
            user_email TEXT,
            workspace_name TEXT,
            branch_label TEXT,
            raw TEXT NOT NULL,                  -- the entry exactly as served (canonical JSON)
            archived_at TEXT NOT NULL,
            hash TEXT NOT NULL,
            UNIQUE (source, event_id)
        )"""
    )
    events = db.table("events")
    events.create_index(["created_ms"])
    events.create_index(["type"])
    events.create_index(["user_email"])
    events.create_index(["workspace_name"])
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute(
        """CREATE TABLE cursors (
            source TEXT PRIMARY KEY,
            last_id INTEGER,                    -- highest event id handled
            last_created_at TEXT,               -- its created_at
            floor_id INTEGER,                   -- backfill none: ids at or below are never archived
            floor_time TEXT,                    -- backfill from a date: older events are never archived
            last_success_at TEXT,
            last_attempt_at TEXT,
            last_error TEXT,
            last_error_at TEXT,
            error_kind TEXT                     -- auth | unavailable | protocol | store | null
        )"""
    )
    db.execute(
        """CREATE TABLE staging (
            source TEXT NOT NULL,
            event_id INTEGER NOT NULL,
            raw TEXT NOT NULL,
            PRIMARY KEY (source, event_id)
        )"""
    )
    db.execute(
        """CREATE TABLE rejected (
            source TEXT NOT NULL,
            raw_sha256 TEXT NOT NULL,
            raw TEXT NOT NULL,
            reason TEXT NOT NULL,
            seen_at TEXT NOT NULL,
            PRIMARY KEY (source, raw_sha256)
        )"""
    )
    db.execute(
        """CREATE TABLE rule_state (
            rule_id TEXT NOT NULL,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (rule_id, key)
        )"""
    )
    db.execute(
        """CREATE TABLE alerts (
            id TEXT PRIMARY KEY,
            rule_id TEXT NOT NULL,
            severity TEXT NOT NULL,
            title TEXT NOT NULL,
            text TEXT NOT NULL,
            source TEXT NOT NULL,
            event_time TEXT NOT NULL,
            event_ids TEXT NOT NULL,            -- JSON list
            group_key TEXT NOT NULL,
            fields TEXT NOT NULL,               -- JSON object
            context TEXT NOT NULL,              -- JSON object
            suppressed_count INTEGER NOT NULL,
            tags TEXT NOT NULL,                 -- JSON list
            recorded_at TEXT NOT NULL
        )"""
    )
    db.table("alerts").create_index(["event_time"])
    db.execute(
        """CREATE TABLE outbox (
            alert_id TEXT NOT NULL REFERENCES alerts(id),
            channel TEXT NOT NULL,
            status TEXT NOT NULL,               -- pending | sent | dead
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT NOT NULL,
            first_attempt_at TEXT,
            last_error TEXT,
            sent_at TEXT,
            remote_id TEXT,                     -- Slack ts / email Message-ID
            PRIMARY KEY (alert_id, channel)
        )"""
    )
    db.table("outbox").create_index(["status", "next_attempt_at"])
    db.execute(
        """CREATE TABLE gaps (
            id INTEGER PRIMARY KEY,
            source TEXT NOT NULL,
            kind TEXT NOT NULL,                 -- polling | retention
            start TEXT NOT NULL,
            end TEXT NOT NULL,
            detail TEXT NOT NULL,
            recorded_at TEXT NOT NULL
        )"""
    )


def _migration_2(db: sqlite_utils.Database) -> None:
    # Monthly report claims: one row per period, taken by compare-and-set inside BEGIN IMMEDIATE so that
    # two processes sharing the file never both send (monitor/report/schedule.py).
    db.execute(
        """CREATE TABLE reports (
            period TEXT PRIMARY KEY,            -- YYYY-MM, a calendar month in the configured timezone
            status TEXT NOT NULL,               -- sending | sent | failed | written (no recipients)
            claimed_at TEXT NOT NULL,
            claimed_by TEXT NOT NULL,           -- host:pid:nonce of the process holding the claim
            attempts INTEGER NOT NULL DEFAULT 0,
            sent_at TEXT,
            message_id TEXT,
            error TEXT
        )"""
    )


def _migration_3(db: sqlite_utils.Database) -> None:
    # Staging keeps the columns normalisation derived during the walk, so the commit need not parse each
    # entry's JSON and timestamp a second time. When this migration was written staged rows never outlived a
    # cycle, so the table is recreated rather than converted (an unfinished walk restarts from page 1).
    db.execute("DROP TABLE staging")
    db.execute(
        """CREATE TABLE staging (
            source TEXT NOT NULL,
            event_id INTEGER NOT NULL,
            created_at TEXT NOT NULL,           -- as in events: ISO 8601 UTC, microseconds
            created_ms INTEGER NOT NULL,
            type TEXT NOT NULL,
            msg TEXT NOT NULL,
            user_email TEXT,
            workspace_name TEXT,
            branch_label TEXT,
            raw TEXT NOT NULL,                  -- canonical JSON
            PRIMARY KEY (source, event_id)
        )"""
    )


def _migration_4(db: sqlite_utils.Database) -> None:
    # Every poll, `status` and /metrics ask for a source's newest event time (the lag): without this index
    # that was a scan of the source's whole archive, 0.1 s at 200,000 events and growing with it.
    db.table("events").create_index(["source", "created_ms"])


def _migration_5(db: sqlite_utils.Database) -> None:
    # Prune records: a prune used to leave only meta.chain_anchor_hash behind, which anyone could set after
    # deleting the oldest rows by hand. A prune is now a link of the chain itself, in the events' seq order.
    db.execute(
        """CREATE TABLE prunes (
            seq INTEGER PRIMARY KEY,            -- its place in the chain, in the events' seq order
            at TEXT NOT NULL,                   -- when the prune ran
            cutoff TEXT,                        -- events older than this were cut (null: an older release's)
            cut INTEGER,                        -- rows deleted (null: an older release's prune)
            through_seq INTEGER NOT NULL,       -- the last chain link cut: the kept chain starts after it
            through_hash TEXT NOT NULL,         -- that link's hash
            hash TEXT NOT NULL
        )"""
    )
    # An archive pruned by an earlier release: take its meta anchor over once, as a prune record appended at
    # the head. From now on the record, not meta, says where the chain starts.
    anchor = db.execute("SELECT value FROM meta WHERE key = 'chain_anchor_hash'").fetchone()
    if anchor is None:
        return
    pruned_at = db.execute("SELECT value FROM meta WHERE key = 'chain_anchor_pruned_at'").fetchone()
    first, last = db.execute("SELECT min(seq), max(seq) FROM events").fetchone()
    head = db.execute("SELECT hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    record = PruneRecord(
        seq=(last or 0) + 1,
        at=datetime.fromisoformat(pruned_at[0]) if pruned_at else datetime.now(UTC),
        cutoff=None,
        cut=None,
        # An earlier release let seq start again at 1 after a prune of every row: start just before the
        # first kept row, whatever its number.
        through_seq=(first or 1) - 1,
        through_hash=anchor[0],
        hash="",
    )
    record = record.linked(head[0] if head else anchor[0])
    db.execute(_INSERT_PRUNE, record.row())


LEGACY_STATE_DAYS = 90  # how long rule state written before migration 6 is kept unless a rule rewrites it


def _migration_6(db: sqlite_utils.Database) -> None:
    # Rule state per source (a threshold counts one Xano instance's events; a value seen on one instance is
    # still new on another) and with an expiry in event time, so that the keys of expired windows, values and
    # throttles are deleted instead of piling up (an attacker's distinct emails and IPs grew it without end).
    # source '' is state shared by every source: rules with `scope: all_sources` and self-monitoring.
    db.execute(
        """CREATE TABLE rule_state_v5 (
            rule_id TEXT NOT NULL,
            source TEXT NOT NULL,               -- '' = shared by every source
            key TEXT NOT NULL,
            value TEXT NOT NULL,                -- JSON
            expires_at INTEGER,                 -- event time (µs since the epoch) when it is of no more use;
                                                -- NULL = kept
            PRIMARY KEY (rule_id, source, key)
        )"""
    )
    # Self-monitoring episodes (monitor.*, keyed by source or channel name) are not rule state of a source.
    db.execute(
        "INSERT INTO rule_state_v5 (rule_id, source, key, value) "
        "SELECT rule_id, '', key, value FROM rule_state WHERE rule_id LIKE 'monitor.%'"
    )
    # The rules' state was shared by every source: each source the archive knows carries it on, so nothing
    # learnt is forgotten (a known user is not "new" after the upgrade). Its expiry is not known here (the
    # rule's windows are in the rule files): a window or throttle is kept LEGACY_STATE_DAYS past its last
    # event unless its rule writes it again first; seen values and learning starts are kept as before.
    sources = [row[0] for row in db.execute("SELECT source FROM cursors ORDER BY source").fetchall()] or [""]
    legacy_days_us = LEGACY_STATE_DAYS * 86_400_000_000
    for source in sources:
        db.execute(
            f"""INSERT INTO rule_state_v5 (rule_id, source, key, value, expires_at)
            SELECT rule_id, ?, key, value,
                CASE
                    WHEN key LIKE 'g:%' THEN json_extract(value, '$[#-1][0]') + {legacy_days_us}
                    WHEN key LIKE 't:%' AND json_extract(value, '$.suppressed') = 0
                        THEN json_extract(value, '$.start') + {legacy_days_us}
                END
            FROM rule_state WHERE rule_id NOT LIKE 'monitor.%'""",  # noqa: S608 - a number, not input
            [source],
        )
    db.execute("DROP TABLE rule_state")
    db.execute("ALTER TABLE rule_state_v5 RENAME TO rule_state")
    db.execute(
        "CREATE INDEX rule_state_expiry ON rule_state (source, expires_at) WHERE expires_at IS NOT NULL"
    )


def _migration_8(db: sqlite_utils.Database) -> None:
    # The alert lifecycle (monitor/store/lifecycle.py). `status` is the alert's state now, kept in step with
    # its history by the same transaction; the history itself (alert_actions) is a link of the chain, in the
    # events' seq order like prune records, so an acknowledgement cannot be edited or removed unnoticed.
    # Alerts recorded before this release start open: nobody has triaged them.
    db.execute("ALTER TABLE alerts ADD COLUMN status TEXT NOT NULL DEFAULT 'open'")
    db.execute("ALTER TABLE alerts ADD COLUMN silence_id INTEGER")  # the silence that held it back
    db.execute("CREATE INDEX alerts_status_time ON alerts (status, event_time)")
    db.execute(
        """CREATE TABLE alert_actions (
            seq INTEGER PRIMARY KEY,            -- its place in the chain, in the events' seq order
            at TEXT NOT NULL,
            actor TEXT NOT NULL,                -- a token's name, or cli:<login> for the CLI
            kind TEXT NOT NULL,                 -- alert.acknowledged | alert.resolved | silence.added | ...
            alert_id TEXT,
            silence_id INTEGER,
            detail TEXT NOT NULL,               -- canonical JSON: from, to, note, disposition, the silence
            hash TEXT NOT NULL
        )"""
    )
    db.execute("CREATE INDEX alert_actions_alert ON alert_actions (alert_id, seq)")
    db.execute(
        """CREATE TABLE silences (
            id INTEGER PRIMARY KEY,
            rule_id TEXT,                       -- null: any rule
            match TEXT NOT NULL,                -- JSON object {field: value}, every pair must match
            starts_at TEXT NOT NULL,
            until TEXT NOT NULL,
            reason TEXT NOT NULL,
            created_by TEXT NOT NULL,
            expired_at TEXT,                    -- set when expired early
            expired_by TEXT
        )"""
    )
    # The API's event search filters by user and walks newest first: (user, time) is a seek and already in
    # the walk's order (the rowid, seq, breaks ties), where the user_email index alone meant a sort.
    db.execute("CREATE INDEX events_user_time ON events (user_email, created_ms)")
    # The dashboard counts a period per type and per user as one index range per value (search.py):
    # no row is read and no temporary B-tree is built (a GROUP BY over a month of a million rows took 15 s
    # through the rows, 4-9 s through a covering index, on a busy machine).
    db.execute("CREATE INDEX events_type_time ON events (type, created_ms)")


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _migration_1,
    _migration_2,
    _migration_3,
    _migration_4,
    _migration_5,
    _migration_6,
    migration_7,  # poll outcomes (monitor/store/polls.py)
    _migration_8,  # alert lifecycle, silences, search indexes
]
SCHEMA_VERSION = len(MIGRATIONS)


# --- records ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cursor:
    source: str
    last_id: int | None = None
    last_created_at: datetime | None = None
    floor_id: int | None = None
    floor_time: datetime | None = None
    last_success_at: datetime | None = None
    last_attempt_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    error_kind: str | None = None


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    rows_checked: int
    head_hash: str
    bad_seq: int | None = None
    bad_source: str | None = None
    bad_event_id: int | None = None
    reason: str = ""
    prunes: int = 0  # prune records in the verified part of the chain
    head_seq: int = 0
    actions: int = 0  # alert history records in the verified part of the chain


@dataclass(frozen=True)
class PruneRecord:
    """A prune, as a link of the chain: what it cut (rows up to ``through_seq``) and the hash they ended with.

    ``cutoff`` and ``cut`` are None for a prune made by a release before prune records (taken over from
    meta on upgrade).
    """

    label: ClassVar[str] = "prune record"

    seq: int
    at: datetime
    cutoff: datetime | None
    cut: int | None
    through_seq: int
    through_hash: str
    hash: str

    def content(self) -> str:
        """The canonical JSON the hash covers (everything but the hash itself)."""
        return canonical_json(
            {
                "prune": {
                    "seq": self.seq,
                    "at": format_timestamp(self.at),
                    "cutoff": _iso(self.cutoff),
                    "cut": self.cut,
                    "through_seq": self.through_seq,
                    "through_hash": self.through_hash,
                }
            }
        )

    def link_hash(self, prev_hash: str) -> str:
        return hashlib.sha256((prev_hash + self.content()).encode("utf-8")).hexdigest()

    def linked(self, prev_hash: str) -> PruneRecord:
        return replace(self, hash=self.link_hash(prev_hash))

    def row(self) -> tuple[Any, ...]:
        return (
            self.seq,
            format_timestamp(self.at),
            _iso(self.cutoff),
            self.cut,
            self.through_seq,
            self.through_hash,
            self.hash,
        )


_INSERT_PRUNE = (
    "INSERT INTO prunes (seq, at, cutoff, cut, through_seq, through_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_SELECT_PRUNES = "SELECT seq, at, cutoff, cut, through_seq, through_hash, hash FROM prunes"


def _prune_record(row: tuple[Any, ...]) -> PruneRecord:
    seq, at, cutoff, cut, through_seq, through_hash, hash_ = row
    return PruneRecord(seq, datetime.fromisoformat(at), _dt(cutoff), cut, through_seq, through_hash, hash_)


def _missing(first: int, last: int) -> str:
    return f"row {first} is missing" if first == last else f"rows {first}-{last} are missing"


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _iso(value: datetime | None) -> str | None:
    return format_timestamp(value) if value is not None else None


@functools.lru_cache(maxsize=256)
def _json_string(text: str) -> str:
    # A source name, encoded once per cycle instead of once per archived event.
    return json.dumps(text, ensure_ascii=False)


def _walk_key(source: str) -> str:
    # A walk's progress is a small record kept beside its staged rows; meta holds it, so that no table (and
    # no migration) is needed for it.
    return f"walk_progress:{source}"


def chain_hash(prev_hash: str, source: str, event_id: int, raw_json: str) -> str:
    """The archive's hash link. ``raw_json`` is the entry's canonical JSON."""
    record = f'{{"entry":{raw_json},"id":{event_id},"source":{_json_string(source)}}}'
    return hashlib.sha256((prev_hash + record).encode("utf-8")).hexdigest()


# --- the store -------------------------------------------------------------------------------------------


def derived_columns(event: AuditEvent) -> tuple[Any, ...]:
    """The columns an archived row derives from its entry, in table order: created_at, created_ms, type,
    msg, user_email, workspace_name, branch_label. Staging writes them and ``verify`` re-derives them.

    Read from the raw entry directly rather than through AuditEvent's properties: this runs for every
    entry a walk reads.
    """
    created_at, raw = event.created_at, event.raw
    return (
        format_timestamp(created_at),
        int(created_at.timestamp() * 1000),
        event.type,
        event.msg,
        nested_str(raw, "user", "email"),
        nested_str(raw, "workspace", "name"),
        nested_str(raw, "branch", "label"),
    )


def _row_problem(
    prev: str, source: str, event_id: int, columns: tuple[Any, ...], raw: str, stored: str
) -> str | None:
    """Why an archived row fails verification (None: it is sound). ``columns`` are the row's
    ``derived_columns`` as stored."""
    if chain_hash(prev, source, event_id, raw) != stored:
        return "hash does not match the row's content or its predecessor"
    try:
        event = normalize(source, json.loads(raw))
    except (ValueError, NormalizationError) as exc:
        return f"raw entry no longer parses: {exc}"
    if event.id != event_id or derived_columns(event) != columns:
        return "indexed columns differ from the raw entry"
    return None


WRITE_WAIT = 30.0  # seconds to wait for another process's write transaction before giving up
WAIT_SLICE = 0.2  # seconds: how often a wait for the write lock looks at ``Store.interrupt``


def _connect(target: str, *, uri: bool) -> sqlite3.Connection:
    """A connection as every thread's should be: autocommit (transactions are explicit), usable from the
    thread that asks for it, durable across process crashes in WAL mode, foreign keys enforced."""
    conn = sqlite3.connect(target, uri=uri, isolation_level=None, check_same_thread=False, timeout=WRITE_WAIT)
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


class _Link:
    """One thread's connection and the state of its transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.db = sqlite_utils.Database(conn)
        self.in_transaction = False
        self.before_commit: list[Callable[[], None]] = []
        self.transaction_serial = 0


class Store:
    """Open with ``Store.open(path)``; use as a context manager to close it."""

    def __init__(
        self, conn: sqlite3.Connection, path: str, *, connect: Callable[[], sqlite3.Connection] | None = None
    ) -> None:
        """``conn`` serves the thread that opened the store; with ``connect``, every other thread that uses
        the store gets a connection of its own from it (without, all threads share ``conn``)."""
        self.path = path
        self._identity: FileIdentity | None = None  # the file a writer opened (device, inode)
        self._connect = connect
        self._local = threading.local()
        self._local.link = _Link(conn)
        self._links = [self._local.link]
        self._links_lock = threading.Lock()
        self._shared_link = None if connect is not None else self._local.link
        # One writer at a time in this process; other processes are kept out by BEGIN IMMEDIATE.
        self._writer = threading.Lock()
        self._writer_thread: int | None = None
        self._serials = itertools.count(1)
        # Set (by the daemon, to its stop event) to end waits for the write lock at once: SIGTERM must not
        # wait out another process's transaction.
        self.interrupt: threading.Event | None = None

    # connections --------------------------------------------------------------------------------------

    def _link(self) -> _Link:
        """This thread's connection and transaction state.

        Each worker thread of the daemon (one per source, delivery, reports) reads and writes through its
        own connection: WAL gives each its own consistent snapshot, a transaction of one thread never takes
        in another thread's statements, and a report's read snapshot never meets a poller's BEGIN."""
        link: _Link | None = getattr(self._local, "link", None)
        if link is None:
            if self._shared_link is not None:
                link = self._shared_link
            else:
                assert self._connect is not None
                try:
                    link = _Link(self._connect())
                except sqlite3.Error as exc:
                    raise StoreError(f"{self.path}: cannot open the archive: {exc}") from None
                with self._links_lock:
                    self._links.append(link)
            self._local.link = link
        return link

    @property
    def conn(self) -> sqlite3.Connection:
        return self._link().conn

    @property
    def db(self) -> sqlite_utils.Database:
        return self._link().db

    @property
    def transaction_serial(self) -> int:
        """Tells one transaction from another (unique across threads), so a cache can tell a new one."""
        return self._link().transaction_serial

    # opening ------------------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, readonly: bool = False) -> Store:
        """Open (a writer: create and migrate) the archive at ``path``.

        ``readonly``: for commands that only read. The file must exist (``ArchiveMissing`` otherwise; a read
        never creates an archive), and it is opened so that a copy on a read-only location works
        (``files.readonly_uri``) and nothing in it or beside it is changed.
        """
        path_text = str(path)
        try:
            if readonly:
                if path_text != ":memory:" and not Path(path_text).is_file():
                    raise ArchiveMissing(path_text)
                uri = ":memory:" if path_text == ":memory:" else readonly_uri(path_text)
                connect = functools.partial(_connect, uri, uri=True)
            else:
                if path_text != ":memory:":
                    Path(path_text).parent.mkdir(parents=True, exist_ok=True)
                    if not Path(path_text).exists():
                        # Created 0600: the archive holds user emails and IPs.
                        os.close(os.open(path_text, os.O_CREAT | os.O_WRONLY, 0o600))
                connect = functools.partial(_connect, path_text, uri=False)
            # ":memory:" is one database per connection: every thread shares the one.
            store = cls(connect(), path_text, connect=None if path_text == ":memory:" else connect)
            if readonly:
                store._check_readable()
            else:
                store._prepare()
                store._identity = None if path_text == ":memory:" else FileIdentity.of(path_text)
            return store
        except sqlite3.Error as exc:
            raise StoreError(f"{path_text}: cannot open the archive: {exc}") from None
        except OSError as exc:
            raise StoreError(f"{path_text}: cannot create the archive: {exc.strerror}") from None

    def _check_readable(self) -> None:
        """A read-only open succeeds lazily: read the schema now, so a non-archive fails here, by name."""
        try:
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise StoreError(f"{self.path}: cannot read the archive: {exc}") from None
        if version > SCHEMA_VERSION:
            self.conn.close()
            raise StoreError(
                f"{self.path}: the archive has schema version {version}, newer than this program's "
                f"{SCHEMA_VERSION}; upgrade audit-monitor"
            )
        if version < SCHEMA_VERSION:
            # Read commands never change the file; an older schema is upgraded by the next writer.
            self.conn.close()
            raise StoreError(
                f"{self.path}: the archive has schema version {version}, older than this program's "
                f"{SCHEMA_VERSION}; `audit-monitor run --once` upgrades it (read commands never change it)"
            )

    def file_problem(self) -> str | None:
        """Why the archive at ``path`` is no longer the file this store writes (deleted or replaced), or
        None. The daemon asks before every cycle: writing on into an unlinked file would lose it all, and
        opening the path anew would re-archive and re-alert everything."""
        if self._identity is None:
            return None
        return identity_problem(self.path, self._identity)

    def _prepare(self) -> None:
        self.conn.execute("PRAGMA journal_mode=WAL")
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: the archive has schema version {version}, newer than this program's "
                f"{SCHEMA_VERSION}; upgrade audit-monitor"
            )
        for number in range(version, SCHEMA_VERSION):
            with self.transaction():
                MIGRATIONS[number](self.db)
                self.conn.execute(f"PRAGMA user_version={number + 1}")

    def release_thread(self) -> None:
        """Close the calling thread's own connection, for a thread that ends (a pool's): the next use from
        this thread opens another. The opening thread's connection, or a shared one, stays."""
        link: _Link | None = getattr(self._local, "link", None)
        if link is None or link is self._shared_link or link is self._links[0]:
            return
        if link.in_transaction:
            raise RuntimeError("release_thread inside a transaction")
        del self._local.link
        with self._links_lock:
            self._links.remove(link)
        link.conn.close()

    def close(self) -> None:
        """Close every thread's connection (call it when no other thread uses the store any more)."""
        with self._links_lock:
            for link in self._links:
                link.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Store]:
        """One write transaction (BEGIN IMMEDIATE: one writer at a time, even across processes).

        Threads of this process queue for the writer lock; another process's transaction is waited out for
        up to ``WRITE_WAIT`` seconds. Both waits end at once when ``interrupt`` is set
        (:class:`StoreInterrupted`), so a stopping daemon never sits in them."""
        link = self._link()
        if link.in_transaction and self._writer_thread == threading.get_ident():
            raise RuntimeError("nested transaction")
        self._acquire_writer()
        try:
            self._begin(link.conn)
        except BaseException:
            self._release_writer()
            raise
        link.in_transaction = True
        link.transaction_serial = next(self._serials)
        try:
            yield self
            for callback in link.before_commit:
                callback()
        except sqlite3.OperationalError as exc:
            # read-only file, full disk, I/O error: say so plainly; the whole transaction is undone.
            self._rollback()
            raise StoreError(f"{self.path}: cannot write to the archive: {exc}") from None
        except BaseException:
            self._rollback()
            raise
        else:
            try:
                link.conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise StoreError(f"{self.path}: cannot commit to the archive: {exc}") from None
        finally:
            link.in_transaction = False
            link.before_commit.clear()
            self._release_writer()

    def _acquire_writer(self) -> None:
        while not self._writer.acquire(timeout=WAIT_SLICE):
            self._check_interrupt("another thread's transaction")
        self._writer_thread = threading.get_ident()

    def _release_writer(self) -> None:
        self._writer_thread = None
        self._writer.release()

    def _check_interrupt(self, waiting_for: str) -> None:
        if self.interrupt is not None and self.interrupt.is_set():
            raise StoreInterrupted(f"{self.path}: stopping while waiting for {waiting_for}")

    def _begin(self, conn: sqlite3.Connection) -> None:
        """BEGIN IMMEDIATE, waiting for another process's write lock in short slices (SQLite's own busy wait
        cannot be interrupted: ``sqlite3_interrupt`` does not end it)."""
        waited_until = time.monotonic() + WRITE_WAIT
        conn.execute(f"PRAGMA busy_timeout = {int(WAIT_SLICE * 1000)}")
        try:
            while True:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    busy = getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY
                    if not busy or time.monotonic() >= waited_until:
                        raise StoreError(f"{self.path}: cannot write to the archive: {exc}") from None
                    self._check_interrupt("another process's write lock")
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(WRITE_WAIT * 1000)}")

    @property
    def in_transaction(self) -> bool:
        """Whether this thread is inside ``transaction()``."""
        return self._link().in_transaction

    def before_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` inside this transaction, just before its COMMIT (dropped if it rolls back)."""
        link = self._link()
        if not link.in_transaction:
            raise RuntimeError("before_commit outside a transaction")
        link.before_commit.append(callback)

    def _rollback(self) -> None:
        # SQLite rolls the transaction back by itself after some errors (a full disk, an I/O error): a
        # ROLLBACK then fails with "no transaction is active" and would hide the error that matters.
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    # meta ---------------------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # cursors ------------------------------------------------------------------------------------------

    def get_cursor(self, source: str) -> Cursor | None:
        row = self.conn.execute(
            "SELECT source, last_id, last_created_at, floor_id, floor_time, last_success_at, "
            "last_attempt_at, "
            "last_error, last_error_at, error_kind FROM cursors WHERE source = ?",
            (source,),
        ).fetchone()
        if row is None:
            return None
        return Cursor(
            source=row[0],
            last_id=row[1],
            last_created_at=_dt(row[2]),
            floor_id=row[3],
            floor_time=_dt(row[4]),
            last_success_at=_dt(row[5]),
            last_attempt_at=_dt(row[6]),
            last_error=row[7],
            last_error_at=_dt(row[8]),
            error_kind=row[9],
        )

    def cursors(self) -> list[Cursor]:
        names = [r[0] for r in self.conn.execute("SELECT source FROM cursors ORDER BY source")]
        return [c for c in (self.get_cursor(n) for n in names) if c is not None]

    def save_cursor(self, cursor: Cursor) -> None:
        self.conn.execute(
            """INSERT INTO cursors (source, last_id, last_created_at, floor_id, floor_time, last_success_at,
                   last_attempt_at, last_error, last_error_at, error_kind)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT(source) DO UPDATE SET last_id = excluded.last_id,
                   last_created_at = excluded.last_created_at, floor_id = excluded.floor_id,
                   floor_time = excluded.floor_time, last_success_at = excluded.last_success_at,
                   last_attempt_at = excluded.last_attempt_at, last_error = excluded.last_error,
                   last_error_at = excluded.last_error_at, error_kind = excluded.error_kind""",
            (
                cursor.source,
                cursor.last_id,
                _iso(cursor.last_created_at),
                cursor.floor_id,
                _iso(cursor.floor_time),
                _iso(cursor.last_success_at),
                _iso(cursor.last_attempt_at),
                cursor.last_error,
                _iso(cursor.last_error_at),
                cursor.error_kind,
            ),
        )

    def record_poll_failure(self, source: str, *, at: datetime, kind: str, message: str) -> None:
        """Note a failed cycle without touching the cursor position."""
        with self.transaction():
            self.conn.execute(
                """INSERT INTO cursors (source, last_attempt_at, last_error, last_error_at, error_kind)
                   VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT(source) DO UPDATE SET last_attempt_at = excluded.last_attempt_at,
                       last_error = excluded.last_error, last_error_at = excluded.last_error_at,
                       error_kind = excluded.error_kind""",
                (source, _iso(at), message, _iso(at), kind),
            )

    # staging ------------------------------------------------------------------------------------------

    def clear_staging(self, source: str) -> None:
        """Forget the source's staged rows and its walk's progress: the next walk starts from page 1."""
        with self.transaction():
            self.conn.execute("DELETE FROM staging WHERE source = ?", (source,))
            self.conn.execute("DELETE FROM meta WHERE key = ?", (_walk_key(source),))

    @staticmethod
    def staging_row(event: AuditEvent, raw_json: str) -> tuple[Any, ...]:
        """What ``stage`` takes for one event: source and id, the columns the archive derives, its JSON."""
        return (event.source, event.id, *derived_columns(event), raw_json)

    def stage(self, rows: Iterable[tuple[Any, ...]], progress: tuple[str, str] | None = None) -> list[int]:
        """Stage rows made by ``staging_row``; an event staged twice keeps its first row. Returns the ids of
        rows whose event was staged before with other content (each id once, in page order).

        ``progress`` is (source, text) from the walk: saved in the same transaction as the rows, so the page
        a restarted walk resumes from (``walk_progress``) never names a page whose rows were lost.
        """
        rows = rows if isinstance(rows, list) else list(rows)
        conflicts: list[int] = []
        with self.transaction():
            before = self.conn.total_changes
            self.conn.executemany(
                "INSERT OR IGNORE INTO staging (source, event_id, created_at, created_ms, type, msg, "
                "user_email, workspace_name, branch_label, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            if self.conn.total_changes - before < len(rows):
                # Some were staged already (an overlap page, or pages shifted by new events): the usual case
                # is the same entry again; another entry under a known id is worth knowing about.
                conflicts = self._staged_differently(rows)
            if progress is not None:
                self.set_meta(_walk_key(progress[0]), progress[1])
        return conflicts

    def _staged_differently(self, rows: list[tuple[Any, ...]]) -> list[int]:
        different: list[int] = []
        for start in range(0, len(rows), 500):
            chunk = rows[start : start + 500]
            source = chunk[0][0]
            marks = ",".join("?" * len(chunk))
            staged = dict(
                self.conn.execute(
                    f"SELECT event_id, raw FROM staging WHERE source = ? AND event_id IN ({marks})",  # noqa: S608
                    [source, *(row[1] for row in chunk)],
                ).fetchall()
            )
            different.extend(row[1] for row in chunk if row[1] in staged and staged[row[1]] != row[-1])
        return list(dict.fromkeys(different))

    def walk_progress(self, source: str) -> str | None:
        """What the last ``stage`` of the source's unfinished walk recorded (None: no walk in progress)."""
        return self.get_meta(_walk_key(source))

    def newest_staged(self, source: str) -> tuple[int, datetime] | None:
        """The highest staged id of the source and its created_at."""
        row = self.conn.execute(
            "SELECT event_id, created_at FROM staging WHERE source = ? ORDER BY event_id DESC LIMIT 1",
            (source,),
        ).fetchone()
        return (int(row[0]), datetime.fromisoformat(row[1])) if row else None

    def staged_conflicting_with_archive(self, source: str) -> list[tuple[int, str]]:
        """Inside the cycle's transaction: staged (id, raw JSON) that the archive holds with other content."""
        return [
            (int(row[0]), str(row[1]))
            for row in self.conn.execute(
                "SELECT s.event_id, s.raw FROM staging s JOIN events e "
                "ON e.source = s.source AND e.event_id = s.event_id WHERE s.source = ? AND e.raw != s.raw",
                (source,),
            )
        ]

    def staged_raw(self, source: str, event_id: int) -> str | None:
        row = self.conn.execute(
            "SELECT raw FROM staging WHERE source = ? AND event_id = ?", (source, event_id)
        ).fetchone()
        return str(row[0]) if row else None

    def unstage_event(self, source: str, event_id: int) -> None:
        """Inside a transaction: drop one staged event (it was rejected at the commit)."""
        self.conn.execute("DELETE FROM staging WHERE source = ? AND event_id = ?", (source, event_id))

    def drop_archived_from_staging(self, source: str) -> None:
        """Inside the cycle's transaction: forget staged events the archive already holds."""
        self.conn.execute(
            "DELETE FROM staging WHERE source = ? AND event_id IN "
            "(SELECT event_id FROM events WHERE source = ?)",
            (source, source),
        )

    def iter_staged(
        self,
        source: str,
        *,
        above_id: int | None = None,
        not_before: datetime | None = None,
        batch: int = 2000,
    ) -> Iterator[tuple[Any, ...]]:
        """Staged rows in ascending id order, a batch in memory at a time: (event_id, created_at, created_ms,
        type, msg, user_email, workspace_name, branch_label, raw): ``staging_row``'s columns after the source.

        ``above_id`` and ``not_before`` leave out older events. created_at is compared as text, which
        orders exactly as time does because every staged value has the one fixed-width UTC form.
        """
        clauses: list[str] = ["source = ?"]
        params: list[Any] = [source]
        if above_id is not None:
            clauses.append("event_id > ?")
            params.append(above_id)
        if not_before is not None:
            clauses.append("created_at >= ?")
            params.append(format_timestamp(not_before))
        columns = "event_id, created_at, created_ms, type, msg, user_email, workspace_name, branch_label, raw"
        where = " AND ".join(clauses)  # fixed clauses; the values are parameters
        cursor = self.conn.execute(
            f"SELECT {columns} FROM staging WHERE {where} ORDER BY event_id",  # noqa: S608
            params,
        )
        while rows := cursor.fetchmany(batch):
            yield from rows

    def unstage(self, source: str) -> None:
        """Inside the cycle's transaction: drop the source's staged rows once they are archived.

        When no other source has rows staged (the usual case) the whole table is emptied with an
        unqualified DELETE, which SQLite carries out by dropping its pages instead of row by row:
        seconds faster after a large backfill.
        """
        others = self.conn.execute(
            "SELECT EXISTS (SELECT 1 FROM staging WHERE source < ?) "
            "OR EXISTS (SELECT 1 FROM staging WHERE source > ?)",
            (source, source),
        ).fetchone()[0]
        if others:
            self.conn.execute("DELETE FROM staging WHERE source = ?", (source,))
        else:
            self.conn.execute("DELETE FROM staging")
        self.conn.execute("DELETE FROM meta WHERE key = ?", (_walk_key(source),))

    # archive ------------------------------------------------------------------------------------------

    def head(self) -> tuple[int, str]:
        """The chain's newest link, an event, a prune record or an alert history record: (seq, hash);
        (0, genesis) when empty."""
        row = self.conn.execute(
            "SELECT seq, hash FROM (SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1) "
            "UNION ALL SELECT seq, hash FROM (SELECT seq, hash FROM prunes ORDER BY seq DESC LIMIT 1) "
            "UNION ALL SELECT seq, hash FROM (SELECT seq, hash FROM alert_actions ORDER BY seq DESC LIMIT 1) "
            "ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        return (int(row[0]), str(row[1])) if row else (0, GENESIS_HASH)

    def head_hash(self) -> str:
        return self.head()[1]

    def chain_link(self, seq: int) -> str | None:
        """The hash of the chain link at ``seq`` (an event or a prune record), None if there is none."""
        row = self.conn.execute(
            "SELECT hash FROM events WHERE seq = ?1 UNION ALL SELECT hash FROM prunes WHERE seq = ?1 "
            "UNION ALL SELECT hash FROM alert_actions WHERE seq = ?1",
            (seq,),
        ).fetchone()
        return str(row[0]) if row else None

    def prunes(self) -> list[PruneRecord]:
        """Every prune record, oldest first (one per prune that cut rows: a handful a year)."""
        return [_prune_record(row) for row in self.conn.execute(_SELECT_PRUNES + " ORDER BY seq")]

    _INSERT_EVENT = """INSERT INTO events (source, event_id, created_at, created_ms, type, msg, user_email,
                   workspace_name, branch_label, raw, archived_at, hash)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
    _INSERT_EVENT_AT = """INSERT INTO events (seq, source, event_id, created_at, created_ms, type, msg,
                   user_email, workspace_name, branch_label, raw, archived_at, hash)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""

    @staticmethod
    def archive_row(
        event: AuditEvent, raw_json: str, prev_hash: str, archived_at: datetime
    ) -> tuple[str, tuple[Any, ...]]:
        """The next hash link and the events row for one event (insert them with ``insert_archived``)."""
        return Store.archive_staged_row(
            event.source, Store.staging_row(event, raw_json)[1:], prev_hash, format_timestamp(archived_at)
        )

    @staticmethod
    def archive_staged_row(
        source: str, staged: tuple[Any, ...], prev_hash: str, archived_at: str
    ) -> tuple[str, tuple[Any, ...]]:
        """The next hash link and the events row for a row of ``iter_staged`` (``archived_at`` formatted)."""
        event_id, created_at, created_ms, type_, msg, email, workspace, branch, raw_json = staged
        new_hash = chain_hash(prev_hash, source, event_id, raw_json)
        row = (
            source,
            event_id,
            created_at,
            created_ms,
            type_,
            msg,
            email,
            workspace,
            branch,
            raw_json,
            archived_at,
            new_hash,
        )
        return new_hash, row

    def insert_archived(self, rows: list[tuple[Any, ...]]) -> None:
        """Inside a transaction: append rows made by ``archive_row``, in chain order."""
        if not rows:
            return
        # The first row takes the seq after the chain's head explicitly: SQLite would give it the events
        # table's max(seq) + 1, which is the seq of a prune record at the head (or, after a prune of every
        # row, 1 again). The rows after it follow from it.
        self.conn.execute(self._INSERT_EVENT_AT, (self.head()[0] + 1, *rows[0]))
        self.conn.executemany(self._INSERT_EVENT, itertools.islice(rows, 1, None))

    def archive(self, event: AuditEvent, raw_json: str, prev_hash: str, archived_at: datetime) -> str:
        """Append one event (inside a transaction); returns its hash for the next link."""
        new_hash, row = self.archive_row(event, raw_json, prev_hash, archived_at)
        self.insert_archived([row])
        return new_hash

    def reject(self, source: str, raw: Any, reason: str, seen_at: datetime) -> None:
        # A rejected entry may hold lone surrogates (that can be why it was rejected): keep them as backslash
        # escapes (\ud800) so the row can be stored. Valid text round-trips unchanged.
        raw_json = canonical_json(raw).encode("utf-8", "backslashreplace").decode("utf-8")
        self.conn.execute(
            "INSERT OR IGNORE INTO rejected (source, raw_sha256, raw, reason, seen_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (
                source,
                hashlib.sha256(raw_json.encode()).hexdigest(),
                raw_json,
                reason,
                format_timestamp(seen_at),
            ),
        )

    def event_count(self, source: str | None = None) -> int:
        if source is None:
            return int(self.conn.execute("SELECT count(*) FROM events").fetchone()[0])
        return int(self.conn.execute("SELECT count(*) FROM events WHERE source = ?", (source,)).fetchone()[0])

    def newest_event_time(self, source: str | None = None) -> datetime | None:
        # The newest millisecond comes from an index (created_ms, or source + created_ms); created_at
        # then picks the exact microsecond among the few rows of that millisecond.
        if source is None:
            row = self.conn.execute(
                "SELECT max(created_at) FROM events WHERE created_ms = (SELECT max(created_ms) FROM events)"
            ).fetchone()
        else:
            row = self.conn.execute(
                "SELECT max(created_at) FROM events WHERE source = ?1 AND created_ms = "
                "(SELECT max(created_ms) FROM events WHERE source = ?1)",
                (source,),
            ).fetchone()
        return _dt(row[0]) if row and row[0] else None

    def iter_events(
        self, since: datetime | None = None, until: datetime | None = None, *, source: str | None = None
    ) -> Iterator[AuditEvent]:
        """Archived events with since <= created_at < until, in (created_at, id) order, streamed.

        Events are rebuilt from the stored columns and raw entry rather than re-normalised: ``normalize``
        derived those columns when the event was archived (``verify`` checks they still match), and
        skipping its timestamp parsing makes a month-long export or report about a third faster.
        """
        clauses, params = self._range(since, until, source)
        cursor = self.conn.execute(
            f"SELECT source, event_id, created_at, type, msg, raw FROM events {clauses} "  # noqa: S608
            "ORDER BY created_ms, created_at, event_id",
            params,
        )
        while rows := cursor.fetchmany(2000):
            for name, event_id, created_at, event_type, msg, raw in rows:
                when = datetime.fromisoformat(created_at)
                yield AuditEvent(name, event_id, when, event_type, msg, json.loads(raw))

    def events_by_id(self, source: str, event_ids: Iterable[int]) -> list[AuditEvent]:
        """The archived events of ``source`` with these ids, in id order (an alert's triggering events)."""
        ids = sorted(set(event_ids))
        if not ids:
            return []
        marks = ",".join("?" for _ in ids)
        rows = self.conn.execute(
            f"SELECT source, event_id, created_at, type, msg, raw FROM events "  # noqa: S608 - only ? marks
            f"WHERE source = ? AND event_id IN ({marks}) ORDER BY event_id",
            [source, *ids],
        ).fetchall()
        return [
            AuditEvent(name, event_id, datetime.fromisoformat(created_at), event_type, msg, json.loads(raw))
            for name, event_id, created_at, event_type, msg, raw in rows
        ]

    @staticmethod
    def _range(since: datetime | None, until: datetime | None, source: str | None) -> tuple[str, list[Any]]:
        conditions, params = [], []
        # created_ms (indexed, truncated to the millisecond) bounds the range so SQLite seeks instead of
        # scanning the whole archive; created_at (microseconds) keeps the bounds exact.
        if since is not None:
            conditions.append("created_ms >= ? AND created_at >= ?")
            params += [int(since.timestamp() * 1000), format_timestamp(since)]
        if until is not None:
            conditions.append("created_ms <= ? AND created_at < ?")
            params += [int(until.timestamp() * 1000), format_timestamp(until)]
        if source is not None:
            conditions.append("source = ?")
            params.append(source)
        return ("WHERE " + " AND ".join(conditions)) if conditions else "", params

    def verify(self, *, through: int | None = None) -> VerifyResult:
        """Re-walk the hash chain, events and prune records in seq order, re-deriving the indexed columns.

        The walk starts where the newest prune record says its cut ended (at genesis when there is none),
        and that record is itself a link the walk checks. A gap in seq is rows deleted without a prune
        record; a cursor that has moved past archived events while the archive holds none of them is rows
        deleted wholesale. ``through`` stops the walk after that seq (the part a prune is about to cut).
        """
        prunes = self.prunes()
        stop = self.head()[0] if through is None else through
        start = max(prunes, key=lambda p: p.through_seq, default=None)
        start_seq, prev = (start.through_seq, start.through_hash) if start else (0, GENESIS_HASH)
        if start is not None and start.seq <= start.through_seq:
            return VerifyResult(
                False, 0, prev, start.seq, reason=f"prune record at seq {start.seq} cuts rows after itself"
            )
        leftover = self.conn.execute(
            "SELECT seq, source, event_id FROM events WHERE seq <= ? ORDER BY seq LIMIT 1", (start_seq,)
        ).fetchone()
        if leftover is not None and start is not None:
            return VerifyResult(
                False,
                0,
                prev,
                leftover[0],
                leftover[1],
                leftover[2],
                reason=f"the row lies inside the range the prune record at seq {start.seq} "
                f"cut (through seq {start_seq})",
            )
        if start is not None and start.cutoff is not None:
            # The prune cut the longest prefix older than its cutoff, so the row it kept first is not older
            # (a record written by hand to cover rows deleted by hand need not say so).
            first_kept = self.conn.execute(
                "SELECT seq, source, event_id, created_at FROM events WHERE seq = ?", (start_seq + 1,)
            ).fetchone()
            if first_kept is not None and first_kept[3] < format_timestamp(start.cutoff):
                return VerifyResult(
                    False,
                    0,
                    prev,
                    first_kept[0],
                    first_kept[1],
                    first_kept[2],
                    reason=f"the prune record at seq {start.seq} cut events older than "
                    f"{format_timestamp(start.cutoff)}, but kept this older row first",
                )
        # The links beside the events (prune records, alert history records), merged in seq order.
        walked_prunes = sum(1 for p in prunes if start_seq < p.seq <= stop)
        actions = lifecycle.actions_between(self, start_seq, stop)
        pending: list[PruneRecord | lifecycle.ActionRecord] = sorted(
            [*(p for p in prunes if start_seq < p.seq <= stop), *actions], key=lambda link: link.seq
        )
        expected, checked = start_seq + 1, 0

        def gap(seq: int) -> str:
            what = (
                _missing(expected, seq - 1)
                .replace(" is missing", " before it is missing")
                .replace(" are missing", " before it are missing")
            )
            if expected == start_seq + 1:
                return f"{what} and no prune record in the chain accounts for them"
            return f"{what} (deleted)"

        def check_prunes(before: int) -> VerifyResult | None:
            nonlocal prev, expected
            while pending and pending[0].seq < before:
                record = pending.pop(0)
                if record.seq != expected:
                    return VerifyResult(False, checked, prev, record.seq, reason=gap(record.seq))
                if record.link_hash(prev) != record.hash:
                    return VerifyResult(
                        False,
                        checked,
                        prev,
                        record.seq,
                        reason=f"{record.label} hash does not match its content or its predecessor",
                    )
                prev, expected = record.hash, record.seq + 1
            return None

        cursor = self.conn.execute(
            "SELECT seq, source, event_id, created_at, created_ms, type, msg, user_email, workspace_name, "
            "branch_label, raw, hash FROM events WHERE seq > ? AND seq <= ? ORDER BY seq",
            (start_seq, stop),
        )
        while rows := cursor.fetchmany(2000):
            for seq, source, event_id, *columns, raw, stored in rows:
                if pending and (failed := check_prunes(seq)) is not None:
                    return failed
                checked += 1
                if seq != expected:
                    return VerifyResult(False, checked, prev, seq, source, event_id, gap(seq))
                problem = _row_problem(prev, source, event_id, tuple(columns), raw, stored)
                if problem is not None:
                    return VerifyResult(False, checked, prev, seq, source, event_id, problem)
                prev, expected = stored, seq + 1
        if (failed := check_prunes(stop + 1)) is not None:
            return failed
        if expected <= stop:  # the walk ended before `stop`: the rows up to it are gone (a prune's bound)
            return VerifyResult(False, checked, prev, stop, reason=_missing(expected, stop))
        if not prunes and through is None:
            for source, last_id in self._cursors_past_an_empty_archive():
                return VerifyResult(
                    False,
                    checked,
                    prev,
                    bad_source=source,
                    reason=f"the cursor of source {source} is at event id {last_id}, but the archive holds "
                    "none of its events and no prune record",
                )
        return VerifyResult(
            True, checked, prev, prunes=walked_prunes, head_seq=expected - 1, actions=len(actions)
        )

    def _cursors_past_an_empty_archive(self) -> list[tuple[str, int]]:
        """Sources whose cursor moved past events it must have archived, with none of them in the archive.

        A cursor at its floor (backfill none) or whose newest event is older than its floor time (backfill
        from a date after every event) archived nothing, and an empty upstream log leaves it at 0. Text
        comparison of the times is exact: every stored time has the one fixed-width UTC form.
        """
        return [
            (str(source), int(last_id))
            for source, last_id in self.conn.execute(
                "SELECT source, last_id FROM cursors AS c WHERE last_id > coalesce(floor_id, 0) "
                "AND (floor_time IS NULL OR last_created_at >= floor_time) "
                "AND NOT EXISTS (SELECT 1 FROM events AS e WHERE e.source = c.source) ORDER BY source"
            )
        ]

    def prune_before(self, cutoff: datetime, *, at: datetime | None = None) -> int:
        """Delete events archived before ``cutoff`` (by event time), recording the cut in the chain.

        The chain is in archive order, so we prune the longest prefix (by seq) whose events are all
        older than the cutoff. A prune record appended at the head names the last link cut and its hash,
        where the kept chain now starts; it is a link of the chain, so editing or removing it breaks the
        chain like editing an event does.
        """
        when = at if at is not None else datetime.now(UTC)
        with self.transaction():
            head_seq, head_hash = self.head()
            first_young = self.conn.execute(
                "SELECT min(seq) FROM events WHERE created_at >= ?", (format_timestamp(cutoff),)
            ).fetchone()[0]
            bound = first_young if first_young is not None else head_seq + 1
            oldest = self.conn.execute("SELECT min(seq) FROM events").fetchone()[0]
            if oldest is None or oldest >= bound:
                return 0
            # Only a sound prefix is cut: the prune record vouches for what it removed, so cutting rows
            # that were already tampered with would turn the tampering into a clean-looking prune.
            cut_part = self.verify(through=bound - 1)
            if not cut_part.ok:
                raise StoreError(
                    f"{self.path}: not pruning: the part to cut fails verification at seq "
                    f"{cut_part.bad_seq}: {cut_part.reason}"
                )
            deleted = int(self.conn.execute("DELETE FROM events WHERE seq < ?", (bound,)).rowcount)
            # The kept chain starts after the last link cut (an event, or a prune record kept as history).
            through_seq, through_hash = bound - 1, cut_part.head_hash
            record = PruneRecord(head_seq + 1, when, cutoff, deleted, through_seq, through_hash, "").linked(
                head_hash
            )
            self.conn.execute(_INSERT_PRUNE, record.row())
            # Kept for `status` and the report's coverage note; verify reads the prune records, never these.
            self.set_meta("chain_anchor_hash", through_hash)
            self.set_meta("chain_anchor_pruned_at", format_timestamp(when))
            return deleted

    # rule state ---------------------------------------------------------------------------------------

    def state_get(self, rule_id: str, key: str, source: str = "") -> Any | None:
        """A rule's state for one key; ``source`` '' is state shared by every source."""
        row = self.conn.execute(
            "SELECT value FROM rule_state WHERE rule_id = ? AND source = ? AND key = ?",
            (rule_id, source, key),
        ).fetchone()
        return json.loads(row[0]) if row else None

    def state_put(
        self, rule_id: str, key: str, value: Any | None, source: str = "", expires_at: int | None = None
    ) -> None:
        """Write (``None``: delete) one key; ``expires_at`` (event time, µs) lets ``prune_state`` drop it."""
        self.state_put_many([(rule_id, source, key, value, expires_at)])

    def state_put_many(self, rows: Iterable[tuple[str, str, str, Any | None, int | None]]) -> None:
        """``(rule_id, source, key, value, expires_at)`` rows; a value None deletes the key.

        A value may be a live object of the engine with a ``to_state()`` method (a threshold window): it is
        serialised here, once per write, instead of once per event."""
        deletes: list[tuple[str, str, str]] = []
        upserts: list[tuple[str, str, str, str, int | None]] = []
        for rule_id, source, key, value, expires_at in rows:
            if value is None:
                deletes.append((rule_id, source, key))
            else:
                if expires_at is not None and expires_at > _SQLITE_INT_MAX:
                    expires_at = None  # a window of centuries (999999999d is valid): the key is simply kept
                upserts.append((rule_id, source, key, _state_json(value), expires_at))
        if deletes:
            self.conn.executemany(
                "DELETE FROM rule_state WHERE rule_id = ? AND source = ? AND key = ?", deletes
            )
        if upserts:
            self.conn.executemany(
                "INSERT INTO rule_state (rule_id, source, key, value, expires_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(rule_id, source, key) DO UPDATE SET value = excluded.value, "
                "expires_at = excluded.expires_at",
                upserts,
            )

    def prune_state(self, source: str, horizon: int) -> int:
        """Delete the source's keys that expired at or before ``horizon`` (event time, µs)."""
        return int(
            self.conn.execute(
                "DELETE FROM rule_state WHERE source = ? AND expires_at <= ?", (source, horizon)
            ).rowcount
        )

    # alerts and outbox --------------------------------------------------------------------------------

    def record_alert(self, alert: Alert, channels: Iterable[str], recorded_at: datetime) -> bool:
        """Inside a transaction: the alert and one outbox row per channel. False if already known."""
        inserted = self.conn.execute(
            """INSERT OR IGNORE INTO alerts (id, rule_id, severity, title, text, source, event_time,
                   event_ids,
                   group_key, fields, context, suppressed_count, tags, recorded_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            (
                alert.id,
                alert.rule_id,
                alert.severity,
                alert.title,
                alert.text,
                alert.source,
                format_timestamp(alert.event_time),
                json.dumps(list(alert.event_ids)),
                alert.group_key,
                canonical_json(alert.fields),
                canonical_json(alert.context),
                alert.suppressed_count,
                json.dumps(list(alert.tags)),
                format_timestamp(recorded_at),
            ),
        ).rowcount
        if not inserted:
            return False
        silence = lifecycle.silence_for(self, alert, recorded_at)
        if silence is not None:
            # Held back by a silence: recorded (and reported) as silenced, sent to no channel.
            lifecycle.mark_silenced(self, alert.id, silence.id)
            return True
        self.conn.executemany(
            "INSERT OR IGNORE INTO outbox (alert_id, channel, status, next_attempt_at) "
            "VALUES (?, ?, 'pending', ?)",
            [(alert.id, channel, format_timestamp(recorded_at)) for channel in channels],
        )
        return True

    def load_alert(self, alert_id: str) -> Alert | None:
        row = self.conn.execute(
            "SELECT rule_id, severity, title, text, source, event_time, event_ids, group_key, fields, "
            "context, "
            "suppressed_count, tags FROM alerts WHERE id = ?",
            (alert_id,),
        ).fetchone()
        if row is None:
            return None
        return Alert(
            rule_id=row[0],
            severity=row[1],
            title=row[2],
            text=row[3],
            source=row[4],
            event_time=datetime.fromisoformat(row[5]),
            event_ids=tuple(json.loads(row[6])),
            group_key=row[7],
            fields=json.loads(row[8]),
            context=json.loads(row[9]),
            suppressed_count=row[10],
            tags=tuple(json.loads(row[11])),
        )

    def alert_count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM alerts").fetchone()[0])

    def outbox_counts(self) -> dict[str, int]:
        counts = {"pending": 0, "sent": 0, "dead": 0}
        for status, count in self.conn.execute("SELECT status, count(*) FROM outbox GROUP BY status"):
            counts[status] = count
        return counts

    # gaps ---------------------------------------------------------------------------------------------

    def record_gap(
        self, source: str, kind: str, start: datetime, end: datetime, detail: str, at: datetime
    ) -> None:
        self.conn.execute(
            "INSERT INTO gaps (source, kind, start, end, detail, recorded_at) VALUES (?, ?, ?, ?, ?, ?)",
            (source, kind, format_timestamp(start), format_timestamp(end), detail, format_timestamp(at)),
        )

    def gaps(self, since: datetime | None = None, until: datetime | None = None) -> list[dict[str, Any]]:
        sql = "SELECT source, kind, start, end, detail FROM gaps"
        params: list[str] = []
        if since is not None and until is not None:
            sql += " WHERE end >= ? AND start < ?"
            params = [format_timestamp(since), format_timestamp(until)]
        return [
            {
                "source": s,
                "kind": k,
                "start": datetime.fromisoformat(a),
                "end": datetime.fromisoformat(b),
                "detail": d,
            }
            for s, k, a, b, d in self.conn.execute(sql + " ORDER BY start", params)
        ]

    # report reads (monitor/report/figures.py) -----------------------------------------------------------

    def chain_head_before(self, instant: datetime) -> tuple[int, str]:
        """The chain's newest link archived before ``instant``: (seq, hash); (0, genesis) if none.

        The chain follows archive order, so this is the head as it stood at that moment (a prune record
        counts from when it ran)."""
        when = format_timestamp(instant)
        row = self.conn.execute(
            "SELECT seq, hash FROM (SELECT seq, hash FROM events WHERE archived_at < ?1 ORDER BY seq DESC "
            "LIMIT 1) UNION ALL SELECT seq, hash FROM (SELECT seq, hash FROM prunes WHERE at < ?1 "
            "ORDER BY seq DESC LIMIT 1) UNION ALL SELECT seq, hash FROM (SELECT seq, hash FROM alert_actions "
            "WHERE at < ?1 ORDER BY seq DESC LIMIT 1) ORDER BY seq DESC LIMIT 1",
            (when,),
        ).fetchone()
        return (int(row[0]), str(row[1])) if row else (0, GENESIS_HASH)

    def month_rows(self, start_ms: int, end_ms: int) -> tuple[int | None, int | None]:
        """The lowest and highest chain row (seq) holding an event created in [start_ms, end_ms)."""
        row = self.conn.execute(
            "SELECT min(seq), max(seq) FROM events WHERE created_ms >= ? AND created_ms < ?",
            (start_ms, end_ms),
        ).fetchone()
        return (row[0], row[1]) if row else (None, None)

    def id_ranges(self, start_ms: int, end_ms: int) -> list[tuple[str, int, int, int]]:
        """Per source: (source, lowest event id, highest event id, events) created in [start_ms, end_ms)."""
        return [
            (str(r[0]), int(r[1]), int(r[2]), int(r[3]))
            for r in self.conn.execute(
                "SELECT source, min(event_id), max(event_id), count(*) FROM events "
                "WHERE created_ms >= ? AND created_ms < ? GROUP BY source ORDER BY source",
                (start_ms, end_ms),
            )
        ]

    def rejected_counts(self, since: datetime, until: datetime) -> dict[str, int]:
        """Entries refused as malformed per source, first seen in [since, until)."""
        return {
            str(source): int(count)
            for source, count in self.conn.execute(
                "SELECT source, count(*) FROM rejected WHERE seen_at >= ? AND seen_at < ? GROUP BY source",
                (format_timestamp(since), format_timestamp(until)),
            )
        }

    def events_of_types(
        self, start_ms: int, end_ms: int, types: Sequence[str], limit: int
    ) -> tuple[int, list[tuple[Any, ...]]]:
        """How many events of ``types`` (exact names) fall in [start_ms, end_ms), and the first ``limit`` as
        (created_at, type, user_email, workspace_name, branch_label, msg, source, event_id), in time order."""
        if not types:
            return 0, []
        marks = ", ".join("?" for _ in types)
        where = f"WHERE created_ms >= ? AND created_ms < ? AND type IN ({marks})"
        params = (start_ms, end_ms, *types)
        total = int(self.conn.execute(f"SELECT count(*) FROM events {where}", params).fetchone()[0])  # noqa: S608
        rows = self.conn.execute(
            "SELECT created_at, type, user_email, workspace_name, branch_label, msg, source, event_id "  # noqa: S608
            f"FROM events INDEXED BY idx_events_created_ms {where} "
            "ORDER BY created_ms, created_at, source, event_id LIMIT ?",
            (*params, limit),
        ).fetchall()
        return total, [tuple(r) for r in rows]

    def alert_deliveries(self, since: datetime, until: datetime, limit: int) -> list[tuple[Any, ...]]:
        """Alerts (not anchor notices) whose event time is in [since, until), first ``limit`` in time order,
        each with its outbox rows: (id, rule_id, severity, title, source, event_time, recorded_at, channel,
        status, attempts, sent_at, last_error); channel and the rest are None for an alert with no channel."""
        return [
            tuple(r)
            for r in self.conn.execute(
                "WITH picked AS (SELECT id, rule_id, severity, title, source, event_time, recorded_at "
                "FROM alerts WHERE event_time >= ? AND event_time < ? AND rule_id != ? "
                "ORDER BY event_time, rule_id, id LIMIT ?) "
                "SELECT p.id, p.rule_id, p.severity, p.title, p.source, p.event_time, p.recorded_at, "
                "o.channel, o.status, o.attempts, o.sent_at, o.last_error FROM picked p "
                "LEFT JOIN outbox o ON o.alert_id = p.id ORDER BY p.event_time, p.rule_id, p.id, o.channel",
                (format_timestamp(since), format_timestamp(until), ANCHOR_RULE, limit),
            )
        ]

    def delivery_counts(self, since: datetime, until: datetime) -> list[tuple[str, str, int]]:
        """(channel, status, count) of the outbox rows of alerts with event time in [since, until)."""
        return [
            (str(r[0]), str(r[1]), int(r[2]))
            for r in self.conn.execute(
                "SELECT o.channel, o.status, count(*) FROM outbox o JOIN alerts a ON a.id = o.alert_id "
                "WHERE a.event_time >= ? AND a.event_time < ? AND a.rule_id != ? "
                "GROUP BY o.channel, o.status ORDER BY o.channel, o.status",
                (format_timestamp(since), format_timestamp(until), ANCHOR_RULE),
            )
        ]

    def workspaces_seen(self, start_ms: int, end_ms: int) -> list[tuple[str, str | None, int]]:
        """(source, workspace name, events) created in [start_ms, end_ms)."""
        return [
            (str(r[0]), r[1], int(r[2]))
            for r in self.conn.execute(
                "SELECT source, workspace_name, count(*) FROM events "
                "WHERE created_ms >= ? AND created_ms < ? "
                "GROUP BY source, workspace_name ORDER BY source, workspace_name",
                (start_ms, end_ms),
            )
        ]

    def file_size(self) -> int:
        if self.path == ":memory:":
            return 0
        return sum(
            Path(self.path + suffix).stat().st_size
            for suffix in ("", "-wal")
            if Path(self.path + suffix).exists()
        )


_SQLITE_INT_MAX = 2**63 - 1


def _state_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=_state_default)


def _state_default(value: Any) -> Any:
    to_state = getattr(value, "to_state", None)
    return to_state() if callable(to_state) else str(value)


class SqliteStateStore:
    """The engine's StateStore over the rule_state table, inside the caller's transaction.

    Reads are cached and writes held back: a burst of events for one threshold group reads its row once
    and writes it once, however long its window (writing it per event made a window of N events cost N^2).
    The cache is flushed, and emptied, whenever it holds ``cache_limit`` keys, so a cycle of a million
    distinct emails holds a bounded number of them; and it is flushed before the transaction commits (the
    store calls ``flush``), so state never runs ahead of (or behind) the archive. Every flush also deletes
    the keys that expired before the newest event time seen on their source (``advance``).
    """

    DEFAULT_CACHE_LIMIT = 20_000

    def __init__(self, store: Store, *, cache_limit: int = DEFAULT_CACHE_LIMIT) -> None:
        self._store = store
        self._cache_limit = max(1, cache_limit)
        self._cache: dict[tuple[str, str, str], Any] = {}
        self._dirty: dict[tuple[str, str, str], int | None] = {}  # key -> expires_at
        self._horizon: dict[str, int] = {}  # source -> newest event time (µs) evaluated
        self._transaction = -1  # the store transaction the cache belongs to

    @property
    def cache_size(self) -> int:
        return len(self._cache)

    def _check_transaction(self) -> None:
        serial = self._store.transaction_serial
        if serial != self._transaction:
            # A new transaction (the previous one committed, having flushed, or rolled back): what the
            # cache holds may be stale or undone, so it starts empty.
            self._cache.clear()
            self._dirty.clear()
            self._transaction = serial
            if self._store.in_transaction:
                self._store.before_commit(self.flush)

    def get(self, rule_id: str, key: str, source: str = "") -> Any | None:
        self._check_transaction()
        cache_key = (rule_id, source, key)
        try:
            return self._cache[cache_key]
        except KeyError:
            pass
        if len(self._cache) >= self._cache_limit:
            self.flush()
        value = self._cache[cache_key] = self._store.state_get(rule_id, key, source)
        return value

    def put(
        self, rule_id: str, key: str, value: Any | None, source: str = "", expires_at: int | None = None
    ) -> None:
        self._check_transaction()
        cache_key = (rule_id, source, key)
        if cache_key not in self._cache and len(self._cache) >= self._cache_limit:
            self.flush()
        self._cache[cache_key] = value
        self._dirty[cache_key] = expires_at
        if not self._store.in_transaction:
            self.flush()  # no transaction to join: write through

    def advance(self, source: str, now: int) -> None:
        if now > self._horizon.get(source, now - 1):
            self._horizon[source] = now

    def flush(self) -> None:
        """Write what changed, delete what expired, empty the cache."""
        if self._dirty:
            self._store.state_put_many(
                (rule_id, source, key, self._cache[(rule_id, source, key)], expires_at)
                for (rule_id, source, key), expires_at in self._dirty.items()
            )
        if self._horizon:
            for source, horizon in self._horizon.items():
                self._store.prune_state(source, horizon)
            # state shared by every source lives on the clock of the source furthest ahead
            self._store.prune_state("", max(self._horizon.values()))
        self._dirty.clear()
        self._cache.clear()

"""Opening the archive, its connections and its transactions: the part every other store module builds on.

One SQLite file in WAL mode, or a PostgreSQL database (``Store.open("postgresql://...")``, see ``pg.py``).
Every write of a poll cycle happens inside ``transaction()`` (BEGIN IMMEDIATE on SQLite; BEGIN and a
transaction-level advisory lock on PostgreSQL), so the archive, the rule state, the alerts and the cursor
move together or not at all, and writers take turns even across processes. Each thread that uses the store
gets a connection of its own (see ``_link``).

Where the two databases truly differ, a small named helper here says so (``index_hint``, ``stream``); the
rest of the store's SQL is written once, in the part of SQL both accept.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

from monitor.store import pg, schema
from monitor.store.files import FileIdentity, identity_problem, readonly_uri

# What a failing statement raises, on either backend: callers that must survive a database failure (the
# poller records it as a ``store`` error) catch this rather than one driver's class.
DatabaseError = (sqlite3.Error, pg.PostgresError)
# The failures of a write that are the database's state, not a bug (read-only file, full disk, a lost
# PostgreSQL connection): a transaction turns them into StoreError.
_WRITE_FAILURES: tuple[type[Exception], ...] = (
    sqlite3.OperationalError,
    pg.PostgresUnavailable,
    pg.PostgresReadOnly,
)


class StoreError(Exception):
    """The store cannot be opened or written (read-only file, disk full, newer schema)."""


class ArchiveMissing(StoreError):
    """A read command was pointed at an archive that does not exist (it never creates one)."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"{path}: no archive at this path (a read command never creates one)")


class StoreUnavailable(StoreError):
    """A PostgreSQL archive cannot be opened: the server is unreachable, refused the login, or has no such
    database. At start this is a configuration problem (``state.url``), not a failing cycle."""


class StoreInterrupted(StoreError):
    """A wait for the write lock was ended by ``Store.interrupt`` (the daemon is stopping)."""


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

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.in_transaction = False
        self.before_commit: list[Callable[[], None]] = []
        self.transaction_serial = 0


class StoreCore:
    """The connections, the transaction and the bookkeeping the concern modules share."""

    def __init__(self, conn: Any, path: str, *, connect: Callable[[], Any] | None = None) -> None:
        """``conn`` serves the thread that opened the store; with ``connect``, every other thread that uses
        the store gets a connection of its own from it (without, all threads share ``conn``).

        ``path`` is the archive's file, or the database's URL without its password (it names the archive
        in every message)."""
        self.path = path
        self.dialect = "postgresql" if isinstance(conn, pg.PgConnection) else "sqlite"
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
        # Set by a daemon on PostgreSQL to its leadership's check: called inside every write transaction,
        # just before COMMIT, with the transaction's ``execute``; it raises (and the transaction rolls back)
        # unless this process still leads (monitor/store/leadership.py).
        self.commit_guard: Callable[[Callable[..., Any]], None] | None = None

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
                except pg.PostgresError as exc:
                    raise StoreError(str(exc)) from None
                except sqlite3.Error as exc:
                    raise StoreError(f"{self.path}: cannot open the archive: {exc}") from None
                with self._links_lock:
                    self._links.append(link)
            self._local.link = link
        return link

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection: an sqlite3 connection, or on PostgreSQL a ``pg.PgConnection`` with the
        same methods (typed as sqlite3's, which is what the store's modules are written against)."""
        link = self._link()
        if self.dialect == "postgresql" and link.conn.broken and not link.in_transaction:
            # The server went away and came back (a restart, a failover): a connection that broke between
            # transactions is replaced, so the next cycle recovers without a restart of the monitor.
            link.conn.close()
            try:
                link.conn = self._connect() if self._connect is not None else link.conn
            except pg.PostgresError as exc:
                raise StoreError(str(exc)) from None
        return link.conn  # type: ignore[no-any-return]

    @property
    def is_postgresql(self) -> bool:
        return self.dialect == "postgresql"

    @property
    def reopenable(self) -> bool:
        """Whether another process can open this archive from ``path`` (an SQLite file). Not an in-memory
        one, nor a PostgreSQL database: ``path`` is then its URL without the password, which is kept out
        of everything handed around."""
        return self.dialect == "sqlite" and self.path != ":memory:"

    def index_hint(self, index: str) -> str:
        """``INDEXED BY index`` on SQLite, whose planner picks a worse index for some of the report's
        queries; nothing on PostgreSQL, whose planner has statistics and no such clause."""
        return f"INDEXED BY {index}" if self.dialect == "sqlite" else ""

    def empty_table(self, table: str) -> str:
        """The statement that empties ``table`` fastest inside a transaction: an unqualified DELETE on
        SQLite (which drops whole pages), TRUNCATE on PostgreSQL (a DELETE leaves every row behind as a
        dead tuple until a vacuum, and its statistics claim the rows are still there)."""
        return f"DELETE FROM {table}" if self.dialect == "sqlite" else f"TRUNCATE {table}"  # noqa: S608

    def stream(self, sql: str, params: Any, batch: int = 2000) -> Iterator[Any]:
        """The rows of a large query ``batch`` at a time (a verify, an export, a backfill's commit), so only
        a batch is in memory: SQLite's cursor fetches lazily; PostgreSQL needs a server-side cursor."""
        conn = self.conn
        if isinstance(conn, pg.PgConnection):
            yield from conn.stream(sql, params, batch)
            return
        cursor = conn.execute(sql, params)
        while rows := cursor.fetchmany(batch):
            yield from rows

    @property
    def transaction_serial(self) -> int:
        """Tells one transaction from another (unique across threads), so a cache can tell a new one."""
        return self._link().transaction_serial

    # opening ------------------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, readonly: bool = False) -> Self:
        """Open (a writer: create and migrate) the archive at ``path``: a file (SQLite) or a
        ``postgresql://`` URL (``state.url``).

        ``readonly``: for commands that only read. The archive must exist (``ArchiveMissing`` otherwise; a
        read never creates an archive), and it is opened so that a copy on a read-only location works
        (``files.readonly_uri``) and nothing in it or beside it is changed.
        """
        path_text = str(path)
        if pg.is_url(path_text):
            return cls._open_postgresql(path_text, readonly=readonly)
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

    @classmethod
    def _open_postgresql(cls, url: str, *, readonly: bool) -> Self:
        label = pg.redact(url)
        connect = functools.partial(pg.connect, url, readonly=readonly)
        try:
            store = cls(connect(), label, connect=connect)
        except pg.PostgresUnavailable as exc:  # unreachable, a refused login
            raise StoreUnavailable(str(exc)) from None
        except pg.PostgresError as exc:  # no such database
            raise StoreUnavailable(f"store unavailable: {exc}") from None
        try:
            if readonly:
                store._check_readable_postgresql()
            else:
                schema.upgrade_postgresql(store.conn, url)
        except schema.NewerSchema as exc:
            store.close()
            raise StoreError(
                f"{label}: the archive has schema version {exc.found}, newer than this program's "
                f"{exc.known}; upgrade audit-monitor"
            ) from None
        except pg.PostgresUnavailable as exc:
            store.close()
            raise StoreUnavailable(str(exc)) from None
        except (schema.UpgradeFailed, pg.PostgresError) as exc:
            store.close()
            raise StoreError(f"{label}: cannot upgrade the archive's schema: {exc}") from None
        except BaseException:
            store.close()
            raise
        return store

    def _check_readable_postgresql(self) -> None:
        version = schema.postgresql_version(self.conn)
        if version is None:
            raise ArchiveMissing(self.path)
        known = schema.revisions("postgresql")[-1]
        if int(version) > int(known):
            raise schema.NewerSchema(version, known)
        if int(version) < int(known):
            self.close()
            raise StoreError(
                f"{self.path}: the archive has schema version {version}, older than this program's "
                f"{known}; `audit-monitor run --once` upgrades it (read commands never change it)"
            )

    def _check_readable(self) -> None:
        """A read-only open succeeds lazily: read the schema now, so a non-archive fails here, by name."""
        try:
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise StoreError(f"{self.path}: cannot read the archive: {exc}") from None
        known = schema.SCHEMA_VERSION
        if version > known:
            self.conn.close()
            raise StoreError(
                f"{self.path}: the archive has schema version {version}, newer than this program's "
                f"{known}; upgrade audit-monitor"
            )
        if version < known:
            # Read commands never change the file; an older schema is upgraded by the next writer.
            self.conn.close()
            raise StoreError(
                f"{self.path}: the archive has schema version {version}, older than this program's "
                f"{known}; `audit-monitor run --once` upgrades it (read commands never change it)"
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
        try:
            schema.upgrade_sqlite(self.conn)
        except schema.NewerSchema as exc:
            raise StoreError(
                f"{self.path}: the archive has schema version {exc.found}, newer than this program's "
                f"{exc.known}; upgrade audit-monitor"
            ) from None
        except (schema.UpgradeFailed, sqlite3.Error) as exc:
            raise StoreError(f"{self.path}: cannot upgrade the archive's schema: {exc}") from None

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

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Self]:
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
            if self.commit_guard is not None:
                self.commit_guard(link.conn.execute)  # last: an ex-leader never commits
        except pg.PostgresUnavailable as exc:
            # the connection was lost: the server undid the transaction; the message names the database
            self._rollback()
            raise StoreError(str(exc)) from None
        except _WRITE_FAILURES as exc:
            # read-only file, full disk, I/O error: say so plainly; the whole transaction is undone.
            self._rollback()
            raise StoreError(f"{self.path}: cannot write to the archive: {exc}") from None
        except BaseException:
            self._rollback()
            raise
        else:
            try:
                link.conn.execute("COMMIT")
            except DatabaseError as exc:
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

    def _begin(self, conn: Any) -> None:
        if isinstance(conn, pg.PgConnection):
            self._begin_postgresql(conn)
        else:
            self._begin_sqlite(conn)

    def _begin_postgresql(self, conn: pg.PgConnection) -> None:
        """BEGIN, then the writers' advisory lock (held to COMMIT or ROLLBACK), waited for in short slices
        that look at ``interrupt``: one writer at a time across every process sharing the database, as
        BEGIN IMMEDIATE gives on SQLite (the chain's seq is the head's + 1 under it)."""
        waited_until = time.monotonic() + WRITE_WAIT
        try:
            conn.execute("BEGIN")
            take_lock = "SELECT pg_try_advisory_xact_lock(?)"
            while not conn.execute(take_lock, (pg.WRITER_LOCK_KEY,)).fetchone()[0]:
                if time.monotonic() >= waited_until:
                    raise StoreError(
                        f"{self.path}: cannot write to the archive: another process held the write lock "
                        f"for {WRITE_WAIT:.0f} s"
                    )
                self._check_interrupt("another process's write lock")
                time.sleep(WAIT_SLICE / 4)
        except pg.PostgresError as exc:
            self._rollback_quietly(conn)
            raise StoreError(f"{self.path}: cannot begin a write transaction: {exc}") from None
        except BaseException:
            self._rollback_quietly(conn)
            raise

    @staticmethod
    def _rollback_quietly(conn: Any) -> None:
        with contextlib.suppress(*DatabaseError):
            if conn.in_transaction:
                conn.execute("ROLLBACK")

    def _begin_sqlite(self, conn: sqlite3.Connection) -> None:
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
        conn = self._link().conn
        if isinstance(conn, pg.PgConnection):
            # A lost connection has no transaction left to roll back; the error that matters is raised.
            self._rollback_quietly(conn)
        elif conn.in_transaction:
            conn.execute("ROLLBACK")

    @contextlib.contextmanager
    def read_snapshot(self) -> Iterator[None]:
        """One read transaction: every read inside sees the same archive even while a poll commits
        (a report's figures and its CSV). Inside a write transaction it is that transaction."""
        conn = self.conn
        if conn.in_transaction:
            yield
            return
        if isinstance(conn, pg.PgConnection):
            try:
                conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            except pg.PostgresError as exc:
                raise StoreError(str(exc)) from None
            try:
                yield
            finally:
                self._rollback_quietly(conn)
            return
        conn.execute("BEGIN")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")  # nothing was written; ends the snapshot

    # the file -----------------------------------------------------------------------------------------

    def file_size(self) -> int:
        """The archive's size on disk in bytes (on PostgreSQL, the database's)."""
        if self.dialect == "postgresql":
            return int(self.conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])
        if self.path == ":memory:":
            return 0
        return sum(
            Path(self.path + suffix).stat().st_size
            for suffix in ("", "-wal")
            if Path(self.path + suffix).exists()
        )

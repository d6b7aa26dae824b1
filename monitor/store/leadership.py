"""Who may write: the leader of the replicas that share one PostgreSQL database, or the sole SQLite writer.

Any number of ``audit-monitor run`` processes may share one ``state.url``. Exactly one of them, the leader,
polls, evaluates, delivers and sends reports: the one that holds a session-level advisory lock
(``pg_try_advisory_lock``) on a connection of its own. The others are standbys and try to take the lock
every ``retry`` seconds. The lock goes with its session: when the leader exits, is killed (``kill -9``: the
kernel closes its socket) or its session is ended by the server, a standby gets it at its next try.

**Fencing.** A leader must stop before anyone else can start. Three timings make that hold:

- the leader confirms, every ``heartbeat`` seconds, that its session still holds the lock; it counts as
  leader only while its last confirmation (timed from when the query was *sent*) is younger than ``lease``;
- its lock session is ended by the server after ``server_idle`` seconds without a query
  (``idle_session_timeout``), which frees the lock of a leader cut off from the server by the network;
- ``lease`` < ``server_idle``: a leader that can no longer confirm its lock counts itself out at least
  ``server_idle - lease`` seconds before the server frees the lock for a standby. Its open connection is then
  shut down (so a query stuck on a dead network returns) and it goes back to being a standby.

The daemon asks ``is_leader()`` before every cycle, between the pages of a walk and before every send; and
every write transaction of its store checks, inside the transaction, that the lock session still holds the
lock (``guard_transaction``): an ex-leader's commit is rolled back, never applied. A send already on the
wire cannot be recalled; each carries the alert id as its idempotency key.

libpq's TCP keepalives and ``tcp_user_timeout`` are on for the lock connection, so a dead peer is also
noticed by the kernel on a real network (a proxy that swallows traffic defeats them; the lease does not
depend on them).

On SQLite there is nothing to elect: the writer lock beside the archive (``files.acquire_writer_lock``)
already keeps a second writer out, and ``SoleWriter`` says "leader" for the life of the process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from monitor.store.connection import StoreError

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("monitor.leadership")

LEADER = "leader"
STANDBY = "standby"
ROLES = (LEADER, STANDBY)

# The advisory lock's key, as the (int4, int4) pair form: in pg_locks, classid and objid with objsubid 2,
# apart from every single-bigint key (objsubid 1) such as the store's transaction lock.
LOCK_CLASS = 0x41554D4E  # "AUMN": audit-monitor
LOCK_ID = 1  # the leader lock

# Whether the session with backend pid %s holds the leader lock (pg_locks lists granted and waiting locks;
# ``granted`` tells them apart). The numbers are LOCK_CLASS and LOCK_ID (a test checks they agree).
_HOLDS_SQL = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = %s "
    "AND classid = 1096109390 AND objid = 1 AND objsubid = 2 AND granted)"
)
# The same, in the store's placeholder style (``?``), for ``guard_transaction`` on a store connection.
_GUARD_SQL = _HOLDS_SQL.replace("%s", "?")
_TRY_LOCK_SQL = "SELECT pg_try_advisory_lock(1096109390, 1)"
_UNLOCK_SQL = "SELECT pg_advisory_unlock(1096109390, 1)"
_HOLDER_SQL = (
    "SELECT a.pid, a.application_name, host(a.client_addr), a.backend_start FROM pg_locks l "
    "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
    "AND l.classid = 1096109390 AND l.objid = 1 AND l.objsubid = 2"
)
APPLICATION_NAME = "audit-monitor leader lock"


class NotLeader(StoreError):
    """A write of the leader's work was attempted by a process that is not (or no longer) the leader."""


@dataclass(frozen=True)
class LeaseTimings:
    """Seconds. ``lease`` < ``server_idle`` is what makes fencing safe (see the module docstring)."""

    heartbeat: float = 2.0  # how often the leader confirms its lock
    lease: float = 10.0  # a leader whose last confirmation is older stops at once
    server_idle: float = 20.0  # the server ends a lock session idle this long (frees the lock)
    retry: float = 3.0  # how often a standby tries to take the lock
    connect_timeout: float = 5.0

    def __post_init__(self) -> None:
        if not 0 < self.heartbeat < self.lease < self.server_idle:
            raise ValueError("lease timings need 0 < heartbeat < lease < server_idle")


RoleListener = Callable[[str, str], None]  # (role, reason)


class Leadership(Protocol):
    """What the daemon asks of its leadership: its role now, and to be told when it changes."""

    @property
    def role(self) -> str: ...

    def is_leader(self) -> bool: ...

    def start(self) -> None: ...

    def add_listener(self, listener: RoleListener) -> None: ...

    def guard_transaction(self, execute: Callable[[str, tuple[Any, ...]], Any]) -> None: ...

    def describe(self) -> dict[str, Any]: ...

    def take_once(self, timeout: float) -> bool: ...

    @property
    def holder(self) -> str | None: ...

    @property
    def database_error(self) -> str | None: ...

    def close(self) -> None: ...


class SoleWriter:
    """SQLite: the process that holds the archive's writer lock is the leader, for its whole life."""

    role = LEADER

    def is_leader(self) -> bool:
        return True

    def start(self) -> None:
        log.info("role changed", extra={"role": LEADER, "reason": "sole writer of the SQLite archive"})

    def add_listener(self, listener: RoleListener) -> None:
        listener(LEADER, "sole writer of the SQLite archive")

    def guard_transaction(self, execute: Callable[[str, tuple[Any, ...]], Any]) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"role": LEADER}

    def take_once(self, timeout: float) -> bool:
        return True

    holder = None
    database_error = None

    def close(self) -> None:
        return None


@dataclass(frozen=True)
class LockHolder:
    """The session that holds the leader lock, as the server shows it (for logs, ``run --once``, healthz)."""

    backend_pid: int
    application_name: str
    client_addr: str | None

    def __str__(self) -> str:
        where = f" from {self.client_addr}" if self.client_addr else ""
        return f"{self.application_name or 'a session'} (server pid {self.backend_pid}){where}"


def lock_holder(conn: psycopg.Connection[Any]) -> LockHolder | None:
    """Who holds the leader lock now (None: nobody)."""
    row = conn.execute(_HOLDER_SQL).fetchone()
    if row is None:
        return None
    return LockHolder(int(row[0]), str(row[1] or ""), row[2])


def application_name() -> str:
    """How the lock session shows in pg_stat_activity: host and pid, so an operator can find the leader."""
    return f"{APPLICATION_NAME} {socket.gethostname()} pid {os.getpid()}"[:63]


class AdvisoryLeadership:
    """PostgreSQL: the holder of the advisory lock on a dedicated connection is the leader.

    ``start()`` runs two daemon threads: the keeper (connects, tries the lock as a standby, confirms it as
    the leader) and the watchdog (ends a lease that ran out even while the keeper is stuck in a query, and
    tells the listeners of every role change). ``url`` may carry a password: it is never logged; ``label``
    (the URL without it) is.
    """

    def __init__(
        self,
        url: str,
        *,
        label: str,
        timings: LeaseTimings | None = None,
        connect: Callable[..., psycopg.Connection[Any]] | None = None,
    ) -> None:
        self.url = url
        self.label = label
        self.timings = timings or LeaseTimings()
        self._connect_with = connect
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._generation = 0  # bumped when the connection is given up: late answers of the old one are void
        self._held = False
        self._confirmed_at = 0.0  # monotonic time the last confirming query was sent
        self._backend_pid: int | None = None
        self._role = STANDBY
        self._reason = "starting"
        self._last_error: str | None = None
        self._listeners: list[RoleListener] = []
        self._abandoned: list[
            psycopg.Connection[Any]
        ] = []  # given up by the watchdog; the keeper closes them
        self._holder_logged = False  # "standby: the lock is held by ..." once per connection
        self._changed = threading.Event()  # wakes the watchdog at once after the keeper took the lock
        self._tried = threading.Event()  # set after the first attempt to take the lock (or to connect)
        self._holder: str | None = None  # who leads, as the last failed attempt saw it
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # what the daemon asks -----------------------------------------------------------------------------

    @property
    def role(self) -> str:
        return LEADER if self.is_leader() else STANDBY

    def is_leader(self) -> bool:
        with self._lock:
            return self._lease_valid(time.monotonic())

    def add_listener(self, listener: RoleListener) -> None:
        with self._lock:
            self._listeners.append(listener)
            role, reason = self._role, self._reason
        listener(role, reason)

    def describe(self) -> dict[str, Any]:
        """For /healthz: the role, and when standby why (the last error reaching the server, if any)."""
        with self._lock:
            now = time.monotonic()
            facts: dict[str, Any] = {"role": LEADER if self._lease_valid(now) else STANDBY}
            if self._held:
                facts["lease_age_seconds"] = round(now - self._confirmed_at, 1)
            if self._last_error is not None:
                facts["database_error"] = self._last_error
            return facts

    @property
    def database_error(self) -> str | None:
        """Why the lock connection cannot reach the server now (None while it can)."""
        with self._lock:
            return self._last_error

    def guard_transaction(self, execute: Callable[[str, tuple[Any, ...]], Any]) -> None:
        """Inside a write transaction, on that transaction's connection (``execute``: the store's, with
        ``?`` placeholders): raise ``NotLeader`` unless this process still leads and its lock session still
        holds the lock as the server sees it now."""
        with self._lock:
            valid = self._lease_valid(time.monotonic())
            backend_pid = self._backend_pid
        if not valid or backend_pid is None:
            raise NotLeader("this process is not the leader: the write is rolled back")
        row = execute(_GUARD_SQL, (backend_pid,)).fetchone()
        if not row or not row[0]:
            raise NotLeader(
                f"the leader lock is no longer held by this process's session (server pid {backend_pid}): "
                "the write is rolled back"
            )

    def take_once(self, timeout: float) -> bool:
        """``run --once``: start, and wait (up to ``timeout`` seconds) for the outcome of the first attempt
        to take the lock. True when this process leads now; otherwise ``holder`` says who does."""
        self.start()
        if not self.is_leader():
            self._tried.wait(timeout)
        return self.is_leader()

    @property
    def holder(self) -> str | None:
        """Who leads, as this standby's last attempt to take the lock saw it."""
        with self._lock:
            return self._holder

    # life ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._threads:
            return  # started already (``take_once`` after ``start``, or twice)
        for name, target in (("leader-keeper", self._keep), ("leader-watchdog", self._watch)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        """Release the lock (a standby takes over at its next try) and stop the threads."""
        self._stop.set()
        self._changed.set()
        for thread in self._threads:
            thread.join(timeout=self.timings.connect_timeout + 1)
        with self._lock:
            conn, was_leader = self._conn, self._held
            self._conn, self._held = None, False
            self._generation += 1
        if conn is not None:
            with contextlib.suppress(Exception):
                if was_leader:
                    conn.execute(_UNLOCK_SQL)
            with contextlib.suppress(Exception):
                conn.close()
        self._set_role(STANDBY, "stopping: leader lock released" if was_leader else "stopping")

    # the keeper thread --------------------------------------------------------------------------------

    def _keep(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                conn, held, generation = self._conn, self._held, self._generation
                abandoned, self._abandoned = self._abandoned, []
            for old in abandoned:  # given up by the watchdog: closed here, on the thread that used it
                with contextlib.suppress(Exception):
                    old.close()
            try:
                if conn is None:
                    self._open()
                    continue
                if held:
                    self._confirm(conn, generation)
                    pause = self.timings.heartbeat
                else:
                    pause = self.timings.heartbeat if self._try_take(conn, generation) else self.timings.retry
            except Exception as exc:  # any failure of the lock connection: give it up, reconnect
                self._give_up(generation, f"lock connection failed: {_one_line(exc)}", error=exc)
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                pause = self.timings.retry
            self._stop.wait(pause)

    def _open(self) -> None:
        try:
            conn = self._connect()
        except Exception as exc:
            with self._lock:
                first = self._last_error is None
                self._last_error = f"cannot reach {self.label}: {_one_line(exc)}"
            self._tried.set()
            if first:
                log.warning(
                    "leader lock: cannot reach the database",
                    extra={"database": self.label, "error": _one_line(exc)},
                )
            self._stop.wait(self.timings.retry)
            return
        with self._lock:
            if self._stop.is_set():
                conn.close()
                return
            self._conn = conn
            self._backend_pid = conn.info.backend_pid
            self._last_error = None

    def _connect(self) -> psycopg.Connection[Any]:
        import psycopg

        t = self.timings
        settings: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": max(1, round(t.connect_timeout)),
            "application_name": application_name(),
            # A dead peer on a real network is noticed by the kernel too (a swallowing proxy defeats these;
            # the lease does not rely on them).
            "keepalives": 1,
            "keepalives_idle": max(1, round(t.heartbeat)),
            "keepalives_interval": max(1, round(t.heartbeat)),
            "keepalives_count": 3,
            "tcp_user_timeout": int(t.lease * 1000),
        }
        connect = self._connect_with or psycopg.connect
        conn = connect(self.url, **settings)
        try:
            # The server ends this session when the leader stops confirming: that frees the lock for a
            # standby even when the leader's host is cut off and cannot close the connection.
            conn.execute(f"SET idle_session_timeout = {int(t.server_idle * 1000)}")
            conn.execute(f"SET statement_timeout = {int(t.lease * 1000)}")
        except Exception:
            conn.close()
            raise
        return conn

    def _try_take(self, conn: psycopg.Connection[Any], generation: int) -> bool:
        sent_at = time.monotonic()
        row = conn.execute(_TRY_LOCK_SQL).fetchone()
        taken = bool(row and row[0])
        if not taken and not self._holder_logged:
            self._holder_logged = True
            holder = lock_holder(conn)
            with self._lock:
                self._holder = str(holder) if holder else None
            log.info(
                "standby: another process leads",
                extra={"leader": str(holder) if holder else "unknown", "database": self.label},
            )
        self._tried.set()
        if taken:
            with self._lock:
                if generation != self._generation:  # given up meanwhile: the close frees the lock
                    return False
                self._held = True
                self._confirmed_at = sent_at
            self._changed.set()
        return taken

    def _confirm(self, conn: psycopg.Connection[Any], generation: int) -> None:
        sent_at = time.monotonic()
        row = conn.execute(_HOLDS_SQL, (conn.info.backend_pid,)).fetchone()
        if not row or not row[0]:
            self._give_up(generation, "the server no longer shows the leader lock held by this session")
            return
        with self._lock:
            if generation == self._generation and self._held:
                self._confirmed_at = sent_at

    def _give_up(self, generation: int, reason: str, *, error: Exception | None = None) -> None:
        """Drop the lock connection of ``generation``: its socket is shut down at once (the server frees the
        lock when it sees the session end; a query stuck on it returns), the keeper closes it."""
        with self._lock:
            if generation != self._generation:
                return
            conn, was_held = self._conn, self._held
            self._conn, self._held, self._backend_pid = None, False, None
            self._generation += 1
            self._holder_logged = False
            if conn is not None:
                self._abandoned.append(conn)
            if error is not None:
                self._last_error = f"{self.label}: {_one_line(error)}"
        _shut_down(conn)
        if was_held:
            self._set_role(STANDBY, reason)
        elif error is not None:
            log.warning("leader lock: connection lost", extra={"database": self.label, "error": reason})

    # the watchdog thread ------------------------------------------------------------------------------

    def _watch(self) -> None:
        tick = min(0.25, self.timings.heartbeat / 4)
        while not self._stop.is_set():
            self._changed.wait(tick)
            self._changed.clear()
            if self._stop.is_set():
                return
            now = time.monotonic()
            with self._lock:
                held, valid, generation = self._held, self._lease_valid(now), self._generation
                age = now - self._confirmed_at
            if held and not valid:
                # The keeper could not confirm in time (stuck on a dead network, or a slow server): stop now,
                # before the server frees the lock for a standby; shutting the socket ends the stuck query.
                self._give_up(generation, f"lease expired: lock not confirmed for {age:.1f}s")
            elif held:
                self._set_role(LEADER, "took the leader lock")

    # helpers ------------------------------------------------------------------------------------------

    def _lease_valid(self, now: float) -> bool:
        return self._held and now - self._confirmed_at < self.timings.lease

    def _set_role(self, role: str, reason: str) -> None:
        with self._lock:
            if role == self._role:
                return
            self._role, self._reason = role, reason
            listeners = list(self._listeners)
        log.info("role changed", extra={"role": role, "reason": reason, "database": self.label})
        for listener in listeners:
            try:
                listener(role, reason)
            except Exception:
                log.exception("role listener failed", extra={"role": role})


def _shut_down(conn: psycopg.Connection[Any] | None) -> None:
    """End ``conn``'s TCP connection even while another thread is stuck in a query on it: shutdown acts on
    the socket, not the descriptor, so the blocked read returns at once (and the thread that used the
    connection closes it; freeing libpq's state under its feet would not be safe)."""
    if conn is None:
        return
    with contextlib.suppress(Exception):
        sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()


def _one_line(exc: BaseException) -> str:
    """The error's first line, as the store words a driver's error (a URL in it loses its password)."""
    from monitor.store import pg

    text = str(exc).strip().splitlines()
    return pg._clean(text[0] if text else type(exc).__name__)[:300]  # the store's own redaction


def leadership_for(target: str, label: str, timings: LeaseTimings | None = None) -> Leadership:
    """The leadership for ``state.target()``: elected on PostgreSQL, the sole writer on SQLite."""
    from monitor.store import pg

    if pg.is_url(target):
        return AdvisoryLeadership(target, label=label, timings=timings)
    return SoleWriter()

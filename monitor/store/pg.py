"""PostgreSQL under the store's modules: the part of ``sqlite3.Connection`` they use, on psycopg 3.

The store's modules write their SQL once, with SQLite's placeholders (``?``, ``?1``, ``:name``), and run it
through ``self.conn``. On PostgreSQL that is a :class:`PgConnection`: every statement text is translated
once (and cached) to psycopg's placeholders (``%s``, ``%(name)s``, a literal ``%`` as ``%%``), and psycopg's
errors become :class:`PostgresError` (or :class:`PostgresUnavailable` for a lost or refused connection)
whose message never holds the password. The connection is in autocommit mode: the store issues BEGIN and
COMMIT itself, as it does on SQLite.

psycopg is imported only here, and only when a PostgreSQL store is opened: an SQLite archive never pays for
it.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

URL_SCHEMES = ("postgresql://", "postgres://")

# Writers take turns through this transaction-level advisory lock, as BEGIN IMMEDIATE makes them on SQLite
# (the hash chain has one appender at a time; seq is max + 1 under it). The number is arbitrary but fixed:
# every release must use the same one. "audit-monitor writer" as a 63-bit number.
WRITER_LOCK_KEY = 0x6175646974_7772
# Schema upgrades by two processes starting at once take turns through this one (a session-level lock).
MIGRATION_LOCK_KEY = 0x6175646974_6D67


# libpq settings that make a connection to a host gone silent (a network cut, a crashed server) fail within
# seconds rather than after the kernel's retransmission timeout (about 15 minutes): keepalives probe an idle
# connection, tcp_user_timeout ends one whose sent data stays unacknowledged.
DEAD_PEER_SETTINGS: dict[str, int] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 20_000,
}
IDLE_IN_TRANSACTION_MS = 15_000  # below the leader lock's server_idle (20 s): see leadership.py


def is_url(target: str) -> bool:
    """Whether ``target`` (``state.url`` or an argument) names a PostgreSQL database rather than a file."""
    return target.startswith(URL_SCHEMES)


def redact(url: str) -> str:
    """The URL without its password (``postgresql://user:***@host/db``): for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "postgresql://***"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if _port_or_none(parts) is not None else ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}{port}", parts.path, parts.query, parts.fragment))


def _port_or_none(parts: Any) -> int | None:
    try:
        return int(parts.port) if parts.port is not None else None
    except ValueError:
        return None


class PostgresError(Exception):
    """A statement failed on PostgreSQL (the message is the server's, without the password)."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class PostgresUnavailable(PostgresError):
    """The database cannot be reached, refused the login, or the connection was lost."""


class PostgresReadOnly(PostgresError):
    """A write in a read-only session (a read command's) or on a read-only server (a hot standby)."""

    READ_ONLY_SQLSTATE = "25006"


_TOKEN = re.compile(
    r"""('(?:[^']|'')*')           # a string literal: passed through, only % doubled
      | ("(?:[^"]|"")*")           # a quoted identifier
      | (::)                       # a cast, not a parameter
      | \?(\d+)                    # ?NNN: a numbered parameter
      | (\?)                       # ?: the next positional parameter
      | (?<![:\w]):([A-Za-z_]\w*)  # :name
      | (%)                        # a literal percent sign
    """,
    re.VERBOSE,
)


@functools.lru_cache(maxsize=1024)
def translate(sql: str) -> tuple[str, str]:
    """SQLite's placeholders in ``sql`` as psycopg's; returns (text, style) where style is ``positional``,
    ``numbered`` (``?1``: the parameters are passed by name ``p1``...) or ``named``."""
    style = "positional"

    def replace(match: re.Match[str]) -> str:
        nonlocal style
        literal, identifier, cast, number, positional, name, percent = match.groups()
        if literal is not None:
            return literal.replace("%", "%%")
        if identifier is not None:
            return identifier.replace("%", "%%")
        if cast is not None:
            return cast
        if number is not None:
            style = "numbered"
            return f"%(p{number})s"
        if positional is not None:
            return "%s"
        if name is not None:
            style = "named"
            return f"%({name})s"
        assert percent is not None
        return "%%"

    return _TOKEN.sub(replace, sql), style


def _params(style: str, params: Any) -> Any:
    if params is None:
        return () if style == "positional" else {}
    if style == "numbered":
        return {f"p{number}": value for number, value in enumerate(params, start=1)}
    if style == "named" or isinstance(params, Mapping):
        return params
    return tuple(params)


class PgCursor:
    """A statement's result, as much of ``sqlite3.Cursor`` as the store uses."""

    def __init__(self, cursor: Any, label: str) -> None:
        self._cursor = cursor
        self._label = label

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)

    @property
    def description(self) -> Any:
        """The result's columns (each a sequence whose first item is the name, as DB-API says)."""
        return self._cursor.description

    def fetchone(self) -> Any:
        return self._guard(self._cursor.fetchone)

    def fetchall(self) -> list[Any]:
        return list(self._guard(self._cursor.fetchall))

    def fetchmany(self, size: int) -> list[Any]:
        return list(self._guard(lambda: self._cursor.fetchmany(size)))

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())

    def close(self) -> None:
        self._cursor.close()

    def _guard(self, call: Any) -> Any:
        try:
            return call() if self._cursor.description is not None else _no_rows(call)
        except Exception as exc:
            raise wrap_error(exc, self._label) from None


def _no_rows(call: Any) -> Any:
    """A statement without a result (an INSERT without RETURNING) reads as no rows, as on SQLite."""
    return None if call.__name__ == "fetchone" else []


_INSERT_VALUES = re.compile(
    r"^\s*INSERT\s+INTO\s+(\w+)\s*\(([\w\s,]+)\)\s*VALUES\s*\((?:\s*%s\s*,)*\s*%s\s*\)"
    r"\s*(ON\s+CONFLICT\s+DO\s+NOTHING)?\s*$",
    re.IGNORECASE | re.DOTALL,
)


def _batched_insert(text: str) -> tuple[str, list[str], bool] | None:
    """(table, columns, ignore conflicts) of a single-row ``INSERT INTO t (cols) VALUES (%s, ...)``,
    optionally ``ON CONFLICT DO NOTHING``; None for anything else (an upsert, a RETURNING, a SELECT)."""
    match = _INSERT_VALUES.match(text)
    if match is None:
        return None
    columns = [name.strip() for name in match.group(2).split(",")]
    return match.group(1), columns, match.group(3) is not None


class _Total:
    """The outcome of a batched ``executemany``: its rowcount, and no rows (as sqlite3's)."""

    def __init__(self, rowcount: int) -> None:
        self.rowcount = rowcount

    def fetchone(self) -> None:
        return None

    def fetchall(self) -> list[Any]:
        return []


class PgConnection:
    """One psycopg connection, in autocommit mode, behind ``sqlite3.Connection``'s methods."""

    dialect = "postgresql"

    def __init__(self, conn: Any, label: str) -> None:
        self._conn = conn
        self._label = label  # the redacted URL, for messages
        self._names = 0
        self._lock = threading.Lock()
        self._load_tables: set[str] = set()

    def execute(self, sql: str, params: Any = None) -> PgCursor:
        text, style = translate(sql)
        try:
            cursor = self._conn.cursor()
            cursor.execute(text, _params(style, params))
        except Exception as exc:
            raise wrap_error(exc, self._label) from None
        return PgCursor(cursor, self._label)

    def executemany(self, sql: str, rows: Iterable[Any]) -> PgCursor | _Total:
        """Run ``sql`` once per row. The archive's and staging's bulk writes, ``INSERT INTO t (cols) VALUES
        (?, ...)`` with at most ``ON CONFLICT DO NOTHING`` after it, go through COPY instead: one stream
        rather than a round trip per row, several times faster (a backfill writes every event twice).
        With ON CONFLICT DO NOTHING the rows are copied into a temporary table first and inserted from it
        in their order, so the first of two rows with one key wins, as one INSERT per row would have it.
        The rowcount is the rows inserted, as sqlite3's."""
        text, style = translate(sql)
        batched = _batched_insert(text) if style == "positional" else None
        try:
            if batched is None:
                cursor = self._conn.cursor()
                cursor.executemany(text, [_params(style, row) for row in rows])
                return PgCursor(cursor, self._label)
            table, columns, ignore_conflicts = batched
            if not ignore_conflicts:
                return _Total(self._copy(table, columns, rows))
            load = self._load_table(table)
            self._conn.execute(f"TRUNCATE {load}")
            self._copy(load, columns, rows)
            names = ", ".join(columns)
            cursor = self._conn.execute(
                f"INSERT INTO {table} ({names}) SELECT {names} FROM {load} ORDER BY ctid "  # noqa: S608
                "ON CONFLICT DO NOTHING"
            )
            inserted = int(cursor.rowcount)
            self._conn.execute(f"TRUNCATE {load}")
            return _Total(inserted)
        except Exception as exc:
            raise wrap_error(exc, self._label) from None

    def _copy(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
        count = 0
        with self._conn.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
                count += 1
        return count

    def _load_table(self, table: str) -> str:
        """A temporary table shaped as ``table`` (this session's own), created on first use."""
        load = f"load_{table}"
        if load not in self._load_tables:
            self._conn.execute(f"CREATE TEMPORARY TABLE IF NOT EXISTS {load} (LIKE {table})")
            self._load_tables.add(load)
        return load

    def stream(self, sql: str, params: Sequence[Any] | Mapping[str, Any], batch: int) -> Iterator[Any]:
        """Rows of a large result ``batch`` at a time from a server-side cursor, so a walk over a million
        events holds one batch in memory (a client-side cursor would hold the whole result). WITH HOLD lets
        it outlive a transaction, and work outside one."""
        text, style = translate(sql)
        with self._lock:
            self._names += 1
            name = f"store_stream_{self._names}"
        try:
            cursor = self._conn.cursor(name=name, withhold=True)
            cursor.itersize = batch
            cursor.execute(text, _params(style, params))
        except Exception as exc:
            raise wrap_error(exc, self._label) from None
        try:
            while True:
                try:
                    rows = cursor.fetchmany(batch)
                except Exception as exc:
                    raise wrap_error(exc, self._label) from None
                if not rows:
                    return
                yield from rows
        finally:
            try:
                cursor.close()
            except Exception:  # noqa: S110 - the connection is gone: the error that matters was raised
                pass

    def copy_rows(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
        """Load ``rows`` into ``table`` with COPY (``migrate``); returns how many. ``table`` and
        ``columns`` are the store's own names, never input."""
        try:
            return self._copy(table, [f'"{name}"' for name in columns], rows)
        except Exception as exc:
            raise wrap_error(exc, self._label) from None

    @property
    def in_transaction(self) -> bool:
        from psycopg import pq

        return bool(self._conn.info.transaction_status != pq.TransactionStatus.IDLE)

    @property
    def broken(self) -> bool:
        return bool(self._conn.broken or self._conn.closed)

    def close(self) -> None:
        try:
            self._conn.close()
        except Exception:  # noqa: S110 - closing a connection that is already gone
            pass


def wrap_error(exc: BaseException, label: str) -> BaseException:
    """psycopg's error as the store's: the server's message, the URL redacted, the kind kept."""
    import psycopg

    if isinstance(exc, PostgresError):
        return exc
    if not isinstance(exc, psycopg.Error):
        return exc
    message = _clean(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    sqlstate = getattr(exc, "sqlstate", None)
    lost = isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    if lost and not _is_statement_error(sqlstate):
        return PostgresUnavailable(f"store unavailable: {label}: {message}", sqlstate)
    if sqlstate == PostgresReadOnly.READ_ONLY_SQLSTATE:
        return PostgresReadOnly(f"{label}: {message}", sqlstate)
    return PostgresError(f"{label}: {message}", sqlstate)


def _is_statement_error(sqlstate: str | None) -> bool:
    # OperationalError also covers a cancelled statement or a lock timeout: the server is there.
    return sqlstate is not None and not sqlstate.startswith(("08", "28", "57", "53"))


_PASSWORD_IN_TEXT = re.compile(r"(postgres(?:ql)?://[^:/@\s]*:)[^@\s]*@")


def _clean(message: str) -> str:
    """A driver message that quotes the URL (a bad one) must not carry its password along."""
    return _PASSWORD_IN_TEXT.sub(r"\1***@", message)


def connect(url: str, *, readonly: bool = False) -> PgConnection:
    """A connection in autocommit mode; ``readonly``: every transaction read only, for read commands."""
    import psycopg

    label = redact(url)
    options: dict[str, Any] = {"autocommit": True, "connect_timeout": 10, **DEAD_PEER_SETTINGS}
    if readonly:
        options["options"] = "-c default_transaction_read_only=on"
    try:
        conn = psycopg.connect(url, **options)
        if not readonly:
            # A writer cut off by the network must not keep the writers' lock (and so a standby's takeover)
            # from everyone: the server ends a transaction left idle this long. The store's transactions
            # send their statements back to back; none idles for seconds.
            conn.execute(f"SET idle_in_transaction_session_timeout = {IDLE_IN_TRANSACTION_MS}")
    except Exception as exc:
        raise wrap_error(exc, label) from None
    return PgConnection(conn, label)

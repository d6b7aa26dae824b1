"""Schema versions: Alembic migrations on SQLAlchemy Core, one folder of revisions per dialect.

As Prefect's server does it (``_migrations/versions/sqlite`` and ``.../postgresql``): the revisions live in
``monitor/store/migrations/versions/<dialect>/``; ``migrations/env.py`` runs them on the connection the store
already holds, one transaction per revision.

SQLite archives written before Alembic counted their schema in ``PRAGMA user_version`` (1..6). The SQLite
revisions are numbered the same way (revision ``0006`` is user_version 6): an archive without Alembic's
version table is stamped at its user_version and upgraded from there, and every revision still sets
user_version, so the number stays true for the fast path below and for an older release, which refuses an
archive whose number is higher than its own instead of misreading it.

PostgreSQL databases start at revision ``0008`` (``versions/postgresql/0008_initial.py`` creates the schema
SQLite has at 0008, in one revision with no parent), so both dialects share revision numbers from there on.
Alembic's version table is the only record of a PostgreSQL database's schema.

A new revision is a new file in each dialect's folder: ``NNNN_what_it_does.py`` with ``revision = "NNNN"``,
``down_revision`` the newest before it, and an ``upgrade()`` (archives only move forward; there is no
downgrade). ``tests/test_store_schema.py`` checks that the revisions form one line.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("monitor.store")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_REVISION_FILE = re.compile(r"^(\d{4})_\w+\.py$")


def revisions(dialect: str) -> list[str]:
    """The revision ids of ``dialect``'s folder, oldest first (each file is ``NNNN_what_it_does.py``)."""
    names = (_REVISION_FILE.match(p.name) for p in (MIGRATIONS_DIR / "versions" / dialect).iterdir())
    return sorted(m.group(1) for m in names if m)


SCHEMA_VERSION = len(revisions("sqlite"))  # what PRAGMA user_version says once every revision ran


class NewerSchema(Exception):
    """The database was written by a newer release (a schema this program does not know)."""

    def __init__(self, found: str, known: str) -> None:
        super().__init__(f"schema {found} is newer than {known}")
        self.found, self.known = found, known


class UpgradeFailed(Exception):
    """A revision could not be applied; the archive stays at the last revision that was (the message is
    the database's own, without the SQL)."""


def upgrade_sqlite(conn: sqlite3.Connection, target: str = "head") -> None:
    """Bring an SQLite archive to ``target`` (a revision id, or head), in place.

    Alembic and SQLAlchemy are imported only when there is something to do: an archive at the current
    schema (every start but the first after an upgrade) costs two cheap queries.
    """
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise NewerSchema(str(version), str(SCHEMA_VERSION))
    stamped = _has_version_table(conn)
    if target == "head" and version == SCHEMA_VERSION and stamped:
        return
    from sqlalchemy import create_engine, event
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.pool import StaticPool

    # The store's own connection, lent to SQLAlchemy: an in-memory archive has no other, and a migration
    # must not wait on a lock the store itself holds. The connection is in autocommit mode (the store
    # issues BEGIN itself), so SQLAlchemy's transactions are made real here, as its SQLite docs advise.
    borrowed = _Borrowed(conn)
    engine = create_engine("sqlite://", creator=lambda: borrowed, poolclass=StaticPool)

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    try:
        with engine.connect() as connection:
            if version and not stamped:
                _stamp(connection, f"{version:04d}")
            _upgrade(connection, "sqlite", target)
    except DBAPIError as exc:
        raise UpgradeFailed(str(exc.orig)) from None
    after = int(conn.execute("PRAGMA user_version").fetchone()[0])
    _log_upgrade("sqlite", f"{version:04d}" if version else None, f"{after:04d}")


def postgresql_version(conn: Any) -> str | None:
    """The revision a PostgreSQL database is at (None: no archive in it yet)."""
    if conn.execute("SELECT to_regclass('alembic_version')").fetchone()[0] is None:
        return None
    row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return str(row[0]) if row else None


def upgrade_postgresql(conn: Any, url: str, target: str = "head") -> None:
    """Bring a PostgreSQL database to ``target``: create the schema in an empty one, upgrade an older one,
    refuse a newer one (``NewerSchema``).

    ``conn`` (the store's ``pg.PgConnection``) answers the fast path; a migration runs on a connection of
    its own, under a session advisory lock, so two processes starting at once upgrade one after the other
    (the second finds nothing left to do).
    """
    known = revisions("postgresql")[-1]
    version = postgresql_version(conn)
    if version is not None and int(version) > int(known):
        raise NewerSchema(version, known)
    if target == "head" and version == known:
        return
    import psycopg
    from sqlalchemy import create_engine
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.pool import NullPool

    from monitor.store import pg

    def connect() -> Any:
        return psycopg.connect(url, connect_timeout=10)

    engine = create_engine("postgresql+psycopg://", creator=connect, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(f"SELECT pg_advisory_lock({pg.MIGRATION_LOCK_KEY})")
            connection.commit()
            try:
                _upgrade(connection, "postgresql", target)
            finally:
                connection.rollback()
                connection.exec_driver_sql(f"SELECT pg_advisory_unlock({pg.MIGRATION_LOCK_KEY})")
                connection.commit()
    except DBAPIError as exc:
        cause = pg.wrap_error(exc.orig, pg.redact(url)) if exc.orig is not None else exc
        if isinstance(cause, pg.PostgresUnavailable):
            raise cause from None
        raise UpgradeFailed(str(cause)) from None
    finally:
        engine.dispose()
    # (Two replicas starting at once on an empty database both say so: the second read None before it
    # waited for the first.)
    _log_upgrade("postgresql", version, postgresql_version(conn) or known)


def _has_version_table(conn: sqlite3.Connection) -> bool:
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'")
    return row.fetchone() is not None


def _config(connection: Any, dialect: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", str(MIGRATIONS_DIR / "versions" / dialect))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Any, dialect: str, target: str) -> None:
    with _alembic_quiet():
        from alembic import command
        from alembic.util import CommandError

        try:
            command.upgrade(_config(connection, dialect), target)
        except CommandError as exc:
            # The version table names a revision this release does not have: a newer release wrote it.
            known = revisions(dialect)[-1]
            raise NewerSchema(str(exc), known) from None


@contextlib.contextmanager
def _alembic_quiet() -> Iterator[None]:
    """Alembic logs every plugin it sets up and every step at INFO (19 lines of the daemon's JSON log on a
    first start); ``_log_upgrade`` says in one line what changed instead. Its warnings still show."""
    alembic_log = logging.getLogger("alembic")
    level = alembic_log.level
    alembic_log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        alembic_log.setLevel(level)


def _log_upgrade(dialect: str, before: str | None, after: str) -> None:
    if before == after:
        return
    event = "archive schema created" if before is None else "archive schema upgraded"
    log.info(event, extra={"dialect": dialect, "revision_before": before, "revision": after})


def _stamp(connection: Any, revision: str) -> None:
    with _alembic_quiet():
        from alembic.migration import MigrationContext

        with connection.begin():
            MigrationContext.configure(connection).stamp(_script(), revision)


def _script() -> Any:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(
        str(MIGRATIONS_DIR), version_locations=[str(MIGRATIONS_DIR / "versions" / "sqlite")]
    )


class _Borrowed:
    """The store's sqlite3 connection as SQLAlchemy sees it: everything passes through but ``close``, so
    the pool giving it back does not close the store's connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

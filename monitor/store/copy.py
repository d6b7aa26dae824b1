"""Copying an SQLite archive into an empty PostgreSQL database (``audit-monitor migrate --to URL``).

Every table moves row for row, in one transaction on the target: the events with their seq and hashes (the
chain is the same chain), the prune records and the alert history (links of it), cursors and staging, rule
state, alerts and their outbox, silences, gaps, meta, poll outcomes and report claims. A daemon started on
the target afterwards continues where the SQLite one stopped: nothing is archived, alerted or sent again.

The target must be empty: a database holding any row of an archive, or tables of anything else, is refused
(naming them), so a copy never merges two archives or writes into another application's database.
"""

from __future__ import annotations

from dataclasses import dataclass

from monitor.store import pg
from monitor.store.connection import StoreCore, StoreError

# Parents before children (outbox refers to alerts); the chain's tables last, the largest one at the end.
TABLES = (
    "meta",
    "cursors",
    "staging",
    "rejected",
    "rule_state",
    "alerts",
    "outbox",
    "silences",
    "gaps",
    "reports",
    "polls",
    "prunes",
    "alert_actions",
    "events",
)
# Tables whose id the database gives (SQLite's rowid; an identity on PostgreSQL): after copying the ids,
# the identity must continue after the highest one.
_IDENTITIES = ("gaps", "silences")
_BATCH = 5000


class TargetNotEmpty(StoreError):
    """The target database holds rows of an archive, or tables of something else."""


@dataclass(frozen=True)
class CopyResult:
    counts: dict[str, int]  # rows copied per table


def target_problem(url: str) -> str | None:
    """Why the database at ``url`` may not receive a copy (None: it is empty, or holds an empty archive).

    Checked before the schema is created there, so a refused database is left exactly as it was."""
    conn = pg.connect(url)
    try:
        tables = [
            str(row[0])
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
                "ORDER BY table_name"
            )
        ]
        foreign = [name for name in tables if name not in (*TABLES, "alembic_version")]
        if foreign:
            return f"{pg.redact(url)}: the database is not empty: it holds the tables {', '.join(foreign)}"
        filled = [
            name
            for name in TABLES
            if name in tables and conn.execute(f"SELECT EXISTS (SELECT 1 FROM {name})").fetchone()[0]  # noqa: S608 - a known name
        ]
        if filled:
            return (
                f"{pg.redact(url)}: the database already holds an archive (rows in {', '.join(filled)}); "
                "migrate copies only into an empty database"
            )
        return None
    finally:
        conn.close()


def copy_archive(source: StoreCore, target: StoreCore) -> CopyResult:
    """Copy every row of ``source`` (SQLite) into ``target`` (PostgreSQL, empty, at the same schema) in one
    transaction of the target. Raises TargetNotEmpty when rows appeared there meanwhile."""
    if source.dialect != "sqlite" or target.dialect != "postgresql":
        raise ValueError("copy_archive copies an SQLite archive into a PostgreSQL database")
    target_conn = target.conn
    assert isinstance(target_conn, pg.PgConnection)
    counts: dict[str, int] = {}
    with target.transaction(), source.read_snapshot():
        for table in TABLES:
            if target.conn.execute(f"SELECT EXISTS (SELECT 1 FROM {table})").fetchone()[0]:  # noqa: S608
                raise TargetNotEmpty(f"{target.path}: rows appeared in {table} while copying; nothing copied")
            columns = [str(row[1]) for row in source.conn.execute(f'PRAGMA table_info("{table}")')]
            quoted = ", ".join(f'"{name}"' for name in columns)
            rows = source.stream(f"SELECT {quoted} FROM {table}", (), _BATCH)  # noqa: S608 - known names
            counts[table] = target_conn.copy_rows(table, columns, rows)
        for table in _IDENTITIES:
            target.conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608 - a known name
                f"coalesce((SELECT max(id) FROM {table}), 0) + 1, false)"
            )
    return CopyResult(counts)


def table_counts(store: StoreCore) -> dict[str, int]:
    """Rows per table of the archive (``migrate`` compares the source's with the target's)."""
    return {
        table: int(store.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608
        for table in TABLES
    }

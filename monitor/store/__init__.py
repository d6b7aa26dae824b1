"""The store: the only place that talks to the database.

``Store`` is the facade callers use: named operations, no SQL outside this package. Each concern lives in
a module of its own, and ``Store`` is their union:

- ``connection``  opening the archive, transactions, read snapshots
- ``schema``      schema versions (Alembic revisions per dialect in ``migrations/versions/<dialect>/``)
- ``chain``       the hash chain's records and links (pure, no SQL)
- ``archive``     appending events, reading them back, ``verify`` and ``prune_before``
- ``cursors``     each source's cursor and the staging of an unfinished walk
- ``rule_state``  the engine's state between cycles, and ``SqliteStateStore`` its cached view
- ``alerts``      alerts, the delivery outbox and dead letters
- ``meta``        key/value meta, coverage gaps, monthly report claims
- ``reads``       read queries for the report, ``status`` and /metrics
- ``polls``       poll outcomes per cycle (module functions), for the report's poll success rate
- ``lifecycle``   the alert lifecycle (acknowledge, resolve) and silences, its history a link of the chain
- ``search``      event search and dashboard counts for the API and the console
- ``files``       the archive file: writer lock, file modes, identity, read-only opens (no SQL)
- ``pg``          PostgreSQL: a psycopg connection behind the sqlite3 methods the modules use
"""

from __future__ import annotations

from monitor.store.alerts import AlertsMixin, DeadLetter, DueDelivery
from monitor.store.archive import ArchiveMixin
from monitor.store.chain import GENESIS_HASH, PruneRecord, VerifyResult, chain_hash, derived_columns
from monitor.store.connection import (
    ArchiveMissing,
    DatabaseError,
    StoreError,
    StoreInterrupted,
    StoreUnavailable,
)
from monitor.store.cursors import Cursor, CursorsMixin
from monitor.store.meta import Claim, VerifyRecord
from monitor.store.reads import ReadsMixin
from monitor.store.rule_state import LEGACY_STATE_DAYS, RuleStateMixin, SqliteStateStore
from monitor.store.schema import SCHEMA_VERSION

__all__ = [
    "GENESIS_HASH",
    "ArchiveMissing",
    "LEGACY_STATE_DAYS",
    "SCHEMA_VERSION",
    "Claim",
    "Cursor",
    "DatabaseError",
    "DeadLetter",
    "DueDelivery",
    "PruneRecord",
    "SqliteStateStore",
    "Store",
    "StoreError",
    "StoreInterrupted",
    "VerifyRecord",
    "StoreUnavailable",
    "VerifyResult",
    "chain_hash",
    "derived_columns",
]


class Store(ArchiveMixin, CursorsMixin, RuleStateMixin, AlertsMixin, ReadsMixin):
    """Open with ``Store.open(path)`` (an SQLite file) or ``Store.open(url)`` (``postgresql://...``); use as
    a context manager to close it."""

    @classmethod
    def verify_read_only(cls, path: str, *, after: int, through: int | None) -> VerifyResult:
        """``verify`` over a read-only connection of its own (a read-only walk writes nothing): what the
        report's worker processes run, which import the store and nothing more."""
        with cls.open(path, readonly=True) as store:
            return store.verify(after=after, through=through)

"""Rule state: what the engine's thresholds, new-value and throttle rules remember between cycles, per
source, with an expiry in event time; and ``SqliteStateStore``, the engine's view of it inside a cycle."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from monitor.store.connection import StoreCore

LEGACY_STATE_DAYS = 90  # how long rule state written before revision 0006 is kept unless a rule rewrites it
_SQLITE_INT_MAX = 2**63 - 1


def _state_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=_state_default)


def _state_default(value: Any) -> Any:
    to_state = getattr(value, "to_state", None)
    return to_state() if callable(to_state) else str(value)


class RuleStateMixin(StoreCore):
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

    def __init__(self, store: RuleStateMixin, *, cache_limit: int = DEFAULT_CACHE_LIMIT) -> None:
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

"""Where rules keep state between events (threshold windows, seen values, throttles)."""

from __future__ import annotations

import heapq
from typing import Any, Protocol

SHARED = ""  # the source of state shared by every source (rules with `scope: all_sources`)


class StateStore(Protocol):
    """Key-value state per rule and source. ``put(..., None)`` deletes.

    Values are JSON-serialisable, or live objects of the engine with a ``to_state()`` method giving that
    form (a threshold window keeps its indexes between events instead of rebuilding them); ``get`` returns
    either form. ``expires_at`` is the event time (µs) from which the key is of no more use: once an event
    of ``source`` at or after it has been evaluated (``advance``), a store may drop the key.

    The daemon's implementation writes into the same SQLite transaction that archives the
    events, so state never runs ahead of (or behind) the archive. Tests use MemoryStateStore.
    """

    def get(self, rule_id: str, key: str, source: str = SHARED) -> Any | None: ...

    def put(
        self, rule_id: str, key: str, value: Any | None, source: str = SHARED, expires_at: int | None = None
    ) -> None: ...

    def advance(self, source: str, now: int) -> None: ...


class MemoryStateStore:
    """In-memory state for `rules test`, explain and backtest.

    Like the daemon's store it drops expired keys, and like it only once it holds many (``prune_above``), so
    a test or an explanation sees every key it wrote while a backtest over a year of an archive holds about
    the keys alive in the windows, not every value it ever met.
    """

    def __init__(self, *, prune_above: int = 20_000) -> None:
        self._data: dict[tuple[str, str, str], Any] = {}
        self._expires: dict[tuple[str, str, str], int] = {}
        self._due: dict[str, list[tuple[int, str, str]]] = {}  # per source: a heap of (expires_at, rule, key)
        self._horizon: dict[str, int] = {}
        self._prune_above = prune_above

    def __len__(self) -> int:
        return len(self._data)

    def get(self, rule_id: str, key: str, source: str = SHARED) -> Any | None:
        return self._data.get((rule_id, source, key))

    def put(
        self, rule_id: str, key: str, value: Any | None, source: str = SHARED, expires_at: int | None = None
    ) -> None:
        where = (rule_id, source, key)
        if value is None:
            self._data.pop(where, None)
            self._expires.pop(where, None)
            return
        if where not in self._data and len(self._data) >= self._prune_above:
            self._prune()
        self._data[where] = value
        if expires_at is None:
            self._expires.pop(where, None)
        elif self._expires.get(where) != expires_at:
            # the heap keeps superseded expiries too; _prune skips those that no longer hold
            self._expires[where] = expires_at
            heapq.heappush(self._due.setdefault(source, []), (expires_at, rule_id, key))

    def advance(self, source: str, now: int) -> None:
        if now > self._horizon.get(source, now - 1):
            self._horizon[source] = now

    def _prune(self) -> None:
        if not self._horizon:
            return
        horizons = dict(self._horizon)
        horizons[SHARED] = max(self._horizon.values())  # shared state runs on the clock furthest ahead
        for source, horizon in horizons.items():
            due = self._due.get(source)
            while due and due[0][0] <= horizon:
                expires_at, rule_id, key = heapq.heappop(due)
                where = (rule_id, source, key)
                if self._expires.get(where) == expires_at:
                    del self._expires[where]
                    self._data.pop(where, None)

"""Where rules keep state between events (threshold windows, seen values, throttles)."""

from __future__ import annotations

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
    """In-memory state for `rules test`, explain and backtest (nothing is dropped before it is deleted)."""

    def __init__(self) -> None:
        self._data: dict[tuple[str, str, str], Any] = {}

    def get(self, rule_id: str, key: str, source: str = SHARED) -> Any | None:
        return self._data.get((rule_id, source, key))

    def put(
        self, rule_id: str, key: str, value: Any | None, source: str = SHARED, expires_at: int | None = None
    ) -> None:
        if value is None:
            self._data.pop((rule_id, source, key), None)
        else:
            self._data[(rule_id, source, key)] = value

    def advance(self, source: str, now: int) -> None:
        """Expired keys are kept: a test or an explanation is short, and nothing here is written to disk."""

"""Where rules keep state between events (threshold windows, seen values, throttles)."""

from __future__ import annotations

from typing import Any, Protocol


class StateStore(Protocol):
    """Key-value state per rule. Values are JSON-serialisable; ``put(..., None)`` deletes.

    The daemon's implementation writes into the same SQLite transaction that archives the
    events, so state never runs ahead of (or behind) the archive. Tests use MemoryStateStore.
    """

    def get(self, rule_id: str, key: str) -> Any | None: ...

    def put(self, rule_id: str, key: str, value: Any | None) -> None: ...


class MemoryStateStore:
    """In-memory state for `rules test`, explain and backtest."""

    def __init__(self) -> None:
        self._data: dict[tuple[str, str], Any] = {}

    def get(self, rule_id: str, key: str) -> Any | None:
        return self._data.get((rule_id, key))

    def put(self, rule_id: str, key: str, value: Any | None) -> None:
        if value is None:
            self._data.pop((rule_id, key), None)
        else:
            self._data[(rule_id, key)] = value

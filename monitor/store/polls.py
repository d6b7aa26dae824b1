"""Poll outcomes: one row per poll cycle and source, for the report's poll success rate.

A cycle that commits records ``ok`` inside its own transaction (so the row and the cursor move together);
a failed cycle records its error kind (auth, config, unavailable, store, internal). A cycle abandoned at
shutdown is no outcome and is not recorded.

Growth: one row of ~80 bytes per cycle and source, i.e. 105,000 rows (about 8 MB) a year for one source
polled every 5 minutes, 525,000 (about 40 MB) at one minute. With ``state.retention_days`` set, rows older
than the archive's cutoff are deleted with the events (``prune_polls_before``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from monitor.events import format_timestamp

if TYPE_CHECKING:
    from monitor.store import Store

RECORDED_SINCE_KEY = "polls_recorded_since"


@dataclass(frozen=True)
class PollStats:
    """A source's poll cycles started in a window."""

    source: str
    cycles: int
    ok: int
    failed_by_kind: dict[str, int]
    first_started: datetime | None
    last_started: datetime | None

    @property
    def failed(self) -> int:
        return self.cycles - self.ok

    @property
    def success_rate(self) -> float | None:
        """ok / cycles; None when no cycle is recorded (never a made-up 100 %)."""
        return self.ok / self.cycles if self.cycles else None


def record_poll(
    store: Store, source: str, *, started: datetime, ended: datetime, ok: bool, error_kind: str | None = None
) -> None:
    """One cycle's outcome. Inside the caller's transaction when there is one (the commit's), else its own."""

    def insert() -> None:
        store.conn.execute(
            "INSERT INTO polls (source, started_at, ended_at, ok, error_kind) VALUES (?, ?, ?, ?, ?)",
            (source, format_timestamp(started), format_timestamp(ended), int(ok), None if ok else error_kind),
        )

    if store.in_transaction:
        insert()
    else:
        with store.transaction():
            insert()


def poll_stats(store: Store, since: datetime, until: datetime) -> dict[str, PollStats]:
    """Per source, the cycles started in [since, until)."""
    rows = store.conn.execute(
        "SELECT source, ok, coalesce(error_kind, ''), count(*), min(started_at), max(started_at) FROM polls "
        "WHERE started_at >= ? AND started_at < ? GROUP BY source, ok, error_kind ORDER BY source",
        (format_timestamp(since), format_timestamp(until)),
    ).fetchall()
    grouped: dict[str, list[tuple[int, str, int, str, str]]] = {}
    for source, ok, kind, count, first, last in rows:
        grouped.setdefault(str(source), []).append((int(ok), str(kind), int(count), str(first), str(last)))
    stats: dict[str, PollStats] = {}
    for source, groups in grouped.items():
        stats[source] = PollStats(
            source=source,
            cycles=sum(g[2] for g in groups),
            ok=sum(g[2] for g in groups if g[0]),
            failed_by_kind={g[1] or "unknown": g[2] for g in groups if not g[0]},
            first_started=datetime.fromisoformat(min(g[3] for g in groups)),
            last_started=datetime.fromisoformat(max(g[4] for g in groups)),
        )
    return stats


def recording_began(store: Store) -> datetime | None:
    """When an upgraded archive began recording poll outcomes (None: recorded since its first poll)."""
    value = store.get_meta(RECORDED_SINCE_KEY)
    return datetime.fromisoformat(value) if value else None


def prune_polls_before(store: Store, cutoff: datetime) -> int:
    """Delete poll rows started before ``cutoff`` (the archive's retention cutoff)."""
    with store.transaction():
        return int(
            store.conn.execute("DELETE FROM polls WHERE started_at < ?", (format_timestamp(cutoff),)).rowcount
        )

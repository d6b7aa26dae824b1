"""Where each source stands: its cursor (the highest event id handled and the last poll's outcome), and
the staging of an unfinished walk (rows read but not yet committed to the archive)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from monitor.events import format_timestamp
from monitor.store.chain import iso, parse_time, staging_row
from monitor.store.meta import MetaMixin


@dataclass(frozen=True)
class Cursor:
    source: str
    last_id: int | None = None
    last_created_at: datetime | None = None
    floor_id: int | None = None
    floor_time: datetime | None = None
    last_success_at: datetime | None = None
    last_attempt_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    error_kind: str | None = None


# Archived ids (events as e) of the source ?1 within the range of its staged ids.
_STAGED_IDS_IN_EVENTS = (
    "e.event_id >= (SELECT min(event_id) FROM staging WHERE source = ?1) "
    "AND e.event_id <= (SELECT max(event_id) FROM staging WHERE source = ?1)"
)


def _walk_key(source: str) -> str:
    # A walk's progress is a small record kept beside its staged rows; meta holds it, so that no table (and
    # no migration) is needed for it.
    return f"walk_progress:{source}"


class CursorsMixin(MetaMixin):
    # cursors ------------------------------------------------------------------------------------------

    def get_cursor(self, source: str) -> Cursor | None:
        row = self.conn.execute(
            "SELECT source, last_id, last_created_at, floor_id, floor_time, last_success_at, "
            "last_attempt_at, "
            "last_error, last_error_at, error_kind FROM cursors WHERE source = ?",
            (source,),
        ).fetchone()
        if row is None:
            return None
        return Cursor(
            source=row[0],
            last_id=row[1],
            last_created_at=parse_time(row[2]),
            floor_id=row[3],
            floor_time=parse_time(row[4]),
            last_success_at=parse_time(row[5]),
            last_attempt_at=parse_time(row[6]),
            last_error=row[7],
            last_error_at=parse_time(row[8]),
            error_kind=row[9],
        )

    def cursors(self) -> list[Cursor]:
        names = [r[0] for r in self.conn.execute("SELECT source FROM cursors ORDER BY source")]
        return [c for c in (self.get_cursor(n) for n in names) if c is not None]

    def save_cursor(self, cursor: Cursor) -> None:
        self.conn.execute(
            """INSERT INTO cursors (source, last_id, last_created_at, floor_id, floor_time, last_success_at,
                   last_attempt_at, last_error, last_error_at, error_kind)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT(source) DO UPDATE SET last_id = excluded.last_id,
                   last_created_at = excluded.last_created_at, floor_id = excluded.floor_id,
                   floor_time = excluded.floor_time, last_success_at = excluded.last_success_at,
                   last_attempt_at = excluded.last_attempt_at, last_error = excluded.last_error,
                   last_error_at = excluded.last_error_at, error_kind = excluded.error_kind""",
            (
                cursor.source,
                cursor.last_id,
                iso(cursor.last_created_at),
                cursor.floor_id,
                iso(cursor.floor_time),
                iso(cursor.last_success_at),
                iso(cursor.last_attempt_at),
                cursor.last_error,
                iso(cursor.last_error_at),
                cursor.error_kind,
            ),
        )

    def record_poll_failure(self, source: str, *, at: datetime, kind: str, message: str) -> None:
        """Note a failed cycle without touching the cursor position."""
        with self.transaction():
            self.conn.execute(
                """INSERT INTO cursors (source, last_attempt_at, last_error, last_error_at, error_kind)
                   VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT(source) DO UPDATE SET last_attempt_at = excluded.last_attempt_at,
                       last_error = excluded.last_error, last_error_at = excluded.last_error_at,
                       error_kind = excluded.error_kind""",
                (source, iso(at), message, iso(at), kind),
            )

    # staging ------------------------------------------------------------------------------------------

    def clear_staging(self, source: str) -> None:
        """Forget the source's staged rows and its walk's progress: the next walk starts from page 1."""
        with self.transaction():
            self.conn.execute("DELETE FROM staging WHERE source = ?", (source,))
            self.delete_meta(_walk_key(source))

    staging_row = staticmethod(staging_row)

    def stage(self, rows: Iterable[tuple[Any, ...]], progress: tuple[str, str] | None = None) -> list[int]:
        """Stage rows made by ``staging_row``; an event staged twice keeps its first row. Returns the ids of
        rows whose event was staged before with other content (each id once, in page order).

        ``progress`` is (source, text) from the walk: saved in the same transaction as the rows, so the page
        a restarted walk resumes from (``walk_progress``) never names a page whose rows were lost.
        """
        rows = rows if isinstance(rows, list) else list(rows)
        conflicts: list[int] = []
        with self.transaction():
            inserted = self.conn.executemany(
                "INSERT INTO staging (source, event_id, created_at, created_ms, type, msg, "
                "user_email, workspace_name, branch_label, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                rows,
            ).rowcount
            if inserted < len(rows):
                # Some were staged already (an overlap page, or pages shifted by new events): the usual case
                # is the same entry again; another entry under a known id is worth knowing about.
                conflicts = self._staged_differently(rows)
            if progress is not None:
                self.set_meta(_walk_key(progress[0]), progress[1])
        return conflicts

    def _staged_differently(self, rows: list[tuple[Any, ...]]) -> list[int]:
        different: list[int] = []
        for start in range(0, len(rows), 500):
            chunk = rows[start : start + 500]
            source = chunk[0][0]
            marks = ",".join("?" * len(chunk))
            staged = dict(
                self.conn.execute(
                    f"SELECT event_id, raw FROM staging WHERE source = ? AND event_id IN ({marks})",  # noqa: S608
                    [source, *(row[1] for row in chunk)],
                ).fetchall()
            )
            different.extend(row[1] for row in chunk if row[1] in staged and staged[row[1]] != row[-1])
        return list(dict.fromkeys(different))

    def walk_progress(self, source: str) -> str | None:
        """What the last ``stage`` of the source's unfinished walk recorded (None: no walk in progress)."""
        return self.get_meta(_walk_key(source))

    def newest_staged(self, source: str) -> tuple[int, datetime] | None:
        """The highest staged id of the source and its created_at."""
        row = self.conn.execute(
            "SELECT event_id, created_at FROM staging WHERE source = ? ORDER BY event_id DESC LIMIT 1",
            (source,),
        ).fetchone()
        return (int(row[0]), datetime.fromisoformat(row[1])) if row else None

    def staged_conflicting_with_archive(self, source: str) -> list[tuple[int, str]]:
        """Inside the cycle's transaction: staged (id, raw JSON) that the archive holds with other content."""
        # The archive's side is bounded by the staged ids (an incremental cycle's overlap: a few pages at the
        # top): without the bounds PostgreSQL may join every archived event of the source (5 s at 1M).
        sql = (
            "SELECT s.event_id, s.raw FROM staging s JOIN events e ON e.source = s.source "  # noqa: S608
            f"AND e.event_id = s.event_id WHERE s.source = ?1 AND e.raw != s.raw AND {_STAGED_IDS_IN_EVENTS}"
        )
        return [(int(row[0]), str(row[1])) for row in self.conn.execute(sql, (source,))]

    def staged_raw(self, source: str, event_id: int) -> str | None:
        row = self.conn.execute(
            "SELECT raw FROM staging WHERE source = ? AND event_id = ?", (source, event_id)
        ).fetchone()
        return str(row[0]) if row else None

    def unstage_event(self, source: str, event_id: int) -> None:
        """Inside a transaction: drop one staged event (it was rejected at the commit)."""
        self.conn.execute("DELETE FROM staging WHERE source = ? AND event_id = ?", (source, event_id))

    def drop_archived_from_staging(self, source: str) -> None:
        """Inside the cycle's transaction: forget staged events the archive already holds."""
        sql = (
            "DELETE FROM staging WHERE source = ?1 AND event_id IN "  # noqa: S608 - fixed text
            f"(SELECT event_id FROM events e WHERE e.source = ?1 AND {_STAGED_IDS_IN_EVENTS})"
        )
        self.conn.execute(sql, (source,))

    def iter_staged(
        self,
        source: str,
        *,
        above_id: int | None = None,
        not_before: datetime | None = None,
        batch: int = 2000,
    ) -> Iterator[tuple[Any, ...]]:
        """Staged rows in ascending id order, a batch in memory at a time: (event_id, created_at, created_ms,
        type, msg, user_email, workspace_name, branch_label, raw): ``staging_row``'s columns after the source.

        ``above_id`` and ``not_before`` leave out older events. created_at is compared as text, which
        orders exactly as time does because every staged value has the one fixed-width UTC form.
        """
        clauses: list[str] = ["source = ?"]
        params: list[Any] = [source]
        if above_id is not None:
            clauses.append("event_id > ?")
            params.append(above_id)
        if not_before is not None:
            clauses.append("created_at >= ?")
            params.append(format_timestamp(not_before))
        columns = "event_id, created_at, created_ms, type, msg, user_email, workspace_name, branch_label, raw"
        where = " AND ".join(clauses)  # fixed clauses; the values are parameters
        yield from self.stream(
            f"SELECT {columns} FROM staging WHERE {where} ORDER BY event_id",  # noqa: S608
            params,
            batch,
        )

    def unstage(self, source: str) -> None:
        """Inside the cycle's transaction: drop the source's staged rows once they are archived.

        When no other source has rows staged (the usual case) the whole table is emptied with an
        unqualified DELETE, which SQLite carries out by dropping its pages instead of row by row:
        seconds faster after a large backfill.
        """
        others = self.conn.execute(
            "SELECT EXISTS (SELECT 1 FROM staging WHERE source < ?) "
            "OR EXISTS (SELECT 1 FROM staging WHERE source > ?)",
            (source, source),
        ).fetchone()[0]
        if others:
            self.conn.execute("DELETE FROM staging WHERE source = ?", (source,))
        else:
            self.conn.execute(self.empty_table("staging"))
        self.delete_meta(_walk_key(source))

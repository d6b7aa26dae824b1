"""The archive: appending events to the hash chain, reading them back, ``verify`` and ``prune_before``.

``verify`` trusts nothing in ``meta``: it re-walks the chain from where the newest prune record says the
kept chain starts (genesis when there is none), re-deriving every row's indexed columns from its raw entry.
"""

from __future__ import annotations

import functools
import hashlib
import sqlite3
from collections.abc import Generator, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from monitor.events import AuditEvent, canonical_json, decode_entry, format_timestamp
from monitor.store import lifecycle
from monitor.store.chain import (
    GENESIS_HASH,
    INSERT_PRUNE,
    SELECT_PRUNES,
    PruneRecord,
    VerifyResult,
    chain_hash,
    missing,
    parse_time,
    row_problem,
    staging_row,
)
from monitor.store.connection import StoreError
from monitor.store.meta import MetaMixin

_INSERT_EVENT_AT = """INSERT INTO events (seq, source, event_id, created_at, created_ms, type, msg,
               user_email, workspace_name, branch_label, raw, archived_at, hash)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""


# Values whose spelling a JSON library may change: escapes, non-ASCII text, a line separator, floats in
# exponent form, an integer beyond 64 bits, nested objects with their keys in order.
_SPELLING_PROBE: dict[str, Any] = {
    "text": 'a "quoted" \\ back\\slash/ é 😀 \u2028 \x7f \x01 end',
    "numbers": [1.5, -0.0, 1e-07, 1e16, 10**30, -(2**63)],
    "object": {"b": {"y": [], "x": {}}, "a": [True, False, None]},
}


# The order of an export (the CSV of a month): total, so that a read can be taken up again after a row.
_IN_TIME_ORDER = "ORDER BY created_ms, created_at, event_id, source"


class ArchiveMixin(MetaMixin):
    """The ``events`` and ``prunes`` tables: the chain."""

    # the chain's head ---------------------------------------------------------------------------------

    def head(self) -> tuple[int, str]:
        """The chain's newest link, an event, a prune record or an alert history record: (seq, hash);
        (0, genesis) when empty."""
        row = self.conn.execute(
            "SELECT seq, hash FROM (SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1) AS e "
            "UNION ALL SELECT seq, hash FROM (SELECT seq, hash FROM prunes ORDER BY seq DESC LIMIT 1) AS p "
            "UNION ALL SELECT seq, hash FROM (SELECT seq, hash FROM alert_actions ORDER BY seq DESC LIMIT 1) "
            "AS a ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        return (int(row[0]), str(row[1])) if row else (0, GENESIS_HASH)

    def head_hash(self) -> str:
        return self.head()[1]

    def chain_link(self, seq: int) -> str | None:
        """The hash of the chain link at ``seq`` (an event, a prune or an alert history record), None if
        there is none."""
        row = self.conn.execute(
            "SELECT hash FROM events WHERE seq = ?1 UNION ALL SELECT hash FROM prunes WHERE seq = ?1 "
            "UNION ALL SELECT hash FROM alert_actions WHERE seq = ?1",
            (seq,),
        ).fetchone()
        return str(row[0]) if row else None

    def prunes(self) -> list[PruneRecord]:
        """Every prune record, oldest first (one per prune that cut rows: a handful a year)."""
        return [PruneRecord.from_row(row) for row in self.conn.execute(SELECT_PRUNES + " ORDER BY seq")]

    # appending ----------------------------------------------------------------------------------------

    @staticmethod
    def archive_row(
        event: AuditEvent, raw_json: str, prev_hash: str, archived_at: datetime
    ) -> tuple[str, tuple[Any, ...]]:
        """The next hash link and the events row for one event (insert them with ``insert_archived``)."""
        return ArchiveMixin.archive_staged_row(
            event.source, staging_row(event, raw_json)[1:], prev_hash, format_timestamp(archived_at)
        )

    @staticmethod
    def archive_staged_row(
        source: str, staged: tuple[Any, ...], prev_hash: str, archived_at: str
    ) -> tuple[str, tuple[Any, ...]]:
        """The next hash link and the events row for a row of ``iter_staged`` (``archived_at`` formatted)."""
        event_id, created_at, created_ms, type_, msg, email, workspace, branch, raw_json = staged
        new_hash = chain_hash(prev_hash, source, event_id, raw_json)
        row = (
            source,
            event_id,
            created_at,
            created_ms,
            type_,
            msg,
            email,
            workspace,
            branch,
            raw_json,
            archived_at,
            new_hash,
        )
        return new_hash, row

    def insert_archived(self, rows: list[tuple[Any, ...]]) -> None:
        """Inside a transaction: append rows made by ``archive_row``, in chain order."""
        if not rows:
            return
        # Every row takes its seq explicitly, from the chain's head: SQLite would give the events table's
        # max(seq) + 1, which is the seq of a prune record at the head (or, after a prune of every row, 1
        # again), and PostgreSQL gives none. The writers' lock keeps the head still meanwhile.
        first = self.head()[0] + 1
        self.conn.executemany(_INSERT_EVENT_AT, ((seq, *row) for seq, row in enumerate(rows, start=first)))

    def archive(self, event: AuditEvent, raw_json: str, prev_hash: str, archived_at: datetime) -> str:
        """Append one event (inside a transaction); returns its hash for the next link."""
        new_hash, row = self.archive_row(event, raw_json, prev_hash, archived_at)
        self.insert_archived([row])
        return new_hash

    def reject(self, source: str, raw: Any, reason: str, seen_at: datetime) -> None:
        # A rejected entry may hold lone surrogates (that can be why it was rejected): keep them as backslash
        # escapes (\ud800) so the row can be stored. Valid text round-trips unchanged.
        raw_json = canonical_json(raw).encode("utf-8", "backslashreplace").decode("utf-8")
        self.conn.execute(
            "INSERT INTO rejected (source, raw_sha256, raw, reason, seen_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (
                source,
                hashlib.sha256(raw_json.encode()).hexdigest(),
                raw_json,
                reason,
                format_timestamp(seen_at),
            ),
        )

    # reading ------------------------------------------------------------------------------------------

    def event_count(self, source: str | None = None) -> int:
        if source is None:
            return int(self.conn.execute("SELECT count(*) FROM events").fetchone()[0])
        return int(self.conn.execute("SELECT count(*) FROM events WHERE source = ?", (source,)).fetchone()[0])

    def event_counts_by_source(self) -> dict[str, int]:
        """Archived events per source (sources with none are absent)."""
        return {
            str(source): int(count)
            for source, count in self.conn.execute("SELECT source, count(*) FROM events GROUP BY source")
        }

    def newest_event_time(self, source: str | None = None) -> datetime | None:
        # The newest millisecond comes from an index (created_ms, or source + created_ms); created_at
        # then picks the exact microsecond among the few rows of that millisecond.
        if source is None:
            row = self.conn.execute(
                "SELECT max(created_at) FROM events WHERE created_ms = (SELECT max(created_ms) FROM events)"
            ).fetchone()
        else:
            row = self.conn.execute(
                "SELECT max(created_at) FROM events WHERE source = ?1 AND created_ms = "
                "(SELECT max(created_ms) FROM events WHERE source = ?1)",
                (source,),
            ).fetchone()
        return parse_time(row[0]) if row and row[0] else None

    def oldest_event_time(self) -> datetime | None:
        """The created_at of the oldest archived event (by event time), None for an empty archive."""
        # As newest_event_time: the millisecond from the index, then the exact microsecond among its rows.
        row = self.conn.execute(
            "SELECT min(created_at) FROM events WHERE created_ms = (SELECT min(created_ms) FROM events)"
        ).fetchone()
        return parse_time(row[0]) if row else None

    def first_archived_at(self, source: str) -> datetime | None:
        """When the source's lowest event id still archived was archived: its first successful poll."""
        row = self.conn.execute(
            "SELECT archived_at FROM events WHERE source = ? ORDER BY event_id LIMIT 1", (source,)
        ).fetchone()
        return parse_time(row[0]) if row else None

    def iter_events(
        self, since: datetime | None = None, until: datetime | None = None, *, source: str | None = None
    ) -> Iterator[AuditEvent]:
        """Archived events with since <= created_at < until, in (created_at, id, source) order, streamed.

        Events are rebuilt from the stored columns and raw entry rather than re-normalised: ``normalize``
        derived those columns when the event was archived (``verify`` checks they still match), and
        skipping its timestamp parsing makes a month-long export or report about a third faster.
        """
        clauses, params = self._range(since, until, source)
        rows = self.stream(
            f"SELECT source, event_id, created_at, type, msg, raw FROM events {clauses} {_IN_TIME_ORDER}",  # noqa: S608
            params,
        )
        for name, event_id, created_at, event_type, msg, raw in rows:
            when = datetime.fromisoformat(created_at)
            yield AuditEvent(name, event_id, when, event_type, msg, decode_entry(raw))

    def iter_entry_values(
        self,
        since: datetime | None,
        until: datetime | None,
        paths: Sequence[str],
        *,
        source: str | None = None,
    ) -> Generator[tuple[Any, ...], None, None] | None:
        """``iter_events``' events, in its order, as rows ``(source, event_id, created_at, type, msg, raw,
        *values)``: each dotted path's value in the entry (``user.email``) in the archive's own JSON
        spelling (``canonical_json``'s), None when the entry has none; ``created_at`` is the stored UTC
        text.

        SQLite reads the values (``->``) without the entry being decoded in Python, the report's CSV's
        largest cost: ``raw`` is then None, except for a row SQLite cannot read (an entry holding NaN,
        which the stdlib writes and SQLite's JSON refuses), whose values are then None. None instead of
        rows on PostgreSQL (whose ``->`` spells values its own way), or on a SQLite that does not spell a
        value as the archive does (``_sqlite_spells_values_as_archived``): the caller reads
        ``iter_events`` then.
        """
        if self.is_postgresql or not self._sqlite_spells_values_as_archived:
            return None
        clauses, params = self._range(since, until, source)
        read = ", ".join("raw -> ?" for _ in paths)
        guarded = ", ".join("CASE WHEN readable THEN raw -> ? END" for _ in paths)
        paths_params = [f"$.{path}" for path in paths]
        return self._entry_values(
            f"SELECT source, event_id, created_at, type, msg, NULL, {read} "  # noqa: S608
            f"FROM events {clauses} {_IN_TIME_ORDER}",
            f"SELECT source, event_id, created_at, type, msg, CASE WHEN readable THEN NULL ELSE raw END, "  # noqa: S608
            f"{guarded} FROM (SELECT *, json_valid(raw) AS readable FROM events {clauses}) "
            f"{_IN_TIME_ORDER} LIMIT -1 OFFSET ?",
            [*paths_params, *params],
        )

    def _entry_values(
        self, read: str, guarded: str, params: list[Any]
    ) -> Generator[tuple[Any, ...], None, None]:
        """The rows of ``read``; if SQLite finds an entry it cannot read on the way (``->`` fails the whole
        statement), the rest from ``guarded``, the same rows in the same (total) order, each entry checked
        first (``json_valid``), which costs some 2 microseconds a row: only an archive holding such an
        entry pays it. Both in one snapshot, so the rest is the rest of the same rows."""
        done = 0
        with self.read_snapshot():
            try:
                for row in self.stream(read, params):
                    yield row
                    done += 1
                return
            except sqlite3.OperationalError as exc:
                if "malformed JSON" not in str(exc):
                    raise
            yield from self.stream(guarded, [*params, done])

    @functools.cached_property
    def _sqlite_spells_values_as_archived(self) -> bool:
        """Whether this SQLite's ``->`` gives a value of an archived entry exactly as the archive spells it
        (SQLite 3.38 on copies the value's text): tried once on an entry of awkward values."""
        text = canonical_json(_SPELLING_PROBE)
        try:
            spelled = [
                self.conn.execute("SELECT ? -> ?", (text, f"$.{key}")).fetchone()[0]
                for key in _SPELLING_PROBE
            ]
        except sqlite3.Error:  # before 3.38: no ->
            return False
        return spelled == [canonical_json(value) for value in _SPELLING_PROBE.values()]

    def events_by_id(self, source: str, event_ids: Iterable[int]) -> list[AuditEvent]:
        """The archived events of ``source`` with these ids, in id order (an alert's triggering events)."""
        ids = sorted(set(event_ids))
        if not ids:
            return []
        marks = ",".join("?" for _ in ids)
        rows = self.conn.execute(
            f"SELECT source, event_id, created_at, type, msg, raw FROM events "  # noqa: S608 - only ? marks
            f"WHERE source = ? AND event_id IN ({marks}) ORDER BY event_id",
            [source, *ids],
        ).fetchall()
        return [
            AuditEvent(name, event_id, datetime.fromisoformat(created_at), event_type, msg, decode_entry(raw))
            for name, event_id, created_at, event_type, msg, raw in rows
        ]

    @staticmethod
    def _range(since: datetime | None, until: datetime | None, source: str | None) -> tuple[str, list[Any]]:
        conditions, params = [], []
        # created_ms (indexed, truncated to the millisecond) bounds the range so SQLite seeks instead of
        # scanning the whole archive; created_at (microseconds) keeps the bounds exact.
        if since is not None:
            conditions.append("created_ms >= ? AND created_at >= ?")
            params += [int(since.timestamp() * 1000), format_timestamp(since)]
        if until is not None:
            conditions.append("created_ms <= ? AND created_at < ?")
            params += [int(until.timestamp() * 1000), format_timestamp(until)]
        if source is not None:
            conditions.append("source = ?")
            params.append(source)
        return ("WHERE " + " AND ".join(conditions)) if conditions else "", params

    # verify and prune ---------------------------------------------------------------------------------

    def verify(self, *, through: int | None = None, after: int | None = None) -> VerifyResult:
        """Re-walk the hash chain, events and prune records in seq order, re-deriving the indexed columns.

        The walk starts where the newest prune record says its cut ended (at genesis when there is none),
        and that record is itself a link the walk checks. A gap in seq is rows deleted without a prune
        record; a cursor that has moved past archived events while the archive holds none of them is rows
        deleted wholesale. ``through`` stops the walk after that seq (the part a prune is about to cut).

        ``after`` starts the walk later, chaining from the stored hash of the link at that seq (which must
        still be there): every later link is re-hashed and checked, the links up to it are not read. The
        monthly report walks from the month's opening head so (``monitor/report/figures.py``); the result
        says where it started (``start_seq``, ``start_hash``, ``whole``).
        """
        prunes = self.prunes()
        stop = self.head()[0] if through is None else through
        start = max(prunes, key=lambda p: p.through_seq, default=None)
        start_seq, prev = (start.through_seq, start.through_hash) if start else (0, GENESIS_HASH)
        if start is not None and start.seq <= start.through_seq:
            return VerifyResult(
                False, 0, prev, start.seq, reason=f"prune record at seq {start.seq} cuts rows after itself"
            )
        leftover = self.conn.execute(
            "SELECT seq, source, event_id FROM events WHERE seq <= ? ORDER BY seq LIMIT 1", (start_seq,)
        ).fetchone()
        if leftover is not None and start is not None:
            return VerifyResult(
                False,
                0,
                prev,
                leftover[0],
                leftover[1],
                leftover[2],
                reason=f"the row lies inside the range the prune record at seq {start.seq} "
                f"cut (through seq {start_seq})",
            )
        if start is not None and start.cutoff is not None:
            # The prune cut the longest prefix older than its cutoff, so the row it kept first is not older
            # (a record written by hand to cover rows deleted by hand need not say so).
            first_kept = self.conn.execute(
                "SELECT seq, source, event_id, created_at FROM events WHERE seq = ?", (start_seq + 1,)
            ).fetchone()
            if first_kept is not None and first_kept[3] < format_timestamp(start.cutoff):
                return VerifyResult(
                    False,
                    0,
                    prev,
                    first_kept[0],
                    first_kept[1],
                    first_kept[2],
                    reason=f"the prune record at seq {start.seq} cut events older than "
                    f"{format_timestamp(start.cutoff)}, but kept this older row first",
                )
        whole = True
        if after is not None and after > start_seq:
            link = self.chain_link(after)
            if link is None:
                return VerifyResult(
                    False, 0, prev, after, reason=f"row {after}, where the walk was to start, is missing"
                )
            start_seq, prev, whole = after, link, False
        start_hash = prev
        # The links beside the events (prune records, alert history records), merged in seq order.
        walked_prunes = sum(1 for p in prunes if start_seq < p.seq <= stop)
        actions = lifecycle.actions_between(self, start_seq, stop)  # type: ignore[arg-type]
        pending: list[PruneRecord | lifecycle.ActionRecord] = sorted(
            [*(p for p in prunes if start_seq < p.seq <= stop), *actions], key=lambda link: link.seq
        )
        expected, checked = start_seq + 1, 0

        def gap(seq: int) -> str:
            what = (
                missing(expected, seq - 1)
                .replace(" is missing", " before it is missing")
                .replace(" are missing", " before it are missing")
            )
            if expected == start_seq + 1 and whole:
                return f"{what} and no prune record in the chain accounts for them"
            return f"{what} (deleted)"

        def check_prunes(before: int) -> VerifyResult | None:
            nonlocal prev, expected
            while pending and pending[0].seq < before:
                record = pending.pop(0)
                if record.seq != expected:
                    return VerifyResult(False, checked, prev, record.seq, reason=gap(record.seq))
                if record.link_hash(prev) != record.hash:
                    return VerifyResult(
                        False,
                        checked,
                        prev,
                        record.seq,
                        reason=f"{record.label} hash does not match its content or its predecessor",
                    )
                prev, expected = record.hash, record.seq + 1
            return None

        rows = self.stream(
            "SELECT seq, source, event_id, created_at, created_ms, type, msg, user_email, workspace_name, "
            "branch_label, raw, hash FROM events WHERE seq > ? AND seq <= ? ORDER BY seq",
            (start_seq, stop),
        )
        for row in rows:
            seq = row[0]
            if checked % 2000 == 0:
                # The daemon verifies on a schedule: a walk of millions of rows must not hold up SIGTERM.
                self._check_interrupt("the end of a verify")
            if pending and (failed := check_prunes(seq)) is not None:
                return failed
            checked += 1
            if seq != expected:
                return VerifyResult(False, checked, prev, seq, row[1], row[2], gap(seq))
            # Sliced, not unpacked: this loop runs for every archived row.
            problem = row_problem(prev, row[1], row[2], row[3:10], row[10], row[11])
            if problem is not None:
                return VerifyResult(False, checked, prev, seq, row[1], row[2], problem)
            prev, expected = row[11], seq + 1
        if (failed := check_prunes(stop + 1)) is not None:
            return failed
        if expected <= stop:  # the walk ended before `stop`: the rows up to it are gone (a prune's bound)
            return VerifyResult(False, checked, prev, stop, reason=missing(expected, stop))
        if not prunes and through is None:
            for source, last_id in self._cursors_past_an_empty_archive():
                return VerifyResult(
                    False,
                    checked,
                    prev,
                    bad_source=source,
                    reason=f"the cursor of source {source} is at event id {last_id}, but the archive holds "
                    "none of its events and no prune record",
                )
        return VerifyResult(
            True,
            checked,
            prev,
            prunes=walked_prunes,
            head_seq=expected - 1,
            actions=len(actions),
            start_seq=start_seq,
            start_hash=start_hash,
            whole=whole,
        )

    def _cursors_past_an_empty_archive(self) -> list[tuple[str, int]]:
        """Sources whose cursor moved past events it must have archived, with none of them in the archive.

        A cursor at its floor (backfill none) or whose newest event is older than its floor time (backfill
        from a date after every event) archived nothing, and an empty upstream log leaves it at 0. Text
        comparison of the times is exact: every stored time has the one fixed-width UTC form.
        """
        return [
            (str(source), int(last_id))
            for source, last_id in self.conn.execute(
                "SELECT source, last_id FROM cursors AS c WHERE last_id > coalesce(floor_id, 0) "
                "AND (floor_time IS NULL OR last_created_at >= floor_time) "
                "AND NOT EXISTS (SELECT 1 FROM events AS e WHERE e.source = c.source) ORDER BY source"
            )
        ]

    def prune_before(self, cutoff: datetime, *, at: datetime | None = None) -> int:
        """Delete events archived before ``cutoff`` (by event time), recording the cut in the chain.

        The chain is in archive order, so we prune the longest prefix (by seq) whose events are all
        older than the cutoff. A prune record appended at the head names the last link cut and its hash,
        where the kept chain now starts; it is a link of the chain, so editing or removing it breaks the
        chain like editing an event does.
        """
        when = at if at is not None else datetime.now(UTC)
        with self.transaction():
            head_seq, head_hash = self.head()
            first_young = self.conn.execute(
                "SELECT min(seq) FROM events WHERE created_at >= ?", (format_timestamp(cutoff),)
            ).fetchone()[0]
            bound = first_young if first_young is not None else head_seq + 1
            oldest = self.conn.execute("SELECT min(seq) FROM events").fetchone()[0]
            if oldest is None or oldest >= bound:
                return 0
            # Only a sound prefix is cut: the prune record vouches for what it removed, so cutting rows
            # that were already tampered with would turn the tampering into a clean-looking prune.
            cut_part = self.verify(through=bound - 1)
            if not cut_part.ok:
                raise StoreError(
                    f"{self.path}: not pruning: the part to cut fails verification at seq "
                    f"{cut_part.bad_seq}: {cut_part.reason}"
                )
            deleted = int(self.conn.execute("DELETE FROM events WHERE seq < ?", (bound,)).rowcount)
            # The kept chain starts after the last link cut (an event, or a prune record kept as history).
            through_seq, through_hash = bound - 1, cut_part.head_hash
            record = PruneRecord(head_seq + 1, when, cutoff, deleted, through_seq, through_hash, "").linked(
                head_hash
            )
            self.conn.execute(INSERT_PRUNE, record.row())
            # Kept for `status` and the report's coverage note; verify reads the prune records, never these.
            self.set_meta("chain_anchor_hash", through_hash)
            self.set_meta("chain_anchor_pruned_at", format_timestamp(when))
            return deleted

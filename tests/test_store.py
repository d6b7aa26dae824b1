"""The archive: schema, hash chain, verify naming the first bad row, prune keeping the chain verifiable."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from monitor.events import canonical_json, normalize
from monitor.store import SCHEMA_VERSION, Cursor, Store, StoreError, StoreInterrupted
from monitor.store.pg import WRITER_LOCK_KEY
from monitor.store.schema import upgrade_sqlite

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def entry(event_id: int, minutes: int = 0, **extra: object) -> dict[str, object]:
    return {
        "id": event_id,
        "created_at": (T0 + timedelta(minutes=minutes)).isoformat(),
        "type": "Update Function",
        "msg": f"event {event_id}",
        "user": {"id": 1, "email": "ana@corp.io"},
        "workspace": {"id": 1, "name": "shop"},
        **extra,
    }


def archive(store: Store, entries: list[dict[str, object]], source: str = "prod") -> None:
    with store.transaction():
        prev = store.head_hash()
        for item in entries:
            raw = canonical_json(item)
            prev = store.archive(normalize(source, item), raw, prev, T0)


def test_new_file_is_private_and_migrated(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "a.db"
    with Store.open(path) as store:
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_reopening_keeps_data_and_schema(store_target: str) -> None:
    path = store_target
    with Store.open(path) as store:
        archive(store, [entry(1), entry(2, 1)])
    with Store.open(path) as store:
        assert store.event_count() == 2
        assert store.verify().ok


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with Store.open(path) as store:
        store.conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer than this program"):
        Store.open(path)


def test_duplicate_event_is_refused_by_the_archive(store_target: str) -> None:
    with Store.open(store_target) as store:
        archive(store, [entry(1)])
        with pytest.raises(Exception, match="(?i)unique"):
            archive(store, [entry(1)])
        assert store.event_count() == 1 and store.verify().ok


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        (
            "UPDATE events SET raw = replace(raw, 'event 3', 'event X') WHERE event_id = 3",
            "hash does not match",
        ),
        ("UPDATE events SET type = 'Login' WHERE event_id = 3", "indexed columns differ"),
        # created_ms bounds every range query (export, report): shifting it would hide the event from them.
        ("UPDATE events SET created_ms = created_ms + 86400000 WHERE event_id = 3", "indexed columns differ"),
        ("DELETE FROM events WHERE event_id = 2", "row 2 before it is missing"),
    ],
)
def test_verify_names_the_first_bad_row(store_target: str, sql: str, reason: str) -> None:
    with Store.open(store_target) as store:
        archive(store, [entry(i, i) for i in range(1, 6)])
        assert store.verify().ok
        store.conn.execute(sql)
        result = store.verify()
        assert not result.ok
        assert result.bad_event_id == 3
        assert reason in result.reason


def test_prune_keeps_chain_verifiable(store_target: str) -> None:
    with Store.open(store_target) as store:
        archive(store, [entry(i, i * 60) for i in range(1, 11)])  # one per hour
        deleted = store.prune_before(T0 + timedelta(hours=5, minutes=30))
        assert deleted == 5
        assert store.event_count() == 5
        result = store.verify()
        assert result.ok and result.rows_checked == 5
        archive(store, [entry(11, 11 * 60)])
        assert store.verify().ok
        store.conn.execute("UPDATE events SET raw = replace(raw, 'event 7', 'event Y') WHERE event_id = 7")
        assert store.verify().bad_event_id == 7


def test_failed_transaction_leaves_nothing(store_target: str) -> None:
    with Store.open(store_target) as store:
        with pytest.raises(RuntimeError), store.transaction():
            prev = store.head_hash()
            store.archive(normalize("prod", entry(1)), canonical_json(entry(1)), prev, T0)
            raise RuntimeError("crash in the middle of a cycle")
        assert store.event_count() == 0


def test_read_only_file_gives_clear_error(store_target: str) -> None:
    path = store_target
    with Store.open(path) as store:
        archive(store, [entry(1)])
    with Store.open(path, readonly=True) as store:
        assert store.event_count() == 1
        with pytest.raises(StoreError, match="cannot write"):
            archive(store, [entry(2)])


def test_iter_events_range_and_order(store_target: str) -> None:
    with Store.open(store_target) as store:
        archive(store, [entry(5, 30), entry(3, 10), entry(4, 20)])
        ids = [e.id for e in store.iter_events(T0 + timedelta(minutes=10), T0 + timedelta(minutes=30))]
        assert ids == [3, 4]
        assert json.loads(json.dumps(next(store.iter_events()).to_dict()))["id"] == 3


def test_the_first_events_of_types_are_the_same_read_by_type_or_in_time_order(store_target: str) -> None:
    """Both ways of reading them (few matching events among many, or many) give the same rows, ties in
    time broken by source and id alike."""
    items = [
        entry(i, minutes=i // 3, type=("Delete Table", "Login", "Create Token")[i % 3]) for i in range(1, 61)
    ]
    with Store.open(store_target) as store:
        archive(store, items, source="b")
        archive(store, [entry(i, minutes=i // 3, type="Delete Table") for i in range(1, 61, 3)], source="a")
        start_ms, end_ms = int(T0.timestamp() * 1000), int((T0 + timedelta(minutes=15)).timestamp() * 1000)
        types = ["Create Token", "Delete Table"]
        total, by_type = store.events_of_types(start_ms, end_ms, types, 7, within=10**6)
        _, in_time_order = store.events_of_types(start_ms, end_ms, types, 7, within=1)
        expected = sorted(
            (
                (i.get("created_at"), i.get("type"), source, i.get("id"))
                for source, group in (("b", items), ("a", [entry(i, i // 3) for i in range(1, 61, 3)]))
                for i in group
                if i["type"] in types or source == "a"
            ),
            key=lambda r: (r[0], r[2], r[3]),
        )
        assert total == len([r for r in expected if r[0] < (T0 + timedelta(minutes=15)).isoformat()])
        assert by_type == in_time_order
        assert [(row[6], row[7]) for row in by_type] == [(r[2], r[3]) for r in expected[:7]]


def test_staging_of_an_older_schema_is_recreated_with_the_derived_columns(tmp_path: Path) -> None:
    """An archive of schema 2 (staging held only the raw JSON) opens, keeps its events and stages anew."""
    path = tmp_path / "a.db"
    conn = sqlite3.connect(path, isolation_level=None)
    upgrade_sqlite(conn, "0002")
    conn.execute("INSERT INTO staging (source, event_id, raw) VALUES ('prod', 1, '{}')")  # a cycle cut short
    conn.close()
    with Store.open(path) as store:
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert store.conn.execute("SELECT count(*) FROM staging").fetchone()[0] == 0
        event = normalize("prod", entry(5, 2))
        store.stage([Store.staging_row(event, canonical_json(entry(5, 2)))])
        (staged,) = store.iter_staged("prod")
        assert staged[:2] == (5, "2026-03-01T09:02:00.000000+00:00")
        assert staged[-1] == canonical_json(entry(5, 2))


def test_iter_staged_leaves_out_ids_and_times_below_the_floor(store_target: str) -> None:
    with Store.open(store_target) as store:
        items = [entry(i, minutes=i) for i in (3, 1, 2, 4)]
        store.stage([Store.staging_row(normalize("prod", i), canonical_json(i)) for i in items])
        store.stage([Store.staging_row(normalize("other", items[0]), canonical_json(items[0]))])
        assert [row[0] for row in store.iter_staged("prod")] == [1, 2, 3, 4]
        assert [row[0] for row in store.iter_staged("prod", above_id=2)] == [3, 4]
        assert [row[0] for row in store.iter_staged("prod", not_before=T0 + timedelta(minutes=2))] == [
            2,
            3,
            4,
        ]
        with store.transaction():
            store.unstage("prod")  # another source's rows stay
        assert [row[0] for row in store.iter_staged("other")] == [3]
        assert list(store.iter_staged("prod")) == []
        with store.transaction():
            store.unstage("other")
        assert store.conn.execute("SELECT count(*) FROM staging").fetchone()[0] == 0


def test_newest_event_time_per_source_to_the_microsecond(store_target: str) -> None:
    # The lag every poll and /metrics report: read from the (source, created_ms) index, exact to the µs.
    same_ms = [
        {**entry(1), "created_at": "2026-03-01T10:00:00.000100+00:00"},
        {**entry(2), "created_at": "2026-03-01T10:00:00.000900+00:00"},  # same millisecond, later
        {**entry(3), "created_at": "2026-03-01T09:00:00+00:00"},  # a higher id, older
    ]
    with Store.open(store_target) as store:
        assert store.newest_event_time() is None and store.newest_event_time("prod") is None
        archive(store, same_ms)
        archive(store, [entry(1, minutes=30)], source="staging")
        assert store.newest_event_time("prod") == datetime(2026, 3, 1, 10, 0, 0, 900, tzinfo=UTC)
        assert store.newest_event_time("staging") == T0 + timedelta(minutes=30)
        assert store.newest_event_time() == datetime(2026, 3, 1, 10, 0, 0, 900, tzinfo=UTC)
        if store.dialect == "sqlite":
            plan = store.conn.execute(
                "EXPLAIN QUERY PLAN SELECT max(created_ms) FROM events WHERE source = 'prod'"
            ).fetchall()
            assert "events_source_time_cover" in str(plan)


# --- prune records, the cursor check, legacy archives ------------------------------------------------------

LEGACY = Path(__file__).parent / "data" / "archives"


def load_dump(dump: Path, path: Path) -> None:
    """A database made from an SQL dump of an archive written by an earlier release."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(dump.read_text())
    conn.close()


def chain_seq(store: Store, event_id: int) -> int:
    return int(store.conn.execute("SELECT seq FROM events WHERE event_id = ?", (event_id,)).fetchone()[0])


def test_deleting_the_oldest_rows_and_pointing_meta_at_the_cut_is_detected(store_target: str) -> None:
    """The attack verify used to miss: the 40 oldest rows deleted, meta set to the hash they ended with."""
    with Store.open(store_target) as store:
        archive(store, [entry(i, i) for i in range(1, 61)])
        head = store.head_hash()
        cut_hash = store.conn.execute("SELECT hash FROM events WHERE event_id = 40").fetchone()[0]
        store.conn.execute("DELETE FROM events WHERE event_id <= 40")
        store.set_meta("chain_anchor_hash", cut_hash)
        store.set_meta("chain_anchor_pruned_at", "2026-03-02T00:00:00.000000+00:00")
        result = store.verify()
        assert store.head_hash() == head  # the head is unchanged: only the start of the chain can tell
        assert not result.ok
        assert result.bad_event_id == 41
        assert "rows 1-40 before it are missing" in result.reason
        assert "no prune record" in result.reason


def test_a_prune_is_a_record_in_the_chain(store_target: str) -> None:
    with Store.open(store_target) as store:
        archive(store, [entry(i, i * 60) for i in range(1, 11)])
        head_before = store.head_hash()
        assert store.prune_before(T0 + timedelta(hours=5, minutes=30)) == 5
        (record,) = store.prunes()
        assert (record.seq, record.through_seq, record.cut) == (11, 5, 5)
        assert record.cutoff == T0 + timedelta(hours=5, minutes=30)
        assert store.head_hash() == record.hash != head_before  # the prune is the newest link
        archive(store, [entry(11, 11 * 60)])
        assert chain_seq(store, 11) == 12  # events after the prune chain from the record
        result = store.verify()
        assert result.ok and result.rows_checked == 6 and result.prunes == 1

        # meta is not evidence any more: editing it changes nothing
        store.set_meta("chain_anchor_hash", "0" * 64)
        assert store.verify().ok


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("UPDATE prunes SET through_seq = 3", "prune record"),
        ("UPDATE prunes SET cut = 1", "prune record"),
        ("DELETE FROM prunes", "no prune record"),
        # the prune record's claim is kept, but rows of the kept part are cut as well
        ("DELETE FROM events WHERE event_id = 6", "missing"),
    ],
)
def test_tampering_with_a_prune_is_detected(store_target: str, sql: str, reason: str) -> None:
    with Store.open(store_target) as store:
        archive(store, [entry(i, i * 60) for i in range(1, 11)])
        store.prune_before(T0 + timedelta(hours=5, minutes=30))
        archive(store, [entry(11, 11 * 60)])
        store.conn.execute(sql)
        result = store.verify()
        assert not result.ok
        assert reason in result.reason


def test_a_prune_record_rehashed_with_a_cutoff_its_kept_rows_contradict_is_caught(store_target: str) -> None:
    """The hash of a record rewritten at the head can be recomputed; its claim is still checked."""
    with Store.open(store_target) as store:
        archive(store, [entry(i, i * 60) for i in range(1, 11)])
        store.prune_before(T0 + timedelta(hours=5, minutes=30))
        (record,) = store.prunes()
        prev = store.chain_link(record.seq - 1)
        assert prev is not None
        forged = replace(record, cutoff=T0 + timedelta(hours=9)).linked(prev)
        store.conn.execute(
            "UPDATE prunes SET cutoff = ?, hash = ? WHERE seq = ?", (forged.row()[2], forged.hash, forged.seq)
        )
        result = store.verify()
        assert not result.ok and result.bad_event_id == 6
        assert "kept this older row first" in result.reason


def test_a_second_prune_and_a_prune_of_everything_keep_the_chain_whole(store_target: str) -> None:
    with Store.open(store_target) as store:
        archive(store, [entry(i, i * 60) for i in range(1, 11)])
        assert store.prune_before(T0 + timedelta(hours=3, minutes=30)) == 3
        assert store.prune_before(T0 + timedelta(hours=3, minutes=30)) == 0  # nothing left to cut: no record
        assert store.prune_before(T0 + timedelta(days=1)) == 7
        assert store.event_count() == 0 and len(store.prunes()) == 2
        assert store.verify().ok
        archive(store, [entry(11, 11 * 60)])
        # seq never goes back: the new row follows the last prune record, not the deleted rows
        assert chain_seq(store, 11) == store.prunes()[-1].seq + 1
        result = store.verify()
        assert result.ok and result.rows_checked == 1


def test_verify_fails_when_cursors_say_events_were_archived_but_none_are(store_target: str) -> None:
    with Store.open(store_target) as store:
        archive(store, [entry(1), entry(2, 1)])
        with store.transaction():
            store.save_cursor(Cursor("prod", last_id=2, last_created_at=T0 + timedelta(minutes=1)))
            store.save_cursor(Cursor("quiet", last_id=0))  # an empty upstream log: nothing to hold
        assert store.verify().ok
        store.conn.execute("DELETE FROM events")
        result = store.verify()
        assert not result.ok
        assert result.bad_source == "prod"
        assert "cursor" in result.reason and "none of its events" in result.reason


def test_a_source_that_archived_nothing_is_not_a_failure(store_target: str) -> None:
    """backfill none (cursor at its floor) and backfill from a date newer than every event archive nothing."""
    with Store.open(store_target) as store, store.transaction():
        store.save_cursor(Cursor("none", last_id=50, floor_id=50))
        store.save_cursor(Cursor("dated", last_id=9, last_created_at=T0, floor_time=T0 + timedelta(days=1)))
    with Store.open(store_target) as store:
        assert store.verify().ok


@pytest.mark.parametrize(
    ("dump", "rows", "first_event_id"),
    [
        ("schema4-plain.sql", 10, 1),
        ("schema4-pruned.sql", 7, 6),
        # today's prune of every row let seq start again at 1 for the next events
        ("schema4-pruned-empty-then-appended.sql", 3, 6),
        # the last release before Alembic: schema 6, pruned once, with alerts, outbox, state and claims
        ("schema6-full.sql", 10, 4),
    ],
)
def test_archives_of_the_previous_release_verify_after_the_upgrade(
    tmp_path: Path, dump: str, rows: int, first_event_id: int
) -> None:
    path = tmp_path / "a.db"
    load_dump(LEGACY / dump, path)
    with Store.open(path) as store:
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert store.conn.execute("SELECT min(event_id) FROM events").fetchone()[0] == first_event_id
        result = store.verify()
        assert result.ok and result.rows_checked == rows
        assert result.prunes == (0 if dump == "schema4-plain.sql" else 1)
        # the archive keeps working: new events, a prune, and tampering is still caught
        newest = int(store.conn.execute("SELECT max(event_id) FROM events").fetchone()[0])
        archive(store, [entry(newest + 1, (newest + 1) * 60)])
        assert store.prune_before(T0 + timedelta(minutes=(newest + 1) * 60)) == rows
        assert store.verify().ok
        archive(store, [entry(newest + 2, (newest + 2) * 60)])
        assert store.verify().ok
        store.conn.execute("DELETE FROM events WHERE event_id = ?", (newest + 1,))
        assert not store.verify().ok


def test_a_legacy_prune_is_taken_over_once_and_then_meta_no_longer_counts(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    load_dump(LEGACY / "schema4-pruned.sql", path)
    with Store.open(path) as store:
        (record,) = store.prunes()
        assert record.through_seq == 5 and record.cutoff is None  # today's release did not keep the cutoff
        store.set_meta("chain_anchor_hash", "0" * 64)
        assert store.verify().ok
        store.conn.execute("DELETE FROM events WHERE event_id = 6")
        result = store.verify()
        assert not result.ok and "missing" in result.reason


def test_a_prune_refuses_to_cut_rows_that_were_tampered_with(store_target: str) -> None:
    """Cutting an edited or deleted row would turn the tampering into a clean-looking prune record."""
    with Store.open(store_target) as store:
        archive(store, [entry(i, i * 60) for i in range(1, 11)])
        store.conn.execute("DELETE FROM events WHERE event_id = 2")
        with pytest.raises(StoreError, match="not pruning: the part to cut fails verification at seq 3"):
            store.prune_before(T0 + timedelta(hours=5, minutes=30))
        assert store.event_count() == 9 and store.prunes() == []


# --- threads: one connection each, one writer at a time, waits that a stop ends ---------------------------


def test_each_thread_has_its_own_connection_and_writers_take_turns(store_target: str) -> None:
    """The daemon's workers share one Store: a transaction of one thread never shows (or takes in) another's
    statements, and a second writer waits for the first instead of failing."""
    store = Store.open(store_target)
    inside, release = threading.Event(), threading.Event()
    seen: dict[str, object] = {}

    def writer() -> None:
        with store.transaction():
            store.conn.execute("INSERT INTO meta (key, value) VALUES ('k', 'from-writer')")
            inside.set()
            release.wait(10)

    def second_writer() -> None:
        with store.transaction():
            seen["second_saw"] = store.get_meta("k")

    first = threading.Thread(target=writer)
    first.start()
    assert inside.wait(10)
    assert store.get_meta("k") is None  # this thread's snapshot: the other's write is not committed
    assert not store.in_transaction  # the other thread's transaction is not this one's
    second = threading.Thread(target=second_writer)
    second.start()
    second.join(0.5)
    assert second.is_alive()  # waiting for its turn, not failing
    release.set()
    first.join(10)
    second.join(10)
    assert seen["second_saw"] == "from-writer"
    assert store.get_meta("k") == "from-writer"
    store.close()


class OtherWriter:
    """Another process's write transaction, holding the archive's write lock until ``rollback``: BEGIN
    IMMEDIATE on SQLite, the writers' advisory lock on PostgreSQL."""

    def __init__(self, target: str) -> None:
        if target.startswith("postgresql://"):
            import psycopg

            self.conn: Any = psycopg.connect(target, autocommit=True)
            self.conn.execute("BEGIN")
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITER_LOCK_KEY,))
        else:
            self.conn = sqlite3.connect(target, isolation_level=None)
            self.conn.execute("BEGIN IMMEDIATE")

    def rollback(self) -> None:
        self.conn.execute("ROLLBACK")
        self.conn.close()


def test_a_wait_for_another_processs_write_lock_ends_when_interrupted(store_target: str) -> None:
    """SQLite's own busy wait cannot be interrupted; the store waits in slices and looks at ``interrupt``.
    On PostgreSQL the writers' advisory lock is waited for the same way."""
    store = Store.open(store_target)
    other = OtherWriter(store_target)  # another process's writer
    store.interrupt = threading.Event()
    threading.Timer(0.5, store.interrupt.set).start()
    started = time.monotonic()
    try:
        with pytest.raises(StoreInterrupted, match="another process's write lock"), store.transaction():
            pass
    finally:
        other.rollback()
    assert time.monotonic() - started < 15  # not the 30 s busy timeout
    with store.transaction():  # the lock is free again: writes work, nothing was left half-open
        store.set_meta("after", "yes")
    assert store.get_meta("after") == "yes"
    store.close()


def test_staging_keeps_the_first_row_of_an_id_and_names_ids_staged_with_other_content(
    store_target: str,
) -> None:
    """Within one call and across calls (PostgreSQL stages through COPY and a temporary table)."""
    with Store.open(store_target) as store:
        first, changed = entry(2, 1), {**entry(2, 1), "msg": "edited upstream"}
        rows = [
            Store.staging_row(normalize("prod", item), canonical_json(item))
            for item in (entry(1), first, changed)
        ]
        assert store.stage(rows) == [2]
        assert store.staged_raw("prod", 2) == canonical_json(first)
        assert store.stage(rows[1:2]) == []  # the same row again is no conflict
        assert store.stage(rows[2:]) == [2]
        assert [row[0] for row in store.iter_staged("prod")] == [1, 2]

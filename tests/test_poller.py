"""The poll cycle against the simulator over real HTTP on 127.0.0.1.

Retries use an injected sleep (recorded, not slept) so fault tests run fast; nothing else is faked.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from monitor.config import Config, SourceConfig
from monitor.events import normalize
from monitor.poller import Poller
from monitor.simulator import Simulator
from monitor.store import Store
from monitor.xano import RetryPolicy, XanoClient, XanoUnavailableError
from tests.conftest import FakeClock
from tests.postgres import PostgresServer


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[Simulator]:
    with Simulator(
        seed=3,
        clock=clock,
        history_start=clock.now - timedelta(days=3),
        events_per_day=300,
        live_background=False,
    ) as simulator:
        yield simulator


def state_of(target: str | Path) -> dict[str, str]:
    """The config's state section for a ``store_target`` (a file, or a PostgreSQL URL)."""
    text = str(target)
    return {"url": text} if text.startswith("postgresql://") else {"path": text}


def make_config(sim: Simulator, store_target: str | Path, **source: object) -> Config:
    return Config.model_validate(
        {
            "state": state_of(store_target),
            "sources": [
                {
                    "name": "prod",
                    "base_url": sim.base_url,
                    "token": sim.token,
                    "workspace_id": 1,
                    "per_page": 50,
                    **source,
                }
            ],
        }
    )


class Harness:
    def __init__(self, sim: Simulator, config: Config, clock: FakeClock) -> None:
        self.sim, self.config, self.clock = sim, config, clock
        self.sleeps: list[float] = []
        self.store = Store.open(config.state.target())
        self.poller = Poller(self.store, config, None, clock=clock, client_factory=self.client)

    def client(self, source: SourceConfig) -> XanoClient:
        return XanoClient(
            source.base_url,
            source.token.get_secret_value(),
            source_name=source.name,
            workspace_id=source.workspace_id,
            per_page=source.per_page,
            timeout=10,
            retry=RetryPolicy(max_attempts=10, base_delay=0.01, max_delay=0.05),
            sleep=self.sleeps.append,
        )

    def poll(self):  # type: ignore[no-untyped-def]
        return self.poller.poll(self.config.sources[0])

    def archived_ids(self) -> list[int]:
        return [row[0] for row in self.store.conn.execute("SELECT event_id FROM events ORDER BY event_id")]


def visible_ids(sim: Simulator) -> list[int]:
    return sorted(int(e["id"]) for e in sim.visible_events())


@pytest.fixture
def harness(sim: Simulator, store_target: str, clock: FakeClock) -> Iterator[Harness]:
    h = Harness(sim, make_config(sim, store_target), clock)
    yield h
    h.store.close()


def test_backfill_archives_every_event_once_and_verifies(harness: Harness) -> None:
    result = harness.poll()
    assert result.ok, result.error
    assert harness.archived_ids() == visible_ids(harness.sim)
    assert result.new == len(visible_ids(harness.sim)) > 500
    assert harness.store.verify().ok
    cursor = harness.store.get_cursor("prod")
    assert cursor is not None and cursor.last_id == max(visible_ids(harness.sim))
    # Self-monitoring learns that the source answered (a walk that is still running is not unreachable).
    assert harness.poller.page_received_at == {"prod": harness.clock()}


def test_repeated_cycles_add_no_duplicate(harness: Harness, clock: FakeClock) -> None:
    harness.poll()
    before = harness.archived_ids()
    second = harness.poll()
    assert second.ok and second.new == 0 and second.fetched > 0  # the overlap window was re-read
    assert harness.archived_ids() == before
    clock.advance(timedelta(minutes=30))
    harness.sim.add_event("Update Function", user={"id": 1, "email": "ana@corp.io"}, created_at=clock.now)
    third = harness.poll()
    assert third.new >= 1
    assert harness.archived_ids() == visible_ids(harness.sim)


def test_complete_through_429_502_and_truncated_pages(harness: Harness) -> None:
    harness.sim.inject_status(429, count=2, retry_after="1")
    harness.sim.inject_status(502, count=1)
    harness.sim.inject_truncated(count=2)
    harness.sim.inject_non_json(count=1)
    harness.sim.inject_status(503, count=1)
    harness.sim.inject_status(504, count=1)
    result = harness.poll()
    assert result.ok, result.error
    assert harness.archived_ids() == visible_ids(harness.sim)
    assert 1.0 in harness.sleeps  # Retry-After honoured
    assert len(harness.sleeps) >= 8


def test_late_commit_inside_overlap_is_caught(harness: Harness, clock: FakeClock) -> None:
    harness.poll()
    late_id = harness.sim.add_event(
        "Delete Table",
        user={"id": 2, "email": "bo@corp.io"},
        created_at=clock.now - timedelta(minutes=2),
        hidden=True,
    )
    clock.advance(timedelta(minutes=1))
    newer = harness.sim.add_event(
        "Update Function", user={"id": 1, "email": "ana@corp.io"}, created_at=clock.now
    )
    assert late_id < newer
    harness.poll()
    assert newer in harness.archived_ids() and late_id not in harness.archived_ids()
    harness.sim.reveal(late_id)  # commits now, with an id below the cursor
    clock.advance(timedelta(minutes=5))
    harness.poll()
    assert late_id in harness.archived_ids()
    assert harness.archived_ids() == visible_ids(harness.sim)
    assert harness.store.verify().ok


def test_a_commit_two_minutes_late_61_ids_below_the_cursor_is_caught(
    harness: Harness, clock: FakeClock
) -> None:
    """Only the overlap window finds it: the newest page (50 ids, all above it) ends before its time.

    The test above places the late event right next to the cursor, where it is read without any overlap.
    """
    harness.poll()
    clock.advance(timedelta(minutes=5))
    start = clock.now
    late_id = harness.sim.add_event(
        "Delete Table", user={"id": 2, "email": "bo@corp.io"}, created_at=start, hidden=True
    )
    newer = [
        harness.sim.add_event("Run Query", user=None, created_at=start + timedelta(seconds=2 * (i + 1)))
        for i in range(61)
    ]
    clock.advance(timedelta(seconds=122))
    assert harness.poll().ok
    cursor = harness.store.get_cursor("prod")
    assert cursor is not None and cursor.last_id == newer[-1]
    assert sum(1 for i in visible_ids(harness.sim) if i > late_id) == 61  # the 61 newest ids are above it
    assert late_id not in harness.archived_ids()
    harness.sim.reveal(late_id)  # committed now: 122 s after its created_at, 61 ids below the cursor
    clock.advance(timedelta(minutes=1))
    assert harness.poll().ok
    assert late_id in harness.archived_ids()
    assert harness.archived_ids() == visible_ids(harness.sim)


def test_two_sources_with_the_same_ids_each_archive_every_event_once(
    sim: Simulator, store_target: str, clock: FakeClock
) -> None:
    """Dedupe is per (source, id): event ids are unique per Xano instance only, so a second instance's event
    with an id the first one already used is new, not a replay."""
    config = make_config(sim, store_target)
    second = config.sources[0].model_copy(update={"name": "us"})
    config = config.model_copy(update={"sources": [config.sources[0], second]})
    harness = Harness(sim, config, clock)
    try:
        for source in config.sources:
            assert harness.poller.poll(source).ok
        clock.advance(timedelta(minutes=10))
        harness.sim.add_event("Delete Table", user={"id": 2, "email": "bo@corp.io"}, created_at=clock.now)
        for source in config.sources:  # the overlap re-reads what both already hold
            assert harness.poller.poll(source).ok
        truth = visible_ids(sim)
        for name in ("prod", "us"):
            ids = [
                row[0]
                for row in harness.store.conn.execute(
                    "SELECT event_id FROM events WHERE source = ? ORDER BY event_id", (name,)
                )
            ]
            assert ids == truth, name
            cursor = harness.store.get_cursor(name)
            assert cursor is not None and cursor.last_id == max(truth)
        assert harness.store.event_count() == 2 * len(truth)
        assert harness.store.verify().ok
    finally:
        harness.store.close()


def test_failure_in_the_middle_leaves_cursor_and_archive_untouched(
    harness: Harness, clock: FakeClock
) -> None:
    harness.poll()
    cursor = harness.store.get_cursor("prod")
    count = harness.store.event_count()
    for minute in range(1, 200):
        harness.sim.add_event("Run Query", user=None, created_at=clock.now + timedelta(seconds=minute))
    clock.advance(timedelta(minutes=10))
    harness.sim.inject_status(503, count=1000)  # more than the retry budget allows
    failed = harness.poll()
    assert not failed.ok and failed.error_kind == "unavailable"
    after = harness.store.get_cursor("prod")
    assert after is not None and cursor is not None
    assert (after.last_id, after.last_created_at) == (cursor.last_id, cursor.last_created_at)
    assert after.last_error and "503" in after.last_error
    assert harness.store.event_count() == count
    harness.sim.inject_status(503, count=0)
    recovered = harness.poll()
    assert recovered.ok and recovered.new == 199
    assert harness.archived_ids() == visible_ids(harness.sim)


def test_wrong_token_is_an_auth_failure_with_alert(
    sim: Simulator, store_target: str, clock: FakeClock
) -> None:
    config = make_config(sim, store_target, token="not-the-token")
    h = Harness(sim, config, clock)
    result = h.poll()
    assert not result.ok and result.error_kind == "auth"
    assert "expired" in (result.error or "") and "Workspace Log: Read" in (result.error or "")
    assert "not-the-token" not in (result.error or "")
    assert h.store.get_cursor("prod").last_id is None  # type: ignore[union-attr]
    h.poll()  # the same episode: still one alert
    rows = h.store.conn.execute("SELECT rule_id FROM alerts").fetchall()
    assert rows == [("monitor.auth_failed",)]
    h.store.close()


def test_backfill_none_starts_at_the_end(sim: Simulator, store_target: str, clock: FakeClock) -> None:
    h = Harness(sim, make_config(sim, store_target, backfill="none"), clock)
    first = h.poll()
    assert first.ok and first.new == 0 and h.store.event_count() == 0
    clock.advance(timedelta(minutes=1))
    new_id = sim.add_event("Create Token", user={"id": 1, "email": "ana@corp.io"}, created_at=clock.now)
    h.poll()
    assert h.archived_ids() == [new_id]
    h.store.close()


def test_backfill_from_a_date(sim: Simulator, store_target: str, clock: FakeClock) -> None:
    day = (clock.now - timedelta(days=1)).date().isoformat()
    h = Harness(sim, make_config(sim, store_target, backfill=day), clock)
    h.poll()
    archived = list(h.store.iter_events())
    assert archived and all(e.created_at.date().isoformat() >= day for e in archived)
    expected = [
        int(e["id"])
        for e in sim.visible_events()
        if normalize("prod", e).created_at.date().isoformat() >= day
    ]
    assert h.archived_ids() == sorted(expected)
    h.store.close()


def test_downtime_longer_than_plan_retention_records_gap_and_alert(
    harness: Harness, clock: FakeClock
) -> None:
    harness.poll()
    clock.advance(timedelta(hours=30))  # plan_retention defaults to 24h
    result = harness.poll()
    assert result.ok
    kinds = [gap["kind"] for gap in harness.store.gaps()]
    assert "retention" in kinds and "polling" in kinds
    alert = harness.store.conn.execute("SELECT rule_id, fields FROM alerts").fetchone()
    assert alert[0] == "monitor.retention_gap"
    assert json.loads(alert[1])["gap_start"] < json.loads(alert[1])["gap_end"]


def test_server_ignoring_the_sort_is_noticed_and_the_whole_log_read(
    harness: Harness, clock: FakeClock
) -> None:
    """A server that answers oldest-first although newest-first was asked (the pages still come over HTTP)."""
    harness.poll()

    class IgnoresSort:
        def __init__(self, client: XanoClient) -> None:
            self.client = client

        def __enter__(self) -> IgnoresSort:
            return self

        def __exit__(self, *exc: object) -> None:
            self.client.close()

        def iter_pages(self, *, newest_first: bool = True, include_data: bool = True, start_page: int = 1):  # type: ignore[no-untyped-def]
            return self.client.iter_pages(
                newest_first=False, include_data=include_data, start_page=start_page
            )

    harness.poller.client_factory = lambda source: IgnoresSort(harness.client(source))  # type: ignore[assignment,return-value]
    clock.advance(timedelta(minutes=20))
    newest = harness.sim.add_event(
        "Delete Table", user={"id": 2, "email": "bo@corp.io"}, created_at=clock.now
    )
    result = harness.poll()
    assert result.ok and result.new == 1
    # The first page (oldest events, far older than the cutoff) did not stop the walk early.
    assert result.fetched == len(visible_ids(harness.sim))
    assert newest in harness.archived_ids() and harness.archived_ids() == visible_ids(harness.sim)


def test_a_cycle_that_ends_on_page_one_makes_one_request(harness: Harness, clock: FakeClock) -> None:
    harness.poll()
    before = harness.sim.request_count
    clock.advance(timedelta(minutes=1))
    harness.sim.add_event("Update Function", user={"id": 1, "email": "ana@corp.io"}, created_at=clock.now)
    result = harness.poll()
    assert result.ok and result.new == 1 and result.pages == 1
    assert harness.sim.request_count - before == 1  # no page read ahead when page 1 ends the walk


def test_a_longer_walk_reads_at_most_one_page_past_its_end(harness: Harness, clock: FakeClock) -> None:
    harness.poll()
    before = harness.sim.request_count
    for second in range(1, 181):  # 180 new events, 50 to a page: the walk needs pages 1 to 4 or 5
        harness.sim.add_event("Run Query", user=None, created_at=clock.now + timedelta(seconds=second))
    clock.advance(timedelta(minutes=5))
    result = harness.poll()
    assert result.ok and result.new == 180 and result.pages >= 4
    assert result.pages <= harness.sim.request_count - before <= result.pages + 1
    assert harness.archived_ids() == visible_ids(harness.sim)


def test_an_error_reading_a_later_page_fails_the_cycle_and_moves_nothing(
    harness: Harness, clock: FakeClock
) -> None:
    """Pages after the first are read on a worker thread: its error must still end the cycle, untouched."""
    harness.poll()
    cursor, count = harness.store.get_cursor("prod"), harness.store.event_count()

    class FailsOnPageThree:
        def __init__(self, client: XanoClient) -> None:
            self.client = client

        def __enter__(self) -> FailsOnPageThree:
            return self

        def __exit__(self, *exc: object) -> None:
            self.client.close()

        def iter_pages(self, *, newest_first: bool = True, include_data: bool = True, start_page: int = 1):  # type: ignore[no-untyped-def]
            for page in self.client.iter_pages(
                newest_first=newest_first, include_data=include_data, start_page=start_page
            ):
                if page.number == 3:
                    raise XanoUnavailableError("page 3: connection reset")
                yield page

    harness.poller.client_factory = lambda source: FailsOnPageThree(harness.client(source))  # type: ignore[assignment,return-value]
    for second in range(1, 181):
        harness.sim.add_event("Run Query", user=None, created_at=clock.now + timedelta(seconds=second))
    clock.advance(timedelta(minutes=5))
    failed = harness.poll()
    assert not failed.ok and failed.error_kind == "unavailable" and "page 3" in (failed.error or "")
    after = harness.store.get_cursor("prod")
    assert after is not None and cursor is not None and after.last_id == cursor.last_id
    assert harness.store.event_count() == count


# --- a walk that fails resumes where it stopped ------------------------------------------------------------


class FailsOnPage:
    """The real client, except that reading page ``number`` fails (as when the retry budget runs out)."""

    def __init__(self, client: XanoClient, number: int) -> None:
        self.client, self.number = client, number

    def __enter__(self) -> FailsOnPage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def iter_pages(self, *, newest_first: bool = True, include_data: bool = True, start_page: int = 1):  # type: ignore[no-untyped-def]
        pages = self.client.iter_pages(
            newest_first=newest_first, include_data=include_data, start_page=start_page
        )
        for page in pages:
            if page.number == self.number:
                raise XanoUnavailableError(f"page {self.number}: retry budget spent")
            yield page


def test_a_failed_backfill_keeps_its_pages_and_the_next_cycle_continues_after_them(harness: Harness) -> None:
    total_pages = -(-len(visible_ids(harness.sim)) // 50)
    assert total_pages > 12
    harness.poller.client_factory = lambda source: FailsOnPage(harness.client(source), 7)  # type: ignore[assignment,return-value]
    failed = harness.poll()
    assert not failed.ok and harness.store.event_count() == 0  # nothing is committed before the walk ends

    harness.poller.client_factory = harness.client
    before = harness.sim.request_count
    result = harness.poll()
    assert result.ok, result.error
    # Page 6 was the last staged: it is read again (the overlap), then 7 to the end. Not from page 1.
    assert harness.sim.request_count - before == result.pages == total_pages - 5
    assert harness.archived_ids() == visible_ids(harness.sim)
    assert harness.store.verify().ok
    assert harness.store.walk_progress("prod") is None  # the committed walk left nothing behind


def test_a_resumed_walk_after_a_restart_loses_nothing_when_new_events_shift_the_pages(
    sim: Simulator, store_target: str, clock: FakeClock
) -> None:
    config = make_config(sim, store_target)
    first = Harness(sim, config, clock)
    first.poller.client_factory = lambda source: FailsOnPage(first.client(source), 9)  # type: ignore[assignment,return-value]
    assert not first.poll().ok
    old = visible_ids(sim)
    first.store.close()  # the process ends; its staged pages stay in the file

    # 130 events arrive meanwhile: every old entry moves 2.6 pages down the newest-first log.
    arrived = [
        sim.add_event("Update Record", user=None, created_at=clock.now + timedelta(seconds=n))
        for n in range(130)
    ]
    clock.advance(timedelta(minutes=5))
    again = Harness(sim, config, clock)
    try:
        resumed = again.poll()
        assert resumed.ok, resumed.error
        archived = again.archived_ids()
        assert archived == old  # every old event, once; the new ones are above the resumed walk's pages
        assert again.poll().ok
        assert again.archived_ids() == visible_ids(sim) == sorted(old + arrived)
        assert again.store.verify().ok
    finally:
        again.store.close()


def test_a_walk_whose_basis_changed_starts_again_from_page_one(
    sim: Simulator, store_target: str, clock: FakeClock
) -> None:
    first = Harness(sim, make_config(sim, store_target), clock)
    first.poller.client_factory = lambda source: FailsOnPage(first.client(source), 5)  # type: ignore[assignment,return-value]
    assert not first.poll().ok
    first.store.close()
    # Another page size puts other entries on every page: the staged progress no longer says where to go on.
    again = Harness(sim, make_config(sim, store_target, per_page=40), clock)
    try:
        before = sim.request_count
        result = again.poll()
        assert result.ok and sim.request_count - before == -(-len(visible_ids(sim)) // 40)
        assert again.archived_ids() == visible_ids(sim)
    finally:
        again.store.close()


def test_cycles_against_pages_in_the_guides_shape(store_target: str, clock: FakeClock) -> None:
    """Pages without nextPage or curPage ({"items", "itemsTotal"}): a backfill and an incremental cycle."""
    with Simulator(
        seed=3,
        clock=clock,
        history_start=clock.now - timedelta(days=1),
        events_per_day=300,
        live_background=False,
        envelope="guide",
    ) as guide:
        h = Harness(guide, make_config(guide, store_target), clock)
        try:
            first = h.poll()
            assert first.ok, first.error
            assert h.archived_ids() == visible_ids(guide)
            clock.advance(timedelta(minutes=1))
            added = guide.add_event(
                "Delete Table", user={"id": 2, "email": "bo@corp.io"}, created_at=clock.now
            )
            second = h.poll()
            assert second.ok and second.new == 1 and added in h.archived_ids()
        finally:
            h.store.close()


DELETE_RULE = """\
id: ops.table-delete
title: A table was deleted
severity: high
match:
  deleted: {type: Delete Table}
"""


def test_a_silence_created_while_a_cycle_walks_holds_back_the_alerts_it_commits(
    sim: Simulator, tmp_path: Path, clock: FakeClock
) -> None:
    """The cycle's clock is read at its start; a responder silences a rule while the walk runs (between
    that moment and the commit). The alert the commit records must be held back: it was raised after
    the silence. (Recording alerts at the cycle's start time sent it: the race behind a flaky web test.)"""
    from monitor.engine.loader import load_ruleset
    from monitor.store import lifecycle

    rules = tmp_path / "rules.yml"
    rules.write_text(DELETE_RULE, encoding="utf-8")
    config = make_config(sim, tmp_path / "a.db")
    harness = Harness(sim, config, clock)
    harness.poller = Poller(
        harness.store, config, load_ruleset([rules]), clock=clock, client_factory=harness.client
    )
    assert harness.poll().ok  # the history: its deletes alert as usual
    sim.add_event("Delete Table", user={"id": 3, "email": "a@corp.io"}, msg="silenced drop")
    silenced: list[int] = []

    def silence_during_the_walk(source: SourceConfig) -> XanoClient:
        clock.advance(timedelta(seconds=10))  # the walk takes time; the responder acts meanwhile
        silence = lifecycle.add_silence(
            harness.store, rule_id="ops.table-delete", match={"user": "a@corp.io"},
            until=clock.now + timedelta(hours=1), reason="migration", actor="oncall", at=clock.now,
        )  # fmt: skip
        silenced.append(silence.id)
        clock.advance(timedelta(seconds=1))
        return harness.client(source)

    harness.poller.client_factory = silence_during_the_walk
    assert harness.poll().ok
    rows = harness.store.conn.execute(
        "SELECT status, silence_id, id FROM alerts WHERE event_ids = ?",
        (json.dumps([max(harness.archived_ids())]),),
    ).fetchall()
    assert [(status, silence_id) for status, silence_id, _ in rows] == [("silenced", silenced[0])]
    outbox = harness.store.conn.execute("SELECT count(*) FROM outbox WHERE alert_id = ?", (rows[0][2],))
    assert outbox.fetchone()[0] == 0


def test_a_postgresql_outage_fails_the_cycle_as_a_store_error_and_the_next_one_recovers(
    sim: Simulator, pg_server: PostgresServer, pg_template: str, clock: FakeClock
) -> None:
    """The database goes away between cycles (every session ended, new ones refused, as in a restart or a
    network cut): the cycle fails with kind ``store`` naming the database, never the password, and moves
    nothing; once the database is back the next cycle reconnects and archives every event exactly once."""
    import psycopg

    url = pg_server.new_database(template=pg_template)
    name = url.rsplit("/", 1)[1]
    h = Harness(sim, make_config(sim, url), clock)
    try:
        assert h.poll().ok
        archived = h.archived_ids()
        clock.advance(timedelta(minutes=5))
        sim.add_event(type="Delete Table", email="ana@corp.io")
        with psycopg.connect(pg_server.url(), autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            pg_server.drop_connections(url)
            failed = h.poll()
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        assert not failed.ok
        assert failed.error_kind == "store"
        assert "store unavailable" in (failed.error or "") and name in (failed.error or "")
        recovered = h.poll()
        assert recovered.ok, recovered.error
        assert recovered.new == 1
        assert h.archived_ids() == visible_ids(sim) == sorted({*archived, *visible_ids(sim)})
        assert h.store.verify().ok
        cursor = h.store.get_cursor("prod")
        assert cursor is not None and cursor.last_error is None
    finally:
        h.store.close()

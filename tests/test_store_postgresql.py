"""PostgreSQL as the archive (``state.url``): the statement translation, URLs that never show the password,
and the command line against a real server (tests/postgres.py) and the simulator over HTTP on 127.0.0.1.

The store's own behaviour on PostgreSQL is covered by the store, poller, engine-state, outbox and report
tests, which run on both backends (the ``store_target`` fixture)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from monitor.events import canonical_json, normalize
from monitor.simulator import Simulator
from monitor.store import Store, StoreUnavailable, search
from monitor.store.pg import redact, translate
from tests.postgres import PostgresServer

TODAY = datetime.now(UTC).date()
SINCE = (TODAY - timedelta(days=3)).isoformat()
UNTIL = (TODAY + timedelta(days=2)).isoformat()
PASSWORD = "s3cret-Pa55"


# --- the statement text ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sqlite", "postgresql", "style"),
    [
        ("SELECT a FROM t WHERE b = ? AND c = ?", "SELECT a FROM t WHERE b = %s AND c = %s", "positional"),
        ("SELECT ?1 UNION ALL SELECT ?1", "SELECT %(p1)s UNION ALL SELECT %(p1)s", "numbered"),
        ("WHERE id = :id AND at < :at_2", "WHERE id = %(id)s AND at < %(at_2)s", "named"),
        # a literal percent sign, in LIKE patterns above all, is doubled; so it is inside a string
        ("WHERE k LIKE 'g:%' AND m LIKE :q", "WHERE k LIKE 'g:%%' AND m LIKE %(q)s", "named"),
        # casts, and a ? or :name inside a string literal or a quoted name, are not parameters
        (
            "SELECT x::text, '?', ':no', \"a:b\" FROM t WHERE y = ?",
            "SELECT x::text, '?', ':no', \"a:b\" FROM t WHERE y = %s",
            "positional",
        ),  # fmt: skip
        ("SELECT 'it''s ?' WHERE a = ?", "SELECT 'it''s ?' WHERE a = %s", "positional"),
    ],
)
def test_sqlite_placeholders_become_psycopgs(sqlite: str, postgresql: str, style: str) -> None:
    assert translate(sqlite) == (postgresql, style)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            f"postgresql://mon:{PASSWORD}@db.internal:5432/audit",
            "postgresql://mon:***@db.internal:5432/audit",
        ),
        (
            f"postgresql://mon:{PASSWORD}@db/audit?sslmode=require",
            "postgresql://mon:***@db/audit?sslmode=require",
        ),
        ("postgresql://mon@db:5432/audit", "postgresql://mon@db:5432/audit"),
    ],
)
def test_a_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert redact(url) == shown


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_database_is_named_without_the_password() -> None:
    port = _dead_port()
    with pytest.raises(StoreUnavailable) as caught:
        Store.open(f"postgresql://mon:{PASSWORD}@127.0.0.1:{port}/audit")
    message = str(caught.value)
    assert message.startswith("store unavailable: ")
    assert f"127.0.0.1:{port}" in message and PASSWORD not in message


# --- the command line ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(
        seed=5, history_start=datetime.now(UTC) - timedelta(days=1), events_per_day=150
    ) as simulator:
        yield simulator


def write_config(tmp_path: Path, sim: Simulator, url: str) -> Path:
    path = tmp_path / "audit-monitor.yaml"
    path.write_text(
        f"""\
state: {{url: "{url}"}}
sources:
  - name: prod
    base_url: {sim.base_url}
    token: ${{XANO_META_TOKEN}}
alerts: {{console: false}}
report: {{out_dir: {tmp_path / "reports"}}}
server: {{listen: ""}}
""",
        encoding="utf-8",
    )
    return path


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={"PATH": "/usr/bin:/bin", **env},
    )


def test_an_unreachable_database_at_start_is_a_configuration_error_naming_the_host(
    tmp_path: Path, sim: Simulator
) -> None:
    port = _dead_port()
    config = write_config(tmp_path, sim, f"postgresql://mon:${{PG_PASSWORD}}@127.0.0.1:{port}/audit")
    env = {"XANO_META_TOKEN": sim.token, "PG_PASSWORD": PASSWORD}
    for command in (["run", "--once"], ["status"], ["verify"]):
        done = cli("--config", str(config), *command, env=env)
        assert done.returncode == 2, (command, done.stderr)
        assert "Traceback" not in done.stderr
        assert f"state.url: store unavailable: postgresql://mon:***@127.0.0.1:{port}/audit" in done.stderr
        assert PASSWORD not in done.stderr + done.stdout


def test_the_commands_work_on_a_postgresql_archive(tmp_path: Path, sim: Simulator, pg_url: str) -> None:
    """run --once creates and fills the archive; status, verify, export and report read it; a read command
    never creates an archive in an empty database."""
    config = write_config(tmp_path, sim, pg_url)
    env = {"XANO_META_TOKEN": sim.token}
    empty = cli("--config", str(config), "status", env=env)
    assert empty.returncode == 2 and "state.url" in empty.stderr and "no archive" in empty.stderr
    run = cli("--config", str(config), "run", "--once", env=env)
    assert run.returncode == 0, run.stderr
    status = cli("--config", str(config), "status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    archived = len(sim.visible_events())
    assert data["archive"]["events"] == archived > 0
    assert data["archive"]["path"] == pg_url and data["archive"]["bytes"] > 0
    verify = cli("--config", str(config), "verify", env=env)
    assert verify.returncode == 0, verify.stderr
    out = tmp_path / "events.csv"
    export = cli(
        "--config", str(config), "export", "--since", SINCE, "--until", UNTIL, "--out", str(out), env=env
    )
    assert export.returncode == 0, export.stderr
    assert len(out.read_text(encoding="utf-8").splitlines()) == archived + 1  # the header
    again = cli("--config", str(config), "run", "--once", env=env)
    assert again.returncode == 0, again.stderr
    with Store.open(pg_url, readonly=True) as store:
        assert store.event_count() >= archived and store.verify().ok


# --- the same answers from both backends ------------------------------------------------------------------


def _fill(store: Store, entries: list[dict[str, object]]) -> None:
    with store.transaction():
        prev, rows = store.head_hash(), []
        for item in entries:
            prev, row = store.archive_row(normalize("prod", item), canonical_json(item), prev, NOW_FILLED)
            rows.append(row)
        store.insert_archived(rows)


NOW_FILLED = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)


def test_every_read_query_answers_the_same_on_both_backends(tmp_path: Path, pg_url: str) -> None:
    """Text ordering (COLLATE "C"), LIKE, GROUP BY, integer division and sums: the API's search and
    charts, the report's reads and the status figures give one answer whichever database holds the archive."""
    with Simulator(
        seed=9,
        clock=lambda: NOW_FILLED,
        history_start=NOW_FILLED - timedelta(days=3),
        events_per_day=400,
        live_background=False,
    ) as simulator:
        entries = simulator.visible_events()
    answers = []
    for target in (str(tmp_path / "a.db"), pg_url):
        with Store.open(target) as store:
            _fill(store, entries)
            since, until = NOW_FILLED - timedelta(days=2, hours=3), NOW_FILLED - timedelta(hours=5)
            first = search.search_events(store, search.EventQuery(since=since, until=until), limit=25)
            page_two = search.search_events(
                store,
                search.EventQuery(since=since, until=until),
                limit=25,
                after=(first[-1][1], first[-1][0]),
            )
            start_ms, end_ms = search.epoch_ms(since), search.epoch_ms(until)
            answers.append(
                {
                    "first": first,
                    "page_two": page_two,
                    "q": search.search_events(store, search.EventQuery(q="TABLE"), limit=50),
                    "count": search.count_events(store, search.EventQuery(types=("Login", "Login Failed"))),
                    "buckets": search.event_buckets(
                        store, search.EventQuery(since=since), bucket_ms=search.HOUR_MS, group_by="type"
                    ),
                    "groups": search.event_groups(store, search.EventQuery(), group_by="user", limit=10),
                    "counts_by_user": search.counts_by(store, "user", since, until),
                    "between": search.counts_between(
                        store, list(range(search.epoch_ms(since), search.epoch_ms(until), search.HOUR_MS))
                    ),
                    "month_summary": sorted(
                        store.month_summary(start_ms, end_ms), key=lambda r: tuple(str(v) for v in r)
                    ),
                    "head_before": store.chain_head_before(until),
                    "within": sorted(
                        store.counts_by_user_within(
                            [(start_ms, start_ms + 3_600_000), (end_ms - 60_000, end_ms)]
                        ),
                        key=lambda r: str(r[0]),
                    ),
                    # Few among many (read by type), and many among few (read in time order).
                    "types": [
                        store.events_of_types(
                            start_ms, end_ms, ["Delete Table", "Login Failed"], 5, within=within
                        )
                        for within in (10**6, 1)
                    ],
                    "newest": store.newest_event_time("prod"),
                    "oldest": store.oldest_event_time(),
                    "head": store.head(),
                    "verify": store.verify().ok,
                }
            )
    sqlite_answers, postgresql_answers = answers
    assert sqlite_answers["count"] > 0 and len(sqlite_answers["first"]) == 25
    for key, value in sqlite_answers.items():
        assert postgresql_answers[key] == value, key


# --- migrate: an SQLite archive into an empty PostgreSQL database ------------------------------------------


def test_migrate_copies_the_daemons_archive_and_the_daemon_continues_on_postgresql(
    tmp_path: Path, pg_url: str, pg_server: PostgresServer
) -> None:
    from monitor.store.copy import table_counts

    with Simulator(
        seed=6, history_start=datetime.now(UTC) - timedelta(days=2), events_per_day=300, live_background=False
    ) as simulator:
        sqlite_config = tmp_path / "sqlite.yaml"
        sqlite_config.write_text(
            f"""\
state: {{path: {tmp_path / "archive.db"}}}
sources:
  - {{name: prod, base_url: {simulator.base_url}, token: "${{XANO_META_TOKEN}}", workspace_id: 1}}
alerts: {{console: true}}
report: {{out_dir: {tmp_path / "reports"}}}
server: {{listen: ""}}
""",
            encoding="utf-8",
        )
        env = {"XANO_META_TOKEN": simulator.token}
        assert cli("--config", str(sqlite_config), "run", "--once", env=env).returncode == 0
        # a second cycle after new events: a chain across cycles, sent alerts, poll outcomes
        mallory = f'"{simulator.add_event(type="Delete Table", email="mallory@corp.io")}"'
        second = cli("--config", str(sqlite_config), "run", "--once", env=env)
        assert second.returncode == 0 and mallory in second.stdout  # the console channel's alert
        with Store.open(tmp_path / "archive.db", readonly=True) as source:
            before = table_counts(source)
            head = source.head()
        assert before["events"] == len(simulator.visible_events()) and before["alerts"] > 0
        assert before["outbox"] > 0 and before["polls"] == 2

        migrated = cli("--config", str(sqlite_config), "migrate", "--to", pg_url, env=env)
        assert migrated.returncode == 0, migrated.stderr
        assert f"verify OK on {pg_url}: {before['events']} events" in migrated.stdout
        with Store.open(pg_url, readonly=True) as target:
            assert table_counts(target) == before
            assert target.head() == head and target.verify().ok

        # a second copy into the same database is refused, and so is a database of another application
        again = cli("--config", str(sqlite_config), "migrate", "--to", pg_url, env=env)
        assert again.returncode == 2 and "already holds an archive" in again.stderr, again.stderr
        other = pg_server.new_database()
        with psycopg.connect(other, autocommit=True) as conn:
            conn.execute("CREATE TABLE invoices (id int)")
        foreign = cli("--config", str(sqlite_config), "migrate", "--to", other, env=env)
        assert foreign.returncode == 2 and "holds the tables invoices" in foreign.stderr, foreign.stderr

        # the daemon on PostgreSQL: nothing archived, alerted or sent again; new events carry on the chain
        pg_config = tmp_path / "pg.yaml"
        pg_config.write_text(
            sqlite_config.read_text(encoding="utf-8").replace(
                f"state: {{path: {tmp_path / 'archive.db'}}}", f'state: {{url: "{pg_url}"}}'
            ),
            encoding="utf-8",
        )
        rerun = cli("--config", str(pg_config), "run", "--once", env=env)
        assert rerun.returncode == 0, rerun.stderr
        assert mallory not in rerun.stdout and '"event_ids"' not in rerun.stdout  # nothing sent again
        trudy = f'"{simulator.add_event(type="Delete Table", email="trudy@corp.io")}"'
        last = cli("--config", str(pg_config), "run", "--once", env=env)
        assert last.returncode == 0, last.stderr
        assert trudy in last.stdout and mallory not in last.stdout
        with Store.open(pg_url, readonly=True) as target:
            after = table_counts(target)
            assert after["events"] == before["events"] + 1 == len(simulator.visible_events())
            assert after["alerts"] == before["alerts"] + 1
            assert target.verify().ok


def test_a_transaction_left_idle_is_ended_by_the_server_and_the_next_one_reconnects(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer's transaction idle past idle_in_transaction_session_timeout (15 s; 1 s here) is ended by
    the server, so a writer cut off mid-transaction cannot hold the writers' lock from a new leader. The
    store reports it as a store error, nothing of the transaction is kept, and the next one reconnects."""
    import time

    from monitor.store import StoreError, pg

    monkeypatch.setattr(pg, "IDLE_IN_TRANSACTION_MS", 1000)
    with Store.open(pg_url) as store:
        first = {"id": 1, "created_at": "2026-03-01T09:00:00Z", "type": "Login", "msg": "m"}
        with store.transaction():
            store.archive(
                normalize("prod", first), canonical_json(first), store.head_hash(), datetime.now(UTC)
            )
        second = {**first, "id": 2}
        with pytest.raises(StoreError), store.transaction():
            store.archive(
                normalize("prod", second), canonical_json(second), store.head_hash(), datetime.now(UTC)
            )
            time.sleep(2.5)  # idle inside the transaction: the server ends the session
        assert store.event_count() == 1  # a new connection; the idle transaction's row was never kept
        with store.transaction():
            store.archive(
                normalize("prod", second), canonical_json(second), store.head_hash(), datetime.now(UTC)
            )
        assert store.event_count() == 2 and store.verify().ok

"""Schema versions through Alembic: the revision line, in-place upgrades of archives written before it,
and the rule that SQL stays inside monitor/store/."""

from __future__ import annotations

import logging
import re
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from monitor.store import SCHEMA_VERSION, Store, StoreError, lifecycle
from monitor.store.schema import MIGRATIONS_DIR, revisions, upgrade_sqlite

ROOT = Path(__file__).parent.parent
ARCHIVES = Path(__file__).parent / "data" / "archives"


def _load(dump: str, path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript((ARCHIVES / dump).read_text())
    conn.close()


def _counts(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    counts = {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}  # noqa: S608
    conn.close()
    return counts


def test_the_sqlite_revisions_form_one_line_whose_length_is_the_schema_version() -> None:
    script = ScriptDirectory(
        str(MIGRATIONS_DIR), version_locations=[str(MIGRATIONS_DIR / "versions" / "sqlite")]
    )
    assert script.get_heads() == [f"{SCHEMA_VERSION:04d}"]
    line = [rev.revision for rev in script.walk_revisions()]
    assert line == [f"{n:04d}" for n in range(SCHEMA_VERSION, 0, -1)]
    assert revisions("sqlite") == sorted(line)


def test_an_archive_of_the_release_before_alembic_upgrades_in_place_with_every_row(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    _load("schema6-full.sql", path)
    before = _counts(path)
    with Store.open(path) as store:
        result = store.verify()
        assert result.ok and result.rows_checked == 10 and result.prunes == 1
        head = [(f"{SCHEMA_VERSION:04d}",)]
        assert store.conn.execute("SELECT version_num FROM alembic_version").fetchall() == head
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert store.outbox_counts() == {"pending": 4, "sent": 1, "dead": 1}
        assert store.get_claim("2026-02") is not None
    after = _counts(path)
    assert after.pop("alembic_version") == 1
    # every row kept; revisions after 0006 add tables and may note in meta when they began recording
    assert {table: after[table] for table in before if table != "meta"} == {
        table: count for table, count in before.items() if table != "meta"
    }
    assert after["meta"] >= before["meta"]


def test_outbox_rows_of_an_older_archive_become_triggers_and_their_alerts_can_tell_a_resolution(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a.db"
    _load("schema6-full.sql", path)
    with Store.open(path) as store:
        rows = store.conn.execute("SELECT DISTINCT kind FROM outbox").fetchall()
        assert rows == [("trigger",)]
        sent = store.conn.execute(
            "SELECT remote_id, reply_to FROM outbox WHERE alert_id = '34e19859f7f6599289b5568f7556b442' "
            "AND channel = 'slack'"
        ).fetchone()
        assert sent == ("1700000000.000100", None)  # the ts is kept; the channel id was never recorded
        at = datetime(2026, 3, 3, tzinfo=UTC)
        for alert_id in ("34e19859f7f6599289b5568f7556b442", "e7618e75f755c70cf88611a596db4fbb"):
            lifecycle.transition(store, alert_id, "resolved", actor="cli:root", at=at)
        notices = store.conn.execute(
            "SELECT alert_id, channel FROM outbox WHERE kind = 'resolve' ORDER BY alert_id, channel"
        ).fetchall()
        # The dead Slack delivery of e761... tells Slack nothing; the rest are told.
        assert notices == [
            ("34e19859f7f6599289b5568f7556b442", "email"),
            ("34e19859f7f6599289b5568f7556b442", "slack"),
            ("e7618e75f755c70cf88611a596db4fbb", "email"),
        ]
        assert store.verify().ok


def test_an_archive_of_schema_1_is_upgraded_revision_by_revision(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    conn = sqlite3.connect(path, isolation_level=None)
    upgrade_sqlite(conn, "0001")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.execute("INSERT INTO rule_state (rule_id, key, value) VALUES ('monitor.auth_failed', 'prod', '{}')")
    conn.close()
    with Store.open(path) as store:
        assert (
            store.conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]
            == f"{SCHEMA_VERSION:04d}"
        )
        assert store.state_get("monitor.auth_failed", "prod") == {}
        assert store.verify().ok


def test_an_upgrade_logs_one_line_of_its_own_not_alembics_steps(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    conn = sqlite3.connect(tmp_path / "a.db", isolation_level=None)
    with caplog.at_level(logging.DEBUG):
        upgrade_sqlite(conn, "0001")
        upgrade_sqlite(conn)
        upgrade_sqlite(conn)  # nothing left to do: nothing said
    conn.close()
    said = [(r.name, r.getMessage(), r.revision_before, r.revision) for r in caplog.records]  # type: ignore[attr-defined]
    assert said == [
        ("monitor.store", "archive schema created", None, "0001"),
        ("monitor.store", "archive schema upgraded", "0001", f"{SCHEMA_VERSION:04d}"),
    ]
    assert logging.getLogger("alembic").level == logging.NOTSET  # left as it was


def test_a_schema_this_release_does_not_know_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    Store.open(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    newer = rf"a\.db: the archive has schema version {SCHEMA_VERSION + 1}, newer"
    with pytest.raises(StoreError, match=newer):
        Store.open(path)


def test_an_up_to_date_archive_opens_without_loading_alembic(tmp_path: Path) -> None:
    """Alembic and SQLAlchemy cost ~20 MB and a few hundred milliseconds to import: only an upgrade (a new
    archive included) pays for them; every later start does not."""
    path = tmp_path / "a.db"
    Store.open(path).close()
    code = (
        "import sys; from monitor.store import Store; s = Store.open(sys.argv[1]); "
        "print(s.conn.execute('PRAGMA user_version').fetchone()[0]); "
        "print(sorted(m for m in ('alembic', 'sqlalchemy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == [str(SCHEMA_VERSION), "[]"]


def test_a_revision_that_fails_names_the_archive_and_the_cause_and_keeps_the_version(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    conn = sqlite3.connect(path, isolation_level=None)
    upgrade_sqlite(conn, "0003")
    conn.execute("CREATE TABLE prunes (x)")  # revision 0005 creates it: it will fail there
    conn.close()
    with pytest.raises(StoreError) as caught:
        Store.open(path)
    message = str(caught.value)
    assert message == f"{path}: cannot upgrade the archive's schema: table prunes already exists"
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 4  # 0004 applied, 0005 rolled back whole
    assert conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] == "0004"
    conn.close()


SQL_OUTSIDE = re.compile(r"\.execute(many|script)?\(|\.conn\b|\bimport sqlite_utils\b")


def test_no_module_outside_the_store_package_talks_to_the_database() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted((ROOT / "monitor").rglob("*.py"))
        if "store" not in path.relative_to(ROOT / "monitor").parts[:1]
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if SQL_OUTSIDE.search(line)
    ]
    assert offenders == []


# --- PostgreSQL: the same schema, revision numbers shared from 0008 on -------------------------------------


def test_the_postgresql_revisions_form_one_line_to_the_same_head_as_sqlite() -> None:
    script = ScriptDirectory(
        str(MIGRATIONS_DIR), version_locations=[str(MIGRATIONS_DIR / "versions" / "postgresql")]
    )
    assert script.get_heads() == [f"{SCHEMA_VERSION:04d}"]
    line = sorted(rev.revision for rev in script.walk_revisions())
    assert revisions("postgresql") == line
    # every PostgreSQL revision has its SQLite twin: a new revision is a file in each folder
    assert set(line) <= set(revisions("sqlite"))
    assert line[0] == "0008"  # PostgreSQL databases start at 0008


def test_a_postgresql_archive_has_the_tables_and_columns_of_an_sqlite_one(
    tmp_path: Path, pg_url: str
) -> None:
    import psycopg

    path = tmp_path / "a.db"
    Store.open(path).close()
    conn = sqlite3.connect(path)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    on_sqlite = {(t, r[1]) for t in tables for r in conn.execute(f'PRAGMA table_info("{t}")')}
    conn.close()
    Store.open(pg_url).close()
    with psycopg.connect(pg_url) as pg_conn:
        on_postgresql = set(
            pg_conn.execute(
                "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'"
            ).fetchall()
        )
    assert on_postgresql == on_sqlite


def test_a_postgresql_schema_this_release_does_not_know_is_refused_by_name(pg_url: str) -> None:
    import psycopg

    Store.open(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE alembic_version SET version_num = %s", (f"{SCHEMA_VERSION + 1:04d}",))
    newer = rf"{pg_url.rsplit('/', 1)[1]}: the archive has schema version {SCHEMA_VERSION + 1:04d}, newer"
    with pytest.raises(StoreError, match=newer):
        Store.open(pg_url)
    with pytest.raises(StoreError, match=newer):
        Store.open(pg_url, readonly=True)


def test_a_read_command_never_creates_a_postgresql_archive(pg_url: str) -> None:
    with pytest.raises(StoreError, match="no archive"):
        Store.open(pg_url, readonly=True)
    with Store.open(pg_url) as store:  # a writer creates it
        assert store.head()[0] == 0
    with Store.open(pg_url, readonly=True) as store:
        assert store.event_count() == 0

"""A full database inside a transaction, in process: the error that reaches the operator is the full disk,
named with the file, not the failed ROLLBACK after SQLite already rolled back by itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.store import Store, StoreError


def test_a_full_database_is_reported_not_hidden_by_the_rollback(tmp_path: Path) -> None:
    # In process and without a mount: SQLite's max_page_count makes the database "full" the same way (SQLite
    # rolls the transaction back itself, as it does on ENOSPC), so this runs where mounting is not allowed.
    with Store.open(tmp_path / "a.db") as store:
        pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
        store.conn.execute(f"PRAGMA max_page_count = {pages + 2}")
        with pytest.raises(StoreError, match=r"a\.db: cannot write to the archive: database or disk is full"):
            store.stage("sim", [(event_id, "x" * 3000) for event_id in range(100)])
        assert store.conn.execute("SELECT count(*) FROM staging").fetchone()[0] == 0

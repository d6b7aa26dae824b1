"""A full database inside a transaction, in process: the error that reaches the operator is the full disk,
named with the file, not the failed ROLLBACK after SQLite already rolled back by itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.events import normalize
from monitor.store import Store, StoreError


def test_a_full_database_is_reported_not_hidden_by_the_rollback(tmp_path: Path) -> None:
    # In process and without a mount: SQLite's max_page_count makes the database "full" the same way (SQLite
    # rolls the transaction back itself, as it does on ENOSPC), so this runs where mounting is not allowed.
    entries = [{"id": i, "created_at": 1772600000000 + i, "type": "Login", "msg": "x"} for i in range(100)]
    events = [normalize("sim", entry) for entry in entries]
    with Store.open(tmp_path / "a.db") as store:
        pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
        store.conn.execute(f"PRAGMA max_page_count = {pages + 2}")
        with pytest.raises(StoreError, match=r"a\.db: cannot write to the archive: database or disk is full"):
            store.stage(Store.staging_row(event, "x" * 3000) for event in events)
        assert store.conn.execute("SELECT count(*) FROM staging").fetchone()[0] == 0

"""Prune records: a prune used to leave only meta.chain_anchor_hash behind, which anyone could set after
deleting the oldest rows by hand. A prune is now a link of the chain itself, in the events' seq order.

Revision ID: 0005
Revises: 0004
"""

from datetime import UTC, datetime

from alembic import op

from monitor.store.chain import INSERT_PRUNE, PruneRecord

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """CREATE TABLE prunes (
            seq INTEGER PRIMARY KEY,            -- its place in the chain, in the events' seq order
            at TEXT NOT NULL,                   -- when the prune ran
            cutoff TEXT,                        -- events older than this were cut (null: an older release's)
            cut INTEGER,                        -- rows deleted (null: an older release's prune)
            through_seq INTEGER NOT NULL,       -- the last chain link cut: the kept chain starts after it
            through_hash TEXT NOT NULL,         -- that link's hash
            hash TEXT NOT NULL
        )"""
    )
    # An archive pruned by an earlier release: take its meta anchor over once, as a prune record appended at
    # the head. From now on the record, not meta, says where the chain starts.
    bind = op.get_bind()
    anchor = bind.exec_driver_sql("SELECT value FROM meta WHERE key = 'chain_anchor_hash'").fetchone()
    if anchor is None:
        return
    pruned_at = bind.exec_driver_sql("SELECT value FROM meta WHERE key = 'chain_anchor_pruned_at'").fetchone()
    first, last = bind.exec_driver_sql("SELECT min(seq), max(seq) FROM events").one()
    head = bind.exec_driver_sql("SELECT hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    record = PruneRecord(
        seq=(last or 0) + 1,
        at=datetime.fromisoformat(pruned_at[0]) if pruned_at else datetime.now(UTC),
        cutoff=None,
        cut=None,
        # An earlier release let seq start again at 1 after a prune of every row: start just before the
        # first kept row, whatever its number.
        through_seq=(first or 1) - 1,
        through_hash=anchor[0],
        hash="",
    )
    record = record.linked(head[0] if head else anchor[0])
    bind.exec_driver_sql(INSERT_PRUNE, record.row())

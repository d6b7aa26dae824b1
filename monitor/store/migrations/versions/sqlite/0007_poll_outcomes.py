"""Poll outcomes per cycle (monitor/store/polls.py): the cursor keeps only the last attempt, so a month's
success rate needs its own rows. started_at is format_timestamp text (UTC, microseconds): text order is
time order.

Revision ID: 0007
Revises: 0006
"""

from datetime import UTC, datetime

from alembic import op

from monitor.events import format_timestamp
from monitor.store.polls import RECORDED_SINCE_KEY

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """CREATE TABLE polls (
            source TEXT NOT NULL,
            started_at TEXT NOT NULL,
            ended_at TEXT NOT NULL,
            ok INTEGER NOT NULL,                -- 1: committed; 0: failed
            error_kind TEXT                     -- auth | config | unavailable | store | internal; NULL if ok
        )"""
    )
    op.execute("CREATE INDEX polls_started ON polls (started_at, source)")
    # An archive that already holds events was polled before outcomes were recorded: remember when recording
    # began, so a month before it says "not recorded" rather than a rate over part of it.
    bind = op.get_bind()
    if bind.exec_driver_sql("SELECT 1 FROM events LIMIT 1").fetchone() is not None:
        bind.exec_driver_sql(
            "INSERT INTO meta (key, value) VALUES (?, ?)",
            (RECORDED_SINCE_KEY, format_timestamp(datetime.now(UTC))),
        )

"""Monthly report claims: one row per period, taken by compare-and-set inside BEGIN IMMEDIATE so that two
processes sharing the file never both send (monitor/report/schedule.py).

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """CREATE TABLE reports (
            period TEXT PRIMARY KEY,            -- YYYY-MM, a calendar month in the configured timezone
            status TEXT NOT NULL,               -- sending | sent | failed | written (no recipients)
            claimed_at TEXT NOT NULL,
            claimed_by TEXT NOT NULL,           -- host:pid:nonce of the process holding the claim
            attempts INTEGER NOT NULL DEFAULT 0,
            sent_at TEXT,
            message_id TEXT,
            error TEXT
        )"""
    )

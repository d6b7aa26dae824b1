"""Staging keeps the columns normalisation derived during the walk, so the commit need not parse each
entry's JSON and timestamp a second time.

When this revision was written staged rows never outlived a cycle, so the table is recreated rather than
converted (an unfinished walk restarts from page 1).

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP TABLE staging")
    op.execute(
        """CREATE TABLE staging (
            source TEXT NOT NULL,
            event_id INTEGER NOT NULL,
            created_at TEXT NOT NULL,           -- as in events: ISO 8601 UTC, microseconds
            created_ms INTEGER NOT NULL,
            type TEXT NOT NULL,
            msg TEXT NOT NULL,
            user_email TEXT,
            workspace_name TEXT,
            branch_label TEXT,
            raw TEXT NOT NULL,                  -- canonical JSON
            PRIMARY KEY (source, event_id)
        )"""
    )

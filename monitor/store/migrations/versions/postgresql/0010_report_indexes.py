"""Indexes for the monthly report at a million events a month (see the sqlite folder's 0010): the covering
(source, created_ms, event_id, type, user_email, workspace_name) index replaces (source, created_ms), and
(archived_at, seq) finds the chain's head at an instant in one seek.

Revision ID: 0010
Revises: 0009
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX events_source_time_cover "
        "ON events (source, created_ms, event_id, type, user_email, workspace_name)"
    )
    op.execute('DROP INDEX IF EXISTS "idx_events_source_created_ms"')
    op.execute("CREATE INDEX events_archived_at ON events (archived_at, seq)")

"""Indexes for the monthly report at a million events a month.

- ``events_source_time_cover`` (source, created_ms, event_id, type, user_email, workspace_name) replaces
  ``idx_events_source_created_ms`` (source, created_ms), which it starts with (the lag's newest event per
  source still seeks it). The report's per-month figures (counts per user and type, workspaces, event-id
  continuity, the chain rows holding the month, off-hours per user) read only these columns, so they become
  one pass over an index range per source instead of four reads of every row of the month (a row carries its
  raw entry: ~0.8 GB of rows for a million events, 12 s of the report; the index range is ~60 MB).
- ``events_archived_at`` (archived_at, seq): the chain's head as it stood at an instant (the report's
  integrity section, at the month's start and end) is one seek instead of a walk back from the newest row
  (2.3 s at a million rows, growing with the archive).

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

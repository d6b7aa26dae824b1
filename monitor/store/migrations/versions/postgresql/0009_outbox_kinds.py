"""Resolve notices through the outbox (see the sqlite folder's 0009): a ``kind`` column (trigger |
resolve) in the outbox's key, and ``reply_to``. PostgreSQL alters the key in place.

Revision ID: 0009
Revises: 0008
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""ALTER TABLE outbox ADD COLUMN kind TEXT COLLATE "C" NOT NULL DEFAULT 'trigger'""")
    op.execute("""ALTER TABLE outbox ADD COLUMN reply_to TEXT COLLATE "C\"""")
    op.execute("ALTER TABLE outbox DROP CONSTRAINT outbox_pkey")
    op.execute("ALTER TABLE outbox ADD PRIMARY KEY (alert_id, channel, kind)")

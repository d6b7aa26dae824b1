"""Resolve notices through the outbox: a second row per (alert, channel), and where a reply goes.

``kind`` is ``trigger`` (the alert itself, every row written before this release) or ``resolve`` (the
notice that a responder resolved it, written in the lifecycle change's transaction). The key becomes
(alert_id, channel, kind), which SQLite cannot alter in place: the table is rebuilt with its rows.
``reply_to`` is where a reply to the delivered message goes (Slack: the channel id that chat.postMessage
answered with, beside the message ``ts`` in ``remote_id``), so a resolve notice lands in the alert's thread
even after the routes changed.

Revision ID: 0009
Revises: 0008
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_COLUMNS = (
    "alert_id, channel, status, attempts, next_attempt_at, first_attempt_at, last_error, sent_at, remote_id"
)


def upgrade() -> None:
    op.execute(
        """CREATE TABLE outbox_kinds (
            alert_id TEXT NOT NULL REFERENCES alerts(id),
            channel TEXT NOT NULL,
            kind TEXT NOT NULL DEFAULT 'trigger', -- trigger | resolve
            status TEXT NOT NULL,               -- pending | sent | dead
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT NOT NULL,
            first_attempt_at TEXT,
            last_error TEXT,
            sent_at TEXT,
            remote_id TEXT,                     -- Slack ts / email Message-ID / PagerDuty dedup key
            reply_to TEXT,                      -- Slack: the channel id a thread reply goes to
            PRIMARY KEY (alert_id, channel, kind)
        )"""
    )
    op.execute(f"INSERT INTO outbox_kinds ({_COLUMNS}) SELECT {_COLUMNS} FROM outbox")  # noqa: S608
    op.execute("DROP TABLE outbox")
    op.execute("ALTER TABLE outbox_kinds RENAME TO outbox")
    op.execute('CREATE INDEX "idx_outbox_status_next_attempt_at" ON "outbox" ("status", "next_attempt_at")')

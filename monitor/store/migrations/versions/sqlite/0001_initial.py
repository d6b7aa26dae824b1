"""The first schema: events (the hash-chained archive), meta, cursors, staging, rejected, rule state,
alerts, outbox, gaps.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """CREATE TABLE events (
            seq INTEGER PRIMARY KEY,            -- archive order; the hash chain follows it
            source TEXT NOT NULL,
            event_id INTEGER NOT NULL,
            created_at TEXT NOT NULL,           -- ISO 8601 UTC, microseconds: sorts as text
            created_ms INTEGER NOT NULL,        -- epoch ms, for range queries
            type TEXT NOT NULL,
            msg TEXT NOT NULL,
            user_email TEXT,
            workspace_name TEXT,
            branch_label TEXT,
            raw TEXT NOT NULL,                  -- the entry exactly as served (canonical JSON)
            archived_at TEXT NOT NULL,
            hash TEXT NOT NULL,
            UNIQUE (source, event_id)
        )"""
    )
    # Index names as sqlite-utils gave them when it created this schema (the report names one).
    for column in ("created_ms", "type", "user_email", "workspace_name"):
        op.execute(f'CREATE INDEX "idx_events_{column}" ON "events" ("{column}")')
    op.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    op.execute(
        """CREATE TABLE cursors (
            source TEXT PRIMARY KEY,
            last_id INTEGER,                    -- highest event id handled
            last_created_at TEXT,               -- its created_at
            floor_id INTEGER,                   -- backfill none: ids at or below are never archived
            floor_time TEXT,                    -- backfill from a date: older events are never archived
            last_success_at TEXT,
            last_attempt_at TEXT,
            last_error TEXT,
            last_error_at TEXT,
            error_kind TEXT                     -- auth | unavailable | protocol | store | null
        )"""
    )
    op.execute(
        """CREATE TABLE staging (
            source TEXT NOT NULL,
            event_id INTEGER NOT NULL,
            raw TEXT NOT NULL,
            PRIMARY KEY (source, event_id)
        )"""
    )
    op.execute(
        """CREATE TABLE rejected (
            source TEXT NOT NULL,
            raw_sha256 TEXT NOT NULL,
            raw TEXT NOT NULL,
            reason TEXT NOT NULL,
            seen_at TEXT NOT NULL,
            PRIMARY KEY (source, raw_sha256)
        )"""
    )
    op.execute(
        """CREATE TABLE rule_state (
            rule_id TEXT NOT NULL,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (rule_id, key)
        )"""
    )
    op.execute(
        """CREATE TABLE alerts (
            id TEXT PRIMARY KEY,
            rule_id TEXT NOT NULL,
            severity TEXT NOT NULL,
            title TEXT NOT NULL,
            text TEXT NOT NULL,
            source TEXT NOT NULL,
            event_time TEXT NOT NULL,
            event_ids TEXT NOT NULL,            -- JSON list
            group_key TEXT NOT NULL,
            fields TEXT NOT NULL,               -- JSON object
            context TEXT NOT NULL,              -- JSON object
            suppressed_count INTEGER NOT NULL,
            tags TEXT NOT NULL,                 -- JSON list
            recorded_at TEXT NOT NULL
        )"""
    )
    op.execute('CREATE INDEX "idx_alerts_event_time" ON "alerts" ("event_time")')
    op.execute(
        """CREATE TABLE outbox (
            alert_id TEXT NOT NULL REFERENCES alerts(id),
            channel TEXT NOT NULL,
            status TEXT NOT NULL,               -- pending | sent | dead
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT NOT NULL,
            first_attempt_at TEXT,
            last_error TEXT,
            sent_at TEXT,
            remote_id TEXT,                     -- Slack ts / email Message-ID
            PRIMARY KEY (alert_id, channel)
        )"""
    )
    op.execute('CREATE INDEX "idx_outbox_status_next_attempt_at" ON "outbox" ("status", "next_attempt_at")')
    op.execute(
        """CREATE TABLE gaps (
            id INTEGER PRIMARY KEY,
            source TEXT NOT NULL,
            kind TEXT NOT NULL,                 -- polling | retention
            start TEXT NOT NULL,
            end TEXT NOT NULL,
            detail TEXT NOT NULL,
            recorded_at TEXT NOT NULL
        )"""
    )

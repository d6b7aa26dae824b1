"""Rule state per source (a threshold counts one Xano instance's events; a value seen on one instance is
still new on another) and with an expiry in event time, so that the keys of expired windows, values and
throttles are deleted instead of piling up (an attacker's distinct emails and IPs grew it without end).
Source '' is state shared by every source: rules with ``scope: all_sources`` and self-monitoring.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

from monitor.store.rule_state import LEGACY_STATE_DAYS

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """CREATE TABLE rule_state_v5 (
            rule_id TEXT NOT NULL,
            source TEXT NOT NULL,               -- '' = shared by every source
            key TEXT NOT NULL,
            value TEXT NOT NULL,                -- JSON
            expires_at INTEGER,                 -- event time (µs since the epoch) when it is of no more use;
                                                -- NULL = kept
            PRIMARY KEY (rule_id, source, key)
        )"""
    )
    # Self-monitoring episodes (monitor.*, keyed by source or channel name) are not rule state of a source.
    op.execute(
        "INSERT INTO rule_state_v5 (rule_id, source, key, value) "
        "SELECT rule_id, '', key, value FROM rule_state WHERE rule_id LIKE 'monitor.%'"
    )
    # The rules' state was shared by every source: each source the archive knows carries it on, so nothing
    # learnt is forgotten (a known user is not "new" after the upgrade). Its expiry is not known here (the
    # rule's windows are in the rule files): a window or throttle is kept LEGACY_STATE_DAYS past its last
    # event unless its rule writes it again first; seen values and learning starts are kept as before.
    bind = op.get_bind()
    sources = [
        row[0] for row in bind.exec_driver_sql("SELECT source FROM cursors ORDER BY source").fetchall()
    ] or [""]
    legacy_days_us = LEGACY_STATE_DAYS * 86_400_000_000
    for source in sources:
        bind.exec_driver_sql(
            f"""INSERT INTO rule_state_v5 (rule_id, source, key, value, expires_at)
            SELECT rule_id, ?, key, value,
                CASE
                    WHEN key LIKE 'g:%' THEN json_extract(value, '$[#-1][0]') + {legacy_days_us}
                    WHEN key LIKE 't:%' AND json_extract(value, '$.suppressed') = 0
                        THEN json_extract(value, '$.start') + {legacy_days_us}
                END
            FROM rule_state WHERE rule_id NOT LIKE 'monitor.%'""",  # noqa: S608 - a number, not input
            (source,),
        )
    op.execute("DROP TABLE rule_state")
    op.execute("ALTER TABLE rule_state_v5 RENAME TO rule_state")
    op.execute(
        "CREATE INDEX rule_state_expiry ON rule_state (source, expires_at) WHERE expires_at IS NOT NULL"
    )

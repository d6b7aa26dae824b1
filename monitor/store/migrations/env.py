"""Alembic's entry point for the store's migrations (see monitor/store/schema.py).

Runs online only, on the connection ``schema`` passes in ``config.attributes``: the store's own, so that
an in-memory archive and a database reached with a password work the same. One transaction per revision,
so an interrupted upgrade leaves the database at the last revision that completed.
"""

from __future__ import annotations

from typing import Any

from alembic import context


def _keep_user_version(ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
    # SQLite archives also carry their revision in PRAGMA user_version (see schema.py), set in the same
    # transaction as the revision itself.
    if ctx.dialect.name == "sqlite" and step.is_upgrade:
        ctx.connection.exec_driver_sql(f"PRAGMA user_version={int(step.up_revision_id)}")


connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    transaction_per_migration=True,
    on_version_apply=_keep_user_version,
)
with context.begin_transaction():
    context.run_migrations()

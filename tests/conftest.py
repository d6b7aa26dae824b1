"""Shared fixtures: an injectable clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest


class FakeClock:
    """Time that moves only when a test says so (or by ``step`` on every read, when set)."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> FakeClock:
    # A Wednesday in business hours (Europe/Berlin), so "now" is never at a DST edge by accident.
    return FakeClock(datetime(2026, 3, 4, 10, 0, tzinfo=UTC))


# PostgreSQL: a real server started from the system's binaries (tests/postgres.py) ------------------------

from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

from tests import postgres  # noqa: E402

PG_UNAVAILABLE = postgres.unavailable_reason()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[postgres.PostgresServer]:
    """One PostgreSQL server for the session; the tests that need it are skipped where it cannot run."""
    if PG_UNAVAILABLE is not None:
        pytest.skip(f"PostgreSQL tests skipped: {PG_UNAVAILABLE}")
    with postgres.running_server() as server:
        yield server


@pytest.fixture
def pg_url(pg_server: postgres.PostgresServer) -> str:
    """The URL of an empty PostgreSQL database of this test's own."""
    return pg_server.new_database()


@pytest.fixture(scope="session")
def pg_template(pg_server: postgres.PostgresServer) -> str:
    """A database migrated once for the session: each test's archive is a copy of it (CREATE DATABASE ...
    TEMPLATE), which takes milliseconds where running the migration again takes a second."""
    from monitor.store import Store

    url = pg_server.new_database()
    Store.open(url).close()
    return url.rsplit("/", 1)[1]


BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a test's archive lives, once per backend: a file for SQLite, a database of its own (already
    migrated, empty) for PostgreSQL. ``Store.open(store_target)`` opens either."""
    if request.param == "sqlite":
        return str(tmp_path / "archive.db")
    server: postgres.PostgresServer = request.getfixturevalue("pg_server")
    template: str = request.getfixturevalue("pg_template")
    return server.new_database(template=template)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if PG_UNAVAILABLE is not None:
        terminalreporter.write_line(f"PostgreSQL half of the suite skipped: {PG_UNAVAILABLE}", yellow=True)

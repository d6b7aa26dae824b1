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

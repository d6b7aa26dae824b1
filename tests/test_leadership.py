"""Leadership on PostgreSQL (monitor/store/leadership.py) against a real server: one leader at a time, a
standby that takes over when the leader goes, and fencing: a leader cut off from the server counts itself
out before the server frees the lock, and its writes are refused inside their transaction.

Lease timings are shortened here (heartbeat 0.3 s, lease 1.5 s, server idle 3 s) so the cases run in seconds;
their order (heartbeat < lease < server idle) is the one the defaults keep. The daemon-level suite with the
default timings is tests/faults/test_failover.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from monitor.store.leadership import (
    LEADER,
    STANDBY,
    AdvisoryLeadership,
    LeaseTimings,
    NotLeader,
    SoleWriter,
    lock_holder,
)
from tests.postgres import terminate_backend
from tests.tcp_proxy import BlackHoleProxy

FAST = LeaseTimings(heartbeat=0.3, lease=1.5, server_idle=3.0, retry=0.3, connect_timeout=2.0)
# A leader that notices a lost lock only seconds later: what it may still write meanwhile is the guard's
# alone to refuse (with FAST timings its heartbeat could notice, reconnect and win the lock back first).
SLOW_TO_NOTICE = LeaseTimings(heartbeat=4.0, lease=8.0, server_idle=16.0, retry=4.0, connect_timeout=2.0)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds it took until ``condition()``; fails after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - started


class Roles:
    """Records every role change a leadership announces."""

    def __init__(self) -> None:
        self.changes: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def __call__(self, role: str, reason: str) -> None:
        with self._lock:
            self.changes.append((role, reason))

    def roles(self) -> list[str]:
        with self._lock:
            return [role for role, _ in self.changes]


@pytest.fixture
def leaderships(pg_url: str) -> Iterator[Callable[..., AdvisoryLeadership]]:
    made: list[AdvisoryLeadership] = []

    def make(url: str | None = None, timings: LeaseTimings = FAST) -> AdvisoryLeadership:
        leadership = AdvisoryLeadership(url or pg_url, label="test database", timings=timings)
        made.append(leadership)
        leadership.start()
        return leadership

    yield make
    for leadership in made:
        leadership.close()


def in_transaction_guard(url: str, leadership: AdvisoryLeadership) -> None:
    """The leadership's guard inside a transaction of another connection (as the store runs it)."""
    from monitor.store import pg

    conn = pg.connect(url)
    try:
        conn.execute("BEGIN")
        leadership.guard_transaction(lambda sql, params: conn.execute(sql, params))
    finally:
        conn.close()


def via_proxy(url: str, proxy: BlackHoleProxy) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}@127.0.0.1:{proxy.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def test_one_leader_and_a_standby_that_takes_over_when_it_closes(
    pg_url: str, leaderships: Callable[..., AdvisoryLeadership]
) -> None:
    first = leaderships()
    wait_for(first.is_leader, 10, "the first process to lead")
    second = leaderships()
    seen = Roles()
    second.add_listener(seen)
    time.sleep(3 * FAST.retry)  # several tries of the standby
    assert (first.role, second.role) == (LEADER, STANDBY)
    assert seen.roles() == [STANDBY]

    first.close()  # releases the lock
    took = wait_for(second.is_leader, 10, "the standby to take over")
    assert took < 2 * FAST.retry + 1
    assert not first.is_leader()
    assert seen.roles() == [STANDBY, LEADER]


def test_the_lock_holder_is_named_with_host_and_pid(
    pg_url: str, leaderships: Callable[..., AdvisoryLeadership]
) -> None:
    import os

    import psycopg

    leader = leaderships()
    wait_for(leader.is_leader, 10, "leadership")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        holder = lock_holder(conn)
    assert holder is not None
    assert f"pid {os.getpid()}" in str(holder)


def test_the_transaction_guard_refuses_a_process_that_lost_the_lock(
    pg_url: str, leaderships: Callable[..., AdvisoryLeadership]
) -> None:
    import psycopg

    first = leaderships(timings=SLOW_TO_NOTICE)
    wait_for(first.is_leader, 10, "leadership")
    in_transaction_guard(pg_url, first)  # the leader may write

    second = leaderships()
    with pytest.raises(NotLeader):
        in_transaction_guard(pg_url, second)  # a standby may not

    # The server ends the leader's lock session (an operator, a failover of the database, a network cut):
    # the next write is refused even before the leader's own heartbeat has noticed.
    with psycopg.connect(pg_url, autocommit=True) as admin:
        holder = lock_holder(admin)
        assert holder is not None
        terminate_backend(admin, holder.backend_pid)
    with pytest.raises(NotLeader):
        in_transaction_guard(pg_url, first)
    wait_for(second.is_leader, 10, "the standby to take over")
    wait_for(lambda: not first.is_leader(), 2 * SLOW_TO_NOTICE.heartbeat + 2, "the old leader to notice")
    in_transaction_guard(pg_url, second)


def test_a_leader_cut_off_by_the_network_fences_itself_before_the_standby_takes_over(
    pg_url: str, pg_server: Any, leaderships: Callable[..., AdvisoryLeadership]
) -> None:
    proxy = BlackHoleProxy("127.0.0.1", pg_server.port)
    try:
        cut_off = leaderships(via_proxy(pg_url, proxy))
        wait_for(cut_off.is_leader, 10, "the proxied process to lead")
        standby = leaderships()
        seen = Roles()
        cut_off.add_listener(seen)
        time.sleep(2 * FAST.heartbeat)
        assert standby.role == STANDBY

        proxy.black_hole()
        cut_at = time.monotonic()
        fenced_after = wait_for(
            lambda: not cut_off.is_leader(), FAST.lease + 2, "the cut-off leader to fence"
        )
        # Fenced within its lease, while the server still holds the lock for it (no one else leads yet).
        assert fenced_after <= FAST.lease + 0.5
        assert not standby.is_leader()
        took = wait_for(standby.is_leader, FAST.server_idle + 10, "the standby to take over")
        assert time.monotonic() - cut_at >= FAST.server_idle - 0.5  # only once the server freed the lock
        assert took < FAST.server_idle + 3 * FAST.retry + 2
        assert not cut_off.is_leader()
        assert seen.roles()[-1] == STANDBY
        assert "lease expired" in seen.changes[-1][1]
        # It keeps trying as a standby (through the cut, in vain) and never leads again meanwhile.
        time.sleep(3 * FAST.retry)
        assert not cut_off.is_leader()
    finally:
        proxy.close()


def test_a_standby_that_cannot_reach_the_server_says_why(
    leaderships: Callable[..., AdvisoryLeadership],
) -> None:
    from tests.postgres import _free_port

    nowhere = leaderships(f"postgresql://monitor:s3cret-pw@127.0.0.1:{_free_port()}/x")
    wait_for(lambda: nowhere.database_error is not None, 10, "the connection error")
    assert nowhere.role == STANDBY
    error = nowhere.database_error or ""
    assert "test database" in error
    assert "s3cret-pw" not in error


def test_lease_timings_must_leave_the_fence_before_the_server_frees_the_lock() -> None:
    with pytest.raises(ValueError):
        LeaseTimings(heartbeat=2, lease=25, server_idle=20)
    LeaseTimings()  # the defaults are consistent


def test_the_sql_names_the_documented_lock_key() -> None:
    from monitor.store import leadership

    key = f"{leadership.LOCK_CLASS}, {leadership.LOCK_ID}"
    assert key in leadership._TRY_LOCK_SQL and key in leadership._UNLOCK_SQL
    for sql in (leadership._HOLDS_SQL, leadership._HOLDER_SQL):
        assert f"classid = {leadership.LOCK_CLASS} AND" in sql and f"objid = {leadership.LOCK_ID} AND" in sql


def test_sqlite_has_one_writer_that_always_leads() -> None:
    sole = SoleWriter()
    seen = Roles()
    sole.add_listener(seen)
    assert sole.is_leader() and seen.roles() == [LEADER]
    sole.guard_transaction(lambda sql, params: pytest.fail("no query on SQLite"))


def test_a_daemon_that_lost_the_lock_commits_nothing(pg_url: str) -> None:
    """The daemon's store runs the guard inside every write transaction: once the server has ended the
    lock session, a write is rolled back even before the leader's own heartbeat noticed (the window a
    network cut or an operator's pg_terminate_backend opens)."""
    import psycopg

    from monitor.config import Config
    from monitor.daemon import Monitor
    from tests.alerts.alerts_support import make_alert

    config = Config.model_validate({"state": {"url": pg_url}, "alerts": {"console": False}})
    slow_heartbeat = LeaseTimings(heartbeat=5.0, lease=8.0, server_idle=10.0, retry=0.3, connect_timeout=2.0)
    leadership = AdvisoryLeadership(pg_url, label="test database", timings=slow_heartbeat)
    monitor = Monitor(config, leadership=leadership)
    try:
        assert leadership.take_once(10)
        kept, lost = make_alert(title="kept"), make_alert(title="lost")
        with monitor.store.transaction():
            monitor.store.record_alert(kept, ["console"], kept.event_time)
        with psycopg.connect(pg_url, autocommit=True) as admin:
            holder = lock_holder(admin)
            assert holder is not None
            terminate_backend(admin, holder.backend_pid)
        assert monitor.is_leader()  # its lease still runs: only the check inside the transaction knows
        with pytest.raises(NotLeader), monitor.store.transaction():
            monitor.store.record_alert(lost, ["console"], lost.event_time)
        assert monitor.store.alert_exists(kept.id)
        assert not monitor.store.alert_exists(lost.id)
    finally:
        monitor.close()


def test_one_cycle_in_process_takes_the_lead_or_names_who_has_it(pg_url: str) -> None:
    import os

    from monitor.config import Config
    from monitor.daemon import Monitor, NotLeading

    config = Config.model_validate({"state": {"url": pg_url}, "alerts": {"console": False}})
    first, second = Monitor(config), Monitor(config)
    try:
        assert first.run_once().ok  # no `start()` needed: one cycle takes the lead first
        assert first.is_leader()
        with pytest.raises(NotLeading, match=f"another process leads .*pid {os.getpid()}"):
            second.run_once()
        assert not second.is_leader()
    finally:
        first.close()
        second.close()

"""A slow upstream, a slow channel, a held write lock: one source cannot stall the rest, and SIGTERM stops
`audit-monitor run` (and `run --once`) within 10 s in every state.

Real processes and real loopback servers: the daemon is a subprocess; the trickling upstream is a
socketserver that answers 200 at once and then sends its body a byte at a time; Slack is the fault suite's
stub answering slowly; the write lock is held by a second process's connection (this test's own). Each
test measures the time from SIGTERM to the exit (10 s is generous; before the per-source workers it was
30-60 s and more, the length of whatever the one worker was waiting for).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from monitor.simulator import TricklingUpstream
from tests.faults.conftest import REPO, Daemon, Scenario, query, wait_until

SIGTERM_LIMIT = 10.0  # seconds from SIGTERM to exit


@pytest.fixture
def trickling() -> Iterator[Callable[[float], TricklingUpstream]]:
    started: list[TricklingUpstream] = []

    def start(gap: float) -> TricklingUpstream:
        server = TricklingUpstream(gap)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def two_source_config(s: Scenario, upstream: TricklingUpstream, timeout: str) -> None:
    """The scenario's config with a second source, ``slow``, on the trickling upstream (listed first)."""
    text = s.config.read_text(encoding="utf-8")
    slow = (
        "sources:\n"
        "  - name: slow\n"
        f'    base_url: "{upstream.url}"\n'
        '    token: "${SIM_TOKEN}"\n'
        "    poll_interval: 1s\n"
        f"    timeout: {timeout}\n"
    )
    s.config.write_text(text.replace("sources:\n", slow, 1), encoding="utf-8")


def sigterm_and_time(daemon: Daemon) -> tuple[int, float]:
    """SIGTERM, then (exit code, seconds until the process was gone)."""
    sent = time.monotonic()
    daemon.signal(signal.SIGTERM)
    try:
        code = daemon.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("still running 60 s after SIGTERM")
    return code, time.monotonic() - sent


def polls_of(daemon: Daemon, source: str) -> int:
    return len([r for r in daemon.events("poll cycle") if r.get("source") == source])


@pytest.mark.parametrize(
    ("gap", "timeout"),
    [
        (2.0, "5s"),  # the reported case: a byte every 2 s, each read well inside the read timeout
        (40.0, "60s"),  # a socket that sends nothing for 40 s: the read itself blocks (SIGTERM abandons it)
    ],
    ids=["trickle", "silent"],
)
def test_a_trickling_source_does_not_stall_a_healthy_one_and_sigterm_stops_the_daemon(
    scenario_factory: Callable[..., Scenario],
    trickling: Callable[[float], TricklingUpstream],
    gap: float,
    timeout: str,
) -> None:
    s = scenario_factory()
    upstream = trickling(gap)
    two_source_config(s, upstream, timeout)
    daemon = s.start_daemon("run")
    wait_until(lambda: upstream.connections >= 1, 30, "the slow source's first request")
    daemon.wait_event("poll cycle", 60, where=lambda r: r.get("source") == "sim")
    # The slow source's request is in flight: the healthy one keeps its one-second interval, and its alerts
    # are delivered (the planted incidents raise some).
    polled = polls_of(daemon, "sim")
    daemon.wait_event("poll cycle", 20, where=lambda r: r.get("source") == "sim", count=polled + 3)
    wait_until(lambda: s.slack.stub.posts(), 30, "a Slack message for the healthy source's alerts")
    assert polls_of(daemon, "slow") == 0  # still on its first answer
    if gap < 20:
        # The operator is told: the slow source counts as unreachable after 3 intervals (at least 30 s).
        unreachable = "SELECT count(*) FROM alerts WHERE rule_id = 'monitor.source_unreachable'"
        wait_until(lambda: query(s.db, unreachable)[0][0] >= 1, 90, "monitor.source_unreachable for slow")

    code, took = sigterm_and_time(daemon)
    assert code == 0, daemon.stderr_path.read_text()[-2000:]
    assert took < SIGTERM_LIMIT, f"SIGTERM took {took:.1f} s"
    names = [r["event"] for r in daemon.records()]
    assert names[-1] == "daemon stopped"
    if gap > 20:  # the read never returned: the daemon said what it left behind
        abandoned = daemon.events("stopping without waiting for work in flight")
        assert abandoned and abandoned[0]["abandoned"] == ["poll:slow"], abandoned


def test_sigterm_during_slow_slack_delivery(scenario_factory: Callable[..., Scenario]) -> None:
    """Slack takes 60 s to answer, within the channel's timeout (60 s): the delivery worker waits on it."""
    s = scenario_factory()
    s.slack.delay = 60.0
    text = s.config.read_text(encoding="utf-8")
    assert "min_severity: info, timeout: 5s" in text
    s.config.write_text(text.replace("min_severity: info, timeout: 5s", "min_severity: info, timeout: 60s"))
    daemon = s.start_daemon("run")
    daemon.wait_event("poll cycle", 60, where=lambda r: r.get("alerts", 0) > 0)
    time.sleep(1.5)  # the delivery worker is now waiting on Slack
    code, took = sigterm_and_time(daemon)
    assert code == 0
    assert took < SIGTERM_LIMIT, f"SIGTERM took {took:.1f} s"
    # Nothing is lost: what Slack did not confirm is still pending for the next start.
    pending = query(s.db, "SELECT count(*) FROM outbox WHERE channel = 'slack' AND status = 'pending'")
    assert pending[0][0] >= 1


def test_sigterm_while_another_process_holds_the_write_lock(
    scenario_factory: Callable[..., Scenario],
) -> None:
    s = scenario_factory()
    daemon = s.start_daemon("run")
    daemon.wait_event("poll cycle", 60)
    holder = sqlite3.connect(s.db, isolation_level=None, timeout=10)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process's writer: the daemon's next cycle waits on it
        time.sleep(2.5)  # polls every second: a cycle is now waiting for the lock
        code, took = sigterm_and_time(daemon)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert code == 0, daemon.stderr_path.read_text()[-2000:]
    assert took < SIGTERM_LIMIT, f"SIGTERM took {took:.1f} s"
    cancelled = [r for r in daemon.events("poll cancelled by shutdown; nothing committed")]
    assert cancelled, "the waiting cycle was not ended by the shutdown"
    assert not daemon.events("poll failed")  # a stop is not a failure


def test_sigterm_stops_run_once_and_the_healthy_source_was_archived_meanwhile(
    scenario_factory: Callable[..., Scenario], trickling: Callable[[float], TricklingUpstream]
) -> None:
    s = scenario_factory()
    upstream = trickling(2.0)
    two_source_config(s, upstream, "5s")
    proc = subprocess.Popen(
        [sys.executable, "-m", "monitor.cli", "--config", str(s.config), "run", "--once"],
        cwd=s.tmp,
        env=_env(s),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: upstream.connections >= 1, 30, "the slow source's first request")

        def healthy_archived() -> int:
            if not s.db.exists():
                return 0
            try:
                return int(query(s.db, "SELECT count(*) FROM events WHERE source = 'sim'")[0][0])
            except sqlite3.OperationalError:  # the schema is still being created
                return 0

        # Sources are polled side by side: the healthy one is archived while the slow one trickles.
        wait_until(healthy_archived, 60, "the healthy source's events in the archive")
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert took < SIGTERM_LIMIT, f"SIGTERM took {took:.1f} s"
    assert proc.returncode == 1, stderr
    assert "source slow: cancelled" in stderr and "stopped before the cycle completed" in stderr, stderr
    assert "source sim" not in stderr  # the healthy source's cycle completed


def _env(s: Scenario) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), **s.env}

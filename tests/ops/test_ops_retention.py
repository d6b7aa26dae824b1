"""Retention: the daemon's daily prune keeps `verify` passing, across later cycles and a second prune.

The archive is filled by real poll cycles against the simulator on 127.0.0.1; time is an injected clock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from monitor.config import Config
from monitor.daemon import Monitor, run_daemon
from monitor.simulator import Simulator
from monitor.store import Store
from tests.conftest import FakeClock


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[Simulator]:
    with Simulator(
        seed=4,
        clock=clock,
        history_start=clock.now - timedelta(days=20),
        events_per_day=60,
        live_background=False,
    ) as simulator:
        yield simulator


def make_monitor(sim: Simulator, tmp_path: Path, clock: FakeClock, retention_days: int) -> Monitor:
    config = Config.model_validate(
        {
            "state": {"path": str(tmp_path / "a.db"), "retention_days": retention_days},
            "sources": [{"name": "sim", "base_url": sim.base_url, "token": sim.token, "per_page": 500}],
            "alerts": {"console": False},
            "server": {"listen": ""},
        }
    )
    return Monitor(config, clock=clock)


def oldest(store: Store) -> str:
    return str(store.conn.execute("SELECT min(created_at) FROM events").fetchone()[0])


def test_prune_keeps_the_chain_verifiable_through_later_cycles(
    sim: Simulator, tmp_path: Path, clock: FakeClock
) -> None:
    monitor = make_monitor(sim, tmp_path, clock, retention_days=7)
    try:
        assert monitor.poll(monitor.config.sources[0]).ok
        before = monitor.store.event_count()
        cutoff = clock.now - timedelta(days=7)
        expected_left = sum(1 for e in monitor.store.iter_events() if e.created_at >= cutoff)
        assert 0 < expected_left < before

        deleted = monitor.apply_retention()
        assert deleted == before - expected_left
        assert monitor.store.event_count() == expected_left
        assert oldest(monitor.store) >= cutoff.isoformat()[:19]
        verified = monitor.store.verify()
        assert verified.ok and verified.rows_checked == expected_left

        # Later cycles append to the pruned chain; verify still passes, and so does a second prune.
        clock.advance(timedelta(days=2))
        sim.add_event("Delete Table", user={"id": 2, "email": "bo@corp.io"}, created_at=clock.now)
        assert monitor.poll(monitor.config.sources[0]).ok
        assert monitor.store.verify().ok
        assert monitor.apply_retention() > 0
        assert monitor.store.verify().ok
        assert monitor.apply_retention() == 0  # nothing older than the cutoff is left

        # Tampering after a prune is still caught: the prune records are links of the chain.
        assert len(monitor.store.prunes()) == 2
        monitor.store.conn.execute("UPDATE prunes SET through_hash = ?", ("0" * 64,))
        assert not monitor.store.verify().ok
    finally:
        monitor.close()


def test_retention_zero_keeps_everything(sim: Simulator, tmp_path: Path, clock: FakeClock) -> None:
    monitor = make_monitor(sim, tmp_path, clock, retention_days=0)
    try:
        assert monitor.poll(monitor.config.sources[0]).ok
        count = monitor.store.event_count()
        oldest_before = oldest(monitor.store)
        assert count == len(sim.visible_events()) > 0  # 20 days of history: there is something to keep
        clock.advance(timedelta(days=365))
        assert monitor.apply_retention() == 0 and monitor.store.event_count() == count
        assert oldest(monitor.store) == oldest_before and monitor.store.prunes() == []
        assert monitor.store.verify().ok
    finally:
        monitor.close()


def test_the_daemon_schedules_the_prune(
    sim: Simulator, tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    seeded = make_monitor(sim, tmp_path, clock, retention_days=0)
    seeded.poll(seeded.config.sources[0])
    total = seeded.store.event_count()
    seeded.close()

    monitor = make_monitor(sim, tmp_path, clock, retention_days=3)
    stop = threading.Event()
    # run_daemon off the main thread installs no signal handlers; ``stop`` plays SIGTERM.
    thread = threading.Thread(target=run_daemon, args=(monitor, stop), daemon=True)
    with caplog.at_level(logging.INFO, logger="monitor.daemon"):
        thread.start()
        try:
            deadline = threading.Event()
            for _ in range(100):
                if any(r.getMessage() == "retention pruned" for r in caplog.records):
                    break
                deadline.wait(0.1)
        finally:
            stop.set()
            thread.join(timeout=15)
    assert not thread.is_alive()
    pruned = [r for r in caplog.records if r.getMessage() == "retention pruned"]
    assert pruned and pruned[0].retention_days == 3  # type: ignore[attr-defined]
    with Store.open(tmp_path / "a.db") as store:
        assert 0 < store.event_count() < total
        assert store.verify().ok

"""The daemon's scheduled verify of the hash chain: at start and daily, its outcome kept in the store and
shown by `status`, `/api/v1/status`, /metrics and the console's integrity panel; a tampered archive raises
`monitor.chain_broken` (critical) once, and a restored one announces the recovery.

The archive is filled by real poll cycles against the simulator on 127.0.0.1; the console and the API are
read over HTTP from the daemon's own server (uvicorn in this process); time is an injected clock.
"""

from __future__ import annotations

import io
import logging
import re
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitor import selfmon
from monitor.config import Config
from monitor.daemon import Monitor, run_daemon
from monitor.simulator import Simulator
from monitor.status import render_status_data, status_data
from monitor.store import Store, StoreInterrupted
from monitor.web import WebServer
from tests.conftest import FakeClock

TOKEN = "verify-viewer-token-0123456789"


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[Simulator]:
    with Simulator(
        seed=9,
        clock=clock,
        history_start=clock.now - timedelta(days=2),
        events_per_day=80,
        live_background=False,
    ) as simulator:
        yield simulator


def make_config(sim: Simulator, tmp_path: Path, listen: str = "") -> Config:
    return Config.model_validate(
        {
            "state": {"path": str(tmp_path / "a.db")},
            "sources": [{"name": "sim", "base_url": sim.base_url, "token": sim.token, "per_page": 500}],
            "alerts": {"console": True},
            "server": {"listen": listen, "tokens": [{"name": "auditor", "token": TOKEN}]},
        }
    )


@pytest.fixture
def monitor(sim: Simulator, tmp_path: Path, clock: FakeClock) -> Iterator[Monitor]:
    monitor = Monitor(make_config(sim, tmp_path), clock=clock, stdout=io.StringIO())
    assert monitor.poll(monitor.config.sources[0]).ok
    try:
        yield monitor
    finally:
        monitor.close()


def chain_alerts(store: Store) -> list[tuple[str, str, str]]:
    return [
        (str(r[0]), str(r[1]), str(r[2]))
        for r in store.conn.execute(
            "SELECT id, rule_id, severity FROM alerts WHERE rule_id LIKE 'monitor.chain_broken%' "
            "ORDER BY rowid"
        )
    ]


def integrity_panel(base: str) -> str:
    """The console's integrity section, signed in as a person would be."""
    with httpx.Client(base_url=base, timeout=10) as console:
        nonce = re.search(r'name="csrf" value="([^"]+)"', console.get("/login").text)
        assert nonce is not None
        assert console.post("/login", data={"csrf": nonce.group(1), "token": TOKEN}).status_code == 303
        page = console.get("/")
        assert page.status_code == 200, page.text
    return page.text[page.text.index('id="integrity"') :]


def test_a_tampered_archive_shows_red_and_alerts_once_then_recovers(
    monitor: Monitor, sim: Simulator, tmp_path: Path, clock: FakeClock
) -> None:
    store = monitor.store
    web = WebServer(make_config(sim, tmp_path, "127.0.0.1:0"), monitor.metrics, clock=clock)
    host, port = web.start()
    base = f"http://{host}:{port}"
    api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    try:
        # Before the daemon's first verify: said so, not shown as fine.
        assert api.get("/api/v1/status").json()["integrity"] == {"last_verify": None}
        assert 'data-verify="none"' in integrity_panel(base)

        good = monitor.verify_chain()
        rows = store.event_count()
        assert good.ok and good.rows_checked == rows and good.verified_at == clock.now
        shown = api.get("/api/v1/status").json()["integrity"]["last_verify"]
        assert shown["ok"] is True and shown["rows_checked"] == rows and shown["bad_seq"] is None
        panel = integrity_panel(base)
        assert 'data-verify="ok"' in panel and f"{rows} rows checked" in panel

        # Someone edits an archived row behind the monitor's back.
        seq, event_id = store.conn.execute(
            "SELECT seq, event_id FROM events ORDER BY seq LIMIT 1 OFFSET 4"
        ).fetchone()
        original = store.conn.execute("SELECT msg FROM events WHERE seq = ?", (seq,)).fetchone()[0]
        store.conn.execute("UPDATE events SET msg = 'nothing to see here' WHERE seq = ?", (seq,))
        clock.advance(timedelta(days=1))
        bad = monitor.verify_chain()
        assert not bad.ok and bad.bad_seq == seq and bad.bad_event_id == event_id and bad.rows_checked == 5
        shown = api.get("/api/v1/status").json()["integrity"]["last_verify"]
        assert shown["ok"] is False and shown["bad_seq"] == seq and shown["bad_source"] == "sim"
        panel = integrity_panel(base)
        assert 'class="verify bad"' in panel and f"link {seq} (source sim, event {event_id})" in panel
        (alert,) = chain_alerts(store)
        assert alert[1:] == (selfmon.CHAIN_BROKEN, "critical")
        assert store.alert_channels(alert[0]) == ["console"]  # queued for delivery with the verify

        # The next day's verify finds the same break: no second alert.
        clock.advance(timedelta(days=1))
        assert not monitor.verify_chain().ok
        assert len(chain_alerts(store)) == 1

        samples = {
            sample.name: sample.value
            for family in text_string_to_metric_families(httpx.get(f"{base}/metrics").text)
            for sample in family.samples
        }
        assert samples["audit_monitor_chain_ok"] == 0
        assert samples["audit_monitor_chain_verified_timestamp_seconds"] == clock.now.timestamp()

        text = render_status_data(status_data(store, monitor.config, clock.now), monitor.config.tz)
        assert "hash chain BROKEN" in text and f"first bad row seq {seq}" in text

        # Restored from a backup: the next verify passes and says so once, to the channels told.
        store.conn.execute("UPDATE events SET msg = ? WHERE seq = ?", (original, seq))
        clock.advance(timedelta(days=1))
        assert monitor.verify_chain().ok
        rules = [rule for _, rule, _ in chain_alerts(store)]
        assert rules == [selfmon.CHAIN_BROKEN, selfmon.CHAIN_BROKEN + ".recovered"]
        assert 'data-verify="ok"' in integrity_panel(base)
    finally:
        api.close()
        web.stop()


def test_the_daemon_verifies_at_start_off_the_poll_threads(
    monitor: Monitor, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stop = threading.Event()
    # run_daemon off the main thread installs no signal handlers; ``stop`` plays SIGTERM.
    thread = threading.Thread(target=run_daemon, args=(monitor, stop), daemon=True)
    with caplog.at_level(logging.INFO, logger="monitor.daemon"):
        thread.start()
        try:
            for _ in range(150):
                if any(r.getMessage() == "hash chain verified" for r in caplog.records):
                    break
                stop.wait(0.1)
        finally:
            stop.set()
            thread.join(timeout=15)
    assert not thread.is_alive()
    (verified,) = [r for r in caplog.records if r.getMessage() == "hash chain verified"]
    assert verified.threadName != "poll:sim" and not verified.threadName.startswith("poll")
    with Store.open(tmp_path / "a.db") as store:
        record = store.last_verify()
        assert record is not None and record.ok and record.rows_checked == store.event_count()


def test_a_stop_ends_a_verify_between_batches(monitor: Monitor) -> None:
    """SIGTERM sets the store's interrupt: a walk of millions of rows must not hold the shutdown up."""
    monitor.store.interrupt = threading.Event()
    monitor.store.interrupt.set()
    with pytest.raises(StoreInterrupted):
        monitor.verify_chain()
    assert monitor.store.last_verify() is None  # nothing recorded for a walk that did not finish

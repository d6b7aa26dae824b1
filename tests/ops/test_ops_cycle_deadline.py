"""Each cycle of the running daemon reads against an overall deadline: three poll intervals, at least ten
minutes (a server answering every page just inside the request deadline cannot hold a cycle forever)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from monitor.config import parse_config
from monitor.daemon import Monitor, cycle_deadline
from monitor.xano import XanoClient


@pytest.mark.parametrize(("interval", "expected"), [("60s", 600.0), ("5m", 900.0), ("1h", 10800.0)])
def test_the_daemon_gives_each_cycle_a_deadline(tmp_path: Path, interval: str, expected: float) -> None:
    data = {
        "state": {"path": str(tmp_path / "a.db")},
        "sources": [
            {"name": "prod", "base_url": "http://127.0.0.1:9", "token": "t", "poll_interval": interval}
        ],
        "alerts": {"console": False},
        "server": {"listen": ""},
    }
    config = parse_config(json.dumps(data), "test.yaml", {})
    monitor = Monitor(config)
    try:
        source = config.sources[0]
        assert cycle_deadline(source).total_seconds() == expected
        monitor.attach_stop(threading.Event())
        before = time.monotonic()
        with monitor.poller.client_factory(source) as client:  # what the walk of one cycle gets
            assert isinstance(client, XanoClient)
            assert client.deadline is not None
            assert before + expected - 1 <= client.deadline <= time.monotonic() + expected
        with monitor.poller.client_factory(source) as later:  # the next cycle: a deadline of its own
            assert later.deadline is not None and later.deadline >= client.deadline
    finally:
        monitor.close()

"""SIGTERM while the daemon waits out a Slack rate limit: the wait is on the daemon's stop event, so
`audit-monitor run` exits 0 at once and the alert stays in the outbox for the next start."""

from __future__ import annotations

import json
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from alerts_support import BOT_TOKEN, SlackStub, ratelimited, slack_config

from monitor.simulator import Simulator
from tests.ops.conftest import Daemon, query, wait_until


def test_sigterm_ends_a_rate_limit_wait_at_once(slack: SlackStub, tmp_path: Path) -> None:
    start = datetime.now(UTC) - timedelta(days=3)
    with Simulator(seed=5, history_start=start, events_per_day=150, live_background=False) as sim:
        db = tmp_path / "w.db"
        config = tmp_path / "audit-monitor.yaml"
        config.write_text(
            json.dumps(
                {
                    "state": {"path": str(db)},
                    "sources": [{"name": "sim", "base_url": sim.base_url, "token": sim.token}],
                    "alerts": {
                        "console": False,
                        "digest_after": 100000,
                        "slack": {**slack_config(slack, min_severity="info"), "token": "${T}"},
                    },
                    "server": {"listen": ""},
                }
            ),
            encoding="utf-8",
        )
        slack.push(*[ratelimited(30)] * 50)  # every message: wait 30 s (inside the limit waited out in-pass)
        daemon = Daemon(config, tmp_path, {"T": BOT_TOKEN})
        try:
            wait_until(lambda: slack.posts(), 60, "the first Slack post")
            time.sleep(0.5)  # the channel is now waiting out the 30 s
            stopping = time.monotonic()
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(timeout=20) == 0
            assert time.monotonic() - stopping < 10
        finally:
            daemon.stop()
        assert len(slack.posts()) == 1  # not re-sent while stopping
        pending = query(db, "SELECT count(*) FROM outbox WHERE channel = 'slack' AND status = 'pending'")
        assert pending[0][0] >= 1  # kept for the next start

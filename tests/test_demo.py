"""The demo config: the operator's alert channels join the demo's console when --config names them."""

from __future__ import annotations

from pathlib import Path

from monitor.alerts.routing import channels_for
from monitor.config import parse_config
from monitor.demo import demo_config
from monitor.selfmon import auth_failed
from tests.conftest import FakeClock


def test_demo_uses_the_config_files_alert_channels(tmp_path: Path, clock: FakeClock) -> None:
    operator = parse_config(
        "alerts:\n  email:\n    smtp: {host: 127.0.0.1, port: 2525, security: none}\n"
        "    from: m@example.com\n    to: [s@example.com]\n    min_severity: high\n",
        "ops.yaml",
        {},
    )
    config = demo_config("http://127.0.0.1:1", "sim-token", tmp_path, operator.alerts)
    alert = auth_failed("demo", "token rejected", None, clock.now)  # a high-severity alert
    assert channels_for(alert, config) == ["console", "email"]
    assert channels_for(alert, demo_config("http://127.0.0.1:1", "sim-token", tmp_path)) == ["console"]

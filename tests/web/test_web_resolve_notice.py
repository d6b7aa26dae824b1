"""Resolving through the API tells the channels: the daemon (`audit-monitor run` in a subprocess, polling the
simulator) sends a signed `alert.fired` to a webhook receiver on 127.0.0.1; a responder resolves the alert
over HTTP; the running daemon's outbox then sends `alert.resolved`, checked with the standardwebhooks
library."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from standardwebhooks import Webhook

from monitor.simulator import Simulator
from tests.alerts.alerts_support import Received, Receiver
from tests.ops.conftest import RULE, Daemon, wait_until
from tests.web.conftest import RESPONDER, Web, write_web_config

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


def verified(request: Received) -> dict[str, object]:
    headers = {k: v for k, v in request.headers.items() if k.startswith("webhook-")}
    payload = Webhook(SECRET).verify(request.raw.decode("utf-8"), headers)
    assert isinstance(payload, dict)
    return payload


def test_resolving_over_the_api_sends_alert_resolved_to_the_webhook(
    tmp_path: Path, receiver: Receiver
) -> None:
    sim_token = "xmt-" + secrets.token_hex(16)
    viewer, responder = secrets.token_hex(20), secrets.token_hex(20)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "ops.yml").write_text(RULE, encoding="utf-8")
    with Simulator(
        seed=14,
        token=sim_token,
        history_start=datetime.now(UTC) - timedelta(hours=6),
        events_per_day=50,
        live_background=False,
    ) as sim:
        db = tmp_path / "archive.db"
        config = write_web_config(tmp_path / "config.yml", sim, db, rules)
        text = config.read_text(encoding="utf-8").replace(
            "alerts: {console: false}",
            "alerts:\n  console: false\n  webhooks:\n"
            f"    - {{name: n8n, url: '{receiver.url('/hook')}', secret: '${{WEBHOOK_SECRET}}', "
            "min_severity: low}",
        )
        config.write_text(text, encoding="utf-8")
        env = {
            "SIM_TOKEN": sim_token,
            "API_TOKEN_VIEWER": viewer,
            "API_TOKEN_RESPONDER": responder,
            "WEBHOOK_SECRET": SECRET,
        }
        daemon = Daemon(config, tmp_path, env)
        try:
            web = Web(sim, daemon, db, config, daemon.base_url, viewer, responder, sim_token)
            sim.add_event("Delete Table", msg="dropped table orders")

            def fired() -> Received | None:
                return next((r for r in receiver.requests if r.json()["type"] == "alert.fired"), None)

            first = wait_until(fired, 60, "alert.fired at the webhook")
            alert_id = verified(first)["data"]["id"]  # type: ignore[index]
            done = web.responder.post(
                f"/api/v1/alerts/{alert_id}/resolve",
                json={"note": "planned cleanup", "disposition": "benign"},
            )
            assert done.status_code == 200, done.text

            def resolved() -> list[Received]:
                return [r for r in receiver.requests if r.json()["type"] == "alert.resolved"]

            wait_until(resolved, 30, "alert.resolved at the webhook")
            (notice,) = resolved()
            body = verified(notice)
            assert notice.headers["webhook-id"] == f"{alert_id}.resolved"
            data = body["data"]
            assert isinstance(data, dict) and data["id"] == alert_id
            assert data["resolution"]["by"] == RESPONDER  # the token's name, never the token
            assert data["resolution"]["note"] == "planned cleanup"
            assert data["resolution"]["disposition"] == "benign"
            detail = web.viewer.get(f"/api/v1/alerts/{alert_id}").json()
            assert [(d["kind"], d["status"]) for d in detail["deliveries"]] == [
                ("trigger", "sent"),
                ("resolve", "sent"),
            ]
            assert responder not in notice.raw.decode("utf-8")
        finally:
            daemon.stop()

"""The web application as operators run it: `audit-monitor run` in a subprocess with server.tokens, polling
the simulator over HTTP on 127.0.0.1; the tests talk to its API over HTTP with httpx.

One daemon per module (starting one costs seconds); tests that change state (acknowledge, silence) work on
alerts and events of their own.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from monitor.simulator import Simulator
from tests.ops.conftest import RULE, Daemon, query, wait_until

VIEWER = "weweb"
RESPONDER = "oncall"


@dataclass
class Web:
    sim: Simulator
    daemon: Daemon
    db: Path
    config: Path
    base_url: str
    viewer_token: str
    responder_token: str
    sim_token: str

    def client(self, token: str | None = None, **headers: str) -> httpx.Client:
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=10)

    @property
    def viewer(self) -> httpx.Client:
        return self.client(self.viewer_token)

    @property
    def responder(self) -> httpx.Client:
        return self.client(self.responder_token)

    def archived(self) -> int:
        return int(query(self.db, "SELECT count(*) FROM events")[0][0])

    def wait_archived(self, count: int, timeout: float = 30) -> None:
        wait_until(lambda: self.archived() >= count, timeout, f"{count} events archived")

    def all_events(self, client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
        """Every page of /api/v1/events, following next_cursor."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = client.get("/api/v1/events", params={**params, **({"cursor": cursor} if cursor else {})})
            assert page.status_code == 200, page.text
            body = page.json()
            items.extend(body["items"])
            cursor = body["next_cursor"]
            if cursor is None:
                return items


def write_web_config(path: Path, sim: Simulator, db: Path, rules: Path, **server: str) -> Path:
    extra = "".join(f", {key}: {value}" for key, value in server.items())
    path.write_text(
        f"""state: {{path: {db}}}
sources:
  - name: sim
    base_url: {sim.base_url}
    token: ${{SIM_TOKEN}}
    poll_interval: 1s
    per_page: 100
    plan_retention: 60d
alerts: {{console: false}}
rules: {{paths: [{rules}]}}
server:
  listen: "127.0.0.1:0"
  stale_after: 30s
  tokens:
    - {{name: {VIEWER}, token: "${{API_TOKEN_VIEWER}}", role: viewer}}
    - {{name: {RESPONDER}, token: "${{API_TOKEN_RESPONDER}}", role: responder}}
  cors_origins: [https://my-app.weweb.io]{extra}
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    tmp = tmp_path_factory.mktemp("web")
    sim_token = "xmt-" + secrets.token_hex(16)
    viewer, responder = secrets.token_hex(20), secrets.token_hex(20)
    rules = tmp / "rules"
    rules.mkdir()
    (rules / "ops.yml").write_text(RULE, encoding="utf-8")
    now = datetime.now(UTC)
    with Simulator(
        seed=14,
        token=sim_token,
        history_start=now - timedelta(days=3),
        events_per_day=200,
        live_background=False,
    ) as sim:
        db = tmp / "archive.db"
        config = write_web_config(tmp / "config.yml", sim, db, rules)
        env = {"SIM_TOKEN": sim_token, "API_TOKEN_VIEWER": viewer, "API_TOKEN_RESPONDER": responder}
        daemon = Daemon(config, tmp, env)
        try:
            base = daemon.base_url
            web = Web(sim, daemon, db, config, base, viewer, responder, sim_token)
            web.wait_archived(sim.event_count())
            yield web
        finally:
            daemon.stop()

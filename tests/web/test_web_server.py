"""The HTTP server itself (in this process, on 127.0.0.1): slow and greedy clients, token configuration."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from monitor.config import Config, ConfigError, load_config
from monitor.metrics import Metrics
from monitor.web import ServerError, WebServer, server
from tests.conftest import FakeClock


def config(tmp_path: Path, **server_section: object) -> Config:
    return Config.model_validate(
        {
            "state": {"path": str(tmp_path / "a.db")},
            "sources": [{"name": "prod", "base_url": "http://127.0.0.1:1", "token": "t-secret"}],
            "server": {"listen": "127.0.0.1:0", **server_section},
        }
    )


@pytest.fixture
def running(tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(server, "REQUEST_HEAD_TIMEOUT", 0.5)
    web = WebServer(
        config(tmp_path, tokens=[{"name": "ops", "token": "t" * 24}]), Metrics(clock), clock=clock
    )
    host, port = web.start()
    try:
        yield f"http://{host}:{port}"
    finally:
        web.stop()


def test_a_client_that_trickles_its_request_is_cut_off_and_others_are_served(running: str) -> None:
    host, port = running.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as slow:
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finishes its head
        assert httpx.get(running + "/metrics", timeout=5).status_code == 200
        started = time.monotonic()
        assert slow.recv(1024) == b""  # closed by the server
        assert time.monotonic() - started < 5
    # A keep-alive connection that goes quiet after a response is closed too.
    with socket.create_connection((host, int(port)), timeout=5) as idle:
        idle.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle.recv(65536).startswith(b"HTTP/1.1 200")
        idle.sendall(b"GET /metrics HTTP/1.1\r\n")
        deadline = time.monotonic() + 5
        data = b"x"
        while data and time.monotonic() < deadline:
            data = idle.recv(65536)
        assert data == b""


def test_connections_beyond_the_cap_are_closed_at_once(running: str) -> None:
    host, port = running.removeprefix("http://").split(":")
    held = [socket.create_connection((host, int(port)), timeout=5) for _ in range(server.connection_cap())]
    try:
        time.sleep(0.3)
        with socket.create_connection((host, int(port)), timeout=5) as extra:
            extra.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                assert extra.recv(1024) == b""  # closed, not answered
            except ConnectionResetError:
                pass
    finally:
        for s in held:
            s.close()
    time.sleep(0.3)
    assert httpx.get(running + "/metrics", timeout=5).status_code == 200


def test_an_unset_token_variable_is_named_at_start(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "c.yml"
    path.write_text(
        f"state: {{path: {tmp_path / 'a.db'}}}\n"
        'server: {listen: "127.0.0.1:0", tokens: [{name: ops, token: "${API_TOKEN}"}]}\n',
        encoding="utf-8",
    )
    cfg = load_config(path, env={})
    with pytest.raises(ServerError, match=r"API_TOKEN"):
        WebServer(cfg, Metrics(clock), clock=clock).start()
    started = WebServer(load_config(path, env={"API_TOKEN": "z" * 20}), Metrics(clock), clock=clock)
    started.start()
    started.stop()


def test_token_configuration_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shorter than 16"):
        config(tmp_path, tokens=[{"name": "a", "token": "short"}])
    with pytest.raises(ValueError, match="appears twice"):
        config(tmp_path, tokens=[{"name": "a", "token": "x" * 20}, {"name": "a", "token": "y" * 20}])
    with pytest.raises(ValueError, match="same value"):
        config(tmp_path, tokens=[{"name": "a", "token": "x" * 20}, {"name": "b", "token": "x" * 20}])
    with pytest.raises(ValueError, match="not an origin"):
        config(tmp_path, cors_origins=["https://app.example/path"])
    with pytest.raises(ValueError, match="role"):
        config(tmp_path, tokens=[{"name": "a", "token": "x" * 20, "role": "admin"}])
    assert ConfigError  # the CLI turns these into exit 2 naming the key (tests/test_config.py)


def test_without_tokens_only_the_probes_answer(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    web = WebServer(config(tmp_path), Metrics(clock), clock=clock)
    host, port = web.start()
    try:
        response = httpx.get(
            f"http://{host}:{port}/api/v1/events", headers={"Authorization": "Bearer anything"}
        )
        assert response.status_code == 401
        assert response.json()["error"] == "the API is off: server.tokens is empty"
        assert httpx.get(f"http://{host}:{port}/metrics").status_code == 200
    finally:
        web.stop()


def test_a_public_address_without_tokens_is_said_to_serve_only_probes(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    web = WebServer(config(tmp_path, listen="0.0.0.0:0"), Metrics(clock), clock=clock)  # noqa: S104
    with caplog.at_level(logging.WARNING, logger="monitor.web"):
        web.start()
    web.stop()
    assert any("only /healthz and /metrics are served" in r.getMessage() for r in caplog.records)

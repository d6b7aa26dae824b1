"""The HTTP server itself (in this process, on 127.0.0.1): slow and greedy clients, token configuration."""

from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitor.config import Config, ConfigError, load_config
from monitor.metrics import Metrics
from monitor.web import ServerError, WebServer, server
from monitor.web.auth import GuessLimiter
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


def test_a_public_address_without_tokens_refuses_to_start(tmp_path: Path, clock: FakeClock) -> None:
    web = WebServer(config(tmp_path, listen="0.0.0.0:0"), Metrics(clock), clock=clock)  # noqa: S104
    with pytest.raises(ServerError) as refused:
        web.start()
    message = str(refused.value)
    assert "server.listen" in message and "server.tokens" in message and "127.0.0.1" in message
    assert web._socket is None  # nothing was bound
    # With a token the same address starts (and serves the probes without one).
    guarded = WebServer(
        config(tmp_path, listen="0.0.0.0:0", tokens=[{"name": "prom", "token": "p" * 24}]),  # noqa: S104
        Metrics(clock),
        clock=clock,
    )
    _host, port = guarded.start()
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code in (200, 503)
        assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/status").status_code == 401
    finally:
        guarded.stop()


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def client_from(base: str, address: str, token: str | None = None) -> httpx.Client:
    """A client whose connections come from ``address`` (any of 127.0.0.0/8 reaches 127.0.0.1)."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.Client(
        base_url=base, headers=headers, timeout=5, transport=httpx.HTTPTransport(local_address=address)
    )


def sign_in(base: str, address: str, token: str) -> httpx.Response:
    with client_from(base, address) as console:
        nonce = re.search(r'name="csrf" value="([^"]+)"', console.get("/login").text)
        assert nonce is not None
        return console.post("/login", data={"csrf": nonce.group(1), "token": token})


def metric(base: str, name: str, surface: str) -> float:
    for family in text_string_to_metric_families(httpx.get(base + "/metrics").text):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("surface") == surface:
                return float(sample.value)
    raise AssertionError(f"{name}{{surface={surface}}} not exported")


def test_token_guessing_is_answered_429_per_address(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    good = "g" * 24
    ticks = Monotonic()
    limiter = GuessLimiter(limit=3, window=60, block=30, clock=ticks)
    web = WebServer(
        config(tmp_path, tokens=[{"name": "ops", "token": good}]),
        Metrics(clock),
        clock=clock,
        guesses=limiter,
    )
    host, port = web.start()
    base = f"http://{host}:{port}"
    try:
        with caplog.at_level(logging.INFO, logger="monitor.web"):
            guesser = "127.0.0.1"
            for n in range(3):
                with client_from(base, guesser, f"guess-{n}-0123456789abcdef") as wrong:
                    assert wrong.get("/api/v1/status").status_code == 401
            with client_from(base, guesser, "guess-3-0123456789abcdef") as wrong:
                refused = wrong.get("/api/v1/status")
            assert refused.status_code == 429 and refused.headers["retry-after"] == "30"
            assert refused.json()["error"] == "too many wrong tokens from this address"
            # A right token from the guessing address is refused too (it must not learn it guessed right),
            # and so is its sign-in form.
            with client_from(base, guesser, good) as right_but_blocked:
                assert right_but_blocked.get("/api/v1/status").status_code == 429
            assert sign_in(base, guesser, good).status_code == 429
            # Another address with the right token is unaffected; its own wrong tokens count for it alone.
            with client_from(base, "127.0.0.2", good) as other:
                assert other.get("/api/v1/status").status_code == 200
            with client_from(base, "127.0.0.2", "another-wrong-0123456789") as other_wrong:
                assert other_wrong.get("/api/v1/status").status_code == 401
            # Requests without any token are not guesses: never throttled.
            with client_from(base, "127.0.0.3") as anonymous:
                assert {anonymous.get("/api/v1/status").status_code for _ in range(8)} == {401}
            # Wrong tokens at the console's sign-in count the same way.
            for _ in range(3):
                assert sign_in(base, "127.0.0.4", "console-guess-0123456789").status_code == 401
            assert sign_in(base, "127.0.0.4", good).status_code == 429
            # The block ends.
            ticks.now += 31
            with client_from(base, guesser, good) as later:
                assert later.get("/api/v1/status").status_code == 200
        assert metric(base, "audit_monitor_http_auth_failures_total", "api") == 4
        assert metric(base, "audit_monitor_http_auth_failures_total", "console") == 3
        assert metric(base, "audit_monitor_http_auth_throttled_total", "api") == 2
        assert metric(base, "audit_monitor_http_auth_throttled_total", "console") == 2
        blocked = [r for r in caplog.records if r.getMessage().startswith("too many wrong tokens")]
        assert [(r.client, r.surface) for r in blocked] == [("127.0.0.1", "api"), ("127.0.0.4", "console")]  # type: ignore[attr-defined]
        logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
        assert "guess-" not in logged and good not in logged
    finally:
        web.stop()


def test_the_guess_limiter_forgets_old_windows_and_stays_bounded() -> None:
    ticks = Monotonic()
    limiter = GuessLimiter(limit=3, window=60, block=30, max_addresses=10, clock=ticks)
    assert not limiter.failed("a") and not limiter.failed("a")
    ticks.now += 61  # the window is over: counting starts again
    assert not limiter.failed("a") and not limiter.failed("a")
    assert limiter.failed("a")  # the third within one window blocks, and says so once
    assert limiter.retry_after("a") == 30 and limiter.retry_after("b") is None
    for n in range(100):
        limiter.failed(f"addr-{n}")
    assert len(limiter._by_address) <= 10
    assert limiter.retry_after("a") == 30  # a block is never forgotten to make room

"""The HTTP endpoint can never take what polling needs: idle connections time out, concurrent ones are
capped (beyond the cap a connection is closed at once), and a client trickling its request is cut off.

Written against the HTTP behaviour of a real `audit-monitor run` subprocess, not the server's code, so it
holds for any implementation of the endpoint. The daemon runs under a lowered open-files limit (set in the
child before it starts), and this test opens far more idle connections than that limit.
"""

from __future__ import annotations

import resource
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from monitor.simulator import Simulator
from tests.ops.conftest import Daemon, http_get, wait_until, write_config

CHILD_NOFILE = 128  # the daemon's open-files limit
IDLE_CLIENTS = 400  # idle connections opened against it: three times its whole limit


def start_limited(config: Path, workdir: Path, token: str, nofile: int) -> Daemon:
    """`audit-monitor run` with RLIMIT_NOFILE lowered in the child itself, before anything is opened."""
    launcher = (
        "import resource, runpy, sys\n"
        "_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({nofile}, hard))\n"
        f"sys.argv = ['audit-monitor', '--config', {str(config)!r}, 'run']\n"
        "runpy.run_module('monitor.cli', run_name='__main__')\n"
    )
    return Daemon(config, workdir, {"SIM_TOKEN": token}, argv=[sys.executable, "-c", launcher])


@pytest.fixture
def many_sockets() -> Iterator[list[socket.socket]]:
    """This process may need more descriptors than its default limit for the idle clients."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = IDLE_CLIENTS + 200
    if soft != resource.RLIM_INFINITY and soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"needs {wanted} open files, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def open_idle(host: str, port: int, count: int, into: list[socket.socket]) -> None:
    """Connect ``count`` clients that send nothing (the server may close the surplus at once)."""
    for _ in range(count):
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.settimeout(0.5)
        try:
            sock.connect((host, port))
        except OSError:  # the listen backlog is full: the server is not accepting more
            sock.close()
            continue
        into.append(sock)


def closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(0.01)
    try:
        return sock.recv(1) == b""
    except (TimeoutError, BlockingIOError):
        return False
    except OSError:  # reset by the server
        return True


def test_idle_clients_cannot_starve_polling_or_the_endpoint(
    sim: Simulator, tmp_path: Path, token: str, many_sockets: list[socket.socket]
) -> None:
    config = write_config(tmp_path / "audit-monitor.yaml", sim, tmp_path / "a.db", poll_interval="1s")
    limited = start_limited(config, tmp_path, token, CHILD_NOFILE)
    try:
        _idle_clients_scenario(limited, many_sockets)
    finally:
        limited.stop()


def _idle_clients_scenario(limited: Daemon, many_sockets: list[socket.socket]) -> None:
    limited.wait_event("poll cycle", 30)
    host, port = limited.base_url.removeprefix("http://").rsplit(":", 1)
    host = host.strip("[]")

    open_idle(host, int(port), IDLE_CLIENTS, many_sockets)
    assert len(many_sockets) > CHILD_NOFILE  # more than the daemon could ever hold open
    opened_at = time.monotonic()

    # Polling goes on while the idle clients sit there...
    polled = len(limited.events("poll cycle"))
    limited.wait_event("poll cycle", 20, count=polled + 3)
    assert not limited.events("poll failed"), limited.events("poll failed")[:1]
    # ...most of them were closed at once (the cap), the rest when they stayed idle too long.
    wait_until(lambda: all(closed_by_server(s) for s in many_sockets), 20, "every idle client to be closed")
    assert time.monotonic() - opened_at < 20

    status, body = http_get(f"{limited.base_url}/healthz")
    assert status == 200, body
    limited.wait_event("poll cycle", 20, count=len(limited.events("poll cycle")) + 2)
    assert not limited.events("poll failed")


def test_a_client_trickling_its_request_is_cut_off(
    daemon_factory: Callable[..., Daemon], sim: Simulator, tmp_path: Path
) -> None:
    """A byte every 2 s never trips the idle timeout; the connection's deadline ends it all the same."""
    config = write_config(tmp_path / "audit-monitor.yaml", sim, tmp_path / "a.db", poll_interval="1s")
    daemon = daemon_factory(config, "run")
    host, port = daemon.base_url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host.strip("[]"), int(port)), timeout=5)
    started = time.monotonic()
    try:
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 200
        cut = False
        for byte in request:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                cut = True
                break
            if closed_by_server(sock):
                cut = True
                break
            time.sleep(2)
            if time.monotonic() - started > 60:
                break
        assert cut, "the trickling client was never cut off"
        assert time.monotonic() - started < 30
    finally:
        sock.close()

"""The daemon as operators run it: `python -m monitor.cli --config X run` in a subprocess, against the
simulator serving real HTTP on 127.0.0.1 in this process. Every wait is bounded; the subprocess is
always killed in a finally.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bench.common import stop_process
from monitor.simulator import Simulator

REPO = Path(__file__).resolve().parents[2]

RULE = """\
id: ops.table-delete
title: A table was deleted
severity: high
match:
  deleted: {type: Delete Table}
"""


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def http_get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback URL
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Daemon:
    """One `audit-monitor run` subprocess: stdout (JSON logs) and stderr go to files we read back."""

    def __init__(
        self, config: Path, workdir: Path, env: dict[str, str], *args: str, argv: list[str] | None = None
    ) -> None:
        self.config, self.workdir = config, workdir
        self.stdout_path = workdir / f"stdout-{time.monotonic_ns()}.log"
        self.stderr_path = self.stdout_path.with_suffix(".err")
        self._stdout = open(self.stdout_path, "wb")  # noqa: SIM115 - closed in stop()
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            argv or [sys.executable, "-m", "monitor.cli", "--config", str(config), *(args or ("run",))],
            cwd=workdir,
            env={**os.environ, "PYTHONPATH": str(REPO), **env},
            stdout=self._stdout,
            stderr=self._stderr,
        )

    def lines(self) -> list[str]:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace").splitlines()

    def records(self) -> list[dict[str, Any]]:
        """Every stdout line as JSON (a line that does not parse fails the test that reads it)."""
        return [json.loads(line) for line in self.lines() if line.strip()]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.records() if r.get("event") == name]

    def wait_event(
        self,
        name: str,
        timeout: float,
        where: Callable[[dict[str, Any]], bool] = lambda r: True,
        count: int = 1,
    ) -> list[dict[str, Any]]:
        def found() -> list[dict[str, Any]] | None:
            self.assert_running()
            matches = [r for r in self.events(name) if where(r)]
            return matches if len(matches) >= count else None

        return wait_until(found, timeout, f"log event {name!r}")  # type: ignore[no-any-return]

    def assert_running(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(
                f"daemon exited with {self.proc.returncode}\nstdout:\n{self.stdout_path.read_text()[-3000:]}"
                f"\nstderr:\n{self.stderr_path.read_text()[-3000:]}"
            )

    @property
    def base_url(self) -> str:
        record = self.wait_event("http endpoint listening", 20)[0]
        return f"http://{record['host']}:{record['port']}"

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        try:
            stop_process(self.proc)
        finally:
            self._stdout.close()
            self._stderr.close()


def write_config(path: Path, sim: Simulator, db: Path, rules: Path | None = None, **extra: str) -> Path:
    lines = [
        f"state: {{path: {db}}}",
        "sources:",
        "  - name: sim",
        f"    base_url: {sim.base_url}",
        "    token: ${SIM_TOKEN}",
        f"    poll_interval: {extra.pop('poll_interval', '2s')}",
        f"    per_page: {extra.pop('per_page', '100')}",
        "    plan_retention: 60d",
        "alerts: {console: false}",
        f'server: {{listen: "127.0.0.1:0", stale_after: {extra.pop("stale_after", "3s")}}}',
    ]
    if rules is not None:
        lines.append(f"rules: {{paths: [{rules}]}}")
    lines.extend(f"{key}: {value}" for key, value in extra.items())
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def token() -> str:
    return "xmt-" + secrets.token_hex(16)


@pytest.fixture
def sim(token: str) -> Iterator[Simulator]:
    now = datetime.now(UTC)
    with Simulator(
        seed=11,
        token=token,
        history_start=now - timedelta(days=2),
        events_per_day=150,
        live_background=False,
    ) as simulator:
        yield simulator


@pytest.fixture
def daemon_factory(tmp_path: Path, token: str) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(config: Path, *args: str, env: dict[str, str] | None = None) -> Daemon:
        daemon = Daemon(config, tmp_path, {"SIM_TOKEN": token, **(env or {})}, *args)
        started.append(daemon)
        return daemon

    try:
        yield start
    finally:
        for daemon in started:
            daemon.stop()


def archived_ids(db: Path) -> list[int]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return [row[0] for row in conn.execute("SELECT event_id FROM events ORDER BY event_id")]


def query(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()

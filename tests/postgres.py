"""A real PostgreSQL server for the tests, started from the system's binaries (Debian's ``postgresql``).

One server per test session, on a private data folder, a free port on 127.0.0.1 and a private socket
folder, with ``trust`` authentication for its one user (nothing else can reach it). Each test that asks
gets an empty database of its own (``PostgresServer.new_database``).

PostgreSQL refuses to run as root: as root the server runs as the ``postgres`` user (``runuser``) on a
folder that user owns; as an ordinary user it runs as that user.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MINIMUM_MAJOR = 15
ENABLE = "apt-get install -y --no-install-recommends postgresql"
USER = "monitor"
# pg_terminate_backend only signals the session; with a timeout (PostgreSQL 14+) it also waits until the
# session has exited and released its locks, so a test does not race the session's last moments.
TERMINATE_WAIT_MS = 10_000


def find_bin_dir() -> Path | None:
    """The newest PostgreSQL (>= 15) server binaries on this machine, or None."""
    candidates = []
    for bin_dir in Path("/usr/lib/postgresql").glob("*/bin"):
        match = re.fullmatch(r"\d+", bin_dir.parent.name)
        if match and int(bin_dir.parent.name) >= MINIMUM_MAJOR and (bin_dir / "pg_ctl").exists():
            candidates.append((int(bin_dir.parent.name), bin_dir))
    on_path = shutil.which("pg_ctl")
    if not candidates and on_path:
        candidates.append((0, Path(on_path).parent))
    return max(candidates)[1] if candidates else None


def unavailable_reason() -> str | None:
    """Why the PostgreSQL tests cannot run here (one line with the command that enables them), or None."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "the psycopg package is missing (pip install -e '.[test]')"
    if find_bin_dir() is None:
        return f"no PostgreSQL {MINIMUM_MAJOR}+ server binaries in /usr/lib/postgresql ({ENABLE})"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return f"running as root and there is no postgres user to run the server as ({ENABLE})"
    return None


def terminate_backend(conn: Any, pid: int) -> None:
    """End the server session ``pid`` and wait until it is gone (its locks released)."""
    (ended,) = conn.execute("SELECT pg_terminate_backend(%s, %s)", (pid, TERMINATE_WAIT_MS)).fetchone()
    if not ended:
        raise AssertionError(f"server session {pid} did not end within {TERMINATE_WAIT_MS} ms")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """A private PostgreSQL server: ``start()``, ``new_database()`` for each test, ``stop()``."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="audit-monitor-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.port = _free_port()
        self._watcher: subprocess.Popen[bytes] | None = None
        self._names = itertools.count(1)
        self._run_as: list[str] = []
        if os.geteuid() == 0:
            # The server may not run as root: the postgres user owns the folder and runs it.
            self._run_as = ["runuser", "-u", "postgres", "--"]
            entry = pwd.getpwnam("postgres")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.sockets.mkdir()
        if self._run_as:
            entry = pwd.getpwnam("postgres")
            os.chown(self.sockets, entry.pw_uid, entry.pw_gid)

    def _run(self, *argv: str) -> None:
        completed = subprocess.run(
            [*self._run_as, *argv], capture_output=True, text=True, timeout=120, check=False
        )
        if completed.returncode != 0:
            command = " ".join(argv)
            raise RuntimeError(f"{command} failed ({completed.returncode}): {completed.stderr.strip()}")

    def start(self) -> None:
        self._run(
            str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", USER, "--auth=trust",
            "--encoding=UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.sockets} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 "
            "-c shared_buffers=64MB"
        )
        self._run(
            str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"),
            "-o", options, "-w", "-t", "60", "start",
        )  # fmt: skip
        self._reap_when_gone(os.getpid())

    def _reap_when_gone(self, owner: int) -> None:
        """Stop the server and remove its folder once process ``owner`` has ended, however it ended: a test
        run killed with kill -9 or ^C twice runs no cleanup, and left a server running per run."""
        stop = shlex.join(
            [*self._run_as, str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]
        )
        watch = (
            f"while kill -0 {owner} 2>/dev/null; do sleep 2; done; "
            f"if [ -d {shlex.quote(str(self.data))} ]; then {stop}; fi; rm -rf {shlex.quote(str(self.root))}"
        )
        self._watcher = subprocess.Popen(  # noqa: S603 - our own command line
            ["/bin/sh", "-c", watch],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # not in the test run's process group: a ^C there does not end it
        )

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
        if self._watcher is not None:  # a clean stop: the watcher has nothing left to do
            self._watcher.kill()
            self._watcher.wait()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self, template: str | None = None) -> str:
        """An empty database of its own (a copy of ``template`` when given); its URL."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._names)}"
        copy = f' TEMPLATE "{template}"' if template else ""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"{copy}')
        return self.url(name)

    def drop_connections(self, url: str) -> None:
        """End every session on ``url``'s database (as a server restart or a network cut would)."""
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid, %s) FROM pg_stat_activity WHERE datname = %s",
                (TERMINATE_WAIT_MS, name),
            )

    def log_tail(self, lines: int = 40) -> str:
        """The end of the server's log, for a failing test's message."""
        try:
            return "\n".join((self.root / "server.log").read_text().splitlines()[-lines:])
        except OSError:
            return ""


@contextlib.contextmanager
def running_server() -> Iterator[PostgresServer]:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise RuntimeError(unavailable_reason() or "no PostgreSQL binaries")
    server = PostgresServer(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()

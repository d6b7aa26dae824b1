"""The daemon's HTTP endpoint: ``/healthz`` and ``/metrics`` (stdlib ThreadingHTTPServer in a daemon thread).

The endpoint may be reachable by anyone on the network, so it can never take what polling needs: a
connection that sends nothing for ``IDLE_TIMEOUT`` seconds is closed, and so is any connection still open
``CONNECTION_DEADLINE`` seconds after it was accepted (a client trickling its request); at most
``connection_cap()`` connections are served at once (64, and never more than an eighth of the process's
open-files limit), and one more is closed as soon as it is accepted.

Health is judged from facts the daemon's worker thread records in ``Metrics`` (in memory), not by
querying SQLite per request: the worker owns the only connection, a probe must never wait on a
long backfill transaction, and "starting" (no cycle completed by this process yet) is process state
that the store cannot know. A hung worker still shows: its sources' last success grows old.
"""

from __future__ import annotations

import errno
import json
import logging
import resource
import socket
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from monitor.config import Config, SourceConfig
from monitor.events import format_timestamp
from monitor.metrics import HealthFacts, Metrics
from monitor.timeutil import format_duration

log = logging.getLogger("monitor.server")

Clock = Callable[[], datetime]

MIN_STALE_AFTER = timedelta(seconds=30)
DEAD_LETTER_WINDOW = timedelta(hours=1)
IDLE_TIMEOUT = 5.0  # seconds a connection may send (or take) nothing
CONNECTION_DEADLINE = 15.0  # seconds a connection may stay open in all
MAX_CONNECTIONS = 64


def connection_cap() -> int:
    """Connections served at once: ``MAX_CONNECTIONS``, and at most an eighth of the open-files limit,
    so the endpoint never takes the descriptors polling needs (sockets to Xano, the archive's files)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(1, min(MAX_CONNECTIONS, soft // 8))


class ServerError(Exception):
    """The endpoint cannot listen where the config says (bad address, port in use)."""


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port). Raises ValueError naming the problem."""
    host, sep, port_text = listen.strip().rpartition(":")
    if not sep or not port_text.isdigit() or not host:
        raise ValueError(f"{listen!r} is not host:port (e.g. 127.0.0.1:9108 or 0.0.0.0:9108)")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"{listen!r}: port {port} is out of range")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


def stale_after(source: SourceConfig, config: Config) -> timedelta:
    """How old a source's last success may be before /healthz fails: max(3 x poll_interval, 30 s)."""
    if config.server.stale_after is not None:
        return config.server.stale_after
    return max(3 * source.poll_interval, MIN_STALE_AFTER)


def evaluate_health(config: Config, facts: HealthFacts, now: datetime) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body). 503 names every reason; "starting" until each source completed a cycle."""
    reasons: list[str] = []
    starting: list[str] = []
    sources: dict[str, Any] = {}
    for source in config.sources:
        f = facts.sources.get(source.name)
        limit = stale_after(source, config)
        entry: dict[str, Any] = {"stale_after_seconds": limit.total_seconds()}
        if f is None or not f.polled_since_start:
            starting.append(source.name)
            entry["state"] = "starting"
        if f is not None:
            if f.last_success_at is not None:
                age = (now - f.last_success_at).total_seconds()
                entry["last_success_at"] = format_timestamp(f.last_success_at)
                entry["last_success_age_seconds"] = round(age, 1)
            if f.poll_started_at is not None:
                entry["poll_running_seconds"] = round((now - f.poll_started_at).total_seconds(), 1)
            if f.last_error:
                entry["last_error"] = f.last_error.splitlines()[0][:300]
                entry["last_error_kind"] = f.last_error_kind
        if f is not None and f.polled_since_start:
            if f.last_success_at is None:
                reasons.append(
                    f"source {source.name}: no successful poll yet ({f.last_error_kind or 'error'})"
                )
                entry["state"] = "failing"
            elif now - f.last_success_at > limit:
                reasons.append(
                    f"source {source.name}: last successful poll "
                    f"{format_duration(now - f.last_success_at)} ago "
                    f"(limit {format_duration(limit)})"
                    + (f"; last error: {f.last_error_kind}" if f.last_error_kind else "")
                )
                entry["state"] = "stale"
            else:
                entry["state"] = "ok"
        sources[source.name] = entry
    dead: dict[str, str] = {}
    for channel, at in sorted(facts.dead_letters.items()):
        if now - at < DEAD_LETTER_WINDOW:
            dead[channel] = format_timestamp(at)
            reasons.append(f"channel {channel}: dead letter {format_duration(now - at)} ago")
    if facts.archive_problem is not None:
        # At once, not after stale_after: every cycle fails until someone restores the file and restarts.
        reasons.insert(0, f"archive: {facts.archive_problem}")
    body: dict[str, Any] = {"status": "ok", "time": format_timestamp(now), "sources": sources}
    if dead:
        body["dead_letters"] = dead
    if starting:
        body["status"] = "starting"
        body["reasons"] = [f"source {name}: first poll has not completed yet" for name in starting] + reasons
        return 503, body
    if reasons:
        body["status"] = "unhealthy"
        body["reasons"] = reasons
        return 503, body
    return 200, body


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "audit-monitor"
    sys_version = ""
    timeout = IDLE_TIMEOUT  # socketserver sets it on the connection: every read and write is bounded

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            status, body = evaluate_health(
                self.server.config, self.server.metrics.health_facts(), self.server.clock()
            )
            self._send(status, "application/json", json.dumps(body, separators=(",", ":")).encode() + b"\n")
        elif path == "/metrics":
            payload, content_type = self.server.metrics.exposition(self.headers.get("Accept"))
            self._send(200, content_type, payload)
        elif path == "/":
            self._send(200, "text/plain; charset=utf-8", b"audit-monitor: /healthz /metrics\n")
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found\n")

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def _send(self, status: int, content_type: str, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        # Probes arrive every few seconds: access lines only at debug level, never on stderr.
        log.debug("http request", extra={"client": self.client_address[0], "request": format % args})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the kernel's accept queue (no descriptor of ours): a burst is not dropped
    config: Config
    metrics: Metrics
    clock: Clock

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self.max_connections = connection_cap()
        self._open: dict[socket.socket, float] = {}  # connection -> when it was accepted (monotonic)
        self._cut: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        self._refused = 0

    def get_request(self) -> tuple[socket.socket, Any]:
        try:
            return super().get_request()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                # Out of descriptors (not through us: we hold at most the cap). The listening socket stays
                # readable, so without a pause this loop would spin; socketserver drops the error.
                time.sleep(0.1)
            raise

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            full = len(self._open) >= self.max_connections
            if not full:
                self._open[request] = time.monotonic()
        if full:
            self._refused += 1
            if self._refused == 1 or self._refused % 1000 == 0:
                log.warning(
                    "http connections at their limit; closing new ones at once",
                    extra={"limit": self.max_connections, "refused": self._refused},
                )
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._forget(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._forget(request)

    def _forget(self, request: Any) -> None:
        with self._open_lock:
            self._open.pop(request, None)
            self._cut.discard(request)

    def service_actions(self) -> None:
        """Between accepts (at least every poll interval): cut connections open past the deadline. The idle
        timeout bounds each read; this bounds a client that sends a byte now and then."""
        now = time.monotonic()
        with self._open_lock:
            overdue = [
                c for c, at in self._open.items() if now - at > CONNECTION_DEADLINE and c not in self._cut
            ]
            self._cut.update(overdue)
        for connection in overdue:
            try:
                connection.shutdown(socket.SHUT_RDWR)  # the handler's read ends; its thread closes it
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The stdlib prints a traceback to stderr; ours goes through the (JSON, redacting) log.
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):  # a probe that hung up or stalled: nothing to do
            log.debug("http client went away", extra={"client": client_address[0]})
        else:
            log.exception("http request failed", extra={"client": client_address[0]})


class HealthServer:
    """``/healthz`` and ``/metrics`` on ``config.server.listen``, served from a daemon thread."""

    def __init__(self, config: Config, metrics: Metrics, *, clock: Clock = lambda: datetime.now(UTC)) -> None:
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> tuple[str, int]:
        listen = self.config.server.listen
        try:
            host, port = parse_listen(listen)
        except ValueError as exc:
            raise ServerError(f"server.listen: {exc}") from None
        server_class = (
            type("_Server6", (_Server,), {"address_family": socket.AF_INET6}) if ":" in host else _Server
        )
        try:
            server = server_class((host, port), _Handler)
        except OSError as exc:
            raise ServerError(f"server.listen {listen}: cannot listen: {exc.strerror or exc}") from None
        server.config, server.metrics, server.clock = self.config, self.metrics, self.clock
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
        self._thread.start()
        bound_host, bound_port = self.address
        log.info(
            "http endpoint listening",
            extra={"host": bound_host, "port": bound_port, "paths": ["/healthz", "/metrics"]},
        )
        return bound_host, bound_port

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None

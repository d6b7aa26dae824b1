"""The daemon's HTTP server: uvicorn serving the ASGI app (monitor.web.app) from its own thread.

uvicorn runs an asyncio loop in a daemon thread, so polling (the scheduler's worker thread) never waits on
a client. The limits below are what keeps a slow or hostile client from tying up the server itself:

- a connection must send a complete request head within ``REQUEST_HEAD_TIMEOUT`` (slowloris: uvicorn's
  own keep-alive timer stops counting as soon as the first byte arrives), and the request must be
  answered within ``REQUEST_DEADLINE`` of its head (a trickled body);
- an idle keep-alive connection is closed after ``KEEP_ALIVE_TIMEOUT``;
- at most ``connection_cap()`` connections at once (64, and at most an eighth of the open-files limit):
  one more is closed as soon as it is accepted, so idle clients never hold the descriptors polling needs;
- a request head larger than ``MAX_HEAD_BYTES`` is refused by h11; bodies are capped by the app.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import resource
import socket
import threading
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from monitor.config import Config, ConfigError, missing_secrets
from monitor.metrics import Metrics
from monitor.web.app import MAX_HEAD_BYTES, WebContext, build_app
from monitor.web.auth import GuessLimiter
from monitor.web.health import Clock, parse_listen, utc_now

log = logging.getLogger("monitor.web")

REQUEST_HEAD_TIMEOUT = 10.0  # seconds from connection (or from the previous response) to a full head
REQUEST_DEADLINE = 15.0  # seconds from a request's head to the end of its answer
KEEP_ALIVE_TIMEOUT = 5
MAX_CONNECTIONS = 64
_CAP = [MAX_CONNECTIONS]  # connection_cap() of the running server (one per process)
_refused = [0]


class ServerError(Exception):
    """The endpoint cannot listen where the config says (bad address, port in use, unsafe exposure)."""


def connection_cap() -> int:
    """Connections served at once: ``MAX_CONNECTIONS``, and at most an eighth of the open-files limit,
    so the endpoint never takes the descriptors polling needs (sockets to Xano, the archive's files)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(1, min(MAX_CONNECTIONS, soft // 8))


class _DeadlineProtocol(H11Protocol):
    """h11 with deadlines and a cap: a request head must arrive within ``REQUEST_HEAD_TIMEOUT`` and the
    request be answered within ``REQUEST_DEADLINE`` of its head (a client trickling its head or its body
    is disconnected), and a connection beyond ``connection_cap()`` is closed as soon as it is accepted."""

    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > _CAP[0]:
            # Closed at once rather than answered 503 later: an idle client must not hold a descriptor.
            _refused[0] += 1
            if _refused[0] == 1 or _refused[0] % 1000 == 0:
                log.warning(
                    "http connections at their limit; closing new ones at once",
                    extra={"limit": _CAP[0], "refused": _refused[0]},
                )
            transport.abort()
            return
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        before = self.cycle
        super().data_received(data)
        if self.cycle is not before and not self.transport.is_closing():  # a complete request head arrived
            self._arm_head_timer(REQUEST_DEADLINE)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()  # the next request on this connection gets the same deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self, seconds: float | None = None) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(
            REQUEST_HEAD_TIMEOUT if seconds is None else seconds, self._head_timed_out
        )

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            log.debug("http client too slow to send a request; disconnected", extra={"client": self.client})
            self.transport.close()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def exposure_problem(listen: str) -> str:
    """Why ``run`` refuses a non-loopback ``server.listen`` without tokens, and the two ways out."""
    return (
        f"server.listen is {listen}, an address other hosts can reach, and server.tokens is empty: "
        "refusing to start. Configure a token in server.tokens (e.g. "
        "`tokens: [{name: ops, token: ${API_TOKEN}}]`, or set AUDIT_MONITOR_API_TOKEN in the "
        "container), or bind a loopback address (server.listen: 127.0.0.1:9108)"
    )


def listen_problem(config: Config) -> str | None:
    """Why ``server.listen`` cannot be served as configured, or None. ``run`` asks before it opens the
    archive, so that a refused configuration creates or changes nothing."""
    listen = config.server.listen
    if not listen:
        return None
    try:
        host, _port = parse_listen(listen)
    except ValueError as exc:
        return f"server.listen: {exc}"
    missing = missing_secrets(config.server)
    if missing:
        return "server.tokens: " + "; ".join(missing)
    if not is_loopback(host) and not config.server.tokens:
        # Fail closed: an address others can reach, with nothing configured to tell who is asking, is a
        # mistake far more often than a choice.
        return exposure_problem(listen)
    return None


class WebServer:
    """``server.listen``: /healthz, /metrics, and (with ``server.tokens``) the JSON API and the console."""

    def __init__(
        self,
        config: Config,
        metrics: Metrics,
        *,
        clock: Clock = utc_now,
        status: Any = None,
        guesses: GuessLimiter | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self.status = status
        self.guesses = guesses  # None: the default limits (tests pass their own, with a fake clock)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def address(self) -> tuple[str, int]:
        assert self._socket is not None, "not started"
        host, port = self._socket.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> tuple[str, int]:
        listen = self.config.server.listen
        problem = listen_problem(self.config)
        if problem is not None:
            raise ServerError(problem)
        host, port = parse_listen(listen)
        try:
            context = WebContext.from_config(self.config, self.metrics, clock=self.clock)
            if self.guesses is not None:
                context.guesses = self.guesses
        except ConfigError as exc:
            raise ServerError(str(exc)) from None
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            raise ServerError(f"server.listen {listen}: cannot listen: {exc.strerror or exc}") from None
        sock.setblocking(False)
        _CAP[0] = connection_cap()
        self._socket = sock
        settings = uvicorn.Config(
            build_app(context),
            http=_DeadlineProtocol,
            ws="none",
            lifespan="off",
            log_config=None,
            access_log=False,  # each data request is logged by the app, with its token's name
            server_header=False,
            timeout_keep_alive=KEEP_ALIVE_TIMEOUT,
            limit_concurrency=None,  # the protocol closes connections beyond the cap at once
            # asyncio accepts up to `backlog` connections per loop pass before any is closed: bounded by the
            # cap, so a flood of idle clients never holds more descriptors than twice the cap at once.
            backlog=_CAP[0],
            h11_max_incomplete_event_size=MAX_HEAD_BYTES,
            timeout_graceful_shutdown=3,
            # X-Forwarded-Proto/-For are believed from a reverse proxy on this host only (TLS ended there:
            # the console's cookie is then marked Secure); from anyone else they are ignored.
            proxy_headers=True,
            forwarded_allow_ips="127.0.0.1,::1",
        )
        self._server = uvicorn.Server(settings)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="http", daemon=True
        )
        self._thread.start()
        bound_host, bound_port = self.address
        log.info(
            "http endpoint listening",
            extra={
                "host": bound_host,
                "port": bound_port,
                "paths": ["/healthz", "/metrics", *(["/api/v1", "/"] if context.tokens.enabled else [])],
            },
        )
        return bound_host, bound_port

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()
        self._server = None
        self._thread = None

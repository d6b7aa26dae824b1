"""The ASGI application: /healthz and /metrics (open), the JSON API under /api/v1 (bearer tokens).

Starlette rather than FastAPI: the API is a handful of read endpoints whose parameters we validate
ourselves (to name the bad one in a 400, as the CLI does), the console is server-rendered Jinja, and
Starlette brings neither pydantic request models we would not use nor a second dependency tree.

Database work runs in worker threads (a few at a time), each with its own SQLite connection: the daemon's
worker owns its connection, and WAL lets these readers run beside its write transactions without waiting.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from monitor.config import Config
from monitor.metrics import Metrics
from monitor.store import Store
from monitor.web.auth import GuessLimiter, TokenRegistry
from monitor.web.health import Clock, evaluate_health, utc_now

log = logging.getLogger("monitor.web")

MAX_BODY_BYTES = 64 * 1024
MAX_HEAD_BYTES = (
    16 * 1024
)  # request line and headers  # a note, a silence: a few hundred bytes; anything larger is a mistake or abuse
DB_THREADS = 4

# No inline script or style anywhere (the console's JS and CSS are static files), no framing, no plugins.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


class ArchiveConnections:
    """One Store per worker thread, opened on first use and all closed at shutdown."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()
        self._opened: list[Store] = []
        self._lock = threading.Lock()

    def get(self) -> Store:
        store: Store | None = getattr(self._local, "store", None)
        if store is None:
            store = Store.open(self.path)
            self._local.store = store
            with self._lock:
                self._opened.append(store)
        return store

    def close(self) -> None:
        with self._lock:
            for store in self._opened:
                store.close()
            self._opened.clear()


@dataclass
class WebContext:
    config: Config
    metrics: Metrics
    tokens: TokenRegistry
    archive: ArchiveConnections
    clock: Clock = utc_now
    limiter: anyio.CapacityLimiter | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    guesses: GuessLimiter = field(default_factory=GuessLimiter)

    @classmethod
    def from_config(cls, config: Config, metrics: Metrics, *, clock: Clock = utc_now) -> WebContext:
        return cls(
            config,
            metrics,
            TokenRegistry(config.server.tokens),
            ArchiveConnections(config.state.target()),
            clock,
        )

    async def run_db(self, work: Callable[[Store], Any]) -> Any:
        """Run ``work(store)`` on a worker thread with that thread's own connection."""
        if self.limiter is None:
            self.limiter = anyio.CapacityLimiter(DB_THREADS)
        return await anyio.to_thread.run_sync(lambda: work(self.archive.get()), limiter=self.limiter)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # orjson: a 1,000-event page encodes several times faster than with the stdlib (the walk's cost).
    return Response(orjson.dumps(body), status, headers=headers, media_type="application/json")


def json_error(status: int, error: str, detail: Any = None) -> Response:
    return json_response({"error": error, "detail": detail}, status)


def client_address(request: Request) -> str:
    """The address a request came from (a reverse proxy's X-Forwarded-For when the proxy is on this host:
    uvicorn's proxy_headers, see server.py)."""
    return request.client.host if request.client is not None else "unknown"


def throttled(context: WebContext, request: Request, surface: str) -> int | None:
    """Seconds the request's address must wait (its requests are answered 429), or None."""
    retry_after = context.guesses.retry_after(client_address(request))
    if retry_after is not None:
        context.metrics.auth_throttled.labels(surface).inc()
    return retry_after


def wrong_token(context: WebContext, request: Request, surface: str) -> None:
    """Count a wrong token; log once when its address reaches the limit (never the token)."""
    context.metrics.auth_failures.labels(surface).inc()
    address = client_address(request)
    if context.guesses.failed(address):
        log.warning(
            "too many wrong tokens from one address: its requests are refused for a while",
            extra={
                "client": address,
                "surface": surface,
                "failures": context.guesses.limit,
                "window_s": context.guesses.window,
                "refused_for_s": context.guesses.block,
            },
        )


class SecurityHeaders:
    """Headers on every response: no framing, no sniffing, a CSP without inline script, and no caching of
    anything but the console's static files (API answers and pages hold archive data)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control"]
                headers += [
                    (b"x-frame-options", b"DENY"),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
                    (b"cache-control", b"public, max-age=3600" if static else b"no-store"),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


class BodyLimit:
    """Refuse request heads over MAX_HEAD_BYTES (431) and bodies over ``limit`` bytes (413, by Content-Length
    or as they stream in)."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers", [])
        # h11 caps a head that arrives in pieces; one that arrives whole is measured here.
        if (
            sum(len(name) + len(value) + 4 for name, value in headers)
            + len(scope.get("raw_path", b""))
            + len(scope.get("query_string", b""))
            > MAX_HEAD_BYTES
        ):
            await json_error(431, "request head too large", {"limit_bytes": MAX_HEAD_BYTES})(
                scope, receive, send
            )
            return
        for name, value in headers:
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.limit:
                    await _too_large(self.limit)(scope, receive, send)
                    return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _BodyTooLarge:
            await _too_large(self.limit)(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


def _too_large(limit: int) -> Response:
    return json_error(413, "request body too large", {"limit_bytes": limit})


def health_routes(context: WebContext) -> list[BaseRoute]:
    async def healthz(request: Request) -> Response:
        status, body = evaluate_health(context.config, context.metrics.health_facts(), context.clock())
        payload = json.dumps(body, separators=(",", ":")).encode() + b"\n"
        return Response(payload, status, media_type="application/json")

    async def metrics(request: Request) -> Response:
        payload, content_type = context.metrics.exposition(request.headers.get("accept"))
        return Response(payload, 200, headers={"content-type": content_type})

    return [
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/metrics", metrics, methods=["GET", "HEAD"]),
    ]


def build_app(context: WebContext) -> ASGIApp:
    from monitor.web.api import api_routes
    from monitor.web.console import console_routes

    routes = health_routes(context) + api_routes(context) + console_routes(context)

    async def not_found(request: Request, exc: Exception) -> Response:
        return json_error(404, "not found", {"path": request.url.path})

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        return json_error(405, "method not allowed", {"method": request.method})

    async def crashed(request: Request, exc: Exception) -> Response:
        log.exception("http request failed", extra={"path": request.url.path})
        return json_error(500, "internal error", None)

    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        404: not_found,
        405: method_not_allowed,
        500: crashed,
    }
    middleware = [Middleware(SecurityHeaders), Middleware(BodyLimit)]
    if context.config.server.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(context.config.server.cors_origins),
                allow_methods=["GET", "POST", "DELETE"],
                allow_headers=["Authorization", "Content-Type"],
                max_age=600,
            )
        )
    return Starlette(routes=routes, middleware=middleware, exception_handlers=handlers)

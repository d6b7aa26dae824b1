"""Helpers for the alert tests. Real servers: a Slack Web API stub (http.server in a thread,
behind slack-sdk's ``base_url``), aiosmtpd on 127.0.0.1 (plain, STARTTLS, implicit TLS) and a trustme test CA.
The fixtures that start and stop them are in conftest.py.
"""

from __future__ import annotations

import itertools
import json
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from monitor.alerts.model import Alert
from monitor.config import Config, parse_config
from monitor.store import Store

BOT_TOKEN = "xoxb-test-SECRET-token"
SMTP_PASSWORD = "smtp-SECRET-password"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the Slack stub -----------------------------------------------------------------------------------------


@dataclass
class SlackRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    raw: str


@dataclass
class SlackReply:
    status: int = 200
    body: Any = None  # dict -> JSON; str -> text
    headers: dict[str, str] = field(default_factory=dict)


def ok() -> SlackReply:
    return SlackReply(200, {"ok": True})  # the stub fills channel and ts


def api_error(code: str, status: int = 200, **headers: str) -> SlackReply:
    return SlackReply(status, {"ok": False, "error": code}, headers)


def ratelimited(retry_after: int) -> SlackReply:
    return SlackReply(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(retry_after)})


def server_error(status: int = 500) -> SlackReply:
    return SlackReply(status, "<html>upstream broke</html>")


class SlackStub:
    """Answers chat.postMessage (and incoming webhooks under /services/) from a script, then ``ok``."""

    def __init__(self) -> None:
        self.requests: list[SlackRequest] = []
        self.script: deque[SlackReply] = deque()
        self._ts = itertools.count(1)
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode("utf-8")
                try:
                    body = json.loads(raw) if raw else {}
                except json.JSONDecodeError:
                    body = {"_form": raw}
                with stub._lock:
                    stub.requests.append(SlackRequest(self.path, dict(self.headers), body, raw))
                    reply = stub.script.popleft() if stub.script else ok()
                    ts = f"1772618400.{next(stub._ts):06d}"
                webhook = self.path.startswith("/services/")
                payload: Any = reply.body
                if isinstance(payload, dict) and payload.get("ok") is True:
                    payload = {**payload, "channel": "C0123", "ts": ts, "message": {"ts": ts}}
                if webhook and reply.status == 200:
                    payload = "ok"
                elif webhook and isinstance(payload, dict):
                    payload = payload.get("error", "")
                data = (json.dumps(payload) if isinstance(payload, dict) else str(payload)).encode()
                self.send_response(reply.status)
                self.send_header(
                    "Content-Type", "application/json" if isinstance(payload, dict) else "text/plain"
                )
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        # A short poll interval: shutdown() at teardown waits for it.
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/services/T000/B000/SECRETwebhookPATH"

    def push(self, *replies: SlackReply) -> None:
        self.script.extend(replies)

    def posts(self) -> list[SlackRequest]:
        return [
            r for r in self.requests if r.path.endswith("chat.postMessage") or r.path.startswith("/services/")
        ]


class RecordingServer:
    """Any other host on the network: records every request (method, path, headers), answers 200 ``ok``.
    A channel must never reach it by following a redirect."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                recorder.requests.append((self.command, self.path, dict(self.headers)))
                body = b'{"ok": true, "ts": "1.0"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _record  # noqa: N815 - http.server's names

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/elsewhere"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)


def redirect(location: str, status: int = 302) -> SlackReply:
    return SlackReply(status, "", {"Location": location})


# --- SMTP ---------------------------------------------------------------------------------------------------


class SmtpRecorder:
    """An aiosmtpd handler that keeps every accepted message and answers scripted failures first."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[Envelope] = []
        self.tls_sessions: list[bool] = []
        self.rcpt_replies: deque[str] = deque()  # e.g. "550 5.1.1 no such user"
        self.data_replies: deque[str] = deque()  # e.g. "451 4.3.0 try later"

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: Any, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if self.rcpt_replies:
            return self.rcpt_replies.popleft()
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:  # noqa: N802
        if self.data_replies:
            return self.data_replies.popleft()
        self.envelopes.append(envelope)
        # Implicit TLS shows on the transport; STARTTLS upgrades it too (session.ssl covers only STARTTLS).
        self.tls_sessions.append(server.transport.get_extra_info("ssl_object") is not None)
        content = envelope.original_content or envelope.content
        assert isinstance(content, bytes)
        message = message_from_bytes(content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 Message accepted"


def _authenticator(
    server: Any, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == b"monitor"
        and auth_data.password == (SMTP_PASSWORD.encode())
    )
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself


@dataclass
class SmtpServer:
    host: str
    port: int
    recorder: SmtpRecorder
    controller: Controller


class TlsFiles:
    def __init__(self, tmp: Path) -> None:
        self.ca = trustme.CA()
        cert = self.ca.issue_cert("127.0.0.1", "localhost")
        self.server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(self.server_context)
        self.ca_file = str(tmp / "test-ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_file)


def start_smtp(
    *,
    tls_context: ssl.SSLContext | None = None,
    implicit_tls: bool = False,
    require_auth: bool = False,
    smtputf8: bool = True,
) -> SmtpServer:
    recorder = SmtpRecorder()
    port = free_port()
    # aiosmtpd's Controller offers SMTPUTF8 unless told not to; many real relays do not.
    kwargs: dict[str, Any] = {"enable_SMTPUTF8": smtputf8}
    if tls_context is not None and not implicit_tls:
        kwargs.update(tls_context=tls_context, require_starttls=True)
    if require_auth:
        kwargs.update(
            authenticator=_authenticator,
            auth_required=True,
            auth_require_tls=tls_context is not None,
        )
    controller = Controller(
        recorder,
        hostname="127.0.0.1",
        port=port,
        ssl_context=tls_context if implicit_tls else None,
        ready_timeout=10,
        **kwargs,
    )
    controller.start()
    return SmtpServer("127.0.0.1", port, recorder, controller)


# --- store, config, alerts ---------------------------------------------------------------------------------


def make_config(
    *,
    slack: dict[str, Any] | None = None,
    email: dict[str, Any] | None = None,
    console: bool | None = None,
    min_severity: str = "low",
    digest_after: int = 10,
    sources: list[dict[str, Any]] | None = None,
    timezone: str = "Europe/Berlin",
    state_path: str = "./data/x.db",
    **channels: Any,
) -> Config:
    """A config from these sections; ``channels`` are further ``alerts`` keys (webhooks, teams, pagerduty)."""
    alerts: dict[str, Any] = {"min_severity": min_severity, "digest_after": digest_after, **channels}
    if slack is not None:
        alerts["slack"] = slack
    if email is not None:
        alerts["email"] = email
    if console is not None:
        alerts["console"] = console
    data = {
        "timezone": timezone,
        "state": {"path": state_path},
        "alerts": alerts,
        "sources": sources or [],
        "server": {"listen": ""},
    }
    return parse_config(json.dumps(data), "test.yaml", {})


def slack_config(stub: SlackStub, **extra: Any) -> dict[str, Any]:
    return {"token": BOT_TOKEN, "channel": "#sec", "base_url": stub.base_url, "timeout": "5s", **extra}


def email_config(server: SmtpServer, *, security: str = "none", **smtp_extra: Any) -> dict[str, Any]:
    return {
        "smtp": {
            "host": server.host,
            "port": server.port,
            "security": security,
            "timeout": "5s",
            **smtp_extra,
        },
        "from": "monitor@example.com",
        "to": ["security@example.com", "oncall@example.com"],
        "min_severity": "low",
    }


_ids = itertools.count(1000)


def make_alert(
    *,
    rule_id: str = "xano.db.table-deleted",
    severity: str = "high",
    title: str = "Table users deleted",
    text: str = "Someone deleted the table users.",
    source: str = "prod",
    event_time: datetime | None = None,
    event_ids: tuple[int, ...] | None = None,
    context: dict[str, Any] | None = None,
    suppressed_count: int = 0,
    fields: dict[str, str] | None = None,
) -> Alert:
    return Alert(
        rule_id=rule_id,
        severity=severity,
        title=title,
        text=text,
        source=source,
        event_time=event_time or datetime(2026, 3, 4, 9, 30, tzinfo=UTC),
        event_ids=event_ids if event_ids is not None else (next(_ids),),
        context=context
        if context is not None
        else {"user": "dana@corp.io", "workspace": "Main", "branch": "v1", "msg": "Deleted table users"},
        suppressed_count=suppressed_count,
        fields=fields or {},
    )


def record(store: Store, alerts: list[Alert], channels: list[str], now: datetime) -> None:
    with store.transaction():
        for alert in alerts:
            store.record_alert(alert, channels, now)


def outbox_rows(store: Store) -> list[dict[str, Any]]:
    cursor = store.conn.execute(
        "SELECT alert_id, channel, status, attempts, next_attempt_at, first_attempt_at, last_error, "
        "remote_id FROM outbox ORDER BY alert_id, channel"
    )
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def all_strings(value: Any) -> Iterator[str]:
    """Every string inside a JSON value (to look for live mentions anywhere in a Slack payload)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from all_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from all_strings(item)


def after(start: datetime, seconds: float) -> datetime:
    return start + timedelta(seconds=seconds)


class Clock(Protocol):
    """The shape of tests/conftest.py's ``clock`` fixture (FakeClock)."""

    now: datetime

    def __call__(self) -> datetime: ...

    def advance(self, delta: timedelta) -> None: ...


# --- a recording HTTP receiver (webhooks, Teams, PagerDuty) -------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # names lower-cased
    raw: bytes

    def json(self) -> Any:
        return json.loads(self.raw)


@dataclass
class Reply:
    status: int = 200
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)


class Receiver:
    """An HTTP server on 127.0.0.1 that records every POST and answers from a script, then ``default``."""

    def __init__(self, default: Reply | None = None) -> None:
        self.requests: list[Received] = []
        self.script: deque[Reply] = deque()
        self.default = default or Reply(200, "ok")
        self.delay = 0.0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                # A slow receiver takes the request halfway through ``delay`` and answers at its end: a client
                # killed in the second half never hears that its alert arrived (the re-send window).
                time.sleep(receiver.delay / 2)
                with receiver._lock:
                    receiver.requests.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, raw)
                    )
                    reply = receiver.script.popleft() if receiver.script else receiver.default
                time.sleep(receiver.delay / 2)
                data = reply.body.encode()
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        # A killed client leaves a broken pipe behind; that is a fault scenario, not an error worth printing.
        self.server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def push(self, *replies: Reply) -> None:
        self.script.extend(replies)

    def start(self) -> Receiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

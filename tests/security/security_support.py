"""Helpers for the bad-input and security suites: a scripted audit-log server on 127.0.0.1 (plain or TLS)
and the CLI in a subprocess (as an operator runs it, so stderr shows whether a traceback escaped)."""

from __future__ import annotations

import base64
import json
import os
import re
import ssl
import subprocess
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


class PageServer:
    """Serves the audit-log search endpoint from a scripted list of pages (``nextPage`` chains them)."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.pages: list[list[Any]] = []
        # When set, every request is answered with this (status, JSON body) instead of a page.
        self.error: tuple[int, Any] | None = None
        self.bodies: dict[int, bytes] = {}  # page number -> the body to send instead (JSON no encoder writes)
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                server.requests += 1
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                if server.error is not None:
                    status, error_body = server.error
                    payload = json.dumps(error_body).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                number = int(body["page"])
                items = server.pages[number - 1] if number <= len(server.pages) else []
                envelope = {
                    "items": items,
                    "curPage": number,
                    "nextPage": number + 1 if number < len(server.pages) else None,
                    "itemsTotal": None,
                    "pageTotal": len(server.pages),
                }
                # ensure_ascii: lone surrogates travel as \\ud800 escapes, as a JSON API may send them.
                data = server.bodies.get(number) or json.dumps(envelope, ensure_ascii=True).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        if tls is not None:
            self.http.socket = tls.wrap_socket(self.http.socket, server_side=True)
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.http.server_address[1]}"
        self.thread = threading.Thread(target=self.http.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``audit-monitor ARGS`` in a subprocess with a minimal environment (plus ``env``)."""
    return subprocess.run(
        [sys.executable, "-m", "monitor.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO), **(env or {})},
        check=False,
    )


def forms(secret: str) -> list[str]:
    """The secret and its shapes on the wire, in a URL, in a repr or JSON, or split by line breaks."""
    shapes = {
        secret,
        f"Bearer {secret}",
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
        base64.b64encode(secret.encode()).decode(),
        base64.b64encode(f"\0monitor\0{secret}".encode()).decode(),  # SMTP AUTH PLAIN
        secret.encode("unicode_escape").decode(),
        repr(secret)[1:-1],
        json.dumps(secret)[1:-1],
    }
    # A secret wrapped over lines (a token file with a line break) shows up in pieces.
    shapes |= {piece for piece in re.split(r"[\x00-\x1f\x7f\s]+", secret) if len(piece) >= 8}
    return sorted(shapes)


def leaks(secrets_by_name: dict[str, str], artefacts: dict[str, bytes]) -> list[str]:
    return [
        f"{what} ({shape!r}) in {artefact}"
        for what, secret in secrets_by_name.items()
        for shape in forms(secret)
        for artefact, data in artefacts.items()
        if shape.encode() in data
    ]


def fragment_leaks(secret: str, artefacts: dict[str, bytes], length: int = 12) -> list[str]:
    """Any ``length`` consecutive characters of ``secret`` (a token cut short is still most of a token)."""
    windows = {secret[i : i + length] for i in range(max(1, len(secret) - length + 1))}
    return [
        f"{window!r} in {name}"
        for name, data in artefacts.items()
        for window in windows
        if window.encode() in data
    ]

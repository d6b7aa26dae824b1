"""Upstream text on the operator's terminal: an error body from the Xano API that carries terminal escapes
(a screen clear, an OSC 8 hyperlink), a bidi override and a Unicode line separator is shown by `run --once`
and `status` with those characters neutralised. The CLI runs in a subprocess, as an operator runs it."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

import pytest
from security_support import cli

from monitor.logs import setup_logging
from monitor.store import Cursor, Store

HOSTILE = (
    "quota \u202egnp.exe\u202c \x1b[2J\x1b]8;;http://evil.example\x07click\x1b]8;;\x07"
    "\u2028FAKE: all clear \x9b31m \u2066iso\u2069"
)
FORBIDDEN = ("\u202e", "\u202c", "\x1b", "\x07", "\u2028", "\x9b", "\u2066", "\u2069")


@pytest.fixture
def hostile_api() -> Iterator[str]:
    """An audit-log API that refuses every request with HTTP 400 and a hostile JSON error message."""

    class Handler(BaseHTTPRequestHandler):
        def _refuse(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            data = json.dumps({"code": "ERROR_CODE_BAD_REQUEST", "message": HOSTILE}).encode()
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _refuse  # noqa: N815 - http.server's names

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def assert_neutralised(output: str) -> None:
    found = [hex(ord(ch)) for ch in FORBIDDEN if ch in output]
    assert not found, (found, output[-600:])


def test_upstream_error_text_is_neutralised_in_run_once_status_and_logs(
    hostile_api: str, tmp_path: Path
) -> None:
    config = tmp_path / "audit-monitor.yaml"
    config.write_text(
        f"state: {{path: {tmp_path / 'a.db'}}}\n"
        "server: {listen: ''}\n"
        "alerts: {console: true}\n"
        f"sources: [{{name: prod, base_url: '{hostile_api}', token: t0ken-value, workspace_id: 1}}]\n",
        encoding="utf-8",
    )
    run = cli("--config", str(config), "run", "--once", cwd=tmp_path)
    assert run.returncode == 1, run.stderr[-2000:]
    assert "gnp.exe" in run.stderr  # the error is shown, its words readable
    assert_neutralised(run.stdout + run.stderr)

    # The table cuts a long error; the archive of a source whose error starts with the hostile text:
    with Store.open(tmp_path / "a.db") as store, store.transaction():
        store.save_cursor(
            Cursor("prod", last_error=HOSTILE, error_kind="unavailable", last_error_at=datetime.now(UTC))
        )
    status = cli("--config", str(config), "status", cwd=tmp_path)
    assert status.returncode == 0, status.stderr[-2000:]
    assert "gnp.exe" in status.stdout
    assert_neutralised(status.stdout + status.stderr)


def test_readable_log_lines_on_a_terminal_neutralise_upstream_text() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        setup_logging("info", stream)
        logging.getLogger("monitor.poller").error(f"poll failed {HOSTILE}", extra={"error": HOSTILE})
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    shown = stream.getvalue()
    assert not shown.startswith("{") and shown.count("\n") == 1  # the readable format, on one line
    assert shown.count("gnp.exe") == 2
    assert_neutralised(shown)


def test_rules_explain_neutralises_event_text(tmp_path: Path) -> None:
    # EVENT.json is often a page saved from the API: its text is upstream text like any other.
    event = {
        "id": 7,
        "created_at": "2026-03-04T10:00:00Z",
        "type": "Delete Table",
        "msg": HOSTILE,
        "user": {"id": 1, "email": "ana@corp.io"},
        "workspace": {"id": 1, "name": HOSTILE},
    }
    (tmp_path / "event.json").write_text(json.dumps(event), encoding="utf-8")
    run = cli("rules", "explain", "xano.table.deleted", "event.json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "gnp.exe" in run.stdout
    assert_neutralised(run.stdout + run.stderr)

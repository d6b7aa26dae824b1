"""Secrets next to poll errors: a secret with a line break in it, and a server that echoes the token.

Everything runs through the real parts: the CLI in a subprocess (``run --once``, ``status --json``), the
daemon in a subprocess serving ``/healthz``, the poller with the real HTTP client against a scripted
audit-log server on 127.0.0.1. Each artefact an operator or an attacker could read (stdout, stderr, the
SQLite files, ``status``, ``/healthz``, the log lines) is scanned for the secret in every form and for any
12 consecutive characters of it.
"""

from __future__ import annotations

import io
import json
import logging
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from monitor.config import Config, ConfigError, SourceConfig, load_config
from monitor.logs import setup_logging
from monitor.poller import Poller
from monitor.store import Store
from monitor.xano import RetryPolicy, XanoClient
from tests.conftest import FakeClock
from tests.ops.conftest import Daemon, http_get, wait_until
from tests.security.security_support import PageServer, cli, fragment_leaks, leaks

# A realistic metadata API token, as a file holds it when it was pasted wrapped at 40 columns.
TOKEN = "eyJhbGciOiJSUzI1NiJ9." + secrets.token_hex(20)  # 61 characters
WRAPPED = TOKEN[:40] + "\n" + TOKEN[40:]


@pytest.fixture
def server() -> Iterator[PageServer]:
    page_server = PageServer()
    page_server.pages = [[{"id": 1, "created_at": "2026-03-04T10:00:00Z", "type": "Login"}]]
    try:
        yield page_server
    finally:
        page_server.close()


def write_config(tmp_path: Path, base_url: str, extra: str = "") -> Path:
    path = tmp_path / "audit-monitor.yaml"
    path.write_text(
        f"""\
state: {{path: {tmp_path / "audit.db"}}}
sources:
  - name: prod
    base_url: {base_url}
    token: ${{XANO_META_TOKEN}}
    poll_interval: 2s
alerts: {{console: false}}
server: {{listen: ""}}
{extra}""",
        encoding="utf-8",
    )
    return path


def secret_file(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return str(path)


def database_bytes(tmp_path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in tmp_path.glob("audit.db*") if p.is_file()}


# --- a secret with a control character is a configuration error -------------------------------------------


@pytest.mark.parametrize(
    ("variable", "key", "extra"),
    [
        ("XANO_META_TOKEN", "sources[0].token", ""),
        (
            "SLACK_BOT_TOKEN",
            "alerts.slack.token",
            'alerts: {console: false, slack: {token: "${SLACK_BOT_TOKEN}", channel: "#sec"}}\n',
        ),
        (
            "SMTP_PASSWORD",
            "alerts.email.smtp.password",
            "alerts:\n  console: false\n  email:\n    smtp: {host: 127.0.0.1, username: mon, "
            'password: "${SMTP_PASSWORD}"}\n    from: m@example.com\n    to: [s@example.com]\n',
        ),
    ],
)
def test_a_wrapped_secret_file_is_a_config_error_naming_the_key_never_the_value(
    tmp_path: Path, server: PageServer, variable: str, key: str, extra: str
) -> None:
    config = write_config(tmp_path, server.url)
    if extra:  # the alerts section replaces the default one
        text = config.read_text(encoding="utf-8").replace("alerts: {console: false}\n", "")
        config.write_text(text + extra, encoding="utf-8")
    env = {"XANO_META_TOKEN": "xmt-fine-token-0123456789", f"{variable}_FILE": ""}
    env[f"{variable}_FILE"] = secret_file(tmp_path / "secret", WRAPPED + "\n")
    if variable == "XANO_META_TOKEN":
        del env["XANO_META_TOKEN"]
    else:
        env.pop(variable, None)
    result = cli("--config", str(config), "run", "--once", cwd=tmp_path, env=env, timeout=90)
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert f"{config}:" in line and f"{key}: " in line and "control character" in line, line
    assert server.requests == 0  # never sent anywhere
    artefacts = {
        "stdout": result.stdout.encode(),
        "stderr": result.stderr.encode(),
        **database_bytes(tmp_path),
    }
    assert not leaks({"secret": WRAPPED}, artefacts)
    assert not fragment_leaks(TOKEN, artefacts)


def test_a_trailing_line_break_from_a_secret_file_is_stripped_not_rejected(tmp_path: Path) -> None:
    """``echo token > file`` writes a trailing newline (a Windows editor a CRLF): not part of the token."""
    config = write_config(tmp_path, "http://127.0.0.1:1")
    for ending in ("\n", "\r\n", ""):
        env = {"XANO_META_TOKEN_FILE": secret_file(tmp_path / "token", TOKEN + ending)}
        assert load_config(config, env).sources[0].token.get_secret_value() == TOKEN
    with pytest.raises(ConfigError) as error:
        load_config(config, {"XANO_META_TOKEN": "abc\tdef-ghijkl"})
    assert "sources[0].token" in str(error.value) and "def-ghijkl" not in str(error.value)


# --- a server that echoes the token: scrubbed first, then cut --------------------------------------------

ECHO_PREFIX = "x" * 150  # the token starts well inside the 200 characters an error detail keeps


def test_a_server_echoing_the_token_never_gets_it_into_the_database_status_healthz_or_logs(
    tmp_path: Path, server: PageServer
) -> None:
    token = "xmt-" + secrets.token_hex(28)  # 60 characters
    server.error = (400, {"code": "ERROR_CODE_BAD_REQUEST", "message": f"{ECHO_PREFIX} bad token {token}"})
    config = write_config(tmp_path, server.url)
    env = {"XANO_META_TOKEN": token}
    once = cli("--config", str(config), "run", "--once", cwd=tmp_path, env=env, timeout=90)
    assert once.returncode == 1 and "ERROR_CODE_BAD_REQUEST" in once.stderr, once.stderr[-2000:]
    status = cli("--config", str(config), "status", "--json", cwd=tmp_path, env=env)
    assert status.returncode == 0, status.stderr
    last_error = json.loads(status.stdout)["sources"][0]["last_error"]
    assert "ERROR_CODE_BAD_REQUEST" in last_error and "[redacted]" in last_error, last_error

    # The daemon serves /healthz, which needs no authentication.
    served = config.read_text(encoding="utf-8").replace(
        'server: {listen: ""}', 'server: {listen: "127.0.0.1:0"}'
    )
    config.write_text(served, encoding="utf-8")
    daemon = Daemon(config, tmp_path, env)
    try:

        def healthz_with_the_error() -> bytes | None:
            body = http_get(daemon.base_url + "/healthz")[1]
            return body if b"ERROR_CODE_BAD_REQUEST" in body else None

        healthz = wait_until(healthz_with_the_error, 30, "/healthz naming the poll error")
    finally:
        daemon.stop()
    artefacts = {
        "run --once stdout": once.stdout.encode(),
        "run --once stderr": once.stderr.encode(),
        "status --json": status.stdout.encode() + status.stderr.encode(),
        "/healthz": healthz,
        "daemon stdout": daemon.stdout_path.read_bytes(),
        "daemon stderr": daemon.stderr_path.read_bytes(),
        **database_bytes(tmp_path),
    }
    assert not leaks({"token": token}, artefacts)
    assert not fragment_leaks(token, artefacts)


# --- the second line of defence: a token the config never saw ---------------------------------------------


def test_a_token_with_a_line_break_is_scrubbed_in_every_form_and_not_retried(
    tmp_path: Path, server: PageServer, restore_logging: None
) -> None:
    """The config refuses such a token; a XanoClient built directly (a library caller) must still not leak
    it. The client refuses a token it cannot send in a header (a configuration error, before any request);
    that is no transient error, so it is not retried."""
    config = Config.model_validate(
        {
            "state": {"path": str(tmp_path / "audit.db")},
            "sources": [{"name": "prod", "base_url": server.url, "token": "t"}],
        }
    )
    slept: list[float] = []

    def factory(source: SourceConfig) -> XanoClient:
        return XanoClient(
            source.base_url,
            WRAPPED,
            source_name=source.name,
            retry=RetryPolicy(budget=30),
            sleep=slept.append,
        )

    stream = io.StringIO()
    setup_logging("debug", stream, log_format="json", secrets=[])  # the redactor does not know this token
    with Store.open(config.state.path) as store:
        poller = Poller(
            store, config, None, clock=FakeClock(datetime(2026, 3, 4, 11, tzinfo=UTC)), client_factory=factory
        )
        result = poller.poll(config.sources[0])
        cursor = store.get_cursor("prod")
    assert not result.ok and result.error_kind == "config" and result.error
    assert cursor is not None and cursor.last_error == result.error
    assert slept == [] and server.requests == 0  # refused locally, once
    assert "token" in result.error, result.error
    artefacts = {
        "error": result.error.encode(),
        "logs": stream.getvalue().encode(),
        **database_bytes(tmp_path),
    }
    assert not leaks({"token": WRAPPED}, artefacts)
    assert not fragment_leaks(TOKEN[:40], artefacts) and not fragment_leaks(TOKEN[40:], artefacts)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)

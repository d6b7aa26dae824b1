"""Logs: one JSON object per line off a terminal, readable on one, and no secret in any form ever."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from monitor.config import parse_config
from monitor.logs import REDACTED, Redactor, config_secrets, setup_logging

CONFIG = """\
sources:
  - name: prod
    base_url: https://x8ki-letl-twmt.n7.xano.io
    token: ${XANO_META_TOKEN}
alerts:
  slack: {webhook_url: "${SLACK_WEBHOOK}"}
  email:
    smtp: {host: smtp.example.com, username: mon, password: "${SMTP_PASSWORD}"}
    from: monitor@example.com
    to: [security@example.com]
"""
ENV = {
    "XANO_META_TOKEN": "eyJhbGciOiJIUzI1NiJ9.meta-token-value.sig",
    "SLACK_WEBHOOK": "https://hooks.slack.com/services/T000/B000/webhooksecret",
    "SMTP_PASSWORD": 'pa"ss\\word-42',  # a quote and a backslash: JSON escapes them
}


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_config_secrets_finds_every_secret_field() -> None:
    config = parse_config(CONFIG, "c.yaml", ENV)
    assert sorted(config_secrets(config)) == sorted(ENV.values())


def test_json_lines_off_a_terminal_and_nothing_secret(restore_logging: None) -> None:
    config = parse_config(CONFIG, "c.yaml", ENV)
    stream = io.StringIO()  # not a terminal
    setup_logging("debug", stream, secrets=config_secrets(config))
    log = logging.getLogger("monitor.test")
    token, webhook, password = ENV["XANO_META_TOKEN"], ENV["SLACK_WEBHOOK"], ENV["SMTP_PASSWORD"]

    log.info("poll cycle", extra={"source": "prod", "events": 3, "new": 1, "pages": 1})
    log.info("multi\nline message with the token %s inside", token)
    log.warning("request", extra={"url": webhook, "headers": {"Authorization": f"Bearer {token}"}})
    log.info("login", extra={"password": password, "api_key": "whatever-it-is", "token": None})
    logging.getLogger("slack_sdk.web.base_client").debug(
        "Sending a request - headers: {'Authorization': 'Bearer xoxb-1234-5678-abcdef'}"
    )
    logging.getLogger("httpx").warning(
        'HTTP Request: POST https://x.xano.io token=sometoken123 "HTTP/1.1 401"'
    )
    try:
        raise RuntimeError(f"smtp login failed for mon:{password}")
    except RuntimeError:
        log.exception("delivery crashed")

    text = stream.getvalue()
    lines = text.splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert len(records) == 7
    for secret in (
        token,
        webhook,
        password,
        json.dumps(password)[1:-1],
        "xoxb-1234-5678-abcdef",
        "sometoken123",
    ):
        assert secret not in text
    first = records[0]
    assert first["event"] == "poll cycle" and first["level"] == "info" and first["logger"] == "monitor.test"
    assert (first["source"], first["events"], first["new"], first["pages"]) == ("prod", 3, 1, 1)
    assert records[1]["event"] == f"multi\nline message with the token {REDACTED} inside"
    assert records[2]["url"] == REDACTED and records[2]["headers"] == {"Authorization": REDACTED}
    assert records[3]["password"] == REDACTED and records[3]["api_key"] == REDACTED
    assert records[3]["token"] is None  # an absent secret stays visibly absent
    assert records[4]["event"] == "Sending a request - headers: {'Authorization': '[redacted]'}"
    assert "token=[redacted]" in records[5]["event"]
    assert records[6]["level"] == "error" and "RuntimeError" in records[6]["exception"]
    assert REDACTED in records[6]["exception"]


def test_readable_lines_on_a_terminal_also_redacted(restore_logging: None) -> None:
    stream = Tty()
    setup_logging("info", stream, secrets=[ENV["XANO_META_TOKEN"]])
    logging.getLogger("monitor.poller").info(
        "poll failed", extra={"source": "prod", "error": f"401 for {ENV['XANO_META_TOKEN']}"}
    )
    logging.getLogger("monitor.poller").debug("hidden at info level")
    line = stream.getvalue()
    assert line.count("\n") == 1 and not line.startswith("{")
    assert "info    poll failed  source=prod error=401 for [redacted]" in line


def test_an_extra_field_cannot_overwrite_the_envelope(restore_logging: None) -> None:
    stream = io.StringIO()
    setup_logging("info", stream, json_lines=True)
    logging.getLogger("monitor.x").info(
        "real event", extra={"ts": "forged", "level": "debug", "event": "forged"}
    )
    record = json.loads(stream.getvalue())
    assert record["event"] == "real event" and record["level"] == "info" and record["ts"] != "forged"


def test_redactor_ignores_too_short_values_and_prefers_the_longest() -> None:
    redact = Redactor(["abc", "secret-one", "secret-one-and-more"])
    assert redact("abc secret-one-and-more secret-one") == f"abc {REDACTED} {REDACTED}"
    assert redact("retrying with Bearer abcdef12 now") == f"retrying with Bearer {REDACTED} now"
    assert redact("posted to https://hooks.slack.com/services/T1/B2/xyz") == f"posted to {REDACTED}"
    assert redact("the token expired: create a new one") == "the token expired: create a new one"

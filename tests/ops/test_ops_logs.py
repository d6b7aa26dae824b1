"""Logs: one JSON object per line off a terminal, readable on one, and no secret in any form ever."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from monitor.config import ConfigError, parse_config
from monitor.logs import REDACTED, Redactor, config_secrets, setup_logging
from monitor.simulator import Simulator
from tests.ops.conftest import REPO, Daemon, write_config

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
    setup_logging("info", stream, log_format="json")
    logging.getLogger("monitor.x").info(
        "real event", extra={"ts": "forged", "level": "debug", "event": "forged"}
    )
    record = json.loads(stream.getvalue())
    assert record["event"] == "real event" and record["level"] == "info" and record["ts"] != "forged"


def test_redactor_prefers_the_longest_and_knows_credential_shapes() -> None:
    redact = Redactor(["secret-one", "secret-one-and-more"])
    assert redact("x secret-one-and-more secret-one") == f"x {REDACTED} {REDACTED}"
    assert redact("retrying with Bearer abcdef12 now") == f"retrying with Bearer {REDACTED} now"
    assert redact("posted to https://hooks.slack.com/services/T1/B2/xyz") == f"posted to {REDACTED}"
    assert redact("the token expired: create a new one") == "the token expired: create a new one"
    # A credential quoted in a repr runs on through its escapes.
    assert (
        redact("Illegal header value b'Bearer PART1\\nPART2'") == f"Illegal header value b'Bearer {REDACTED}'"
    )


SHORT = CONFIG.replace('password: "${SMTP_PASSWORD}"', "password: poll")


def poll(password: str) -> None:  # a frame named like the password, as the poller's are
    raise RuntimeError(f"login refused for user mon (password={password})")


def test_a_short_secret_is_redacted_as_a_whole_value_never_inside_ordinary_text(
    restore_logging: None,
) -> None:
    """With the SMTP password "poll", redacting it inside text turned every "poll cycle" line into
    "[redacted] cycle": a line that spells the secret out. Whole values only."""
    config = parse_config(SHORT, "c.yaml", ENV)
    assert "poll" in config_secrets(config)
    stream = io.StringIO()
    setup_logging("info", stream, log_format="json", secrets=config_secrets(config))
    log = logging.getLogger("monitor.poller")
    log.info("poll cycle", extra={"source": "prod", "events": 3, "detail": "polling, poller, poll cycle"})
    log.info("smtp check", extra={"value": "poll", "nested": {"list": ["poll", "poll cycle"]}})
    try:
        poll("poll")
    except RuntimeError:
        log.exception("delivery crashed")
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert records[0]["event"] == "poll cycle" and records[0]["detail"] == "polling, poller, poll cycle"
    assert records[1]["value"] == REDACTED and records[1]["nested"] == {"list": [REDACTED, "poll cycle"]}
    exception = records[2]["exception"]
    assert "in poll\n" in exception and "[redacted] cycle" not in stream.getvalue()
    assert "password=[redacted]" in exception and "password=poll" not in exception


# --- an outage: one line per failed cycle -----------------------------------------------------------------


def test_an_outage_logs_one_line_per_failed_cycle(
    tmp_path: Path, sim: Simulator, daemon_factory: Callable[..., Daemon]
) -> None:
    """Upstream accepts connections and never answers: each cycle times out, retries within its budget and
    keeps the single worker busy for longer than the poll interval and the 5 s delivery timer. Neither the
    retries nor APScheduler's "skipped: maximum number of running instances reached" are news an operator
    needs every few seconds; the cycle's failure is."""
    with socket.socket() as black_hole:
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(64)  # connections complete in the backlog; nothing ever reads or answers them
        config = write_config(tmp_path / "c.yaml", sim, tmp_path / "a.db", poll_interval="2s")
        text = config.read_text(encoding="utf-8").replace(
            f"    base_url: {sim.base_url}\n",
            f"    base_url: http://127.0.0.1:{black_hole.getsockname()[1]}\n    timeout: 3s\n",
        )
        config.write_text(text, encoding="utf-8")
        daemon = daemon_factory(config)
        daemon.wait_event("poll failed", 60, count=2)
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    records = daemon.records()
    failed = [r for r in records if r["event"] == "poll failed"]
    noisy = [
        r for r in records if r["level"] in ("warning", "error", "critical") and r["event"] != "poll failed"
    ]
    assert len(failed) >= 2 and noisy == [], noisy[:5]
    assert "attempts" in failed[0]["error"]  # the one line says how hard it tried
    assert not [r for r in records if r["event"] == "retrying Xano request"]  # debug level only
    assert daemon.stderr_path.read_text(encoding="utf-8") == ""


# --- uncaught exceptions ---------------------------------------------------------------------------------

UNCAUGHT = """
import threading
from monitor.logs import setup_logging
setup_logging("info", log_format="json", secrets=["xmt-uncaught-SECRET-0123"])
def work():
    raise ValueError("worker failed with xmt-uncaught-SECRET-0123")
thread = threading.Thread(target=work, name="page-reader")
thread.start()
thread.join()
raise RuntimeError("main failed\\nsecond line")
"""


def test_uncaught_exceptions_in_threads_and_main_are_one_json_line_each(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", UNCAUGHT],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO)},
        check=False,
    )
    assert result.returncode == 1  # still a failure for whoever started the process
    assert result.stderr == ""  # no raw traceback beside the JSON lines
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["event"] for r in records] == ["uncaught exception in thread", "uncaught exception"]
    thread, main = records
    assert thread["level"] == "error" and thread["thread_name"] == "page-reader"
    assert "ValueError: worker failed with [redacted]" in thread["exception"]
    assert main["level"] == "critical" and "RuntimeError: main failed" in main["exception"]
    assert "xmt-uncaught-SECRET" not in result.stdout


# --- log_format: ecs ------------------------------------------------------------------------------------


def test_ecs_format_keeps_ecs_field_names_for_ecs_and_redacts(restore_logging: None) -> None:
    config = parse_config("log_format: ecs\n" + CONFIG, "c.yaml", ENV)
    assert config.log_format == "ecs"
    stream = io.StringIO()
    setup_logging("info", stream, log_format=config.log_format, secrets=config_secrets(config))
    log = logging.getLogger("monitor.poller")
    token = ENV["XANO_META_TOKEN"]
    log.error(
        "poll failed",
        extra={"source": "prod", "error_kind": "auth", "error": f"401 for {token}", "host": "h", "user": "u"},
    )
    try:
        raise RuntimeError(f"crash with {token}")
    except RuntimeError:
        log.exception("poll job crashed", extra={"source": "prod", "error": "also text"})
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["log.level"] == "error" and first["message"] == "poll failed"
    assert "@timestamp" in first and first["ecs.version"] and first["log"]["logger"] == "monitor.poller"
    # Where ECS defines a field (source, host, user, event are objects there), ours are namespaced.
    assert first["audit_monitor"] == {"source": "prod", "error_kind": "auth", "host": "h", "user": "u"}
    assert first["error"] == {"message": f"401 for {REDACTED}"}
    for clashing in ("source", "host", "user", "event"):
        assert clashing not in first
    assert second["error"]["type"] == "RuntimeError"
    assert second["error"]["message"] == f"crash with {REDACTED}" and "stack_trace" in second["error"]
    assert second["audit_monitor"] == {"source": "prod", "error": "also text"}
    assert token not in stream.getvalue()


def test_log_format_is_validated_and_ecs_reaches_the_daemon(
    tmp_path: Path, sim: Simulator, token: str
) -> None:
    with pytest.raises(ConfigError, match=r"c.yaml:1: log_format: "):
        parse_config("log_format: xml\n", "c.yaml", {})
    config = write_config(tmp_path / "c.yaml", sim, tmp_path / "a.db", log_format="ecs")
    result = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "--config", str(config), "run", "--once"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=90,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO), "SIM_TOKEN": token},
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads(line) for line in result.stdout.splitlines()]
    cycles = [r for r in records if r["message"] == "poll cycle"]
    assert cycles and cycles[0]["audit_monitor"]["source"] == "sim" and "ecs.version" in cycles[0]

"""Config mistakes refused at load: each one a `FILE:LINE: key.path: message` error, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from monitor.config import ConfigError, parse_config, parse_duration, require_secure_url

ENV = {"XANO_META_TOKEN": "tok-123456"}

BASE = """\
state: {path: ./data/x.db}
sources:
  - name: prod
    base_url: https://x8ki-letl-twmt.n7.xano.io
    token: ${XANO_META_TOKEN}
"""


def error_of(text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "a.yaml", ENV if env is None else env)
    return str(caught.value)


# [11.2] an empty state path would be a temporary database: everything re-archived and re-alerted each run.
@pytest.mark.parametrize("path", ['""', "''", '"  "'])
def test_empty_state_path_is_an_error(path: str) -> None:
    message = error_of(BASE.replace("path: ./data/x.db", f"path: {path}"))
    assert message.startswith("a.yaml:1: state.path: ")
    assert "empty" in message


# [11.4] cleartext to a remote host would carry the Metadata API token (or the Slack secret) unencrypted.
@pytest.mark.parametrize(
    ("old", "new", "where"),
    [
        (
            "base_url: https://x8ki-letl-twmt.n7.xano.io",
            "base_url: http://x8ki-letl-twmt.n7.xano.io",
            "a.yaml:4: sources[0].base_url",
        ),
        (
            "base_url: https://x8ki-letl-twmt.n7.xano.io",
            "base_url: http://10.0.0.5:8080",
            "a.yaml:4: sources[0].base_url",
        ),
    ],
)
def test_cleartext_source_url_to_a_remote_host_is_refused(old: str, new: str, where: str) -> None:
    message = error_of(BASE.replace(old, new))
    assert message.startswith(where) and "https" in message


SLACK = BASE + "alerts:\n  slack: {SLACK}\n"


@pytest.mark.parametrize(
    "slack",
    [
        '{token: xoxb-1234, channel: "#sec", base_url: "http://slack.example.com/api/"}',
        '{webhook_url: "http://hooks.slack.com/services/T000/B000/secretpart"}',
        "{webhook_url: 'not a url'}",
    ],
)
def test_cleartext_or_bad_slack_urls_are_refused(slack: str) -> None:
    message = error_of(SLACK.replace("{SLACK}", slack))
    assert message.startswith("a.yaml:7: alerts.slack.")
    assert "https" in message
    assert "secretpart" not in message  # a webhook URL is a secret: never echoed


def test_webhook_url_from_the_environment_is_checked_but_not_echoed() -> None:
    text = SLACK.replace("{SLACK}", '{webhook_url: "${SLACK_WEBHOOK_URL}"}')
    hook = "http://hooks.slack.com/services/T0/B0/topsecret"
    message = error_of(text, {**ENV, "SLACK_WEBHOOK_URL": hook})
    assert "alerts.slack.webhook_url" in message and "https" in message and "topsecret" not in message


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8787",
        "http://127.3.4.5",
        "http://localhost:9000/api/",
        "http://[::1]:8080",
        "https://x8ki-letl-twmt.n7.xano.io",
        "https://hooks.slack.com/services/T0/B0/x",
    ],
)
def test_https_or_loopback_http_is_accepted(url: str) -> None:
    assert require_secure_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com",
        "http://127.0.0.1.example.com",
        "http://localhost.evil.io",
        "ftp://x.io",
        "not a url",
        "https://",
        "https:// spaces.io",
        "",
    ],
)
def test_require_secure_url_refuses(url: str) -> None:
    with pytest.raises(ValueError, match="https"):
        require_secure_url(url)


# [11.8] an Enterprise/Custom plan keeps the audit log for ever.
def test_unlimited_plan_retention_is_accepted() -> None:
    config = parse_config(BASE + "    plan_retention: unlimited\n", "a.yaml", ENV)
    assert config.sources[0].plan_retention is None
    default = parse_config(BASE, "a.yaml", ENV)
    assert default.sources[0].plan_retention == timedelta(hours=24)


def test_plan_retention_still_rejects_nonsense() -> None:
    message = error_of(BASE + "    plan_retention: forever\n")
    assert message.startswith("a.yaml:6: sources[0].plan_retention:") and "unlimited" in message


# [11.17] a schedule that never fires would silently never send a report.
@pytest.mark.parametrize("schedule", ["0 8 31 2 *", "0 8 30 2 *"])
def test_report_schedule_that_never_fires_is_an_error(schedule: str) -> None:
    message = error_of(BASE + f'report: {{schedule: "{schedule}"}}\n')
    assert message.startswith("a.yaml:6: report.schedule:") and "never" in message


def test_leap_day_schedule_is_accepted() -> None:
    config = parse_config(BASE + 'report: {schedule: "0 8 29 2 *"}\n', "a.yaml", ENV)
    assert config.report.schedule == "0 8 29 2 *"


# [16.11] clean errors where Python would raise RecursionError / OverflowError.
def test_huge_duration_is_a_clean_error() -> None:
    message = error_of(BASE + "    poll_interval: 99999999999d\n")
    assert message.startswith("a.yaml:6: sources[0].poll_interval:") and "too long" in message
    with pytest.raises(ValueError, match="too long"):
        parse_duration("99999999999999999999w")


def test_deeply_nested_config_is_a_clean_error(tmp_path: Path) -> None:
    deep = tmp_path / "deep.yaml"
    deep.write_text("rules: {lists: {x: " + "[" * 5000 + "]" * 5000 + "}}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"deep.yaml:1: .*nested"):
        parse_config(deep.read_text(), str(deep), {})
    done = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "--config", str(deep), "status"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"configuration error: {deep}:1:")
    assert len(done.stderr.strip().splitlines()) == 1

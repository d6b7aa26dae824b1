"""Config loading: typed values, ${VAR} expansion, and errors that name the file, line and key path."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from monitor.config import ConfigError, load_config, parse_config, require_secrets
from monitor.logs import config_secrets

GOOD = """
timezone: Europe/Berlin
state: {path: ./data/x.db}
sources:
  - name: prod
    base_url: https://x8ki-letl-twmt.n7.xano.io/
    token: ${XANO_META_TOKEN}
    workspace_id: 1
    poll_interval: 5m
    per_page: ${PER_PAGE:-250}
    backfill: 2026-10-01
alerts:
  slack: {token: "${SLACK_BOT_TOKEN}", channel: "#sec", routes: {critical: "#oncall"}}
"""


def test_good_config_is_typed_and_expanded() -> None:
    config = parse_config(GOOD, "a.yaml", {"XANO_META_TOKEN": "tok-123", "SLACK_BOT_TOKEN": "xoxb-1"})
    source = config.sources[0]
    assert source.base_url == "https://x8ki-letl-twmt.n7.xano.io"
    assert source.token.get_secret_value() == "tok-123"
    assert source.per_page == 250  # the default of ${PER_PAGE:-250}, typed as an int
    assert source.poll_interval == timedelta(minutes=5)
    assert source.backfill == "2026-10-01"
    assert config.alerts.slack is not None and config.alerts.slack.routes == {"critical": "#oncall"}


def test_secret_file_variable(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("from-file\n")
    env = {"XANO_META_TOKEN_FILE": str(secret), "SLACK_BOT_TOKEN": "x"}
    config = parse_config(GOOD, "a.yaml", env)
    assert config.sources[0].token.get_secret_value() == "from-file"


@pytest.mark.parametrize(
    ("mutation", "expected"),
    [
        (("    per_page:", "    per_pgae:"), "a.yaml:10: sources[0].per_pgae: unknown key"),
        (
            ("poll_interval: 5m", "poll_interval: 5 minutes"),
            "a.yaml:9: sources[0].poll_interval: '5 minutes' is not a duration",
        ),
        (("poll_interval: 5m", "poll_interval: 300"), "sources[0].poll_interval: a duration needs a unit"),
        (
            ("    base_url: https://x8ki-letl-twmt.n7.xano.io/\n", ""),
            "a.yaml:5: sources[0].base_url: required key is missing",
        ),
        (
            ("timezone: Europe/Berlin", "timezone: Mars/Olympus"),
            "a.yaml:2: timezone: 'Mars/Olympus' is not an IANA",
        ),
        (("backfill: 2026-10-01", "backfill: yesterday"), "sources[0].backfill: must be all, none or a date"),
        (("state: {path", "stat: {path"), "a.yaml:3: stat: unknown key"),
        (("slack: {token", "slack: {tokn"), "alerts.slack.tokn: unknown key"),
    ],
)
def test_errors_name_file_line_and_key(mutation: tuple[str, str], expected: str) -> None:
    text = GOOD.replace(*mutation)
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "a.yaml", {"XANO_META_TOKEN": "tok-123", "SLACK_BOT_TOKEN": "x"})
    assert expected in str(caught.value)


def test_missing_secret_variable_names_key_and_variable_when_required() -> None:
    # A secret's variable is needed only by the commands that use it: loading succeeds.
    config = parse_config(GOOD, "a.yaml", {"SLACK_BOT_TOKEN": "xoxb-secret"})
    with pytest.raises(ConfigError) as caught:
        require_secrets(config)
    message = str(caught.value)
    assert message == (
        "a.yaml:7: sources[0].token: "
        "environment variable XANO_META_TOKEN is not set (nor XANO_META_TOKEN_FILE)"
    )
    assert "xoxb-secret" not in message
    require_secrets(config.alerts)  # the Slack token is set: the alerts section alone is complete
    with pytest.raises(ConfigError, match=r"a.yaml:7: sources\[0\].token: .*XANO_META_TOKEN is not set"):
        config.sources[0].token.get_secret_value()


@pytest.mark.parametrize(
    ("mutation", "expected"),
    [
        (("state: {path: ./data/x.db}", 'state: {path: "${DATA_DB}"}'), "a.yaml:3: state.path: "),
        (("per_page: ${PER_PAGE:-250}", "per_page: ${PER_PAGE}"), "a.yaml:10: sources[0].per_page: "),
        (
            ("timezone: Europe/Berlin", 'rules: {lists: {x: ["${LIST_ITEM}"]}}'),
            "a.yaml:2: rules.lists.x[0]: ",
        ),
    ],
)
def test_missing_variable_outside_a_secret_is_a_load_error(mutation: tuple[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(GOOD.replace(*mutation), "a.yaml", {"XANO_META_TOKEN": "t", "SLACK_BOT_TOKEN": "x"})
    assert str(caught.value).startswith(expected) and "is not set" in str(caught.value)


def test_secrets_never_in_repr_or_errors() -> None:
    env = {"XANO_META_TOKEN": "tok-very-secret", "SLACK_BOT_TOKEN": "xoxb-very-secret"}
    config = parse_config(GOOD, "a.yaml", env)
    assert "very-secret" not in repr(config) and "very-secret" not in str(config)
    bad = GOOD.replace("per_page: ${PER_PAGE:-250}", "per_page: ${XANO_META_TOKEN}")
    with pytest.raises(ConfigError) as caught:
        parse_config(bad, "a.yaml", env)
    assert "very-secret" not in str(caught.value)
    assert "sources[0].per_page" in str(caught.value)


def test_yaml_syntax_error_names_line() -> None:
    with pytest.raises(ConfigError, match=r"a.yaml:3: not valid YAML"):
        parse_config("timezone: UTC\nsources:\n\t- name: x\n", "a.yaml", {})


def test_no_file_means_defaults_but_named_file_must_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(None, env={})
    assert config.sources == [] and config.timezone == "UTC"
    assert Path(config.rules.paths[0]).name == "rules"
    with pytest.raises(ConfigError, match="missing.yaml: config file not found"):
        load_config(tmp_path / "missing.yaml", env={})


def test_cli_reports_config_error_with_exit_2_and_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "sources:\n  - name: prod\n    base_url: https://x.xano.io\n    token: t\n    per_pgae: 3\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "--config", str(bad), "status"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert f"{bad}:5: sources[0].per_pgae: unknown key" in done.stderr
    assert "Traceback" not in done.stderr


def test_run_without_sources_says_what_to_configure(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text(f"state: {{path: {tmp_path / 'x.db'}}}\n")
    done = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "--config", str(empty), "run", "--once"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "no source is configured" in done.stderr


def test_log_redaction_takes_the_set_secrets_and_skips_unset_ones() -> None:
    config = parse_config(GOOD, "a.yaml", {"SLACK_BOT_TOKEN": "xoxb-secret"})
    assert config_secrets(config) == ["xoxb-secret"]  # XANO_META_TOKEN is unset: nothing to redact, no error

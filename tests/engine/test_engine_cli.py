"""The `rules` commands through the real click group: output, summary lines and exit codes."""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from monitor.cli import cli
from monitor.events import canonical_json, normalize
from monitor.store import Store
from monitor.timeutil import parse_cli_date

SAMPLE = Path("/work/shared/samples/audit_log_page.json")

GOOD = """
id: demo.delete
title: Table deleted
severity: high
match: {sel: {type: Delete Table}}
alert:
  title: "Deleted by {{ event.user.email }}"
tests:
  - event: {type: Delete Table, user: {id: 1, email: a@corp.io}}
    expect: {alerts: 1, titles: [Deleted by a@corp.io]}
  - {event: {type: Create Table, user: {id: 1, email: a@corp.io}}, expect: no_alert}
"""


def invoke(*args: str, config: Path | None = None):
    runner = CliRunner()
    prefix = ["--config", str(config)] if config else []
    return runner.invoke(cli, [*prefix, "rules", *args], catch_exceptions=False)


@pytest.fixture(autouse=True)
def no_config(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("AUDIT_MONITOR_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./audit-monitor.yaml: every default holds (the bundled pack)


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_check_the_bundled_pack_by_default() -> None:
    result = invoke("check")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0] == "OK: 16 rules in 4 files"


def test_check_a_file_and_a_folder(tmp_path: Path) -> None:
    write(tmp_path / "a.yml", GOOD)
    result = invoke("check", str(tmp_path / "a.yml"))
    assert (result.exit_code, result.stdout) == (0, "OK: 1 rule in 1 file\n")


def test_check_prints_each_error_and_exits_1(tmp_path: Path) -> None:
    bad = write(
        tmp_path / "bad.yml",
        GOOD.replace("severity: high", "severity: urgent").replace(
            "{{ event.user.email }}", "{{ event.usr.email }}"
        ),
    )
    result = invoke("check", str(bad))
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"{bad}:4: demo.delete: severity 'urgent' is not one of info, low, medium, high, critical",
    ]
    fixed = write(tmp_path / "bad.yml", GOOD.replace("{{ event.user.email }}", "{{ event.usr.email }}"))
    result = invoke("check", str(fixed))
    assert result.exit_code == 1
    assert result.stdout == (
        f"{fixed}:7: demo.delete: alert title: template error: 'dict object' has no "
        "attribute 'usr' (test 'test 1', event 1)\n"
    )


def test_check_reports_yaml_syntax_errors_without_a_traceback(tmp_path: Path) -> None:
    broken = write(tmp_path / "broken.yml", "id: x\nmatch: [unclosed\n")
    result = invoke("check", str(broken))
    assert result.exit_code == 1
    assert result.stdout.startswith(f"{broken}:3: -: not valid YAML:")
    assert "Traceback" not in result.output


def test_check_applies_the_config_lists_calendars_and_disable(tmp_path: Path) -> None:
    config = write(
        tmp_path / "audit-monitor.yaml",
        """
        timezone: Europe/Berlin
        rules:
          lists: {allowed_email_domains: [corp.io]}
          disable: [xano.user.created, not.a.rule]
    """,
    )
    # The config's own rules: an unknown id in rules.disable is refused as the daemon's start and reload
    # refuse it (11.17), an error line and exit 1 like every other `rules check` error.
    result = invoke("check", config=config)
    assert result.exit_code == 1, result.output
    assert result.stdout.splitlines() == [
        f"{config}:5: rules.disable[1]: no rule has the id 'not.a.rule' (rules check lists the ids)"
    ]
    assert result.stderr.splitlines() == ["1 error"]
    # Rule files named on the command line may be a subset: an id defined elsewhere stays a warning there.
    only = write(tmp_path / "only.yml", GOOD)
    partial = invoke("check", str(only), config=config)
    assert partial.exit_code == 0 and partial.stdout.startswith("OK: 1 rule in 1 file"), partial.output
    assert "warning: config: rules.disable names 'not.a.rule', which no rule file defines" in partial.stderr

    fixed = write(tmp_path / "audit-monitor.yaml", config.read_text().replace(", not.a.rule", ""))
    result = invoke("check", config=fixed)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["OK: 16 rules in 4 files", "disabled: xano.user.created"]


def test_check_names_a_window_too_long_for_a_date(tmp_path: Path) -> None:
    rules = write(
        tmp_path / "r.yml",
        """\
        id: r
        title: T
        severity: low
        match: {a: {type: Login Failed}}
        threshold: {group_by: [user.email], window: 99999999999d, count: 5}
        """,
    )
    result = invoke("check", str(rules))
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"{rules}:5: r: threshold window: '99999999999d' is too long (at most 999999999d)"
    ]


def test_check_warns_about_a_regex_with_nested_quantifiers(tmp_path: Path) -> None:
    rules = write(
        tmp_path / "r.yml",
        """\
        id: r
        title: T
        severity: low
        match: {a: {msg|re: "(a+)+$"}}
        """,
    )
    result = invoke("check", str(rules))
    assert result.exit_code == 0 and result.stdout.startswith("OK: 1 rule in 1 file")
    warning = f"warning: {rules}:4: r: selection 'a', key 'msg|re': nested quantifiers: '(a+)+$'"
    assert warning in result.stderr


def test_a_config_error_exits_2(tmp_path: Path) -> None:
    config = write(tmp_path / "c.yaml", "rules: {pathz: []}\n")
    result = invoke("check", config=config)
    assert result.exit_code == 2 and "rules.pathz: unknown key" in result.stderr


def test_test_prints_the_summary_line() -> None:
    result = invoke("test")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[-1].endswith(" passed, 0 failed")
    assert int(result.stdout.split()[0]) >= 32


def test_test_exits_1_on_a_failure_and_names_it(tmp_path: Path) -> None:
    rules = write(tmp_path / "r.yml", GOOD.replace("expect: no_alert", "expect: alert"))
    result = invoke("test", str(rules))
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "FAIL demo.delete: test 2: expected 1 alert, got 0",
        "1 passed, 1 failed",
    ]


def test_test_with_invalid_rules_exits_1(tmp_path: Path) -> None:
    rules = write(tmp_path / "r.yml", "id: x\n")
    assert invoke("test", str(rules)).exit_code == 1


def test_explain_a_match_and_a_miss() -> None:
    result = invoke("explain", "xano.table.deleted", str(SAMPLE))
    assert result.exit_code == 0
    first, second = result.stdout.split("\n\n")
    assert "selection deleted: MATCHED" in first
    assert "yes type: Delete Table   <- 'Delete Table'" in first
    assert first.rstrip().endswith(
        "verdict: fires: [high] Table deleted in shop-backend by sam@example.org: Deleted table legacy_orders"
    )
    assert "no  type: Delete Table   <- 'Set Live Branch'" in second
    assert second.rstrip().endswith("verdict: does not fire: the condition is false for this event")


def test_explain_a_threshold_rule_says_what_it_needs(tmp_path: Path) -> None:
    entry = {
        "id": 5,
        "created_at": "2026-03-04 10:00:00+00",
        "type": "Login Failed",
        "msg": "",
        "user": {"id": 3, "email": "a@corp.io"},
        "data": {"ip": "198.51.100.7"},
    }
    path = tmp_path / "e.json"
    path.write_text(json.dumps(entry))
    result = invoke("explain", "xano.auth.failed-login-burst", str(path))
    assert result.exit_code == 0
    assert (
        "threshold: the event matches; the rule fires when 5 matching events of the group "
        "user.email=a@corp.io fall within 10m of each other (this explanation counts this event alone)"
    ) in result.stdout
    assert result.stdout.rstrip().endswith(
        "verdict: the event matches, but the stateful part does not fire on it alone"
    )
    off_hours = invoke("explain", "xano.activity.off-hours-change", str(path))
    assert "selection office: MATCHED" in off_hours.stdout
    assert "yes created_at|calendar: business_hours   <- 2026-03-04T10:00:00+00:00" in off_hours.stdout
    assert "condition: change and not office and not exempt -> false" in off_hours.stdout


def test_explain_usage_errors_exit_2(tmp_path: Path) -> None:
    assert invoke("explain", "no.such.rule", str(SAMPLE)).exit_code == 2
    (tmp_path / "bad.json").write_text("{not json")
    result = invoke("explain", "xano.table.deleted", str(tmp_path / "bad.json"))
    assert result.exit_code == 2 and "not JSON" in result.stderr
    (tmp_path / "noid.json").write_text(json.dumps({"type": "Login"}))
    result = invoke("explain", "xano.table.deleted", str(tmp_path / "noid.json"))
    assert result.exit_code == 2 and "entry has no id" in result.stderr


# --- backtest ---------------------------------------------------------------------------------------------


def test_cli_dates_are_midnight_in_the_zone_or_instants() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    assert parse_cli_date("2026-03-04", berlin) == datetime(2026, 3, 3, 23, 0, tzinfo=UTC)
    assert parse_cli_date("2026-03-04T10:00:00Z", berlin) == datetime(2026, 3, 4, 10, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="not a date YYYY-MM-DD or an ISO 8601 instant"):
        parse_cli_date("yesterday", berlin)


def _archive(path: Path, entries: list[dict]) -> None:
    with Store.open(path) as store, store.transaction():
        prev = store.head_hash()
        for entry in entries:
            raw = canonical_json(entry)
            prev = store.archive(normalize("prod", entry), raw, prev, datetime(2026, 3, 10, tzinfo=UTC))


def test_backtest_prints_what_would_have_fired(tmp_path: Path) -> None:
    db = tmp_path / "archive.db"
    user = {"id": 3, "email": "a@corp.io"}
    entries = [
        {
            "id": 1,
            "created_at": "2026-03-02T10:00:00Z",
            "type": "Delete Table",
            "msg": "Deleted table t",
            "user": user,
        },
        *(
            {"id": 10 + i, "created_at": f"2026-03-03T10:00:{i:02d}Z", "type": "Login Failed", "user": user}
            for i in range(6)
        ),
        {"id": 30, "created_at": "2026-03-05T02:00:00Z", "type": "Delete Table", "msg": "late", "user": user},
        {
            "id": 40,
            "created_at": "2026-03-09T10:00:00Z",
            "type": "Delete Table",
            "msg": "after",
            "user": user,
        },
    ]
    _archive(db, entries)
    config = write(tmp_path / "c.yaml", f"timezone: Europe/Berlin\nstate: {{path: {db}}}\n")
    result = invoke("backtest", "--since", "2026-03-01", "--until", "2026-03-09", config=config)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:4] == [
        "2026-03-02 11:00:00 CET  xano.table.deleted  high  "
        "Table deleted in (unknown workspace) by a@corp.io: Deleted table t",
        "2026-03-03 11:00:04 CET  xano.auth.failed-login-burst  high  "
        "5 failed logins for a@corp.io within 10 minutes",
        "2026-03-05 03:00:00 CET  xano.table.deleted  high  "
        "Table deleted in (unknown workspace) by a@corp.io: late",
        "2026-03-05 03:00:00 CET  xano.activity.off-hours-change  high  "
        "Delete Table outside business hours by a@corp.io",
    ]
    assert lines[4].startswith(
        "8 events from 2026-03-01 00:00:00 CET to 2026-03-09 00:00:00 CET: "
        "4 alerts would have fired (nothing was sent)"
    )
    assert lines[5:] == [
        "       2  xano.table.deleted",
        "       1  xano.activity.off-hours-change",
        "       1  xano.auth.failed-login-burst",
    ]
    only = invoke(
        "backtest",
        "--rule",
        "xano.table.deleted",
        "--since",
        "2026-03-01",
        "--until",
        "2026-03-10T00:00:00Z",
        config=config,
    )
    assert only.exit_code == 0
    assert [line for line in only.stdout.splitlines() if line.startswith("  ")] == [
        "       3  xano.table.deleted"
    ]
    with Store.open(db) as store:
        assert store.alert_count() == 0  # nothing recorded, nothing sent


def test_backtest_usage_errors(tmp_path: Path) -> None:
    config = write(tmp_path / "c.yaml", f"state: {{path: {tmp_path / 'none.db'}}}\n")
    assert invoke("backtest", "--since", "soon", "--until", "2026-03-02", config=config).exit_code == 2
    assert invoke("backtest", "--since", "2026-03-02", "--until", "2026-03-01", config=config).exit_code == 2
    missing = invoke("backtest", "--since", "2026-03-01", "--until", "2026-03-02", config=config)
    assert missing.exit_code == 2 and "none.db: no archive at this path" in missing.stderr
    _archive(tmp_path / "none.db", [])
    unknown = invoke(
        "backtest", "--rule", "nope", "--since", "2026-03-01", "--until", "2026-03-02", config=config
    )
    assert unknown.exit_code == 2 and "no rule 'nope'" in unknown.stderr


def test_every_rules_command_is_documented() -> None:
    from monitor.cli_rules import rules

    for name, command in rules.commands.items():
        assert command.help and len(command.help) > 40, name

"""`audit-monitor dead-letters list / requeue` through click's CliRunner, on a real store and Slack stub."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alerts_support import BOT_TOKEN, SlackStub, api_error, make_alert, outbox_rows, record
from click.testing import CliRunner

from monitor.alerts.outbox import OutboxWorker
from monitor.cli import cli
from monitor.config import load_config
from monitor.daemon import build_channels
from monitor.store import Store


@pytest.fixture
def config_file(tmp_path: Path, slack: SlackStub) -> Path:
    path = tmp_path / "audit-monitor.yaml"
    path.write_text(
        f"""
timezone: Europe/Berlin
state: {{path: {tmp_path / "archive.db"}}}
alerts:
  console: false
  slack: {{token: "${{SLACK_BOT_TOKEN}}", channel: "#sec", base_url: "{slack.base_url}", min_severity: low}}
server: {{listen: ""}}
"""
    )
    return path


def invoke(config: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["--config", str(config), *args], env={"SLACK_BOT_TOKEN": BOT_TOKEN})
    return result.exit_code, result.stdout, result.stderr


def make_dead_letters(config_path: Path, slack: SlackStub, count: int) -> list[str]:
    config = load_config(config_path, env={"SLACK_BOT_TOKEN": BOT_TOKEN})
    alerts = [make_alert(title=f"dead {i}") for i in range(count)]
    now = datetime.now(UTC)
    with Store.open(config.state.path) as store:
        record(store, alerts, ["slack"], now)
        slack.push(*[api_error("not_in_channel")] * count)
        report = OutboxWorker(store, build_channels(config), clock=lambda: now).deliver_due()
        assert report.dead == count
    return [a.id for a in alerts]


def test_list_shows_each_dead_letter_with_its_error(config_file: Path, slack: SlackStub) -> None:
    ids = make_dead_letters(config_file, slack, 2)
    code, out, _ = invoke(config_file, "dead-letters", "list")
    assert code == 0
    for alert_id in ids:
        assert alert_id[:12] in out
    assert "not_in_channel" in out and "invite the app" in out
    assert "2 dead letters (2 slack)" in out
    assert BOT_TOKEN not in out

    code, out, _ = invoke(config_file, "dead-letters", "list", "--json")
    records = [json.loads(line) for line in out.splitlines()]
    assert sorted(r["alert_id"] for r in records) == sorted(ids)
    assert {r["channel"] for r in records} == {"slack"} and all(r["attempts"] == 1 for r in records)


def test_list_when_there_are_none(config_file: Path) -> None:
    Store.open(load_config(config_file).state.path).close()  # an archive with no dead letter in it
    code, out, _ = invoke(config_file, "dead-letters", "list")
    assert (code, out.strip()) == (0, "no dead letters")


def test_requeue_then_the_next_delivery_sends_them(config_file: Path, slack: SlackStub) -> None:
    ids = make_dead_letters(config_file, slack, 3)
    code, out, _ = invoke(config_file, "dead-letters", "requeue", ids[0][:10])
    assert (code, out.strip()) == (0, "1 dead letter re-queued")
    code, out, _ = invoke(config_file, "dead-letters", "requeue", "--channel", "slack")
    assert (code, out.strip()) == (0, "2 dead letters re-queued")

    config = load_config(config_file, env={"SLACK_BOT_TOKEN": BOT_TOKEN})
    with Store.open(config.state.path) as store:
        assert {r["status"] for r in outbox_rows(store)} == {"pending"}
        report = OutboxWorker(store, build_channels(config)).deliver_due()
        assert report.sent == 3
    assert len(slack.posts()) == 6  # three refused, three delivered after the requeue


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "name one or more ALERT_IDs"),
        (("--all", "abc"), "do not name ALERT_IDs"),
        (("ffffffffffff",), "ffffffffffff is not a dead letter"),
    ],
)
def test_requeue_usage_errors_exit_2_and_change_nothing(
    config_file: Path, slack: SlackStub, args: tuple[str, ...], message: str
) -> None:
    make_dead_letters(config_file, slack, 1)
    code, _, err = invoke(config_file, "dead-letters", "requeue", *args)
    assert code == 2 and message in err
    code, out, _ = invoke(config_file, "dead-letters", "list", "--json")
    assert len(out.splitlines()) == 1


def test_requeue_all(config_file: Path, slack: SlackStub) -> None:
    make_dead_letters(config_file, slack, 2)
    code, out, _ = invoke(config_file, "dead-letters", "requeue", "--all")
    assert (code, out.strip()) == (0, "2 dead letters re-queued")


def test_dead_letters_are_documented(config_file: Path) -> None:
    for args in (
        ("dead-letters", "--help"),
        ("dead-letters", "list", "--help"),
        ("dead-letters", "requeue", "--help"),
    ):
        code, out, _ = invoke(config_file, *args)
        assert code == 0 and len(out.splitlines()) > 4

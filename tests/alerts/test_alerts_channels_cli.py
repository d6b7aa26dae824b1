"""`audit-monitor channels list` and `channels test [NAME]` against real receivers on 127.0.0.1."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from alerts_support import BOT_TOKEN, Receiver, Reply, SlackStub
from click.testing import CliRunner, Result
from standardwebhooks import Webhook

from monitor.cli import cli

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def write_config(tmp_path: Path, slack: SlackStub, hook: Receiver, teams: Receiver, pd: Receiver) -> Path:
    config: dict[str, Any] = {
        "state": {"path": str(tmp_path / "m.db")},
        "server": {"listen": ""},
        "alerts": {
            "min_severity": "medium",
            "slack": {
                "token": BOT_TOKEN,
                "channel": "#sec",
                "routes": {"critical": "#oncall"},
                "base_url": slack.base_url,
                "min_severity": "low",
            },
            "webhooks": [{"name": "n8n", "url": hook.url(), "secret": SECRET, "min_severity": "high"}],
            "teams": {"webhook_url": teams.url("/workflows/x?sig=SECRETsig")},
            "pagerduty": {"routing_key": "PDKEY-SECRET", "base_url": pd.url("")},
        },
    }
    path = tmp_path / "audit-monitor.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def run(path: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(path), "channels", *args])


def test_channels_test_reports_each_channel_and_exits_1_on_a_failure(
    tmp_path: Path, slack: SlackStub, receiver: Receiver
) -> None:
    teams, pd = Receiver(Reply(503, "down")).start(), Receiver(Reply(400, "bad key")).start()
    try:
        path = write_config(tmp_path, slack, receiver, teams, pd)
        result = run(path, "test")
        assert result.exit_code == 1, result.output
        lines = result.output.splitlines()
        assert "slack: delivered" in lines and "webhook:n8n: delivered" in lines
        assert any(
            x.startswith("teams: FAILED (transient, would be retried): Teams answered HTTP 503")
            for x in lines
        )
        assert any(x.startswith("pagerduty: FAILED (permanent): PagerDuty answered HTTP 400") for x in lines)
        assert "SECRET" not in result.output
        # Each channel got exactly one clearly marked test alert.
        (post,) = slack.posts()
        assert post.body["text"].startswith("INFO: TEST alert from audit-monitor")
        (request,) = receiver.requests
        payload = Webhook(SECRET).verify(request.raw, request.headers)
        assert payload["data"]["rule"]["id"] == "monitor.channel_test" and "TEST" in payload["data"]["title"]
        assert len(teams.requests) == 1 and len(pd.requests) == 1
        assert not (tmp_path / "m.db").exists()  # a test leaves nothing in the archive
    finally:
        teams.stop()
        pd.stop()


def test_channels_test_name_sends_only_there(tmp_path: Path, slack: SlackStub, receiver: Receiver) -> None:
    teams, pd = Receiver().start(), Receiver(Reply(202, "{}")).start()
    try:
        path = write_config(tmp_path, slack, receiver, teams, pd)
        result = run(path, "test", "n8n")
        assert result.exit_code == 0 and result.output.strip() == "webhook:n8n: delivered"
        assert len(receiver.requests) == 1 and not slack.posts() and not teams.requests and not pd.requests
        unknown = run(path, "test", "nope")
        assert unknown.exit_code == 2 and "no channel 'nope'" in unknown.output
    finally:
        teams.stop()
        pd.stop()


def test_channels_list_shows_effective_floors_and_routes(
    tmp_path: Path, slack: SlackStub, receiver: Receiver
) -> None:
    path = write_config(tmp_path, slack, receiver, receiver, receiver)
    result = run(path, "list")
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in result.output.splitlines()[1:]}
    assert rows["slack"] == [
        "medium",
        "critical -> #oncall; others -> #sec",
    ]  # the global floor wins over low
    assert rows["webhook:n8n"] == ["high", "signature standard"]
    assert rows["teams"][0] == "high" and rows["pagerduty"][0] == "critical"
    assert "console" not in rows
    assert "SECRET" not in result.output


def test_an_unset_channel_secret_is_named_before_anything_is_sent(tmp_path: Path, receiver: Receiver) -> None:
    path = tmp_path / "audit-monitor.yaml"
    path.write_text(
        "alerts:\n  webhooks:\n"
        f"    - {{name: n8n, url: '{receiver.url()}', signature: github,\n"
        "       secret: '${UNSET_HOOK_SECRET}'}\n",
        encoding="utf-8",
    )
    listed = CliRunner().invoke(
        cli, ["channels", "list", "--config", str(path)], env={"UNSET_HOOK_SECRET": ""}
    )
    assert listed.exit_code == 0 and "webhook:n8n" in listed.output  # listing needs no secret
    result = CliRunner().invoke(
        cli, ["channels", "test", "--config", str(path)], env={"UNSET_HOOK_SECRET": ""}
    )
    assert result.exit_code == 2, result.output
    assert "UNSET_HOOK_SECRET" in result.output and "alerts.webhooks[0].secret" in result.output
    assert not receiver.requests

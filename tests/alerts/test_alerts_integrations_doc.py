"""The verification snippets of docs/integrations.md (Python in-process, JavaScript under node) run against
real signed requests."""

from __future__ import annotations

import base64
import json
import re
import secrets
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alerts_support import Receiver, make_alert, make_config, record

from monitor.alerts.outbox import OutboxWorker
from monitor.alerts.webhook import WebhookChannel
from monitor.config import parse_config
from monitor.store import Store, lifecycle

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "integrations.md"


def doc_snippets() -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    for block in re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S):
        exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102 - our own documentation
    return namespace


def received(receiver: Receiver, store: Store, hook: dict[str, Any]) -> Any:
    config = make_config(webhooks=[{"name": "doc", "url": receiver.url(), **hook}])
    channel = WebhookChannel(config.alerts.webhooks[0], config.tz)
    now = datetime.now(UTC)
    record(store, [make_alert()], [channel.name], now)
    assert OutboxWorker(store, {channel.name: channel}, clock=lambda: now).deliver_due().sent == 1
    (request,) = receiver.requests
    return request


def test_the_standard_snippet_accepts_our_requests_and_refuses_a_changed_body(
    receiver: Receiver, store: Store
) -> None:
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    request = received(receiver, store, {"secret": secret})
    verify_standard = doc_snippets()["verify_standard"]
    assert verify_standard(secret, request.raw, request.headers)["type"] == "alert.fired"
    with pytest.raises(Exception, match="signature"):
        verify_standard(secret, request.raw.replace(b"high", b"info"), request.headers)


def test_the_github_snippet_accepts_our_requests_and_refuses_a_wrong_secret(
    receiver: Receiver, store: Store
) -> None:
    request = received(receiver, store, {"secret": "n8n shared secret", "signature": "github"})
    verify_github = doc_snippets()["verify_github"]
    header = request.headers["x-hub-signature-256"]
    assert verify_github("n8n shared secret", request.raw, header) is True
    assert verify_github("another secret", request.raw, header) is False


def js_blocks() -> list[str]:
    return re.findall(r"```js\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


def run_node(script: str) -> str:
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the JavaScript snippets cannot run here")
    done = subprocess.run(["node", "-e", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_javascript_standard_snippet_accepts_our_requests_and_refuses_a_changed_body(
    receiver: Receiver, store: Store
) -> None:
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    request = received(receiver, store, {"secret": secret})
    (snippet,) = [block for block in js_blocks() if "function verifyStandard" in block]
    body = request.raw.decode()
    script = (
        snippet
        + f"\nconst headers = {json.dumps(request.headers)};"
        + f"\nconsole.log(verifyStandard({json.dumps(secret)}, {json.dumps(body)}, headers),"
        + f" verifyStandard({json.dumps(secret)}, {json.dumps(body.replace('high', 'info'))}, headers));"
    )
    assert run_node(script) == "true false"


def test_the_zapier_code_step_accepts_our_requests_and_refuses_a_wrong_secret(
    receiver: Receiver, store: Store
) -> None:
    request = received(receiver, store, {"secret": "zap secret", "signature": "github"})
    (snippet,) = [block for block in js_blocks() if "inputData" in block]
    results = []
    for secret in ("zap secret", "another"):
        inputs = {
            "body": request.raw.decode(),
            "signature": request.headers["x-hub-signature-256"],
            "secret": secret,
        }
        # Zapier runs the step as the body of a function given inputData; a throw is a failed step.
        script = (
            f"try {{ const out = (function (inputData) {{ {snippet} }})({json.dumps(inputs)});"
            " console.log(out.id ? 'ok' : 'no data'); } catch (e) { console.log('refused: ' + e.message); }"
        )
        results.append(run_node(script))
    assert results == ["ok", "refused: bad signature"]


# --- the YAML recipes ----------------------------------------------------------------------------------

# A value of the right shape for each variable the recipes name (a standard-mode secret must be whsec_...).
RECIPE_ENV = {
    "WEBHOOK_SECRET": "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode(),
    "TEAMS_WEBHOOK_URL": "https://prod-01.westeurope.logic.azure.com/workflows/abc/triggers/manual?sig=s",
    "SLACK_BOT_TOKEN": "xoxb-1-2-abc",
}


def yaml_blocks(path: Path) -> list[tuple[int, str]]:
    text = path.read_text(encoding="utf-8")
    return [
        (text[: match.start()].count("\n") + 2, match.group(1))
        for match in re.finditer(r"```ya?ml\n(.*?)```", text, re.S)
    ]


def test_every_yaml_recipe_of_the_integrations_doc_loads_through_the_config_loader() -> None:
    """Copied as they are, the recipes must load: `${VAR}` inside a flow mapping (`{key: ${VAR}}`) is not
    YAML at all, since `{` and `}` end a plain scalar there."""
    blocks = yaml_blocks(DOC)
    assert len(blocks) >= 6
    for line, block in blocks:
        names = re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", block)
        env = {name: RECIPE_ENV.get(name, f"value-of-{name.lower()}") for name in names}
        config = parse_config(block, f"{DOC}:{line}", env)  # raises ConfigError naming the line otherwise
        alerts = config.alerts
        assert alerts.webhooks or alerts.teams or alerts.pagerduty, f"{DOC}:{line}: configures no receiver"
        for hook in alerts.webhooks:
            for name, value in hook.headers.items():  # each secret arrived whole, not as YAML structure
                assert value.get_secret_value() == env["MAKE_API_KEY"], (line, name)


def test_the_readme_alerts_example_loads_and_every_yaml_block_of_the_docs_parses() -> None:
    import yaml

    for path in [REPO / "README.md", REPO / "SECURITY.md", *sorted((REPO / "docs").glob("*.md"))]:
        for line, block in yaml_blocks(path):
            try:
                yaml.safe_load(block)
            except yaml.YAMLError as exc:
                raise AssertionError(f"{path.name}:{line}: not YAML: {exc}") from None
    (alerts_block,) = [
        b for _, b in yaml_blocks(REPO / "README.md") if b.startswith("alerts:\n  min_severity")
    ]
    env = {
        name: RECIPE_ENV.get(name, f"value-of-{name.lower()}")
        for name in re.findall(r"\$\{(\w+)\}", alerts_block)
    }
    config = parse_config(alerts_block, "README.md", env)
    assert config.alerts.email is not None
    assert config.alerts.email.smtp.password is not None
    assert config.alerts.email.smtp.password.get_secret_value() == env["SMTP_PASSWORD"]
    assert config.alerts.webhooks[0].headers["x-make-apikey"].get_secret_value() == env["MAKE_API_KEY"]


def test_the_request_example_shows_times_as_the_product_writes_them(receiver: Receiver, store: Store) -> None:
    """The example body's timestamp, event_time and event_time_local are what a webhook really carries for
    an event at 09:30 UTC on 4 March 2026 in Europe/Berlin."""
    config = make_config(
        timezone="Europe/Berlin", webhooks=[{"name": "doc", "url": receiver.url(), "signature": "none"}]
    )
    channel = WebhookChannel(config.alerts.webhooks[0], config.tz)
    at = datetime(2026, 3, 4, 9, 30, tzinfo=UTC)
    record(store, [make_alert(event_time=at)], [channel.name], at)
    assert OutboxWorker(store, {channel.name: channel}, clock=lambda: at).deliver_due().sent == 1
    (request,) = receiver.requests
    real = request.json()
    text = DOC.read_text(encoding="utf-8")
    fired_part, resolved_part = text.split("### When an alert is resolved", 1)
    shown = dict(re.findall(r'"(timestamp|event_time|event_time_local)": "([^"]+)"', fired_part))
    assert shown == {
        "timestamp": real["timestamp"],
        "event_time": real["data"]["event_time"],
        "event_time_local": real["data"]["event_time_local"],
    }
    # The alert.resolved example: resolved at 10:42 UTC by the token "oncall".
    (alert_id,) = [row[0] for row in store.conn.execute("SELECT id FROM alerts")]
    resolved_at = datetime(2026, 3, 4, 10, 42, tzinfo=UTC)
    lifecycle.transition(
        store, alert_id, "resolved", actor="oncall", at=resolved_at, note="planned cleanup",
        disposition="benign",
    )  # fmt: skip
    assert OutboxWorker(store, {channel.name: channel}, clock=lambda: resolved_at).deliver_due().sent == 1
    notice = receiver.requests[1].json()
    assert receiver.requests[1].headers["webhook-id"] == f"{alert_id}.resolved"
    shown = dict(re.findall(r'"(type|timestamp)": "([^"]+)"', resolved_part.split("```")[1]))
    assert shown == {"type": notice["type"], "timestamp": notice["timestamp"]}
    example = re.search(r'"resolution": (\{[^}]*\})', resolved_part)
    assert example is not None and json.loads(example.group(1)) == notice["data"]["resolution"]

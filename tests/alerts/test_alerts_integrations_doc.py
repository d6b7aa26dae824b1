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
from monitor.store import Store

DOC = Path(__file__).resolve().parents[2] / "docs" / "integrations.md"


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

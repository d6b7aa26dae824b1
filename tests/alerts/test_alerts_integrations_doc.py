"""The Python verification snippets of docs/integrations.md run against real signed requests."""

from __future__ import annotations

import base64
import re
import secrets
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

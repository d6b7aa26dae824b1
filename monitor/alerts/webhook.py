"""Generic outgoing webhooks (n8n, Make, Zapier, a Xano endpoint): one signed JSON POST per alert.

The body is ``{"type": "alert.fired", "timestamp": ..., "data": {...}}``; ``type`` names what happened to
the alert (or ``chain.anchor``: ``data`` is then the archive's chain head, see monitor/anchors.py). ``data``
holds the alert and its triggering events as archived (normalised fields + raw entry). When a responder
resolves the alert, ``alert.resolved`` carries the same ``data`` plus ``status`` and ``resolution`` (who,
when, disposition, note); its ``webhook-id`` is ``<alert id>.resolved``, so a receiver that drops repeated
ids keeps both messages of one alert. Acknowledgements are not sent.

Signatures:
- ``standard`` (Standard Webhooks): ``webhook-id`` = the alert id, the same on every retry, so a receiver
  can drop the one duplicate a crash between send and record can cause; ``webhook-timestamp`` = this
  attempt's time; ``webhook-signature`` = ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``, one
  per secret while a ``previous_secret`` is being rotated out.
- ``github``: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>``.
- ``none``: no signature (a receiver that authenticates by a static header or a secret URL).

Answers: 2xx delivered; 408, 425, 429 (Retry-After), 5xx and network errors retried; 410 Gone
dead-letters and disables the webhook until the next start (the outbox then raises
``monitor.delivery_failing``); any other 3xx/4xx is permanent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from monitor.alerts.http import JsonPoster, status_error
from monitor.alerts.model import Alert, Receipt, Resolution
from monitor.alerts.outbox import DeliveryError
from monitor.alerts.render import alert_view
from monitor.anchors import notice_anchor
from monitor.config import WebhookConfig
from monitor.events import AuditEvent, format_timestamp

USER_AGENT = "xano-audit-monitor"

# What happened to the alert: ``alert.fired``, then ``alert.resolved`` when a responder resolves it
# (``alert.acknowledged`` is reserved: acknowledging tells no channel).
# ``chain.anchor`` is no alert: the archive's chain head, published by ``anchors`` (monitor/anchors.py).
WebhookEventType = Literal["alert.fired", "alert.acknowledged", "alert.resolved", "chain.anchor"]

EventLoader = Callable[[str, Sequence[int]], list[AuditEvent]]
RuleTitles = Callable[[str], str | None]


def _no_events(source: str, event_ids: Sequence[int]) -> list[AuditEvent]:
    return []


def no_rule_title(rule_id: str) -> str | None:
    return None


def event_record(event: AuditEvent) -> dict[str, Any]:
    """An archived event: the normalised fields, and the entry exactly as Xano served it."""
    return {
        "source": event.source,
        "id": event.id,
        "created_at": format_timestamp(event.created_at),
        "type": event.type,
        "msg": event.msg,
        "user": event.user_email,
        "workspace": event.workspace_name,
        "branch": event.branch_label,
        "raw": event.raw,
    }


def alert_record(
    alert: Alert, tz: ZoneInfo, *, rule_title: str | None = None, events: Sequence[AuditEvent] = ()
) -> dict[str, Any]:
    """The alert as plain JSON values: what webhooks carry in ``data`` and PagerDuty in custom_details."""
    view = alert_view(alert, tz)
    return {
        "id": alert.id,
        "rule": {"id": alert.rule_id, "title": rule_title},
        "severity": alert.severity,
        "title": alert.title,
        "text": alert.text,
        "source": alert.source,
        "event_time": format_timestamp(alert.event_time),
        "event_time_local": alert.event_time.astimezone(tz).isoformat(),
        "timezone": str(tz),
        "user": view.user or None,
        "workspace": view.workspace or None,
        "branch": view.branch or None,
        "event_ids": list(alert.event_ids),
        "throttled_count": alert.suppressed_count,
        "fields": dict(alert.fields),
        "tags": list(alert.tags),
        "events": [event_record(e) for e in events],
    }


def webhook_body(event_type: WebhookEventType, timestamp: datetime, data: dict[str, Any]) -> bytes:
    """The exact bytes that are sent and signed (compact JSON, UTF-8)."""
    payload = {"type": event_type, "timestamp": format_timestamp(timestamp), "data": data}
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def standard_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256>`` over ``{id}.{timestamp}.{body}`` with the decoded ``whsec_`` key."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode("ascii")


def github_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


class WebhookChannel:
    """One configured webhook, outbox channel ``webhook:<name>``. No digests: one POST per alert."""

    def __init__(
        self,
        config: WebhookConfig,
        tz: ZoneInfo,
        *,
        events: EventLoader = _no_events,
        rule_titles: RuleTitles = no_rule_title,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.name = config.channel
        self.config = config
        self.tz = tz
        self.events = events
        self.rule_titles = rule_titles
        self.clock = clock
        self.label = f"webhook {config.name}"
        self._poster = JsonPoster(self.label, config.timeout)
        self._gone: str | None = None  # set by a 410: the receiver says it will never come back

    def __repr__(self) -> str:  # never the URL, the secrets or the header values
        return f"WebhookChannel({self.config.name!r}, signature={self.config.signature})"

    def payload(self, alert: Alert, event_type: WebhookEventType = "alert.fired") -> bytes:
        anchor = notice_anchor(alert)
        if anchor is not None:  # the anchor itself, as `audit-monitor anchor` writes it
            return webhook_body("chain.anchor", anchor.at, anchor.to_dict())
        data = alert_record(
            alert,
            self.tz,
            rule_title=self.rule_titles(alert.rule_id),
            events=self.events(alert.source, alert.event_ids),
        )
        return webhook_body(event_type, alert.event_time, data)

    def resolved_payload(self, alert: Alert, resolution: Resolution) -> bytes:
        """``alert.resolved``: the alert as ``alert.fired`` carried it, its status and the resolution; the
        envelope's timestamp is when it was resolved."""
        data = alert_record(
            alert,
            self.tz,
            rule_title=self.rule_titles(alert.rule_id),
            events=self.events(alert.source, alert.event_ids),
        )
        data["status"] = "resolved"
        data["resolution"] = {
            "at": format_timestamp(resolution.at),
            "at_local": resolution.at.astimezone(self.tz).isoformat(),
            "by": resolution.actor,
            "disposition": resolution.disposition,
            "note": resolution.note,
        }
        return webhook_body("alert.resolved", resolution.at, data)

    def headers(self, msg_id: str, body: bytes, now: datetime) -> dict[str, str]:
        """Static headers first, so a configured header can never replace the id or the signature."""
        headers = {name: value.get_secret_value() for name, value in self.config.headers.items()}
        headers["User-Agent"] = USER_AGENT
        headers["webhook-id"] = msg_id
        config = self.config
        if config.signature == "standard" and config.secret is not None:
            timestamp = int(now.timestamp())
            secrets = [config.secret] + ([config.previous_secret] if config.previous_secret else [])
            headers["webhook-timestamp"] = str(timestamp)
            headers["webhook-signature"] = " ".join(
                standard_signature(s.get_secret_value(), msg_id, timestamp, body) for s in secrets
            )
        elif config.signature == "github" and config.secret is not None:
            headers["X-Hub-Signature-256"] = github_signature(config.secret.get_secret_value(), body)
        return headers

    def send(self, alert: Alert) -> str | None:
        return self._deliver(alert.id, self.payload(alert))

    def send_resolved(self, alert: Alert, resolution: Resolution, trigger: Receipt) -> str | None:
        return self._deliver(f"{alert.id}.resolved", self.resolved_payload(alert, resolution))

    def _deliver(self, msg_id: str, body: bytes) -> str | None:
        if self._gone is not None:
            raise DeliveryError(self._gone, permanent=True)
        response = self._poster.post(
            self.config.url.get_secret_value(), body, self.headers(msg_id, body, self.clock())
        )
        if response.status_code == 410:
            self._gone = (
                f"{self.label} answered HTTP 410 Gone: disabled until the next start "
                f"(fix or remove alerts.webhooks {self.config.name})"
            )
            raise DeliveryError(self._gone, permanent=True)
        error = status_error(self.label, response)
        if error is not None:
            raise error
        return None

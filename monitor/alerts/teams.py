"""Microsoft Teams through a Workflows webhook ("Post to a channel when a webhook request is received"):
an Adaptive Card 1.4 per alert, one card per digest (the Office 365 connectors are retired).

Safety: event-derived text is placed only in ``TextRun`` elements, which Teams renders as plain text (no
markdown, so no ``[link](url)``), the card declares no ``msteams.entities`` (so ``<at>name</at>`` is inert
text, never a mention), and the finalize hook breaks ``scheme://`` and ``www.`` with a word joiner so a
client does not turn event text into a clickable link. Markdown-capable ``TextBlock`` elements hold only our
own labels. Teams refuses a card above 28 KB: ``fit_card`` cuts the longest texts until it fits.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

from jinja2.sandbox import SandboxedEnvironment

from monitor.alerts.http import JsonPoster, status_error
from monitor.alerts.model import Alert, Receipt, Resolution, severity_rank
from monitor.alerts.render import alert_view, cut, digest_view, make_environment, resolution_view
from monitor.alerts.webhook import USER_AGENT
from monitor.config import TeamsConfig

CARD_MAX_BYTES = 27 * 1024  # Teams' limit is 28 KB for the whole message; keep a margin for its envelope
DIGEST_LIST_MAX = 40
SHORTEST_CUT = 40  # a text is never cut below this; blocks are dropped instead
WORD_JOINER = "\u2060"
COLORS = {
    "critical": "Attention",
    "high": "Attention",
    "medium": "Warning",
    "low": "Default",
    "info": "Default",
}

_LINKISH = re.compile(r"(?i)(://|\bwww\.)")


def defang(text: str) -> str:
    """Break what a chat client would auto-link (``https://``, ``www.``) with an invisible word joiner."""
    # "https:⁠//" and "www⁠.": the joiner goes before the part a linkifier keys on.
    return _LINKISH.sub(lambda m: m.group(0)[:-2] + WORD_JOINER + m.group(0)[-2:], text)


def _finalize(value: Any) -> str:
    """Every ``{{ }}`` in a Teams template: defanged, then escaped for a JSON string literal."""
    text = "" if value is None else str(value)
    return json.dumps(defang(text), ensure_ascii=False)[1:-1]


_env: SandboxedEnvironment | None = None


def _environment() -> SandboxedEnvironment:
    global _env
    if _env is None:
        _env = make_environment(finalize=_finalize)
    return _env


def _text_runs(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        if node.get("type") == "TextRun":
            return [node]
        return [run for value in node.values() for run in _text_runs(value)]
    if isinstance(node, list):
        return [run for item in node for run in _text_runs(item)]
    return []


def card_size(message: dict[str, Any]) -> int:
    return len(json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def fit_card(message: dict[str, Any], limit: int = CARD_MAX_BYTES) -> dict[str, Any]:
    """Cut the longest texts (then drop blocks from the end, keeping the footer) until the card fits."""
    body: list[dict[str, Any]] = message["attachments"][0]["content"]["body"]
    while card_size(message) > limit:
        runs = _text_runs(body)
        longest = max(runs, key=lambda run: len(run["text"]), default=None)
        if longest is not None and len(longest["text"]) > SHORTEST_CUT:
            longest["text"] = cut(longest["text"], max(SHORTEST_CUT, len(longest["text"]) // 2))
        elif len(body) > 3:
            del body[-2]  # the last listed block; the footer (alert id / digest count) stays
        else:
            break
    return message


def _render(name: str, **context: Any) -> dict[str, Any]:
    rendered = _environment().get_template(name).render(**context)
    try:
        message: dict[str, Any] = json.loads(rendered)
    except json.JSONDecodeError as exc:  # a template bug, never event data: values are JSON-escaped
        raise RuntimeError(f"templates/{name} does not render valid JSON: {exc}") from None
    return fit_card(message)


def build_alert_card(alert: Alert, tz: ZoneInfo) -> dict[str, Any]:
    view = alert_view(alert, tz)
    facts = [
        ("Rule", view.rule_id),
        ("Severity", view.severity_label),
        ("Event time", f"{view.time_local} ({view.time_utc})"),
        ("Source", view.source),
        ("User", cut(view.user or "-", 500)),
        ("Workspace", cut(view.workspace or "-", 500)),
        ("Branch", cut(view.branch or "-", 500)),
        ("Event ids", view.event_ids_text or "-"),
    ]
    if view.event_type:
        facts.append(("Event type", cut(view.event_type, 200)))
    return _render("teams_alert.json.j2", a=view, facts=facts, color=COLORS.get(alert.severity, "Default"))


def build_resolved_card(alert: Alert, resolution: Resolution, tz: ZoneInfo) -> dict[str, Any]:
    """A short card: a Workflows webhook answers no message id, so there is no thread to reply in; the card
    names the alert in full."""
    view = alert_view(alert, tz)
    resolved = resolution_view(resolution, tz)
    facts = [
        ("Resolved by", cut(resolved.actor, 200)),
        ("Resolved at", f"{resolved.time_local} ({resolved.time_utc})"),
        ("Disposition", resolved.disposition or "-"),
        ("Rule", view.rule_id),
        ("Severity", view.severity_label),
        ("Event time", f"{view.time_local} ({view.time_utc})"),
        ("Source", view.source),
    ]
    return _render("teams_resolved.json.j2", a=view, r=resolved, facts=facts)


def build_digest_card(alerts: Sequence[Alert], tz: ZoneInfo) -> dict[str, Any]:
    worst = max(alerts, key=lambda a: severity_rank(a.severity)).severity
    return _render(
        "teams_digest.json.j2", d=digest_view(alerts, tz, DIGEST_LIST_MAX), color=COLORS.get(worst, "Default")
    )


class TeamsChannel:
    name = "teams"

    def __init__(self, config: TeamsConfig, tz: ZoneInfo) -> None:
        self.config = config
        self.tz = tz
        self._poster = JsonPoster("Teams", config.timeout)

    def __repr__(self) -> str:  # never the Workflows URL (its sig= parameter is a credential)
        return "TeamsChannel(workflows-webhook)"

    def destination(self, alert: Alert) -> str:
        return "teams"  # one Workflows URL, one channel: a digest holds every due alert

    def send(self, alert: Alert) -> str | None:
        return self._post(build_alert_card(alert, self.tz))

    def send_digest(self, alerts: Sequence[Alert]) -> str | None:
        return self._post(build_digest_card(alerts, self.tz))

    def send_resolved(self, alert: Alert, resolution: Resolution, trigger: Receipt) -> str | None:
        return self._post(build_resolved_card(alert, resolution, self.tz))

    def _post(self, message: dict[str, Any]) -> str | None:
        # The same compact form fit_card measured: its size is what Teams' 28 KB limit applies to.
        body = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        response = self._poster.post(
            self.config.webhook_url.get_secret_value(), body, {"User-Agent": USER_AGENT}
        )
        error = status_error("Teams", response)
        if error is not None:
            raise error
        return None

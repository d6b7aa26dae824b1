"""What every channel shows about an alert, and the Jinja2 environments that render it from ``templates/``.

``AlertView`` is the one place that decides which facts an alert message carries (severity, title, rule id,
event time in the configured zone and in UTC, user, workspace, branch, message, triggering event ids,
throttled count), so Slack, email and the digests cannot drift apart. Its strings have control and bidi
characters neutralised (``monitor.display.safe_text``) but are otherwise untrusted: each channel escapes them
for its own medium (Slack mrkdwn, HTML) at render time.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from monitor.alerts.model import Alert, Resolution, severity_rank
from monitor.display import one_line, safe_output, safe_text
from monitor.resources import templates_dir
from monitor.timeutil import format_time

MAX_EVENT_IDS_SHOWN = 20
# Event fields every message shows from the alert's context: rule field path -> context key.
_SHOWN = {
    "user.email": "user",
    "workspace.name": "workspace",
    "branch.label": "branch",
    "msg": "msg",
    "type": "type",
}
RECOVERY_TAG = "recovery"


def _display(value: Any) -> str:
    """A context value as text: events may carry nested objects (``{"email": ...}``) or nothing. Control and
    bidi characters are neutralised here, once, for every channel (``monitor.display``)."""
    if value is None:
        return ""
    if isinstance(value, dict):
        for key in ("email", "name", "label", "id"):
            if value.get(key) not in (None, ""):
                return safe_text(value[key])
        return safe_text(json.dumps(value, ensure_ascii=False, sort_keys=True))
    return safe_text(value)


def cut(text: str, limit: int) -> str:
    """At most ``limit`` characters, marking a cut with an ellipsis."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 1)].rstrip() + "…"


def format_utc(moment: datetime) -> str:
    return f"{moment.astimezone(ZoneInfo('UTC')):%Y-%m-%d %H:%M:%S} UTC"


@dataclass(frozen=True)
class AlertView:
    alert_id: str
    rule_id: str
    severity: str
    severity_label: str
    title: str
    text: str  # the rule's text; empty when it only repeats the title
    source: str
    time_local: str
    time_utc: str
    user: str
    workspace: str
    branch: str
    event_message: str
    event_type: str
    event_ids: list[str]
    more_event_ids: int
    event_count: int
    suppressed_count: int
    fields: list[tuple[str, str]] = field(default_factory=list)
    is_recovery: bool = False

    @property
    def event_ids_text(self) -> str:
        shown = ", ".join(self.event_ids)
        return f"{shown} (+{self.more_event_ids} more)" if self.more_event_ids else shown


def alert_view(alert: Alert, tz: ZoneInfo) -> AlertView:
    ctx = alert.context
    message = _display(ctx.get("msg", ctx.get("message")))
    # Titles and texts are rule templates that quote event text: neutralised like the event fields.
    title = safe_text(alert.title)
    text = safe_text(alert.text).strip()
    return AlertView(
        alert_id=alert.id,
        rule_id=safe_text(alert.rule_id),
        severity=alert.severity,
        severity_label=alert.severity.upper(),
        title=title,
        text="" if text == title.strip() else text,
        source=safe_text(alert.source),
        time_local=format_time(alert.event_time, tz),
        time_utc=format_utc(alert.event_time),
        user=_display(ctx.get("user")),
        workspace=_display(ctx.get("workspace")),
        branch=_display(ctx.get("branch")),
        event_message=message,
        event_type=_display(ctx.get("type")),
        event_ids=[str(i) for i in alert.event_ids[:MAX_EVENT_IDS_SHOWN]],
        more_event_ids=max(0, len(alert.event_ids) - MAX_EVENT_IDS_SHOWN),
        event_count=len(alert.event_ids),
        suppressed_count=alert.suppressed_count,
        fields=[
            (safe_text(k), _display(v))
            for k, v in alert.fields.items()
            # A rule's field that repeats what every message shows anyway (user, workspace...) is noise.
            if not (k in _SHOWN and _display(v) == _display(ctx.get(_SHOWN[k])))
        ],
        is_recovery=RECOVERY_TAG in alert.tags,
    )


DISPOSITION_LABELS = {
    "true_positive": "true positive",
    "benign": "benign",
    "false_positive": "false positive",
}


@dataclass(frozen=True)
class ResolutionView:
    """What a resolve notice says besides the alert: who, when (configured zone and UTC), disposition,
    note. The actor (a token's name, ``cli:<login>``) and the note are typed by people: untrusted like
    event text, and escaped the same way by each channel."""

    actor: str
    time_local: str
    time_utc: str
    disposition: str  # a label ("false positive"), empty when none was given
    note: str


def resolution_view(resolution: Resolution, tz: ZoneInfo) -> ResolutionView:
    disposition = resolution.disposition or ""
    return ResolutionView(
        actor=safe_text(resolution.actor),
        time_local=format_time(resolution.at, tz),
        time_utc=format_utc(resolution.at),
        disposition=DISPOSITION_LABELS.get(disposition, safe_text(disposition)),
        note=safe_text(resolution.note or "").strip(),
    )


@dataclass(frozen=True)
class DigestView:
    """A burst of alerts for one destination, newest-severity first, cut to ``limit`` rows."""

    count: int
    items: list[AlertView]
    more: int
    by_severity: list[tuple[str, int]]
    by_rule: list[tuple[str, int]]
    first_time_local: str
    last_time_local: str
    sources: list[str]

    @property
    def severity_summary(self) -> str:
        return ", ".join(f"{n} {sev}" for sev, n in self.by_severity)


def digest_view(alerts: Sequence[Alert], tz: ZoneInfo, limit: int) -> DigestView:
    ordered = sorted(alerts, key=lambda a: (-severity_rank(a.severity), a.event_time, a.id))
    severities = Counter(a.severity for a in alerts)
    rules = Counter(a.rule_id for a in alerts)
    times = sorted(a.event_time for a in alerts)
    return DigestView(
        count=len(alerts),
        items=[alert_view(a, tz) for a in ordered[:limit]],
        more=max(0, len(ordered) - limit),
        by_severity=sorted(severities.items(), key=lambda kv: -severity_rank(kv[0])),
        by_rule=sorted(((safe_text(r), n) for r, n in rules.items()), key=lambda kv: (-kv[1], kv[0])),
        first_time_local=format_time(times[0], tz) if times else "",
        last_time_local=format_time(times[-1], tz) if times else "",
        sources=sorted({safe_text(a.source) for a in alerts}),
    )


# --- template environments --------------------------------------------------------------------------------


def _jinja_cut(value: Any, limit: int) -> str:
    return cut("" if value is None else str(value), limit)


def _jinja_one_line(value: Any) -> str:
    return one_line("" if value is None else str(value))


def make_environment(
    *, autoescape: bool = False, finalize: Callable[[Any], Any] | None = None
) -> SandboxedEnvironment:
    """A sandboxed environment over ``templates/``; StrictUndefined so a template typo fails loudly."""
    kwargs: dict[str, Any] = {}
    if finalize is not None:
        kwargs["finalize"] = finalize
    env = SandboxedEnvironment(
        loader=FileSystemLoader(str(templates_dir())),
        autoescape=autoescape,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        **kwargs,
    )
    env.filters["cut"] = _jinja_cut
    env.filters["one_line"] = _jinja_one_line
    return env


@functools.cache
def text_environment() -> SandboxedEnvironment:
    return make_environment(autoescape=False, finalize=safe_output)


@functools.cache
def html_environment() -> SandboxedEnvironment:
    # Every interpolated value is HTML-escaped: event text can never become markup in a mail client.
    return make_environment(autoescape=True, finalize=safe_output)


def render(env: SandboxedEnvironment, name: str, **context: Any) -> str:
    return env.get_template(name).render(**context)

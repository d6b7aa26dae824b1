"""The alert: what a rule (or the monitor itself) says about one or more events."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# In rising order. Defined here rather than in monitor.config (which validates against it), so that the
# store, which records alerts, does not import the configuration's models (pydantic): a report's worker
# processes open the store and nothing else.
SEVERITIES = ("info", "low", "medium", "high", "critical")

# Not an alert: the archive's chain head on its way off the machine through the outbox (monitor/anchors.py).
# The report's alert figures leave it out.
ANCHOR_RULE = "monitor.chain_anchor"


def alert_id(source: str, rule_id: str, group_key: str, event_ids: tuple[int, ...] | list[int]) -> str:
    """A stable id: re-processing the same events can never make a second alert.

    The source is part of it because event ids are only unique within one Xano instance: two instances'
    event 42 deleting a table are two alerts, not one.
    """
    material = "\x1f".join([source, rule_id, group_key, ",".join(str(i) for i in sorted(event_ids))])
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:32]


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity)


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert. ``event_time`` is the (last) triggering event's created_at, aware UTC.

    ``fields`` are display pairs chosen by the rule (``user.email`` -> value); ``context`` holds
    the triggering event's user, workspace, branch and message for every channel to show.
    All strings that came from events are untrusted: channels escape them.
    """

    rule_id: str
    severity: str
    title: str
    text: str
    source: str
    event_time: datetime
    event_ids: tuple[int, ...]
    group_key: str = ""
    fields: dict[str, str] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    suppressed_count: int = 0  # matches the rule's throttle held back since the previous alert
    tags: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return alert_id(self.source, self.rule_id, self.group_key, self.event_ids)


# --- what the outbox carries beside the alert --------------------------------------------------------------

# An outbox row is the alert itself (``trigger``) or the notice that a responder resolved it (``resolve``).
TRIGGER = "trigger"
RESOLVE = "resolve"

# The outbox channels that are told when an alert is resolved (each has ``send_resolved``): a webhook gets
# ``alert.resolved``, PagerDuty a ``resolve`` event, Slack a thread reply, email a reply to the alert's
# message, Teams a short card. The console is not: the API and the CLI log the change themselves.
RESOLVE_NOTICE_CHANNELS = frozenset({"slack", "email", "teams", "pagerduty"})
WEBHOOK_CHANNEL_PREFIX = "webhook:"


def tells_resolve(channel: str) -> bool:
    """Whether the outbox channel ``channel`` is sent a resolve notice (``tests`` check every channel class
    against it, so a channel that learns ``send_resolved`` cannot be left out here)."""
    return channel in RESOLVE_NOTICE_CHANNELS or channel.startswith(WEBHOOK_CHANNEL_PREFIX)


@dataclass(frozen=True, slots=True)
class Resolution:
    """Who resolved an alert, when, and what they said (from the alert's history in the archive)."""

    at: datetime
    actor: str
    disposition: str | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Receipt:
    """What a channel answered when it accepted a message: the message's id there (Slack ts, Message-ID,
    PagerDuty dedup key) and where a reply to it goes (Slack: the channel id)."""

    remote_id: str | None
    reply_to: str | None = None

"""What ``audit-monitor channels list`` and ``channels test`` show: the configured channels with their
effective floor and routes, and one clearly marked test alert sent straight through each (not the outbox:
a test must neither wait behind real alerts nor leave a row in the archive)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from monitor.alerts.model import SEVERITIES, Alert, severity_rank
from monitor.alerts.outbox import Channel, DeliveryError
from monitor.config import Config, effective_console

TEST_RULE_ID = "monitor.channel_test"


@dataclass(frozen=True)
class ChannelInfo:
    name: str
    min_severity: str  # what the channel really receives: the stricter of alerts.min_severity and its own
    routes: str


def channel_infos(config: Config) -> list[ChannelInfo]:
    alerts = config.alerts

    def floor(own: str) -> str:
        return SEVERITIES[max(severity_rank(alerts.min_severity), severity_rank(own))]

    infos: list[ChannelInfo] = []
    if effective_console(config):
        infos.append(ChannelInfo("console", alerts.min_severity, "stdout"))
    if alerts.slack is not None:
        slack = alerts.slack
        if slack.token is not None:
            routes = ", ".join(f"{sev} -> {where}" for sev, where in sorted(slack.routes.items()))
            routes = f"{routes}; others -> {slack.channel}" if routes else f"all -> {slack.channel}"
        else:
            routes = "incoming webhook (its own channel)"
        infos.append(ChannelInfo("slack", floor(slack.min_severity), routes))
    if alerts.email is not None:
        infos.append(ChannelInfo("email", floor(alerts.email.min_severity), ", ".join(alerts.email.to)))
    for hook in alerts.webhooks:
        infos.append(ChannelInfo(hook.channel, floor(hook.min_severity), f"signature {hook.signature}"))
    if alerts.teams is not None:
        infos.append(ChannelInfo("teams", floor(alerts.teams.min_severity), "Workflows webhook"))
    if alerts.pagerduty is not None:
        infos.append(
            ChannelInfo("pagerduty", floor(alerts.pagerduty.min_severity), alerts.pagerduty.base_url)
        )
    return infos


def channel_test_alert(now: datetime) -> Alert:
    """A test alert no one can mistake for a real one; its id is new on every run, so receivers that drop
    repeated ids (webhooks, PagerDuty's dedup_key) still show each test."""
    return Alert(
        rule_id=TEST_RULE_ID,
        severity="info",
        title="TEST alert from audit-monitor: channel check, no action needed",
        text="This is a test sent by `audit-monitor channels test`. It is not about any Xano event.",
        source="audit-monitor",
        event_time=now,
        event_ids=(),
        group_key=now.isoformat(),
        context={"msg": "channel test"},
        tags=("test",),
    )


@dataclass(frozen=True)
class ProbeResult:
    channel: str
    error: DeliveryError | None

    @property
    def line(self) -> str:
        if self.error is None:
            return f"{self.channel}: delivered"
        kind = "permanent" if self.error.permanent else "transient, would be retried"
        return f"{self.channel}: FAILED ({kind}): {self.error}"


def probe(channels: Mapping[str, Channel], alert: Alert) -> list[ProbeResult]:
    results = []
    for name, channel in channels.items():
        try:
            channel.send(alert)
        except DeliveryError as exc:
            results.append(ProbeResult(name, exc))
        except Exception as exc:  # a channel bug must still be reported per channel, like the outbox does
            results.append(
                ProbeResult(name, DeliveryError(f"internal error: {type(exc).__name__}", permanent=False))
            )
        else:
            results.append(ProbeResult(name, None))
    return results

"""Which channels an alert goes to: the global floor, then each channel's own min_severity."""

from __future__ import annotations

from monitor.alerts.model import Alert, severity_rank
from monitor.config import Config, effective_console


def channels_for(alert: Alert, config: Config) -> list[str]:
    rank = severity_rank(alert.severity)
    alerts = config.alerts
    if rank < severity_rank(alerts.min_severity):
        return []
    channels = []
    if effective_console(config):
        channels.append("console")
    if alerts.slack is not None and rank >= severity_rank(alerts.slack.min_severity):
        channels.append("slack")
    if alerts.email is not None and rank >= severity_rank(alerts.email.min_severity):
        channels.append("email")
    channels.extend(hook.channel for hook in alerts.webhooks if rank >= severity_rank(hook.min_severity))
    if alerts.teams is not None and rank >= severity_rank(alerts.teams.min_severity):
        channels.append("teams")
    if alerts.pagerduty is not None and rank >= severity_rank(alerts.pagerduty.min_severity):
        channels.append("pagerduty")
    return channels

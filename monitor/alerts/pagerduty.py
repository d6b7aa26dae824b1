"""PagerDuty through the Events API v2: one ``trigger`` per alert, ``dedup_key`` = the alert id.

The dedup key makes a re-send after a crash (or a retry whose first answer was lost) update the same
PagerDuty incident instead of paging twice. When a responder resolves the alert (API, console, CLI), a
``resolve`` event with the same key closes the incident; the outbox sends it only after the trigger was
accepted, and a repeated resolve of a closed incident changes nothing there. Answers (https://developer.pagerduty.com/docs/events-api-v2/overview/):
202 accepted; 400 invalid event (permanent); 429 and 5xx retried; anything else permanent.
"""

from __future__ import annotations

import json
from zoneinfo import ZoneInfo

from monitor.alerts.http import JsonPoster, status_error
from monitor.alerts.model import Alert, Receipt, Resolution
from monitor.alerts.render import cut, one_line
from monitor.alerts.webhook import USER_AGENT, RuleTitles, alert_record, no_rule_title
from monitor.config import PagerDutyConfig

SUMMARY_MAX = 1024  # the Events API rejects longer summaries
SEVERITY = {"critical": "critical", "high": "error", "medium": "warning", "low": "info", "info": "info"}


class PagerDutyChannel:
    name = "pagerduty"

    def __init__(
        self, config: PagerDutyConfig, tz: ZoneInfo, *, rule_titles: RuleTitles = no_rule_title
    ) -> None:
        self.config = config
        self.tz = tz
        self.rule_titles = rule_titles  # the loaded rule's title for custom_details.rule.title
        self.url = f"{config.base_url}/v2/enqueue"
        self._poster = JsonPoster("PagerDuty", config.timeout)

    def __repr__(self) -> str:  # never the routing key
        return f"PagerDutyChannel({self.config.base_url})"

    def event(self, alert: Alert) -> dict[str, object]:
        details = alert_record(alert, self.tz, rule_title=self.rule_titles(alert.rule_id))
        details.pop("events")  # the raw entries can be large; the alert id leads back to them
        summary = one_line(f"{alert.severity.upper()}: {alert.title} ({alert.rule_id}; {alert.source})")
        return {
            "routing_key": self.config.routing_key.get_secret_value(),
            "event_action": "trigger",
            "dedup_key": alert.id,
            "payload": {
                "summary": cut(summary, SUMMARY_MAX),
                "source": alert.source,
                "severity": SEVERITY[alert.severity],
                "timestamp": alert.event_time.isoformat(),
                "component": "xano-audit-log",
                "class": alert.rule_id,
                "custom_details": details,
            },
        }

    def resolve_event(self, alert: Alert) -> dict[str, object]:
        """The Events API v2 resolve: routing key, action and the trigger's dedup key are all it takes (a
        payload is ignored for resolve; who resolved it lives in the monitor's history)."""
        return {
            "routing_key": self.config.routing_key.get_secret_value(),
            "event_action": "resolve",
            "dedup_key": alert.id,
        }

    def send(self, alert: Alert) -> str | None:
        return self._enqueue(self.event(alert), alert)

    def send_resolved(self, alert: Alert, resolution: Resolution, trigger: Receipt) -> str | None:
        return self._enqueue(self.resolve_event(alert), alert)

    def _enqueue(self, event: dict[str, object], alert: Alert) -> str:
        body = json.dumps(event, ensure_ascii=False).encode("utf-8")
        response = self._poster.post(self.url, body, {"User-Agent": USER_AGENT})
        error = status_error("PagerDuty", response)
        if error is not None:
            raise error
        return alert.id  # the dedup key: how the incident is found in PagerDuty

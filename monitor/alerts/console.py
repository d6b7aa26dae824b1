"""The console channel: alerts printed readably to stdout (the default sink, and what `demo` shows).

The console never digests: it is the log of record on a terminal or in `docker logs`, where every
alert in full is what an operator scrolling back wants. When the logs are JSON lines (stdout is not a
terminal), an alert is one JSON log record too (logger ``monitor.alert``, level by severity), so a log
shipper never meets a multi-line text block in the middle of its JSON.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO
from zoneinfo import ZoneInfo

from monitor.alerts.model import Alert
from monitor.alerts.render import AlertView, alert_view
from monitor.display import one_line
from monitor.logs import json_lines_active

alert_log = logging.getLogger("monitor.alert")
# An alert on the console is a delivery, not chatter: a quieter --log-level must not swallow it.
alert_log.setLevel(logging.DEBUG)

_LOG_LEVEL = {
    "critical": logging.CRITICAL,
    "high": logging.ERROR,
    "medium": logging.WARNING,
    "low": logging.INFO,
    "info": logging.INFO,
}


class ConsoleChannel:
    name = "console"

    def __init__(self, tz: ZoneInfo, stream: TextIO | None = None) -> None:
        self.tz = tz
        self.stream = stream  # given: always readable text to it (the demo, tests)

    def send(self, alert: Alert) -> str | None:
        view = alert_view(alert, self.tz)
        if self.stream is None and json_lines_active():
            self._log_record(view)
        else:
            self._print(view, self.stream or sys.stdout)
        return None

    @staticmethod
    def _log_record(view: AlertView) -> None:
        # Through logging, so the JSON formatter's escaping and secret redaction apply as to any record.
        alert_log.log(
            _LOG_LEVEL.get(view.severity, logging.WARNING),
            "alert",
            extra={
                "alert_id": view.alert_id,
                "rule_id": view.rule_id,
                "severity": view.severity,
                "title": view.title,
                "text": view.text,
                "source": view.source,
                "event_time": view.time_utc,
                "user": view.user,
                "workspace": view.workspace,
                "branch": view.branch,
                "event_message": view.event_message,
                "event_type": view.event_type,
                "event_ids": view.event_ids,
                "event_count": view.event_count,
                "suppressed_count": view.suppressed_count,
            },
        )

    @staticmethod
    def _print(view: AlertView, out: TextIO) -> None:
        lines = [
            f"[{view.severity_label}] {one_line(view.title)}",
            f"    rule {view.rule_id} · {view.time_local} ({view.time_utc})",
            f"    source {one_line(view.source)} · user {one_line(view.user or '-')} · "
            f"workspace {one_line(view.workspace or '-')} · branch {one_line(view.branch or '-')}",
        ]
        if view.text:
            lines.extend(f"    {one_line(line)}" for line in view.text.splitlines())
        if view.event_message and view.event_message not in (view.title, view.text):
            lines.append(f"    message: {one_line(view.event_message)}")
        if view.event_ids:
            lines.append(f"    events {view.event_ids_text}")
        if view.suppressed_count:
            lines.append(f"    ({view.suppressed_count} similar matches were throttled since the last alert)")
        out.write("\n".join(lines) + "\n")
        out.flush()

"""The console channel: alerts printed readably to stdout (the default sink, and what `demo` shows).

The console never digests: it is the log of record on a terminal or in `docker logs`, where every
alert in full is what an operator scrolling back wants.
"""

from __future__ import annotations

import sys
from typing import TextIO
from zoneinfo import ZoneInfo

from monitor.alerts.model import Alert
from monitor.alerts.render import alert_view


def _clean(value: object) -> str:
    # Event text must not move the cursor, clear the screen or fake extra alert lines.
    return "".join(ch if ch.isprintable() else " " for ch in str(value))


class ConsoleChannel:
    name = "console"

    def __init__(self, tz: ZoneInfo, stream: TextIO | None = None) -> None:
        self.tz = tz
        self.stream = stream

    def send(self, alert: Alert) -> str | None:
        out = self.stream or sys.stdout
        view = alert_view(alert, self.tz)
        lines = [
            f"[{view.severity_label}] {_clean(view.title)}",
            f"    rule {view.rule_id} · {view.time_local} ({view.time_utc})",
            f"    source {_clean(view.source)} · user {_clean(view.user or '-')} · "
            f"workspace {_clean(view.workspace or '-')} · branch {_clean(view.branch or '-')}",
        ]
        if view.text:
            lines.extend(f"    {_clean(line)}" for line in view.text.splitlines())
        if view.event_message and view.event_message not in (view.title, view.text):
            lines.append(f"    message: {_clean(view.event_message)}")
        if view.event_ids:
            lines.append(f"    events {view.event_ids_text}")
        if view.suppressed_count:
            lines.append(f"    ({view.suppressed_count} similar matches were throttled since the last alert)")
        out.write("\n".join(lines) + "\n")
        out.flush()
        return None

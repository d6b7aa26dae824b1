"""The console channel: alerts printed readably to stdout (the default sink, and what `demo` shows)."""

from __future__ import annotations

import sys
from typing import TextIO
from zoneinfo import ZoneInfo

from monitor.alerts.model import Alert
from monitor.events import format_timestamp


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
        local = alert.event_time.astimezone(self.tz)
        ctx = alert.context
        lines = [
            f"[{alert.severity.upper()}] {_clean(alert.title)}",
            f"    rule {alert.rule_id} · {local:%Y-%m-%d %H:%M:%S %Z} ({format_timestamp(alert.event_time)})",
            f"    source {_clean(alert.source)} · user {_clean(ctx.get('user') or '-')} · "
            f"workspace {_clean(ctx.get('workspace') or '-')} · branch {_clean(ctx.get('branch') or '-')}",
        ]
        if alert.text and alert.text != alert.title:
            lines.extend(f"    {_clean(line)}" for line in alert.text.splitlines())
        if alert.event_ids:
            shown = ", ".join(str(i) for i in alert.event_ids[:20])
            more = f" (+{len(alert.event_ids) - 20} more)" if len(alert.event_ids) > 20 else ""
            lines.append(f"    events {shown}{more}")
        if alert.suppressed_count:
            lines.append(f"    ({alert.suppressed_count} similar matches were throttled since the previous alert)")
        out.write("\n".join(lines) + "\n")
        out.flush()
        return None

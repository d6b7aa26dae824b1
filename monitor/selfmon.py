"""Alerts the monitor raises about itself (rule ids ``monitor.*``).

Each is keyed by its episode (e.g. the last success before the failure began) so that
repeated failing cycles re-derive the same alert id and it is sent once per episode.
"""

from __future__ import annotations

from datetime import datetime

from monitor.alerts.model import Alert
from monitor.events import format_timestamp


def auth_failed(source: str, message: str, episode_start: datetime | None, at: datetime) -> Alert:
    episode = format_timestamp(episode_start) if episode_start else "never-succeeded"
    return Alert(
        rule_id="monitor.auth_failed",
        severity="high",
        title=f"Xano rejected the metadata API token of source {source}",
        text=(
            f"{message}\nCreate a new metadata API token with the \"Workspace Log: Read\" scope and update "
            "the source's token; audit events are not being archived until then."
        ),
        source=source,
        event_time=at,
        event_ids=(),
        group_key=f"{source}|{episode}",
        context={"source": source},
    )


def retention_gap(source: str, start: datetime, end: datetime, retention: str, at: datetime) -> Alert:
    return Alert(
        rule_id="monitor.retention_gap",
        severity="high",
        title=f"Audit events of source {source} may be lost: polling stopped longer than the plan keeps them",
        text=(
            f"No successful poll between {format_timestamp(start)} and {format_timestamp(end)}, longer than the "
            f"plan's retention of {retention}. Events created in that period may have expired upstream "
            "before they could be archived. The gap is recorded for the monthly report."
        ),
        source=source,
        event_time=end,
        event_ids=(),
        group_key=f"{source}|{format_timestamp(start)}",
        fields={"gap_start": format_timestamp(start), "gap_end": format_timestamp(end)},
        context={"source": source},
    )

"""Alerts the monitor raises about itself (rule ids ``monitor.*``), through the same outbox as rule alerts.

Each is keyed by its episode (e.g. the last success before the failure began) so that
repeated failing cycles re-derive the same alert id and it is sent once per episode.
An episode that ends is announced once by a recovery notice (rule id ``<rule>.recovered``,
severity info, tag ``recovery``) sent to exactly the channels that carried the failure, so whoever
was told that something broke is told that it works again, whatever their min_severity.

Open episodes live in ``rule_state`` under the rule id (key: source or channel name), so they
survive restarts. ``check_sources`` runs after every cycle (``Monitor.deliver``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta, tzinfo
from typing import TYPE_CHECKING

from monitor.alerts.model import Alert
from monitor.alerts.routing import channels_for
from monitor.config import Config, SourceConfig
from monitor.events import format_timestamp
from monitor.timeutil import format_duration, format_time

if TYPE_CHECKING:
    from monitor.store import Cursor, Store, VerifyRecord, VerifyResult

SOURCE_UNREACHABLE = "monitor.source_unreachable"
AUTH_FAILED = "monitor.auth_failed"
RETENTION_GAP = "monitor.retention_gap"
DELIVERY_FAILING = "monitor.delivery_failing"
EVENT_CONFLICT = "monitor.event_conflict"
CHAIN_BROKEN = "monitor.chain_broken"
CHAIN_STATE_KEY = "archive"  # rule_state key of the open chain_broken episode
RECOVERY_TAG = "recovery"
UNREACHABLE_POLLS = 3  # missed poll intervals before a source counts as unreachable
UNREACHABLE_MIN = timedelta(seconds=30)  # the same floor /healthz uses


def auth_failed(source: str, message: str, episode_start: datetime | None, at: datetime) -> Alert:
    episode = format_timestamp(episode_start) if episode_start else "never-succeeded"
    return Alert(
        rule_id=AUTH_FAILED,
        severity="high",
        title=f"Xano rejected the metadata API token of source {source}",
        text=(
            f'{message}\nCreate a new metadata API token with the "Workspace Log: Read" scope and update '
            "the source's token; audit events are not being archived until then."
        ),
        source=source,
        event_time=at,
        event_ids=(),
        group_key=f"{source}|{episode}",
        context={"source": source},
    )


def retention_gap(
    source: str, start: datetime, end: datetime, retention: timedelta, at: datetime, tz: tzinfo
) -> Alert:
    # Texts are read by people: times in the configured zone, durations in words. Group keys stay ISO UTC,
    # so alert ids do not depend on the display zone.
    return Alert(
        rule_id=RETENTION_GAP,
        severity="high",
        title=f"Audit events of source {source} may be lost: polling stopped longer than the plan keeps them",
        text=(
            f"No successful poll between {format_time(start, tz)} and {format_time(end, tz)}, "
            "longer than the "
            f"plan's retention of {format_duration(retention)}. Events created in that period may have "
            "expired upstream before they could be archived. The gap is recorded for the monthly report."
        ),
        source=source,
        event_time=end,
        event_ids=(),
        group_key=f"{source}|{format_timestamp(start)}",
        fields={"gap_start": format_time(start, tz), "gap_end": format_time(end, tz)},
        context={"source": source},
    )


def event_conflict(source: str, event_id: int, content_sha256: str, at: datetime) -> Alert:
    """The API served an id it had served before with other content: the archive keeps the first, the
    other is in ``rejected``. Keyed by the other content, so each different version alerts once."""
    return Alert(
        rule_id=EVENT_CONFLICT,
        severity="high",
        title=f"Source {source} served audit event {event_id} twice with different content",
        text=(
            f"Event id {event_id} arrived again with content that differs from the version already read. "
            "The first version is kept; the other is recorded in the rejected entries for review. An audit "
            "log entry does not change, so this points at a broken or tampering upstream."
        ),
        source=source,
        event_time=at,
        event_ids=(event_id,),
        group_key=f"{source}|{event_id}|{content_sha256}",
        fields={"event_id": str(event_id)},
        context={"source": source},
    )


# --- source_unreachable and recoveries ------------------------------------------------------------------


def unreachable_after(source: SourceConfig) -> timedelta:
    return max(UNREACHABLE_POLLS * source.poll_interval, UNREACHABLE_MIN)


def source_unreachable(
    source: str,
    since: datetime,
    last_success: datetime | None,
    last_error: str | None,
    limit: timedelta,
    at: datetime,
    tz: tzinfo,
) -> Alert:
    """``since``: the last successful poll, or when watching began for a source that never answered."""
    silence = format_duration(at - since)
    if last_success is not None:
        when = f"The last successful poll was at {format_time(last_success, tz)}, {silence} ago"
    else:
        when = f"No poll of this source has succeeded since the monitor started watching it {silence} ago"
    return Alert(
        rule_id=SOURCE_UNREACHABLE,
        severity="high",
        title=f"Source {source} unreachable: no successful poll for {silence}",
        text=(
            f"{when} (the limit is {format_duration(limit)}, three poll intervals). "
            f"Last error: {last_error or 'none recorded'}.\n"
            "Audit events are not being archived or checked by the rules until polling succeeds again; "
            "nothing is lost as long as polling resumes within the plan's retention."
        ),
        source=source,
        event_time=at,
        event_ids=(),
        group_key=f"{source}|{format_timestamp(since)}",
        fields={"last_success": format_time(last_success, tz) if last_success else "never"},
        context={"source": source},
    )


def _recovered(
    rule_id: str, key: str, since: datetime, at: datetime, title: str, text: str, source: str
) -> Alert:
    return Alert(
        rule_id=f"{rule_id}.recovered",
        severity="info",
        title=title,
        text=text,
        source=source,
        event_time=at,
        event_ids=(),
        group_key=f"{key}|{format_timestamp(since)}",
        context={"source": source},
        tags=(RECOVERY_TAG,),
    )


def source_recovered(source: str, since: datetime, recovered_at: datetime, tz: tzinfo) -> Alert:
    return _recovered(
        SOURCE_UNREACHABLE,
        source,
        since,
        recovered_at,
        f"Source {source} recovered: polling succeeds again",
        f"A poll succeeded at {format_time(recovered_at, tz)} after failures since "
        f"{format_time(since, tz)}. "
        "The events of the outage are archived by this poll (see monitor.retention_gap if the outage "
        "outlasted the plan's retention).",
        source,
    )


def auth_recovered(source: str, since: datetime, recovered_at: datetime, tz: tzinfo) -> Alert:
    return _recovered(
        AUTH_FAILED,
        source,
        since,
        recovered_at,
        f"Xano accepts the metadata API token of source {source} again",
        f"A poll succeeded at {format_time(recovered_at, tz)}; the token has been rejected since "
        f"{format_time(since, tz)}. Archiving has resumed.",
        source,
    )


def delivery_failing(channel: str, error: str, at: datetime) -> Alert:
    return Alert(
        rule_id=DELIVERY_FAILING,
        severity="high",
        title=f"Alert delivery through {channel} is failing",
        text=(
            f"The {channel} channel gave up on an alert: {error}\n"
            f"Alerts for {channel} are kept as dead letters, not lost. Fix the cause, then re-send them with "
            f"`audit-monitor dead-letters requeue --channel {channel}` "
            "(`audit-monitor dead-letters list` shows them). This notice goes through the other channels, "
            f"once, until {channel} delivers again."
        ),
        source="monitor",
        event_time=at,
        event_ids=(),
        group_key=f"{channel}|{format_timestamp(at)}",
        fields={"channel": channel},
        context={"channel": channel},
    )


def delivery_recovered(channel: str, since: datetime, at: datetime, dead_letters: int, tz: tzinfo) -> Alert:
    alert = _recovered(
        DELIVERY_FAILING,
        channel,
        since,
        at,
        f"Alert delivery through {channel} works again",
        f"{channel} accepted a message at {format_time(at, tz)} after failing since "
        f"{format_time(since, tz)}. "
        + (
            f"{dead_letters} dead letters for {channel} remain; re-send them with "
            f"`audit-monitor dead-letters requeue --channel {channel}`."
            if dead_letters
            else f"No dead letters for {channel} remain."
        ),
        "monitor",
    )
    return alert


def record_recovery(store: Store, fired_alert_id: str, alert: Alert, now: datetime) -> bool:
    """Inside a transaction: record ``alert`` for the channels that carried ``fired_alert_id``."""
    channels = store.alert_channels(fired_alert_id)
    return store.record_alert(alert, channels, now) and bool(channels)


def check_sources(
    store: Store, config: Config, now: datetime, page_received_at: Mapping[str, datetime] | None = None
) -> int:
    """After a cycle: raise or end source_unreachable, end auth_failed episodes. Returns alerts recorded.

    ``page_received_at``: when each source's current walk last received a page. A walk still receiving
    pages (a long backfill, a walk resumed across cycles) is slow, not unreachable.
    """
    recorded = 0
    for source in config.sources:
        cursor = store.get_cursor(source.name)
        answered_at = (page_received_at or {}).get(source.name)
        recorded += _check_unreachable(store, config, source, cursor, now, answered_at)
        recorded += _check_auth(store, source, cursor, now, config.tz)
    return recorded


def _check_unreachable(
    store: Store,
    config: Config,
    source: SourceConfig,
    cursor: Cursor | None,
    now: datetime,
    answered_at: datetime | None = None,
) -> int:
    state = store.state_get(SOURCE_UNREACHABLE, source.name) or {}
    last_success = cursor.last_success_at if cursor else None
    if state.get("alert_id"):
        since = datetime.fromisoformat(state["since"])
        if last_success is None or last_success <= since:
            return 0  # the episode goes on; it was announced
        with store.transaction():
            record_recovery(
                store, state["alert_id"], source_recovered(source.name, since, last_success, config.tz), now
            )
            store.state_put(SOURCE_UNREACHABLE, source.name, None)
        return 1
    if last_success is None:
        if "watching_since" not in state:
            # Never polled successfully: count from the first time we look (kept across restarts).
            with store.transaction():
                store.state_put(SOURCE_UNREACHABLE, source.name, {"watching_since": format_timestamp(now)})
            return 0
        since = datetime.fromisoformat(state["watching_since"])
    else:
        since = last_success
        if state:
            with store.transaction():
                store.state_put(SOURCE_UNREACHABLE, source.name, None)
    if now - since <= unreachable_after(source):
        return 0
    if answered_at is not None and now - answered_at <= unreachable_after(source):
        return 0  # no cycle has completed, but the source answers: a walk is still receiving pages
    if cursor is not None and cursor.error_kind == "auth":
        return 0  # monitor.auth_failed already says why polls fail, and what to do
    alert = source_unreachable(
        source.name,
        since,
        last_success,
        cursor.last_error if cursor else None,
        unreachable_after(source),
        now,
        config.tz,
    )
    with store.transaction():
        new = store.record_alert(alert, channels_for(alert, config), now)
        store.state_put(
            SOURCE_UNREACHABLE, source.name, {"since": format_timestamp(since), "alert_id": alert.id}
        )
    return int(new)


def _check_auth(store: Store, source: SourceConfig, cursor: Cursor | None, now: datetime, tz: tzinfo) -> int:
    if cursor is None:
        return 0
    state = store.state_get(AUTH_FAILED, source.name)
    if cursor.error_kind == "auth":
        if state is None:
            # The poller recorded auth_failed under an id we can re-derive (the message is not part of it).
            fired = auth_failed(source.name, "", cursor.last_success_at, now).id
            if store.alert_exists(fired):
                since = cursor.last_error_at or now
                with store.transaction():
                    store.state_put(
                        AUTH_FAILED, source.name, {"since": format_timestamp(since), "alert_id": fired}
                    )
        return 0
    if state is None or cursor.last_success_at is None:
        return 0
    since = datetime.fromisoformat(state["since"])
    if cursor.last_success_at <= since:
        return 0
    with store.transaction():
        record_recovery(
            store, state["alert_id"], auth_recovered(source.name, since, cursor.last_success_at, tz), now
        )
        store.state_put(AUTH_FAILED, source.name, None)
    return 1


# --- chain_broken: the daemon's scheduled verify ---------------------------------------------------------


def chain_broken(result: VerifyResult, at: datetime) -> Alert:
    """The hash chain does not verify. Keyed by the first bad row and the reason: the daily verify finds the
    same break again and again, and it is announced once; a different break is a new alert."""
    where = f"seq {result.bad_seq}" if result.bad_seq is not None else "the archive"
    if result.bad_source is not None and result.bad_event_id is not None:
        where += f" (source {result.bad_source}, event {result.bad_event_id})"
    return Alert(
        rule_id=CHAIN_BROKEN,
        severity="critical",
        title=f"The archive's hash chain does not verify: first bad row at {where}",
        text=(
            f"The scheduled verify walked {result.rows_checked} rows and stopped at {where}: "
            f"{result.reason}.\nRows were changed, deleted or inserted outside the monitor (or the file is "
            "damaged): the archive is no longer evidence until this is explained. Keep a copy of the file "
            "as it is now, run `audit-monitor verify` to see the same result, and compare with a backup or "
            "a published anchor."
        ),
        source="monitor",
        event_time=at,
        event_ids=(),
        group_key=f"{result.bad_seq}|{result.bad_source}|{result.bad_event_id}|{result.reason}",
        fields={"first_bad_row": where, "rows_checked": str(result.rows_checked)},
        context={},
    )


def chain_recovered(since: datetime, at: datetime, rows: int, tz: tzinfo) -> Alert:
    return _recovered(
        CHAIN_BROKEN,
        CHAIN_STATE_KEY,
        since,
        at,
        "The archive's hash chain verifies again",
        f"The verify at {format_time(at, tz)} checked {rows} rows and found none bad; the chain has not "
        f"verified since {format_time(since, tz)}.",
        "monitor",
    )


def record_verify(
    store: Store, config: Config, result: VerifyResult, at: datetime, seconds: float
) -> VerifyRecord:
    """Keep the outcome of a verify as the last one, and raise (or end) ``monitor.chain_broken``, in one
    transaction: the console never shows a failed verify whose alert is not queued."""
    state = store.state_get(CHAIN_BROKEN, CHAIN_STATE_KEY)
    with store.transaction():
        record = store.record_verify(result, at, seconds)
        if not result.ok:
            alert = chain_broken(result, at)
            new = store.record_alert(alert, channels_for(alert, config), at)
            if new or not state:  # the episode began at its first failed verify; its alert is the latest
                since = state["since"] if state else format_timestamp(at)
                store.state_put(CHAIN_BROKEN, CHAIN_STATE_KEY, {"since": since, "alert_id": alert.id})
        elif state and state.get("alert_id"):
            since = datetime.fromisoformat(state["since"])
            record_recovery(
                store, state["alert_id"], chain_recovered(since, at, result.rows_checked, config.tz), at
            )
            store.state_put(CHAIN_BROKEN, CHAIN_STATE_KEY, None)
    return record

"""Alert lifecycle and silences: open -> acknowledged -> resolved (or open -> resolved), and who did what.

Every human action (acknowledge, resolve, add or expire a silence) is an ``alert_actions`` row that is a
link of the archive's hash chain, in the events' seq order, like a prune record: ``verify`` re-walks it,
so an acknowledgement cannot be back-dated, reworded or removed without breaking the chain. The alert's
``status`` column is the state now, written in the same transaction as the action that set it.

An action is only ever written in its own short transaction (the API, the CLI), never inside a poll cycle's:
the cycle appends events from the head it read at its start.

SQL here is portable (named parameters, no SQLite-only functions), so a PostgreSQL backend can share it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from monitor.alerts.model import Resolution
from monitor.events import canonical_json, format_timestamp

if TYPE_CHECKING:
    from monitor.alerts.model import Alert
    from monitor.store import Store

STATUSES = ("open", "acknowledged", "resolved", "silenced")
DISPOSITIONS = ("true_positive", "benign", "false_positive")
# What each action may move an alert from (resolving twice or acknowledging a resolved alert is a conflict).
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "acknowledged": ("open",),
    "resolved": ("open", "acknowledged"),
}
ACTION_OF = {"acknowledged": "alert.acknowledged", "resolved": "alert.resolved"}


class LifecycleError(Exception):
    """An action that cannot be taken; ``kind`` is ``not_found`` or ``conflict``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class ActionRecord:
    """One entry of the alert history, as a link of the chain."""

    seq: int
    at: datetime
    actor: str
    kind: str
    alert_id: str | None
    silence_id: int | None
    detail: dict[str, Any]
    hash: str

    label: ClassVar[str] = "alert history record"

    def content(self) -> str:
        return canonical_json(
            {
                "action": {
                    "seq": self.seq,
                    "at": format_timestamp(self.at),
                    "actor": self.actor,
                    "kind": self.kind,
                    "alert_id": self.alert_id,
                    "silence_id": self.silence_id,
                    "detail": self.detail,
                }
            }
        )

    def link_hash(self, prev_hash: str) -> str:
        return hashlib.sha256((prev_hash + self.content()).encode("utf-8")).hexdigest()

    def linked(self, prev_hash: str) -> ActionRecord:
        return replace(self, hash=self.link_hash(prev_hash))

    def to_json(self) -> dict[str, Any]:
        return {
            "at": format_timestamp(self.at),
            "actor": self.actor,
            "action": self.kind,
            **({"alert_id": self.alert_id} if self.alert_id else {}),
            **({"silence_id": self.silence_id} if self.silence_id is not None else {}),
            **self.detail,
            "chain_seq": self.seq,
            "chain_hash": self.hash,
        }


_ACTION_COLUMNS = "seq, at, actor, kind, alert_id, silence_id, detail, hash"


def _action(row: tuple[Any, ...]) -> ActionRecord:
    seq, at, actor, kind, alert_id, silence_id, detail, hash_ = row
    return ActionRecord(
        int(seq), datetime.fromisoformat(at), actor, kind, alert_id, silence_id, json.loads(detail), hash_
    )


def actions_between(store: Store, after_seq: int, through_seq: int) -> list[ActionRecord]:
    """The history records in (after_seq, through_seq], in chain order (``verify`` walks them)."""
    rows = store.conn.execute(
        f"SELECT {_ACTION_COLUMNS} FROM alert_actions WHERE seq > :after AND seq <= :through ORDER BY seq",  # noqa: S608
        {"after": after_seq, "through": through_seq},
    )
    return [_action(tuple(row)) for row in rows]


def alert_history(store: Store, alert_id: str) -> list[ActionRecord]:
    rows = store.conn.execute(
        f"SELECT {_ACTION_COLUMNS} FROM alert_actions WHERE alert_id = :id ORDER BY seq",  # noqa: S608
        {"id": alert_id},
    )
    return [_action(tuple(row)) for row in rows]


def append_action(
    store: Store,
    *,
    kind: str,
    actor: str,
    at: datetime,
    detail: Mapping[str, Any],
    alert_id: str | None = None,
    silence_id: int | None = None,
) -> ActionRecord:
    """Inside a transaction: link one history record at the chain's head."""
    head_seq, head_hash = store.head()
    record = ActionRecord(head_seq + 1, at, actor, kind, alert_id, silence_id, dict(detail), "").linked(
        head_hash
    )
    store.conn.execute(
        "INSERT INTO alert_actions (seq, at, actor, kind, alert_id, silence_id, detail, hash) "
        "VALUES (:seq, :at, :actor, :kind, :alert_id, :silence_id, :detail, :hash)",
        {
            "seq": record.seq,
            "at": format_timestamp(record.at),
            "actor": record.actor,
            "kind": record.kind,
            "alert_id": record.alert_id,
            "silence_id": record.silence_id,
            "detail": canonical_json(record.detail),
            "hash": record.hash,
        },
    )
    return record


def transition(
    store: Store,
    alert_id: str,
    to_status: str,
    *,
    actor: str,
    at: datetime,
    note: str | None = None,
    disposition: str | None = None,
) -> ActionRecord:
    """Acknowledge or resolve an alert, in its own transaction. Raises LifecycleError.

    Resolving also enqueues, in the same transaction, the resolve notice of every channel that carried the
    alert and is told of resolutions (``AlertsMixin.enqueue_resolve_notices``): the notice is as durable as
    the resolution itself."""
    if to_status not in TRANSITIONS:
        raise ValueError(f"unknown status {to_status!r}")
    if disposition is not None and disposition not in DISPOSITIONS:
        raise ValueError(f"disposition must be one of {', '.join(DISPOSITIONS)}")
    with store.transaction():
        row = store.conn.execute(
            "SELECT status, rule_id FROM alerts WHERE id = :id", {"id": alert_id}
        ).fetchone()
        if row is None:
            raise LifecycleError("not_found", f"no alert {alert_id}")
        current, rule_id = str(row[0]), str(row[1])
        if current not in TRANSITIONS[to_status]:
            raise LifecycleError(
                "conflict",
                f"alert {alert_id} is {current}: it cannot be {to_status} (only when "
                f"{' or '.join(TRANSITIONS[to_status])})",
            )
        store.conn.execute(
            "UPDATE alerts SET status = :status WHERE id = :id", {"status": to_status, "id": alert_id}
        )
        detail: dict[str, Any] = {"from": current, "to": to_status}
        if note:
            detail["note"] = note
        if disposition:
            detail["disposition"] = disposition
        record = append_action(
            store, kind=ACTION_OF[to_status], actor=actor, at=at, detail=detail, alert_id=alert_id
        )
        if to_status == "resolved":
            store.enqueue_resolve_notices(alert_id, rule_id, at)
        return record


def resolution_of(store: Store, alert_id: str) -> Resolution | None:
    """Who resolved the alert, when, with what disposition and note (its last ``alert.resolved`` record;
    resolved is final, so there is at most one); None when it was never resolved."""
    row = store.conn.execute(
        "SELECT at, actor, detail FROM alert_actions WHERE alert_id = :id AND kind = :kind "
        "ORDER BY seq DESC LIMIT 1",
        {"id": alert_id, "kind": ACTION_OF["resolved"]},
    ).fetchone()
    if row is None:
        return None
    detail = json.loads(row[2])
    return Resolution(
        datetime.fromisoformat(row[0]), str(row[1]), detail.get("disposition"), detail.get("note")
    )


def resolve_alert_id(store: Store, prefix: str) -> str | None:
    """A full alert id from an id or a unique prefix (as the CLI shows them); None when none or ambiguous."""
    rows = store.conn.execute(
        "SELECT id FROM alerts WHERE id >= :low AND id < :high ORDER BY id LIMIT 2",
        {"low": prefix, "high": prefix + "\uffff"},
    ).fetchall()
    return str(rows[0][0]) if len(rows) == 1 else None


# --- reading alerts ---------------------------------------------------------------------------------------


_ALERT_COLUMNS = (
    "id, rule_id, severity, title, text, source, event_time, event_ids, group_key, fields, context, "
    "suppressed_count, tags, recorded_at, status, silence_id"
)


def _alert_row(row: tuple[Any, ...]) -> dict[str, Any]:
    (id_, rule_id, severity, title, text, source, event_time, event_ids, group_key, fields, context,
     suppressed, tags, recorded_at, status, silence_id) = row  # fmt: skip
    return {
        "id": id_,
        "rule": rule_id,
        "severity": severity,
        "status": status,
        "title": title,
        "text": text,
        "source": source,
        "event_time": event_time,
        "event_ids": json.loads(event_ids),
        "group_key": group_key,
        "fields": json.loads(fields),
        "context": json.loads(context),
        "suppressed_count": suppressed,
        "tags": json.loads(tags),
        "recorded_at": recorded_at,
        "silence_id": silence_id,
    }


@dataclass(frozen=True)
class AlertQuery:
    statuses: tuple[str, ...] = ("open",)  # empty: every status
    severities: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None


def _in_list(column: str, name: str, values: Iterable[str], params: dict[str, Any]) -> str:
    marks = []
    for number, value in enumerate(values):
        params[f"{name}{number}"] = value
        marks.append(f":{name}{number}")
    return f"{column} IN ({', '.join(marks)})"


def list_alerts(
    store: Store, query: AlertQuery, *, limit: int, after: tuple[str, str] | None = None
) -> list[dict[str, Any]]:
    """Alerts newest first by event time (ties by id); ``after`` is the (event_time, id) a page ended on."""
    clauses: list[str] = []
    params: dict[str, Any] = {"limit": limit}
    if query.statuses:
        clauses.append(_in_list("status", "status", query.statuses, params))
    if query.severities:
        clauses.append(_in_list("severity", "severity", query.severities, params))
    if query.rules:
        clauses.append(_in_list("rule_id", "rule", query.rules, params))
    if query.since is not None:
        clauses.append("event_time >= :since")
        params["since"] = format_timestamp(query.since)
    if query.until is not None:
        clauses.append("event_time < :until")
        params["until"] = format_timestamp(query.until)
    if after is not None:
        clauses.append("(event_time < :after_time OR (event_time = :after_time AND id < :after_id))")
        params["after_time"], params["after_id"] = after
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    rows = store.conn.execute(
        f"SELECT {_ALERT_COLUMNS} FROM alerts {where} ORDER BY event_time DESC, id DESC LIMIT :limit",  # noqa: S608
        params,
    )
    return [_alert_row(tuple(row)) for row in rows]


def alert_counts(
    store: Store, since: datetime | None = None, until: datetime | None = None
) -> dict[str, int]:
    """Alerts per status (every status present, 0 when none), with event time in [since, until)."""
    clauses, params = [], {}
    if since is not None:
        clauses.append("event_time >= :since")
        params["since"] = format_timestamp(since)
    if until is not None:
        clauses.append("event_time < :until")
        params["until"] = format_timestamp(until)
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    counts = dict.fromkeys(STATUSES, 0)
    for status, count in store.conn.execute(
        f"SELECT status, count(*) FROM alerts {where} GROUP BY status",  # noqa: S608
        params,
    ):
        counts[str(status)] = int(count)
    return counts


def get_alert(store: Store, alert_id: str) -> dict[str, Any] | None:
    """The alert with its delivery per channel and its history; None when unknown."""
    row = store.conn.execute(
        f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE id = :id",  # noqa: S608
        {"id": alert_id},
    ).fetchone()
    if row is None:
        return None
    alert = _alert_row(tuple(row))
    alert["deliveries"] = [
        {
            "channel": channel,
            "kind": kind,
            "status": status,
            "attempts": attempts,
            "first_attempt_at": first,
            "sent_at": sent_at,
            "last_error": last_error,
        }
        for channel, kind, status, attempts, first, sent_at, last_error in store.conn.execute(
            "SELECT channel, kind, status, attempts, first_attempt_at, sent_at, last_error FROM outbox "
            "WHERE alert_id = :id ORDER BY channel, kind DESC",
            {"id": alert_id},
        )
    ]
    alert["history"] = [record.to_json() for record in alert_history(store, alert_id)]
    return alert


# --- silences ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Silence:
    id: int
    rule_id: str | None
    match: dict[str, str]
    starts_at: datetime
    until: datetime
    reason: str
    created_by: str
    expired_at: datetime | None = None
    expired_by: str | None = None

    def active_at(self, moment: datetime) -> bool:
        return self.starts_at <= moment < self.until and (self.expired_at is None or moment < self.expired_at)

    def matches(self, alert: Alert) -> bool:
        """The rule (when set) and every pair of ``match``: keys are source, severity, rule, user,
        workspace, branch (the triggering event's) or any of the alert's display fields (user.email...)."""
        if self.rule_id is not None and self.rule_id != alert.rule_id:
            return False
        if self.rule_id is None and alert.rule_id.startswith("monitor."):
            return False  # the monitor's own alarms (auth failed, dead letters) only when named
        known = silence_fields(alert)
        return all(known.get(key) == value for key, value in self.match.items())

    def to_json(self, now: datetime) -> dict[str, Any]:
        return {
            "id": self.id,
            "rule": self.rule_id,
            "match": self.match,
            "starts_at": format_timestamp(self.starts_at),
            "until": format_timestamp(self.until),
            "reason": self.reason,
            "created_by": self.created_by,
            "expired_at": format_timestamp(self.expired_at) if self.expired_at else None,
            "expired_by": self.expired_by,
            "active": self.active_at(now),
        }


def silence_fields(alert: Alert) -> dict[str, str]:
    values = {str(k): str(v) for k, v in alert.fields.items() if v is not None}
    for key in ("user", "workspace", "branch"):
        value = alert.context.get(key)
        if value is not None:
            values[key] = str(value)
    values.update(source=alert.source, severity=alert.severity, rule=alert.rule_id)
    return values


_SILENCE_COLUMNS = "id, rule_id, match, starts_at, until, reason, created_by, expired_at, expired_by"


def _silence(row: tuple[Any, ...]) -> Silence:
    id_, rule_id, match, starts_at, until, reason, created_by, expired_at, expired_by = row
    return Silence(
        int(id_),
        rule_id,
        json.loads(match),
        datetime.fromisoformat(starts_at),
        datetime.fromisoformat(until),
        reason,
        created_by,
        datetime.fromisoformat(expired_at) if expired_at else None,
        expired_by,
    )


def list_silences(store: Store, *, active_at: datetime | None = None) -> list[Silence]:
    """Every silence, newest first; with ``active_at`` only those in force then."""
    if active_at is None:
        rows = store.conn.execute(f"SELECT {_SILENCE_COLUMNS} FROM silences ORDER BY id DESC")  # noqa: S608
    else:
        rows = store.conn.execute(
            f"SELECT {_SILENCE_COLUMNS} FROM silences WHERE starts_at <= :now AND until > :now "  # noqa: S608
            "AND (expired_at IS NULL OR expired_at > :now) ORDER BY id",
            {"now": format_timestamp(active_at)},
        )
    return [_silence(tuple(row)) for row in rows]


def get_silence(store: Store, silence_id: int) -> Silence | None:
    row = store.conn.execute(
        f"SELECT {_SILENCE_COLUMNS} FROM silences WHERE id = :id",  # noqa: S608
        {"id": silence_id},
    ).fetchone()
    return _silence(tuple(row)) if row else None


def add_silence(
    store: Store,
    *,
    rule_id: str | None,
    match: Mapping[str, str],
    until: datetime,
    reason: str,
    actor: str,
    at: datetime,
) -> Silence:
    """Create a silence from ``at`` to ``until`` (its own transaction; a link of the chain says who)."""
    if until <= at:
        raise ValueError("until must be in the future")
    with store.transaction():
        cursor = store.conn.execute(
            "INSERT INTO silences (rule_id, match, starts_at, until, reason, created_by) "
            "VALUES (:rule_id, :match, :starts_at, :until, :reason, :created_by) RETURNING id",
            {
                "rule_id": rule_id,
                "match": canonical_json(dict(match)),
                "starts_at": format_timestamp(at),
                "until": format_timestamp(until),
                "reason": reason,
                "created_by": actor,
            },
        )
        silence_id = int(cursor.fetchone()[0])
        detail = {"rule": rule_id, "match": dict(match), "until": format_timestamp(until), "reason": reason}
        append_action(store, kind="silence.added", actor=actor, at=at, detail=detail, silence_id=silence_id)
    found = get_silence(store, silence_id)
    assert found is not None
    return found


def expire_silence(store: Store, silence_id: int, *, actor: str, at: datetime) -> Silence:
    """End a silence now. Raises LifecycleError (not_found, or conflict when it is no longer active)."""
    with store.transaction():
        silence = get_silence(store, silence_id)
        if silence is None:
            raise LifecycleError("not_found", f"no silence {silence_id}")
        if not silence.active_at(at) and silence.starts_at <= at:
            raise LifecycleError("conflict", f"silence {silence_id} is no longer active")
        store.conn.execute(
            "UPDATE silences SET expired_at = :at, expired_by = :actor WHERE id = :id",
            {"at": format_timestamp(at), "actor": actor, "id": silence_id},
        )
        append_action(store, kind="silence.expired", actor=actor, at=at, detail={}, silence_id=silence_id)
    found = get_silence(store, silence_id)
    assert found is not None
    return found


def silence_for(store: Store, alert: Alert, at: datetime) -> Silence | None:
    """The first active silence that matches ``alert`` (inside the recording transaction)."""
    for silence in list_silences(store, active_at=at):
        if silence.matches(alert):
            return silence
    return None


def mark_silenced(store: Store, alert_id: str, silence_id: int) -> None:
    store.conn.execute(
        "UPDATE alerts SET status = 'silenced', silence_id = :silence WHERE id = :id",
        {"silence": silence_id, "id": alert_id},
    )


def silenced_counts(store: Store, since: datetime, until: datetime) -> dict[int, int]:
    """Alerts held back per silence, with event time in [since, until) (the report's "silenced")."""
    return {
        int(silence_id): int(count)
        for silence_id, count in store.conn.execute(
            "SELECT silence_id, count(*) FROM alerts WHERE status = 'silenced' AND event_time >= :since "
            "AND event_time < :until GROUP BY silence_id",
            {"since": format_timestamp(since), "until": format_timestamp(until)},
        )
    }


# --- the monthly report's response section ----------------------------------------------------------------


@dataclass(frozen=True)
class AlertOutcome:
    """What became of one alert: its status now and, from the history, when it was first acknowledged and
    last resolved, with the disposition the resolving action gave (None when not recorded)."""

    alert_id: str
    status: str
    detected_at: datetime  # recorded_at: when the monitor raised it
    silence_id: int | None
    silence_reason: str | None
    acknowledged_at: datetime | None
    resolved_at: datetime | None
    disposition: str | None


def alert_outcomes(
    store: Store, since: datetime, until: datetime, *, exclude_rule: str
) -> dict[str, AlertOutcome]:
    """Every alert with event time in [since, until) (but ``exclude_rule``'s), by id, with its lifecycle.

    Uncapped: the month's MTTA/MTTR and status counts are over all of them, not the listed ones."""
    rows = store.conn.execute(
        "SELECT a.id, a.status, a.recorded_at, a.silence_id, s.reason, x.kind, x.at, x.detail "
        "FROM alerts a LEFT JOIN silences s ON s.id = a.silence_id "
        "LEFT JOIN alert_actions x ON x.alert_id = a.id AND x.kind IN (:ack, :res) "
        "WHERE a.event_time >= :since AND a.event_time < :until AND a.rule_id != :excluded "
        "ORDER BY a.id, x.seq",
        {
            "ack": ACTION_OF["acknowledged"],
            "res": ACTION_OF["resolved"],
            "since": format_timestamp(since),
            "until": format_timestamp(until),
            "excluded": exclude_rule,
        },
    )
    outcomes: dict[str, AlertOutcome] = {}
    for alert_id, status, recorded_at, silence_id, reason, kind, at, detail in rows:
        outcome = outcomes.get(alert_id) or AlertOutcome(
            alert_id, str(status), datetime.fromisoformat(recorded_at),
            int(silence_id) if silence_id is not None else None, reason, None, None, None,
        )  # fmt: skip
        if kind == ACTION_OF["acknowledged"] and outcome.acknowledged_at is None:
            outcome = replace(outcome, acknowledged_at=datetime.fromisoformat(at))  # the first one counts
        elif kind == ACTION_OF["resolved"]:
            disposition = json.loads(detail).get("disposition")
            outcome = replace(outcome, resolved_at=datetime.fromisoformat(at), disposition=disposition)
        outcomes[alert_id] = outcome
    return outcomes

"""`rules explain`: which selections and keys matched one event, and why the rule fired or not."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from monitor.alerts.model import Alert
from monitor.engine.condition import evaluate_with
from monitor.engine.matchers import KeyMatcher
from monitor.engine.ruleset import RuleSet, display, fire
from monitor.engine.state import MemoryStateStore, StateStore
from monitor.events import AuditEvent, format_timestamp


@dataclass
class KeyResult:
    key: str
    line: int
    wanted: str
    actual: Any
    matched: bool


@dataclass
class SelectionResult:
    name: str
    matched: bool
    alternatives: list[list[KeyResult]]


@dataclass
class Explanation:
    rule_id: str
    title: str
    severity: str
    kind: str
    event: AuditEvent
    selections: list[SelectionResult]
    condition: str
    condition_matched: bool
    exception: str | None
    idle: bool
    active: bool
    with_state: bool
    alerts: list[Alert] = field(default_factory=list)
    stateful_note: str = ""

    @property
    def fired(self) -> bool:
        return bool(self.alerts)

    @property
    def verdict(self) -> str:
        if not self.condition_matched:
            return "does not fire: the condition is false for this event"
        if self.exception:
            return f"does not fire: the event is suppressed by exception {self.exception!r}"
        if self.idle:
            return "does not fire: the rule is idle because a list in requires_lists is empty"
        if self.alerts:
            alert = self.alerts[0]
            how = "fires" if self.kind == "match" or self.with_state else "would fire"
            return f"{how}: [{alert.severity}] {alert.title}"
        if self.kind == "match":
            return "does not fire: the throttle holds this alert back"
        return "the event matches, but the stateful part does not fire on it alone"

    def __str__(self) -> str:
        event = self.event
        lines = [
            f"rule {self.rule_id} [{self.severity}, {self.kind}]: {self.title}"
            + ("" if self.active else "  (not active: disabled or enabled: false)")
            + ("  (idle: a list in requires_lists is empty)" if self.idle else ""),
            f"event {event.id} {event.type!r} at {format_timestamp(event.created_at)}"
            f" by {event.user_email or '-'} in {event.workspace_name or '-'}",
        ]
        for selection in self.selections:
            lines.append(f"selection {selection.name}: {'MATCHED' if selection.matched else 'no match'}")
            for index, keys in enumerate(selection.alternatives):
                if len(selection.alternatives) > 1:
                    lines.append(f"  alternative {index + 1}:")
                indent = "    " if len(selection.alternatives) > 1 else "  "
                for key in keys:
                    mark = "yes" if key.matched else "no "
                    if key.actual is None:
                        actual = "(missing)"
                    elif isinstance(key.actual, datetime):
                        actual = key.actual.isoformat()  # in the configured zone, as calendars see it
                    else:
                        actual = repr(display(key.actual))
                    lines.append(f"{indent}{mark} {key.key}: {key.wanted}   <- {actual}")
        lines.append(f"condition: {self.condition} -> {'true' if self.condition_matched else 'false'}")
        if self.exception:
            lines.append(f"exception: {self.exception} suppresses this event")
        if self.stateful_note:
            lines.append(self.stateful_note)
        lines.append(f"verdict: {self.verdict}")
        return "\n".join(lines)


def _key_result(key: KeyMatcher, event: AuditEvent, tz: ZoneInfo) -> KeyResult:
    value = key.getter(event)
    shown = value.astimezone(tz) if isinstance(value, datetime) else value  # calendars think in local time
    return KeyResult(key.key, key.line, key.description, shown, key.test_value(value))


def format_duration(value: timedelta) -> str:
    """``10m``, ``1h``, ``90d``: the way rules write durations."""
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def explain(
    ruleset: RuleSet, rule_id: str, event: AuditEvent, state: StateStore | None = None
) -> Explanation:
    """Explain one rule on one event. Without ``state`` the stateful part runs on an empty in-memory store
    (and the explanation says what it would need); with ``state`` it runs on (and updates) that store."""
    rule = ruleset.rule(rule_id)
    selections = []
    results: dict[str, bool] = {}
    for name, selection in rule.selections.items():
        alternatives = [
            [_key_result(key, event, ruleset.tz) for key in keys] for keys in selection.alternatives
        ]
        matched = any(all(k.matched for k in keys) for keys in alternatives)
        results[name] = matched
        selections.append(SelectionResult(name, matched, alternatives))
    assert rule.condition is not None
    condition_matched = evaluate_with(rule.condition, results)
    exception = rule.excepted(event) if condition_matched else None
    explanation = Explanation(
        rule_id=rule.id,
        title=rule.title,
        severity=rule.severity,
        kind=rule.kind,
        event=event,
        selections=selections,
        condition=rule.condition_text,
        condition_matched=condition_matched,
        exception=exception,
        idle=rule.idle,
        active=rule in ruleset.rules,
        with_state=state is not None,
    )
    if not condition_matched or exception or rule.idle:
        return explanation
    store = state if state is not None else MemoryStateStore()
    alert = fire(rule, event, store, ruleset.tz)
    explanation.alerts = [alert] if alert else []
    explanation.stateful_note = _stateful_note(rule, event, state is not None)
    return explanation


def _stateful_note(rule: Any, event: AuditEvent, with_state: bool) -> str:
    notes = []
    if rule.threshold is not None:
        spec = rule.threshold
        group = ", ".join(
            f"{p}={display(v) if v is not None else '(missing)'}"
            for p, v in zip(spec.group_by.paths, spec.group_by.values(event), strict=True)
        )
        counted = f"distinct values of {spec.distinct}" if spec.distinct else "matching events"
        notes.append(
            f"threshold: the event matches; the rule fires when {spec.count} {counted}"
            + (f" of the group {group}" if group else "")
            + f" fall within {format_duration(spec.window)} of each other"
            + ("" if with_state else " (this explanation counts this event alone)")
        )
    if rule.new_value is not None:
        spec = rule.new_value
        values = ", ".join(
            f"{p}={display(v) if v is not None else '(missing)'}"
            for p, v in zip(spec.fields.paths, spec.fields.values(event), strict=True)
        )
        notes.append(
            f"new_value: fires when ({values}) was not seen among matching events within "
            f"{format_duration(spec.lookback)}"
            + (f", after the first {format_duration(spec.learning)} of learning" if spec.learning else "")
            + ("" if with_state else " (this explanation has no history, so every value is new)")
        )
    if rule.throttle is not None:
        notes.append(
            f"throttle: at most one alert per {', '.join(rule.throttle.key.paths) or 'rule'} "
            f"per {format_duration(rule.throttle.window)}"
        )
    return "\n".join(notes)

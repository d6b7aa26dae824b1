"""The evaluator the daemon, `rules test`, explain and backtest all run.

``RuleSet.evaluate(event, state)`` is pure apart from the state store: no I/O, no clock. Time is the
event's ``created_at`` only, so replaying the same events in the same order (a retried transaction, a
backtest) gives the same alerts with the same ids.

Window edges are half-open: events are "within" a window of length W when they are less than W apart.
A threshold of 5 in 10m fires on five events spanning at most 9m59.999999s; a fifth event exactly 10m
after the first one does not complete the first one's window. Likewise a value last seen exactly
``lookback`` ago is new again, and a throttle window opened at T admits the next alert at T + window.
"""

from __future__ import annotations

import heapq
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from monitor.alerts.model import Alert
from monitor.engine.calendars import Calendar
from monitor.engine.matchers import canon
from monitor.engine.rules import FieldSet, Rule
from monitor.engine.state import SHARED, StateStore
from monitor.engine.templates import TemplateProblem, render
from monitor.events import AuditEvent, format_timestamp

log = logging.getLogger("monitor.engine")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_TYPE_CACHE_LIMIT = 4096


def micros(instant: datetime) -> int:
    """Microseconds since the epoch: exact, JSON-friendly, sorts like the instant."""
    return (instant - _EPOCH) // _US


def from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def state_key(prefix: str, values: Sequence[Any]) -> str:
    """A deterministic state key for a tuple of field values (compared case-insensitively)."""
    return prefix + json.dumps(
        [canon(v) if not isinstance(v, list) else canon_list(v) for v in values],
        ensure_ascii=False,
        separators=(",", ":"),
    )


def canon_list(value: list[Any]) -> str:
    return ",".join(sorted(str(canon(v)) for v in value))


def group_key(fields: FieldSet, values: Sequence[Any]) -> str:
    """The alert's group key: ``user.email=a@corp.io|data.ip=1.2.3.4`` (values casefolded)."""
    parts = []
    for path, value in zip(fields.paths, values, strict=True):
        text = canon_list(value) if isinstance(value, list) else canon(value)
        parts.append(f"{path}={'' if text is None else text}")
    return "|".join(parts)


def display(value: Any) -> str:
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, list):
        return ", ".join(display(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def event_view(event: AuditEvent, tz: ZoneInfo) -> dict[str, Any]:
    """The event as templates see it: the raw entry plus source; created_at as a datetime in ``tz``."""
    view = dict(event.raw)
    for name in ("user", "workspace", "branch", "obj", "data"):
        view.setdefault(name, None)  # so that {{ event.user.email | default('?') }} works when absent
    view.update(
        id=event.id,
        source=event.source,
        created_at=event.created_at.astimezone(tz),
        type=event.type,
        msg=event.msg,
    )
    return view


@dataclass(frozen=True)
class Firing:
    """What the stateful part decided: fire with these events and this count."""

    event_ids: tuple[int, ...]
    count: int
    window_events: list[dict[str, Any]]
    values: list[Any]
    group: dict[str, Any]
    group_key: str


class RuleSet:
    """Compiled rules, indexed by event type. ``rules`` are the active ones (enabled, not disabled)."""

    def __init__(
        self,
        rules: Sequence[Rule],
        *,
        all_rules: Sequence[Rule] | None = None,
        files: Sequence[str] = (),
        timezone: str = "UTC",
        warnings: Sequence[str] = (),
        disabled: Sequence[str] = (),
        lists: Mapping[str, list[Any]] | None = None,
        calendars: Mapping[str, Calendar] | None = None,
    ) -> None:
        self.rules: list[Rule] = list(rules)
        self.all_rules: list[Rule] = list(all_rules) if all_rules is not None else list(rules)
        self.files = list(files)
        self.timezone = timezone
        self.tz = ZoneInfo(timezone)
        self.warnings = list(warnings)
        self.disabled = list(disabled)
        # The effective lists and calendars (files merged with the config's overrides), e.g. for the
        # monthly report's off-hours figures.
        self.lists: dict[str, list[Any]] = dict(lists or {})
        self.calendars: dict[str, Calendar] = dict(calendars or {})
        self.rule_errors = 0  # matcher failures on odd events (logged, never fatal)
        self._by_id = {rule.id: rule for rule in self.all_rules}
        self._live = tuple(rule for rule in self.rules if not rule.idle)
        self._by_type: dict[str, tuple[Rule, ...]] = {}

    def rule(self, rule_id: str) -> Rule:
        """Any loaded rule (also a disabled one), by id; KeyError when unknown."""
        return self._by_id[rule_id]

    def candidates(self, event_type: str) -> tuple[Rule, ...]:
        """The rules that can match an event of this type (those whose condition does not pin another)."""
        found = self._by_type.get(event_type)
        if found is None:
            found = tuple(r for r in self._live if r.type_filter is None or r.type_filter(event_type))
            if len(self._by_type) < _TYPE_CACHE_LIMIT:
                self._by_type[event_type] = found
        return found

    def evaluate(self, event: AuditEvent, state: StateStore) -> list[Alert]:
        """Run every candidate rule on one event, in rule order; return the alerts it raises."""
        alerts: list[Alert] = []
        state.advance(event.source, micros(event.created_at))
        for rule in self.candidates(event.type):
            try:
                if not rule.matches(event) or (rule.exceptions and rule.excepted(event)):
                    continue
            except Exception:  # a matcher must never stop the poll cycle; count it and carry on
                self.rule_errors += 1
                log.exception("rule failed on an event", extra={"rule_id": rule.id, "event_id": event.id})
                continue
            alert = fire(rule, event, state, self.tz)
            if alert is not None:
                alerts.append(alert)
        return alerts


# --- the stateful kinds ------------------------------------------------------------------------------------


def state_source(rule: Rule, event: AuditEvent) -> str:
    """Whose state the rule reads and writes for this event: the event's source, or the shared one."""
    return SHARED if rule.all_sources else event.source


def fire(rule: Rule, event: AuditEvent, state: StateStore, tz: ZoneInfo) -> Alert | None:
    """The rule's condition matched this event: run its stateful part, its throttle, and build the alert."""
    if rule.threshold is not None:
        firing = threshold_step(rule, event, state)
    elif rule.new_value is not None:
        firing = new_value_step(rule, event, state)
    else:
        firing = single_firing(rule, event)
    if firing is None:
        return None
    suppressed = 0
    key = firing.group_key
    if rule.throttle is not None:
        throttle_values = rule.throttle.key.values(event)
        passed = throttle_step(rule, event, state, throttle_values)
        if passed is None:
            return None
        suppressed = passed
        if not key and rule.throttle.key.paths:
            key = group_key(rule.throttle.key, throttle_values)
    return build_alert(rule, event, firing, suppressed, key, tz)


def single_firing(rule: Rule, event: AuditEvent) -> Firing:
    return Firing((event.id,), 1, [], [], {}, "")


class ThresholdWindow:
    """One threshold group's window between events: O(log n) per event, whatever the count.

    Kept as a heap of ``[micros, id, distinct value, type]`` entries (oldest first; with ``scope:
    all_sources`` a fifth item names the source, since ids are only unique within one) with a set of the
    ``(micros, id, source)`` it counts (a replayed event is found at once) and, with ``distinct``, the
    entry of each value. An entry superseded by a later event of its value is marked dead and dropped when
    it reaches the front, instead of being searched for. Stored (``to_state``) as the live entries sorted
    by time: the shape the state always had, so windows written before carry on.
    """

    __slots__ = ("heap", "held", "by_value", "dead", "newest")

    def __init__(self, entries: list[list[Any]] | None = None, *, distinct: bool = False) -> None:
        self.heap: list[list[Any]] = [list(entry) for entry in entries or ()]
        heapq.heapify(self.heap)
        self.held = {_ident(entry) for entry in self.heap}
        self.by_value: dict[str | None, list[Any]] = {}
        if distinct:
            for entry in sorted(self.heap):
                self.by_value[canon(entry[2])] = entry
        self.dead: set[int] = set()  # id() of superseded entries still in the heap
        self.newest = max((entry[0] for entry in self.heap), default=0)

    def add(self, entry: list[Any], value_form: str | None, window: int) -> int:
        """Count one event's entry; the number of live entries after pruning, or -1 when it must not count."""
        now = entry[0]
        ident = _ident(entry)
        if ident in self.held:
            return -1  # the same event again (a replayed overlap): counted once
        if value_form is not None:
            previous = self.by_value.get(value_form)
            if previous is not None:
                if previous[0] > now:  # a later event of this value is already counted
                    return -1
                self.dead.add(id(previous))
                self.held.discard(_ident(previous))
            self.by_value[value_form] = entry
        heapq.heappush(self.heap, entry)
        self.held.add(ident)
        if now > self.newest:
            self.newest = now
        cutoff = self.newest - window
        heap = self.heap
        while heap and heap[0][0] <= cutoff:
            gone = heapq.heappop(heap)
            if id(gone) in self.dead:
                self.dead.discard(id(gone))
                continue
            self.held.discard(_ident(gone))
            if value_form is not None and self.by_value.get(canon(gone[2])) is gone:
                del self.by_value[canon(gone[2])]
        return len(heap) - len(self.dead)

    def entries(self) -> list[list[Any]]:
        """The live entries, oldest first."""
        dead = self.dead
        return sorted(entry for entry in self.heap if id(entry) not in dead)

    def to_state(self) -> list[list[Any]]:
        return self.entries()


def _ident(entry: list[Any]) -> tuple[int, int, str | None]:
    return entry[0], entry[1], entry[4] if len(entry) > 4 else None


def threshold_step(rule: Rule, event: AuditEvent, state: StateStore) -> Firing | None:
    """Add the event to its group's window; fire (and start afresh) when the count is reached.

    State per group: a ThresholdWindow (stored as ``[[micros, id, distinct value, type], ...]`` pruned to
    the window, so it never holds more than ``count`` entries). With ``distinct`` only the latest event of
    each value is kept. The key expires a window after the group's newest event: any later event would
    find every entry outside its window anyway.
    """
    spec = rule.threshold
    assert spec is not None
    values = spec.group_by.values(event)
    if any(value is None for value in values):
        return None  # an event without a group value is not counted
    distinct_value: Any = None
    distinct_form: str | None = None
    if spec.distinct_getter is not None:
        distinct_value = spec.distinct_getter(event)
        if canon(distinct_value) is None:
            return None  # missing (or not a plain value): nothing to count
        distinct_value = display(distinct_value)
        distinct_form = canon(distinct_value)
    key = state_key("g:", values)
    source = state_source(rule, event)
    now = micros(event.created_at)
    window = spec.window // _US
    stored = state.get(rule.id, key, source)
    if isinstance(stored, ThresholdWindow):
        current = stored
    else:
        current = ThresholdWindow(stored, distinct=spec.distinct_getter is not None)
    entry = [now, event.id, distinct_value, event.type]
    if rule.all_sources:
        entry.append(event.source)
    live = current.add(entry, distinct_form, window)
    if live < 0:
        if current is not stored:
            state.put(rule.id, key, current, source, current.newest + window)
        return None
    if live < spec.count:
        state.put(rule.id, key, current, source, current.newest + window)
        return None
    entries = current.entries()
    state.put(rule.id, key, None, source)  # fired: this group's window starts afresh
    window_events = [
        {"id": entry[1], "created_at": from_micros(entry[0]), "type": entry[3], "value": entry[2]}
        for entry in entries
    ]
    return Firing(
        event_ids=tuple(entry[1] for entry in entries),
        count=len(entries),
        window_events=window_events,
        values=[entry[2] for entry in entries] if spec.distinct else [],
        group=dict(zip(spec.group_by.paths, values, strict=True)),
        group_key=group_key(spec.group_by, values),
    )


def new_value_step(rule: Rule, event: AuditEvent, state: StateStore) -> Firing | None:
    """Fire when the value tuple was not seen within the lookback; record it either way.

    State: ``v:[values]`` -> last seen (micros), expiring a lookback later (then it is new again anyway);
    ``first`` -> when the rule first matched (for learning), kept.
    """
    spec = rule.new_value
    assert spec is not None
    values = spec.fields.values(event)
    if any(value is None for value in values):
        return None
    source = state_source(rule, event)
    now = micros(event.created_at)
    lookback = spec.lookback // _US
    learning = False
    if spec.learning:
        first = state.get(rule.id, "first", source)
        if first is None:
            first = now
            state.put(rule.id, "first", now, source)
        learning = now < first + spec.learning // _US
    key = state_key("v:", values)
    last = state.get(rule.id, key, source)
    is_new = last is None or now - last >= lookback
    if last is None or now > last:
        state.put(rule.id, key, now, source, now + lookback)
    if not is_new or learning:
        return None
    return Firing(
        event_ids=(event.id,),
        count=1,
        window_events=[],
        values=[],
        group=dict(zip(spec.fields.paths, values, strict=True)),
        group_key=group_key(spec.fields, values),
    )


def seed_new_value(
    rule: Rule, state: StateStore, values: Sequence[Any], seen_at: datetime, source: str
) -> None:
    """Record a value tuple as seen on ``source`` (tests' ``state: seen``)."""
    assert rule.new_value is not None
    where = SHARED if rule.all_sources else source
    key = state_key("v:", values)
    at = micros(seen_at)
    last = state.get(rule.id, key, where)
    if last is None or at > last:
        state.put(rule.id, key, at, where, at + rule.new_value.lookback // _US)


def seed_learning_start(rule: Rule, state: StateStore, started: datetime, source: str) -> None:
    """Record when the rule's learning began on ``source`` (tests' ``state: started``)."""
    state.put(rule.id, "first", micros(started), SHARED if rule.all_sources else source)


def throttle_step(rule: Rule, event: AuditEvent, state: StateStore, values: Sequence[Any]) -> int | None:
    """None when suppressed; else the number suppressed since the previous alert of this key.

    State: ``t:[key values]`` -> ``{"start": micros of the alert let through, "suppressed": n}``. It expires
    when its window ends, unless it holds back a count the next alert must carry (those are kept: one per
    alert at most).
    """
    spec = rule.throttle
    assert spec is not None
    key = state_key("t:", values)
    source = state_source(rule, event)
    now = micros(event.created_at)
    window = spec.window // _US
    current = state.get(rule.id, key, source)
    if current is not None and now < current["start"] + window:
        state.put(rule.id, key, {"start": current["start"], "suppressed": current["suppressed"] + 1}, source)
        return None
    state.put(rule.id, key, {"start": now, "suppressed": 0}, source, now + window)
    return int(current["suppressed"]) if current is not None else 0


# --- the alert ---------------------------------------------------------------------------------------


def template_context(rule: Rule, event: AuditEvent, firing: Firing, tz: ZoneInfo) -> dict[str, Any]:
    return {
        "event": event_view(event, tz),
        "events": firing.window_events or [event_view(event, tz)],
        "count": firing.count,
        "group": firing.group,
        "values": firing.values,
        "rule": {
            "id": rule.id,
            "title": rule.title,
            "severity": rule.severity,
            "description": rule.description,
            "tags": list(rule.tags),
        },
    }


def render_alert_text(rule: Rule, context: dict[str, Any]) -> tuple[str, str]:
    """(title, text); raises TemplateProblem (with the template's name) when a template fails."""
    title = rule.title
    if rule.title_template is not None:
        try:
            title = " ".join(render(rule.title_template, context).split())
        except TemplateProblem as exc:
            raise TemplateProblem(f"alert title: {exc}") from None
    text = rule.description
    if rule.text_template is not None:
        try:
            text = render(rule.text_template, context).strip()
        except TemplateProblem as exc:
            raise TemplateProblem(f"alert text: {exc}") from None
    return title or rule.title, text


def build_alert(
    rule: Rule, event: AuditEvent, firing: Firing, suppressed: int, key: str, tz: ZoneInfo
) -> Alert:
    context = template_context(rule, event, firing, tz)
    try:
        title, text = render_alert_text(rule, context)
    except TemplateProblem as exc:
        # A field the template needs is missing on this live event: still alert, with the rule's own words.
        log.warning(
            "alert template failed", extra={"rule_id": rule.id, "event_id": event.id, "error": str(exc)}
        )
        title, text = (
            rule.title,
            f"{rule.description}\n(The rule's alert template failed on this event: {exc})",
        )
    fields = {}
    for path in rule.alert_fields:
        value = event.get(path)
        if value is not None:
            fields[path] = display(value)
    return Alert(
        rule_id=rule.id,
        severity=rule.severity,
        title=title,
        text=text.strip(),
        source=event.source,
        event_time=event.created_at,
        event_ids=firing.event_ids,
        group_key=key,
        fields=fields,
        context={
            "user": event.user_email,
            "workspace": event.workspace_name,
            "branch": event.branch_label,
            "msg": event.msg,
            "type": event.type,
        },
        suppressed_count=suppressed,
        tags=rule.tags,
    )

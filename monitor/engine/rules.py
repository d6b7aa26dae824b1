"""A rule, compiled once from its YAML document: matchers, condition, stateful kind, templates."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from monitor.alerts.model import SEVERITIES
from monitor.config import parse_duration
from monitor.engine.condition import (
    KEYWORDS,
    NAME_PATTERN,
    ConditionError,
    Node,
    TypeFilter,
    compile_condition,
    parse_condition,
    referenced,
    type_filter,
)
from monitor.engine.errors import RuleErrors
from monitor.engine.matchers import (
    Environment,
    Getter,
    KeyMatcher,
    MatcherError,
    canon,
    check_field,
    compile_key,
    make_getter,
)
from monitor.engine.templates import TemplateProblem, compile_template
from monitor.engine.yamltree import YMap, YSeq
from monitor.events import AuditEvent

RULE_KEYS = (
    "id",
    "title",
    "description",
    "severity",
    "tags",
    "enabled",
    "match",
    "threshold",
    "new_value",
    "throttle",
    "exceptions",
    "alert",
    "tests",
    "requires_lists",
    "scope",
)
SCOPES = ("source", "all_sources")  # whose events a rule's state correlates: each source's apart, or all
RULE_ID = re.compile(r"^[a-z0-9._-]+$")
DEFAULT_LOOKBACK = timedelta(days=90)


@dataclass
class Selection:
    name: str
    line: int
    alternatives: list[list[KeyMatcher]]  # ORed; the keys of one alternative are ANDed

    def __call__(self, event: AuditEvent) -> bool:
        for keys in self.alternatives:
            for key in keys:
                if not key(event):
                    break
            else:
                return True
        return False

    def type_filter(self) -> TypeFilter | None:
        per_alternative: list[TypeFilter] = []
        for keys in self.alternatives:
            type_keys = tuple(key for key in keys if key.path == "type")
            if not type_keys:
                return None
            if len(type_keys) == 1:
                per_alternative.append(type_keys[0].test_value)
            else:
                per_alternative.append(_all_of(type_keys))
        if len(per_alternative) == 1:
            return per_alternative[0]
        alternatives = tuple(per_alternative)
        return lambda t: any(f(t) for f in alternatives)


def _all_of(keys: tuple[KeyMatcher, ...]) -> TypeFilter:
    return lambda event_type: all(key.test_value(event_type) for key in keys)


@dataclass
class FieldSet:
    """A tuple of fields (group_by, new_value fields, throttle key, exception fields) read together."""

    paths: tuple[str, ...]
    getters: tuple[Getter, ...]

    def values(self, event: AuditEvent) -> list[Any]:
        return [getter(event) for getter in self.getters]


@dataclass
class ExceptionRule:
    name: str
    fields: FieldSet
    tuples: frozenset[tuple[str | None, ...]]

    def suppresses(self, event: AuditEvent) -> bool:
        return tuple(canon(value) for value in self.fields.values(event)) in self.tuples


@dataclass
class Threshold:
    group_by: FieldSet
    window: timedelta
    count: int
    distinct: str | None
    distinct_getter: Getter | None


@dataclass
class NewValue:
    fields: FieldSet
    lookback: timedelta
    learning: timedelta


@dataclass
class Throttle:
    key: FieldSet
    window: timedelta


@dataclass
class Rule:
    id: str
    title: str
    description: str
    severity: str
    tags: tuple[str, ...]
    enabled: bool
    file: str
    line: int
    selections: dict[str, Selection]
    condition_text: str
    condition: Node | None
    matches: Callable[[AuditEvent], bool]
    type_filter: TypeFilter | None
    exceptions: list[ExceptionRule]
    threshold: Threshold | None
    new_value: NewValue | None
    throttle: Throttle | None
    title_template: Any | None  # None: the rule's title as written
    text_template: Any | None
    template_lines: dict[str, int]
    alert_fields: tuple[str, ...]
    requires_lists: tuple[str, ...]
    idle: bool  # a list in requires_lists is empty: the rule is loaded but never fires
    all_sources: bool  # scope: all_sources: thresholds, new values and throttles span every source
    doc: YMap = field(repr=False)
    tests: list[Any] = field(default_factory=list, repr=False)

    def __repr__(self) -> str:
        return f"Rule({self.id!r}, {self.severity}, {self.kind})"

    @property
    def kind(self) -> str:
        return "threshold" if self.threshold else "new_value" if self.new_value else "match"

    def excepted(self, event: AuditEvent) -> str | None:
        for exception in self.exceptions:
            if exception.suppresses(event):
                return exception.name
        return None


# --- compiling ----------------------------------------------------------------------------------------------


def _text(doc: YMap, key: str, errors: RuleErrors, *, required: bool) -> str | None:
    if key not in doc:
        if required:
            errors.add(doc.line, f"required key {key!r} is missing")
        return None
    value = doc[key]
    if not isinstance(value, str) or (required and not value.strip()):
        errors.add(doc.key_line(key), f"{key} must be text")
        return None
    return value


def _duration(
    value: Any, line: int, what: str, errors: RuleErrors, *, allow_zero: bool = False
) -> timedelta | None:
    try:
        duration = parse_duration(value)
    except ValueError as exc:
        errors.add(line, f"{what}: {exc}")
        return None
    if duration < timedelta(0) or (duration == timedelta(0) and not allow_zero):
        errors.add(line, f"{what} must be longer than zero")
        return None
    return duration


def _unknown_keys(mapping: YMap, allowed: tuple[str, ...], where: str, errors: RuleErrors) -> None:
    for key in mapping:
        if key not in allowed:
            errors.add(mapping.key_line(key), f"unknown key {key!r}{where} (expected {', '.join(allowed)})")


def _field_list(
    value: Any, line: int, what: str, errors: RuleErrors, *, allow_empty: bool
) -> FieldSet | None:
    paths = [value] if isinstance(value, str) else value
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        errors.add(line, f"{what} must be a list of field paths")
        return None
    if not paths and not allow_empty:
        errors.add(line, f"{what} needs at least one field")
        return None
    ok = True
    for index, path in enumerate(paths):
        problem = check_field(path)
        if problem:
            item_line = value.item_line(index) if isinstance(value, YSeq) else line
            errors.add(item_line, f"{what}: {problem}")
            ok = False
    if not ok:
        return None
    return FieldSet(tuple(paths), tuple(make_getter(p) for p in paths))


def _compile_selection(
    name: str, value: Any, line: int, env: Environment, errors: RuleErrors
) -> Selection | None:
    maps: list[tuple[YMap, int]] = []
    if isinstance(value, YMap):
        maps.append((value, line))
    elif isinstance(value, YSeq) and value:
        for index, item in enumerate(value):
            if not isinstance(item, YMap):
                errors.add(value.item_line(index), f"selection {name!r}: a list of selections holds mappings")
                return None
            maps.append((item, value.item_line(index)))
    else:
        errors.add(
            line, f"selection {name!r} must map field|modifier keys to values (or be a list of such maps)"
        )
        return None
    alternatives: list[list[KeyMatcher]] = []
    failed = False
    for mapping, map_line in maps:
        if not mapping:
            errors.add(map_line, f"selection {name!r} is empty")
            failed = True
            continue
        keys = []
        for key, raw in mapping.items():
            key_line = mapping.key_line(key)
            try:
                compiled = compile_key(key, raw, key_line, env)
            except MatcherError as exc:
                errors.add(key_line, f"selection {name!r}, key {key!r}: {exc}")
                failed = True
                continue
            if compiled.warning:
                errors.warn(key_line, f"selection {name!r}, key {key!r}: {compiled.warning}")
            keys.append(compiled)
        alternatives.append(keys)
    return None if failed else Selection(name, line, alternatives)


def _compile_match(
    doc: YMap, env: Environment, errors: RuleErrors
) -> tuple[dict[str, Selection], str, Node | None, Callable[[AuditEvent], bool] | None, TypeFilter | None]:
    match = doc.get("match")
    never: tuple[dict[str, Selection], str, None, None, None] = ({}, "", None, None, None)
    if match is None:
        if "match" not in doc:
            errors.add(doc.line, "required key 'match' is missing")
        else:
            errors.add(doc.key_line("match"), "match must map selection names to selections")
        return never
    if not isinstance(match, YMap):
        errors.add(doc.key_line("match"), "match must map selection names to selections")
        return never
    selections: dict[str, Selection] = {}
    lines: dict[str, int] = {}
    failed = False
    for name, value in match.items():
        if name == "condition":
            continue
        line = match.key_line(name)
        lines[name] = line
        if not NAME_PATTERN.match(name) or name.lower() in KEYWORDS:
            errors.add(line, f"{name!r} cannot name a selection (letters, digits, _ . -; not a keyword)")
            failed = True
            continue
        selection = _compile_selection(name, value, line, env, errors)
        if selection is None:
            failed = True
        else:
            selections[name] = selection
    if not lines:
        errors.add(doc.key_line("match"), "match has no selection")
        return never
    if failed and "condition" not in match:
        return never
    condition_line = match.key_line("condition") if "condition" in match else doc.key_line("match")
    condition_text = match.get("condition")
    if condition_text is None:
        if len(lines) > 1:
            errors.add(doc.key_line("match"), "condition is required when match has more than one selection")
            return never
        condition_text = next(iter(lines))
    if not isinstance(condition_text, str):
        errors.add(condition_line, "condition must be text such as 'a and not b'")
        return never
    try:
        node = parse_condition(condition_text)
    except ConditionError as exc:
        errors.add(condition_line, f"condition: {exc}")
        return never
    used, problems = referenced(node, list(lines))
    for problem in problems:
        errors.add(condition_line, problem)
    for name, line in lines.items():
        if name not in used:
            errors.add(line, f"selection {name!r} is not used by the condition")
    if failed or problems or len(used) != len(lines):
        return selections, condition_text, node, None, None
    predicate = compile_condition(node, dict(selections))  # type: ignore[arg-type]
    filters = {name: selection.type_filter() for name, selection in selections.items()}
    return selections, condition_text, node, predicate, type_filter(node, filters)


def _compile_exceptions(doc: YMap, errors: RuleErrors) -> list[ExceptionRule]:
    raw = doc.get("exceptions")
    if raw is None:
        return []
    if not isinstance(raw, YSeq):
        errors.add(doc.key_line("exceptions"), "exceptions must be a list of {name, fields, values}")
        return []
    out = []
    for index, item in enumerate(raw):
        line = raw.item_line(index)
        if not isinstance(item, YMap):
            errors.add(line, "an exception is a mapping {name, fields, values}")
            continue
        _unknown_keys(item, ("name", "fields", "values"), " in exception", errors)
        name = item.get("name", f"exception {index + 1}")
        if not isinstance(name, str):
            errors.add(item.key_line("name"), "exception name must be text")
            continue
        if "fields" not in item or "values" not in item:
            errors.add(line, f"exception {name!r} needs fields and values")
            continue
        fields = _field_list(
            item["fields"], item.key_line("fields"), f"exception {name!r} fields", errors, allow_empty=False
        )
        values = item["values"]
        if fields is None:
            continue
        if not isinstance(values, YSeq) or not values:
            errors.add(item.key_line("values"), f"exception {name!r}: values must be a list of value tuples")
            continue
        tuples: set[tuple[str | None, ...]] = set()
        for value_index, value in enumerate(values):
            row = value if isinstance(value, list) else [value]
            if len(row) != len(fields.paths) or any(canon(v) is None for v in row):
                errors.add(
                    values.item_line(value_index),
                    f"exception {name!r}: each entry of values needs {len(fields.paths)} plain value(s), "
                    f"one per field ({', '.join(fields.paths)})",
                )
                continue
            tuples.add(tuple(canon(v) for v in row))
        out.append(ExceptionRule(name, fields, frozenset(tuples)))
    return out


def _compile_threshold(doc: YMap, errors: RuleErrors) -> Threshold | None:
    raw = doc["threshold"]
    line = doc.key_line("threshold")
    if not isinstance(raw, YMap):
        errors.add(line, "threshold must be a mapping {group_by, window, count, distinct}")
        return None
    _unknown_keys(raw, ("group_by", "window", "count", "distinct"), " in threshold", errors)
    group_by = _field_list(
        raw.get("group_by", []), raw.key_line("group_by"), "threshold group_by", errors, allow_empty=True
    )
    if "window" not in raw:
        errors.add(line, "threshold needs a window such as 10m")
        window = None
    else:
        window = _duration(raw["window"], raw.key_line("window"), "threshold window", errors)
    count = raw.get("count")
    if "count" not in raw:
        errors.add(line, "threshold needs a count")
    elif isinstance(count, bool) or not isinstance(count, int) or count < 1:
        errors.add(raw.key_line("count"), "threshold count must be a whole number of at least 1")
        count = None
    distinct = raw.get("distinct")
    if distinct is not None:
        problem = check_field(distinct) if isinstance(distinct, str) else "distinct must name one field"
        if problem:
            errors.add(raw.key_line("distinct"), f"threshold distinct: {problem}")
            distinct = None
    if group_by is None or window is None or not isinstance(count, int) or isinstance(count, bool):
        return None
    return Threshold(group_by, window, count, distinct, make_getter(distinct) if distinct else None)


def _compile_new_value(doc: YMap, errors: RuleErrors) -> NewValue | None:
    raw = doc["new_value"]
    line = doc.key_line("new_value")
    if not isinstance(raw, YMap):
        errors.add(line, "new_value must be a mapping {fields, lookback, learning}")
        return None
    _unknown_keys(raw, ("fields", "lookback", "learning"), " in new_value", errors)
    if "fields" not in raw:
        errors.add(line, "new_value needs fields")
        return None
    fields = _field_list(raw["fields"], raw.key_line("fields"), "new_value fields", errors, allow_empty=False)
    lookback = (
        _duration(raw["lookback"], raw.key_line("lookback"), "new_value lookback", errors)
        if "lookback" in raw
        else DEFAULT_LOOKBACK
    )
    learning = (
        _duration(raw["learning"], raw.key_line("learning"), "new_value learning", errors, allow_zero=True)
        if "learning" in raw
        else timedelta(0)
    )
    if fields is None or lookback is None or learning is None:
        return None
    return NewValue(fields, lookback, learning)


def _compile_throttle(doc: YMap, errors: RuleErrors) -> Throttle | None:
    raw = doc["throttle"]
    line = doc.key_line("throttle")
    if not isinstance(raw, YMap):
        errors.add(line, "throttle must be a mapping {key, window}")
        return None
    _unknown_keys(raw, ("key", "window"), " in throttle", errors)
    key = _field_list(raw.get("key", []), raw.key_line("key"), "throttle key", errors, allow_empty=True)
    if "window" not in raw:
        errors.add(line, "throttle needs a window such as 1h")
        return None
    window = _duration(raw["window"], raw.key_line("window"), "throttle window", errors)
    if key is None or window is None:
        return None
    return Throttle(key, window)


def _compile_alert(doc: YMap, errors: RuleErrors) -> tuple[Any, Any, dict[str, int], tuple[str, ...]]:
    raw = doc.get("alert")
    lines: dict[str, int] = {}
    title_source: Any = None  # the rule's title, as written
    text_source: Any = None
    fields: tuple[str, ...] = ()
    if raw is not None:
        if not isinstance(raw, YMap):
            errors.add(doc.key_line("alert"), "alert must be a mapping {title, text, fields}")
            raw = None
        else:
            _unknown_keys(raw, ("title", "text", "fields"), " in alert", errors)
            if "title" in raw:
                title_source = raw["title"]
                lines["title"] = raw.key_line("title")
            if "text" in raw:
                text_source = raw["text"]
                lines["text"] = raw.key_line("text")
            if "fields" in raw:
                field_set = _field_list(
                    raw["fields"], raw.key_line("fields"), "alert fields", errors, allow_empty=True
                )
                fields = field_set.paths if field_set else ()
    templates: dict[str, Any] = {}
    for name, source in (("title", title_source), ("text", text_source)):
        if source is None:
            continue
        try:
            templates[name] = compile_template(source)
        except TemplateProblem as exc:
            errors.add(lines[name], f"alert {name}: {exc}")
    return templates.get("title"), templates.get("text"), lines, fields


def compile_rule(doc: YMap, file: str, env: Environment, errors: RuleErrors) -> Rule | None:
    """Validate and compile one rule document; report every problem to ``errors``; None if any."""
    before = errors.count
    _unknown_keys(doc, RULE_KEYS, "", errors)
    rule_id = doc.get("id")
    if not isinstance(rule_id, str) or not RULE_ID.match(rule_id):
        errors.add(doc.key_line("id"), f"id {rule_id!r} must match [a-z0-9._-]+")
    title = _text(doc, "title", errors, required=True) or ""
    description = _text(doc, "description", errors, required=False) or ""
    severity = doc.get("severity")
    if "severity" not in doc:
        errors.add(doc.line, "required key 'severity' is missing")
    elif severity not in SEVERITIES:
        errors.add(doc.key_line("severity"), f"severity {severity!r} is not one of {', '.join(SEVERITIES)}")
    tags = doc.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        errors.add(doc.key_line("tags"), "tags must be a list of text")
        tags = []
    enabled = doc.get("enabled", True)
    if not isinstance(enabled, bool):
        errors.add(doc.key_line("enabled"), "enabled must be true or false")
    requires = doc.get("requires_lists", [])
    if isinstance(requires, str):
        requires = [requires]
    if not isinstance(requires, list) or not all(isinstance(n, str) for n in requires):
        errors.add(doc.key_line("requires_lists"), "requires_lists must be a list of list names")
        requires = []
    for name in requires:
        if name not in env.lists:
            errors.add(doc.key_line("requires_lists"), f"requires_lists: undefined list {name!r}")

    scope = doc.get("scope", "source")
    if scope not in SCOPES:
        errors.add(doc.key_line("scope"), f"scope {scope!r} is not one of {', '.join(SCOPES)}")

    selections, condition_text, node, predicate, filter_ = _compile_match(doc, env, errors)
    exceptions = _compile_exceptions(doc, errors)
    threshold = new_value = throttle = None
    if "threshold" in doc and "new_value" in doc:
        errors.add(doc.key_line("new_value"), "a rule is either a threshold or a new_value rule, not both")
    elif "threshold" in doc:
        threshold = _compile_threshold(doc, errors)
    elif "new_value" in doc:
        new_value = _compile_new_value(doc, errors)
    if "throttle" in doc:
        throttle = _compile_throttle(doc, errors)
    title_template, text_template, template_lines, alert_fields = _compile_alert(doc, errors)
    if errors.count > before or predicate is None:
        return None
    assert isinstance(rule_id, str) and isinstance(severity, str)
    return Rule(
        id=rule_id,
        title=title,
        description=description.strip(),
        severity=severity,
        tags=tuple(tags),
        enabled=bool(enabled),
        file=file,
        line=doc.line,
        selections=selections,
        condition_text=condition_text,
        condition=node,
        matches=predicate,
        type_filter=filter_,
        exceptions=exceptions,
        threshold=threshold,
        new_value=new_value,
        throttle=throttle,
        title_template=title_template,
        text_template=text_template,
        template_lines=template_lines,
        alert_fields=alert_fields,
        requires_lists=tuple(requires),
        idle=any(not env.lists.get(name) for name in requires),
        all_sources=scope == "all_sources",
        doc=doc,
    )

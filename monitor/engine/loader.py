"""Loading rule files: documents, lists, calendars, config overrides, strict validation.

Every problem is collected and reported at once as ``FILE:LINE: RULE_ID: message``; nothing raises a
traceback at a user. Rules are compiled once here: matchers, the condition, templates.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from monitor.engine.calendars import Calendar, CalendarError, build_calendar
from monitor.engine.errors import ErrorSink, RuleErrors, RuleLoadError
from monitor.engine.matchers import Environment
from monitor.engine.rules import RULE_ID, Rule, compile_rule
from monitor.engine.ruleset import Firing, RuleSet, group_key, render_alert_text, template_context
from monitor.engine.templates import TemplateProblem
from monitor.engine.testing import TestCase, TestResult, check_case, parse_tests
from monitor.engine.yamltree import YamlProblem, YMap, YSeq, load_documents
from monitor.timeutil import iana_zone

if TYPE_CHECKING:
    from monitor.config import Config

LIST_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
CONFIG_LABEL = "config"


def rule_files(paths: Sequence[str | Path], sink: ErrorSink) -> list[Path]:
    """Files and folders (``*.yml``/``*.yaml`` recursively, sorted), in the order given."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in (".yml", ".yaml") and p.is_file())
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            sink.add(str(path), 0, None, "no such rule file or folder")
    seen: set[Path] = set()
    unique = []
    for file in files:
        resolved = file.resolve()
        if resolved not in seen:
            seen.add(resolved)
            unique.append(file)
    return unique


def _read(file: Path, sink: ErrorSink) -> list[tuple[int, Any]]:
    label = str(file)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        sink.add(label, 0, None, f"cannot read: {exc}")
        return []
    documents: list[tuple[int, Any]] = []
    try:
        for line, value in load_documents(text):
            documents.append((line, value))
    except YamlProblem as exc:
        sink.add(label, exc.line, None, exc.message)
    return documents


def _collect_lists(
    doc: YMap, label: str, sink: ErrorSink, lists: dict[str, list[Any]], origins: dict[str, str]
) -> None:
    value = doc["lists"]
    if not isinstance(value, YMap):
        sink.add(label, doc.key_line("lists"), None, "lists must map names to lists of values")
        return
    for name, items in value.items():
        line = value.key_line(name)
        where = f"{label}:{line}"
        if not LIST_NAME.match(name):
            sink.add(label, line, None, f"{name!r} cannot name a list (letters, digits, _ . -)")
        elif name in origins:
            sink.add(label, line, None, f"list {name!r} is defined twice (first at {origins[name]})")
        elif not isinstance(items, YSeq) or any(
            item is None or isinstance(item, dict | list) for item in items
        ):
            sink.add(label, line, None, f"list {name!r} must be a list of plain values")
        else:
            lists[name] = [_plain_scalar(item) for item in items]
            origins[name] = where


def _plain_scalar(value: Any) -> Any:
    from monitor.engine.testing import plain

    return plain(value)


def _collect_calendars(
    doc: YMap, label: str, sink: ErrorSink, specs: dict[str, tuple[Any, str, int]], origins: dict[str, str]
) -> None:
    value = doc["calendars"]
    if not isinstance(value, YMap):
        sink.add(label, doc.key_line("calendars"), None, "calendars must map names to calendars")
        return
    for name, spec in value.items():
        line = value.key_line(name)
        if not LIST_NAME.match(name):
            sink.add(label, line, None, f"{name!r} cannot name a calendar (letters, digits, _ . -)")
        elif name in origins:
            sink.add(label, line, None, f"calendar {name!r} is defined twice (first at {origins[name]})")
        else:
            specs[name] = (spec, label, line)
            origins[name] = f"{label}:{line}"


def build_calendars(
    specs: Mapping[str, tuple[Any, str, int]], default_timezone: str, sink: ErrorSink
) -> dict[str, Calendar]:
    calendars = {}
    for name, (spec, label, line) in specs.items():
        try:
            calendars[name] = build_calendar(name, spec, default_timezone)
        except CalendarError as exc:
            key_line = spec.key_line(exc.key) if isinstance(spec, YMap) and exc.key else line
            where = f"rules.calendars.{name}" if label == CONFIG_LABEL else f"calendar {name!r}"
            sink.add(label, key_line, None, f"{where}: {exc}")
    return calendars


def _environment(
    lists: Mapping[str, list[Any]], calendars: Mapping[str, Calendar], tz: ZoneInfo
) -> Environment:
    return Environment(lists=dict(lists), calendars=dict(calendars), default_tz=tz)


def load_ruleset(
    paths: Sequence[str | Path],
    *,
    lists: Mapping[str, list[Any]] | None = None,
    calendars: Mapping[str, Mapping[str, Any]] | None = None,
    disable: Sequence[str] = (),
    default_timezone: str = "UTC",
) -> RuleSet:
    """Load, validate and compile rules from files and folders; raise RuleLoadError listing every problem.

    ``lists`` and ``calendars`` (the config's ``rules.lists`` / ``rules.calendars``) replace same-named
    entries of the files; ``disable`` names rules that load (and are validated) but never run.
    """
    sink = ErrorSink()
    try:
        tz = iana_zone(default_timezone)
    except ValueError:
        raise RuleLoadError(
            [f"{CONFIG_LABEL}:0: -: timezone {default_timezone!r} is not an IANA time zone"]
        ) from None
    files = rule_files(paths, sink)
    documents: list[tuple[str, int, Any]] = []
    for file in files:
        documents.extend((str(file), line, value) for line, value in _read(file, sink))

    # Pass 1: lists and calendars, from every file, then the config's overrides.
    file_lists: dict[str, list[Any]] = {}
    calendar_specs: dict[str, tuple[Any, str, int]] = {}
    list_origins: dict[str, str] = {}
    calendar_origins: dict[str, str] = {}
    rule_docs: list[tuple[str, YMap]] = []
    for label, line, doc in documents:
        if not isinstance(doc, YMap):
            sink.add(
                label,
                line,
                None,
                "a document must be a rule (a mapping with id) or a lists:/calendars: mapping",
            )
            continue
        if "id" in doc:
            rule_docs.append((label, doc))
            continue
        if "lists" not in doc and "calendars" not in doc:
            sink.add(
                label,
                doc.line,
                None,
                "a document must be a rule (with id), or a lists: or calendars: document",
            )
            continue
        for key in doc:
            if key not in ("lists", "calendars"):
                sink.add(label, doc.key_line(key), None, f"unknown key {key!r} in a lists/calendars document")
        if "lists" in doc:
            _collect_lists(doc, label, sink, file_lists, list_origins)
        if "calendars" in doc:
            _collect_calendars(doc, label, sink, calendar_specs, calendar_origins)
    effective_lists = dict(file_lists)
    for name, items in (lists or {}).items():
        if not isinstance(items, list) or any(i is None or isinstance(i, dict | list) for i in items):
            sink.add(CONFIG_LABEL, 0, None, f"rules.lists.{name}: must be a list of plain values")
            continue
        effective_lists[name] = list(items)
    for name, spec in (calendars or {}).items():
        calendar_specs[name] = (spec, CONFIG_LABEL, 0)
    built_calendars = build_calendars(calendar_specs, default_timezone, sink)
    env = _environment(effective_lists, built_calendars, tz)

    # Pass 2: rules.
    compiled: list[Rule] = []
    first_seen: dict[str, str] = {}
    for label, doc in rule_docs:
        raw_id = doc.get("id")
        # an id that breaks the pattern is not repeated in the error lines (it may hold ": " or newlines)
        rule_id = raw_id if isinstance(raw_id, str) and RULE_ID.match(raw_id) else None
        errors = sink.for_rule(label, rule_id)
        if rule_id is not None:
            if rule_id in first_seen:
                errors.add(doc.key_line("id"), f"duplicate id (first defined at {first_seen[rule_id]})")
                continue
            first_seen[rule_id] = f"{label}:{doc.key_line('id')}"
        rule = compile_rule(doc, label, env, errors)
        if rule is None:
            continue
        rule.tests = parse_tests(rule, tz, errors)
        for case in rule.tests:
            case.rule = _rule_for_case(
                rule, case, effective_lists, calendar_specs, default_timezone, tz, errors
            )
        _check_templates(rule, errors, default_timezone)
        compiled.append(rule)

    if sink.errors:
        raise RuleLoadError(sink.errors)
    known = {rule.id for rule in compiled}
    warnings = sink.warnings + [
        f"{CONFIG_LABEL}: rules.disable names {rule_id!r}, which no rule file defines"
        for rule_id in disable
        if rule_id not in known
    ]
    disabled = [rule_id for rule_id in disable if rule_id in known]
    active = [rule for rule in compiled if rule.enabled and rule.id not in disable]
    return RuleSet(
        active,
        all_rules=compiled,
        files=[str(f) for f in files],
        timezone=default_timezone,
        warnings=warnings,
        disabled=disabled,
        lists=effective_lists,
        calendars=built_calendars,
    )


def _rule_for_case(
    rule: Rule,
    case: TestCase,
    lists: Mapping[str, list[Any]],
    calendar_specs: Mapping[str, tuple[Any, str, int]],
    default_timezone: str,
    tz: ZoneInfo,
    errors: RuleErrors,
) -> Rule:
    """The rule as one test case runs it: recompiled when the case overrides lists or calendars."""
    if case.lists is None and case.calendars is None:
        return rule
    case_sink = ErrorSink()
    merged_lists = dict(lists)
    for name, items in (case.lists or {}).items():
        if not isinstance(items, list) or any(i is None or isinstance(i, dict | list) for i in items):
            errors.add(case.line, f"test {case.name!r}: lists.{name} must be a list of plain values")
            return rule
        merged_lists[name] = [_plain_scalar(i) for i in items]
    specs = dict(calendar_specs)
    for name, spec in (case.calendars or {}).items():
        specs[name] = (spec, rule.file, case.line)
    calendars = build_calendars(specs, default_timezone, case_sink)
    variant = compile_rule(
        rule.doc, rule.file, _environment(merged_lists, calendars, tz), case_sink.for_rule(rule.file, rule.id)
    )
    for message in case_sink.errors:
        errors.add(case.line, f"test {case.name!r} (with its lists/calendars): {message.split(': ', 2)[-1]}")
    return variant or rule


def _check_templates(rule: Rule, errors: RuleErrors, timezone: str) -> None:
    """Render the alert templates against every test event the rule matches, so a typo fails at check time."""
    if rule.title_template is None and rule.text_template is None:
        return
    tz = ZoneInfo(timezone)
    reported: set[str] = set()
    for case in rule.tests:
        case_rule = case.rule or rule
        matched: list[Any] = []
        for number, event in enumerate(case.events, start=1):
            try:
                if not case_rule.matches(event) or case_rule.excepted(event):
                    continue
            except Exception as exc:  # noqa: BLE001 - reported as a check error, never a traceback
                errors.add(rule.line, f"test {case.name!r}, event {number}: matching failed: {exc}")
                return
            firing = _synthetic_firing(case_rule, event, matched)
            if firing is None:
                continue
            try:
                render_alert_text(case_rule, template_context(case_rule, event, firing, tz))
            except TemplateProblem as exc:
                message = str(exc)
                name = "text" if message.startswith("alert text") else "title"
                if message not in reported:
                    reported.add(message)
                    errors.add(
                        rule.template_lines.get(name, rule.line),
                        f"{message} (test {case.name!r}, event {number})",
                    )


def _synthetic_firing(rule: Rule, event: Any, matched: list[Any]) -> Firing | None:
    """A firing as the stateful part would produce it for this event, to render templates at check time."""
    from monitor.engine.ruleset import display

    if rule.threshold is not None:
        spec = rule.threshold
        values = spec.group_by.values(event)
        if any(v is None for v in values):
            return None
        distinct = spec.distinct_getter(event) if spec.distinct_getter else None
        if spec.distinct_getter is not None and distinct is None:
            return None
        matched.append(
            {
                "id": event.id,
                "created_at": event.created_at,
                "type": event.type,
                "value": display(distinct) if distinct is not None else None,
            }
        )
        window = matched[-spec.count :]
        return Firing(
            tuple(e["id"] for e in window),
            spec.count,
            list(window),
            [e["value"] for e in window] if spec.distinct else [],
            dict(zip(spec.group_by.paths, values, strict=True)),
            group_key(spec.group_by, values),
        )
    if rule.new_value is not None:
        values = rule.new_value.fields.values(event)
        if any(v is None for v in values):
            return None
        return Firing(
            (event.id,),
            1,
            [],
            [],
            dict(zip(rule.new_value.fields.paths, values, strict=True)),
            group_key(rule.new_value.fields, values),
        )
    return Firing((event.id,), 1, [], [], {}, "")


def ruleset_from_config(config: Config) -> RuleSet:
    """The rules the config names, with its lists, calendars, disabled ids and time zone.

    A ``rules.disable`` entry that names no rule is an error here (the daemon's start and SIGHUP reload),
    not a warning: a typo there leaves on the rule it was meant to switch off.
    """
    ruleset = load_ruleset(
        config.rules.paths,
        lists=config.rules.lists,
        calendars=config.rules.calendars,
        disable=config.rules.disable,
        default_timezone=config.timezone,
    )
    unknown = config.rules.unknown_disabled(rule.id for rule in ruleset.all_rules)
    if unknown:
        raise RuleLoadError(unknown)
    return ruleset


def run_rule_tests(ruleset: RuleSet) -> list[TestResult]:
    """Run the tests embedded in the active rules, each case with a fresh in-memory store."""
    results = []
    for rule in ruleset.rules:
        for case in rule.tests:
            results.append(check_case(rule.id, case, ruleset.timezone))
    return results

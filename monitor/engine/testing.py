"""Tests embedded in rules: parsing (at load time, with line numbers) and running (`rules test`).

Events in tests are raw-ish Xano entries normalised exactly like polled ones. Missing ``id`` values are
numbered 1, 2, 3...; missing ``created_at`` values come from a fixed clock that starts on Wednesday
2026-03-04 at 10:00 in the configured time zone (business hours everywhere) and moves one second per
event (after an event with an explicit time, the clock continues one second after it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from monitor.config import parse_duration
from monitor.engine.errors import RuleErrors
from monitor.engine.rules import Rule
from monitor.engine.state import MemoryStateStore
from monitor.engine.yamltree import YMap, YSeq
from monitor.events import AuditEvent, NormalizationError, normalize, parse_timestamp

CLOCK_START = (date(2026, 3, 4), time(10, 0))  # a Wednesday, 10:00 local
TEST_SOURCE = "test"
CASE_KEYS = ("name", "event", "events", "expect", "state", "lists", "calendars")
REPEAT_KEYS = ("repeat", "every", "start", "event")


@dataclass
class TestCase:
    name: str
    line: int
    events: list[AuditEvent]
    expect_alerts: int
    titles: list[str] | None = None
    suppressed: list[int] | None = None
    seen: list[tuple[list[Any], datetime]] = field(default_factory=list)
    started: datetime | None = None
    lists: dict[str, list[Any]] | None = None
    calendars: dict[str, Any] | None = None
    rule: Rule | None = None  # the rule as this case runs it (recompiled when the case overrides lists)


@dataclass(frozen=True)
class TestResult:
    rule_id: str
    name: str
    passed: bool
    message: str = ""


def plain(value: Any) -> Any:
    """YAML values to JSON-like ones: dates and datetimes become ISO strings."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def _instant(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=ZoneInfo("UTC"))
    return parse_timestamp(plain(value))


class _Clock:
    def __init__(self, tz: ZoneInfo) -> None:
        self.next = datetime.combine(CLOCK_START[0], CLOCK_START[1], tz)
        self.next_id = 1
        self.used_ids: set[int] = set()


def _entry(raw: Any, at: datetime | None, clock: _Clock) -> AuditEvent:
    if not isinstance(raw, Mapping):
        raise NormalizationError(
            "a test event is a mapping like {type: Login Failed, user: {id: 3, email: a@corp.io}}"
        )
    entry = plain(raw)
    if "id" not in entry:
        while clock.next_id in clock.used_ids:
            clock.next_id += 1
        entry["id"] = clock.next_id
    if at is not None:
        entry["created_at"] = at.isoformat()
    elif "created_at" not in entry:
        entry["created_at"] = clock.next.isoformat()
    event = normalize(TEST_SOURCE, entry)
    clock.used_ids.add(event.id)
    clock.next = max(clock.next, event.created_at + timedelta(seconds=1))
    return event


def _events(case: YMap, clock: _Clock, errors: RuleErrors, label: str) -> list[AuditEvent] | None:
    if ("event" in case) == ("events" in case):
        errors.add(case.line, f"{label}: give either event or events")
        return None
    if "event" in case:
        try:
            return [_entry(case["event"], None, clock)]
        except NormalizationError as exc:
            errors.add(case.key_line("event"), f"{label}: {exc}")
            return None
    items = case["events"]
    if not isinstance(items, YSeq) or not items:
        errors.add(case.key_line("events"), f"{label}: events must be a non-empty list")
        return None
    out: list[AuditEvent] = []
    for index, item in enumerate(items):
        line = items.item_line(index)
        try:
            if isinstance(item, YMap) and ("repeat" in item or "event" in item):
                out.extend(_repeat(item, clock, errors, label))
            else:
                out.append(_entry(item, None, clock))
        except NormalizationError as exc:
            errors.add(line, f"{label}: event {index + 1}: {exc}")
            return None
        except ValueError as exc:
            errors.add(line, f"{label}: event {index + 1}: {exc}")
            return None
    return out


def _repeat(block: YMap, clock: _Clock, errors: RuleErrors, label: str) -> list[AuditEvent]:
    for key in block:
        if key not in REPEAT_KEYS:
            raise ValueError(f"unknown key {key!r} in a repeat block (expected {', '.join(REPEAT_KEYS)})")
    count = block.get("repeat", 1)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 100_000:
        raise ValueError("repeat must be a whole number from 1 to 100000")
    every = parse_duration(block.get("every", "1s"))
    if "event" not in block:
        raise ValueError("a repeat block needs an event")
    start = _instant(block["start"]) if "start" in block else clock.next
    template = block["event"]
    if isinstance(template, Mapping) and ("created_at" in template or "id" in template):
        raise ValueError("the event of a repeat block gets its id and created_at from the block")
    return [_entry(template, start + every * i, clock) for i in range(count)]


def _expect(
    case: YMap, errors: RuleErrors, label: str
) -> tuple[int, list[str] | None, list[int] | None] | None:
    if "expect" not in case:
        errors.add(
            case.line, f"{label}: expect is required (alert, no_alert, or {{alerts: N, titles: [...]}})"
        )
        return None
    expect = case["expect"]
    line = case.key_line("expect")
    if expect == "alert":
        return 1, None, None
    if expect == "no_alert":
        return 0, None, None
    if not isinstance(expect, YMap):
        errors.add(line, f"{label}: expect must be alert, no_alert, or {{alerts: N, titles: [...]}}")
        return None
    bad = [key for key in expect if key not in ("alerts", "titles", "suppressed")]
    for key in bad:
        errors.add(
            expect.key_line(key),
            f"{label}: unknown key {key!r} in expect (expected alerts, titles, suppressed)",
        )
    alerts = expect.get("alerts")
    titles = expect.get("titles")
    suppressed = expect.get("suppressed")
    if titles is not None and (not isinstance(titles, list) or not all(isinstance(t, str) for t in titles)):
        errors.add(expect.key_line("titles"), f"{label}: titles must be a list of text")
        return None
    if suppressed is not None and (
        not isinstance(suppressed, list)
        or not all(isinstance(n, int) and not isinstance(n, bool) for n in suppressed)
    ):
        errors.add(expect.key_line("suppressed"), f"{label}: suppressed must be a list of whole numbers")
        return None
    if alerts is None:
        alerts = len(titles) if titles is not None else len(suppressed) if suppressed is not None else None
    if isinstance(alerts, bool) or not isinstance(alerts, int) or alerts < 0:
        errors.add(line, f"{label}: expect needs alerts: N (a whole number)")
        return None
    for name, listed in (("titles", titles), ("suppressed", suppressed)):
        if listed is not None and len(listed) != alerts:
            errors.add(
                expect.key_line(name), f"{label}: {name} lists {len(listed)} entries for {alerts} alerts"
            )
            return None
    if bad:
        return None
    return alerts, titles, suppressed


def _state(
    case: YMap, rule: Rule, clock_start: datetime, errors: RuleErrors, label: str, case_obj: TestCase
) -> bool:
    raw = case["state"]
    line = case.key_line("state")
    if rule.new_value is None:
        errors.add(line, f"{label}: state seeds new_value history, and this rule has no new_value")
        return False
    if not isinstance(raw, YMap):
        errors.add(line, f"{label}: state must be a mapping {{seen: [...], started: T}}")
        return False
    ok = True
    for key in raw:
        if key not in ("seen", "started"):
            errors.add(raw.key_line(key), f"{label}: unknown key {key!r} in state (expected seen, started)")
            ok = False
    fields = rule.new_value.fields.paths
    seen = raw.get("seen", YSeq())
    if not isinstance(seen, YSeq):
        errors.add(raw.key_line("seen"), f"{label}: state.seen must be a list of {{{', '.join(fields)}, at}}")
        return False
    for index, item in enumerate(seen):
        item_line = seen.item_line(index)
        if not isinstance(item, YMap) or set(item) - {"at"} != set(fields):
            errors.add(
                item_line,
                f"{label}: each state.seen entry needs exactly the new_value fields "
                f"({', '.join(fields)}) and optionally at",
            )
            ok = False
            continue
        try:
            at = _instant(item["at"]) if "at" in item else clock_start - timedelta(days=1)
        except NormalizationError as exc:
            errors.add(item.key_line("at"), f"{label}: {exc}")
            ok = False
            continue
        case_obj.seen.append(([plain(item[f]) for f in fields], at))
    if "started" in raw:
        try:
            case_obj.started = _instant(raw["started"])
        except NormalizationError as exc:
            errors.add(raw.key_line("started"), f"{label}: {exc}")
            ok = False
    elif case_obj.seen:
        case_obj.started = min(at for _, at in case_obj.seen)
    return ok


def parse_tests(rule: Rule, tz: ZoneInfo, errors: RuleErrors) -> list[TestCase]:
    """The rule's ``tests:`` as TestCases; problems go to ``errors`` with their lines."""
    raw = rule.doc.get("tests")
    if raw is None:
        return []
    if not isinstance(raw, YSeq):
        errors.add(rule.doc.key_line("tests"), "tests must be a list of cases")
        return []
    cases = []
    for index, case in enumerate(raw):
        line = raw.item_line(index)
        if not isinstance(case, YMap):
            errors.add(line, f"test {index + 1}: a test case is a mapping with event(s) and expect")
            continue
        name = case.get("name", f"test {index + 1}")
        if not isinstance(name, str):
            errors.add(case.key_line("name"), f"test {index + 1}: name must be text")
            continue
        label = f"test {name!r}"
        ok = True
        for key in case:
            if key not in CASE_KEYS:
                errors.add(
                    case.key_line(key), f"{label}: unknown key {key!r} (expected {', '.join(CASE_KEYS)})"
                )
                ok = False
        clock = _Clock(tz)
        clock_start = clock.next
        events = _events(case, clock, errors, label)
        expect = _expect(case, errors, label)
        test_case = TestCase(name=name, line=line, events=events or [], expect_alerts=0)
        if "state" in case:
            ok = _state(case, rule, clock_start, errors, label, test_case) and ok
        for key in ("lists", "calendars"):
            if key in case:
                value = case[key]
                if not isinstance(value, YMap):
                    errors.add(case.key_line(key), f"{label}: {key} must map names to {key}")
                    ok = False
                    continue
                setattr(test_case, key, value)
        if events is None or expect is None or not ok:
            continue
        test_case.expect_alerts, test_case.titles, test_case.suppressed = expect
        cases.append(test_case)
    return cases


def run_case(case: TestCase, timezone: str) -> list[Any]:
    """The alerts the case's events raise, evaluated exactly as the daemon does, with an in-memory store."""
    from monitor.engine.ruleset import RuleSet, seed_learning_start, seed_new_value

    rule = case.rule
    assert rule is not None
    ruleset = RuleSet([rule], timezone=timezone)
    state = MemoryStateStore()
    for values, at in case.seen:
        seed_new_value(rule, state, values, at, TEST_SOURCE)
    if case.started is not None and rule.new_value is not None and rule.new_value.learning:
        seed_learning_start(rule, state, case.started, TEST_SOURCE)
    alerts = []
    for event in case.events:
        alerts.extend(ruleset.evaluate(event, state))
    return alerts


def check_case(rule_id: str, case: TestCase, timezone: str) -> TestResult:
    alerts = run_case(case, timezone)
    problems = []
    if len(alerts) != case.expect_alerts:
        got = f"got {len(alerts)}" + (f": {[a.title for a in alerts]}" if alerts else "")
        problems.append(f"expected {case.expect_alerts} alert{'s' if case.expect_alerts != 1 else ''}, {got}")
    elif case.titles is not None and [a.title for a in alerts] != case.titles:
        problems.append(f"expected titles {case.titles}, got {[a.title for a in alerts]}")
    elif case.suppressed is not None and [a.suppressed_count for a in alerts] != case.suppressed:
        problems.append(
            f"expected suppressed counts {case.suppressed}, got {[a.suppressed_count for a in alerts]}"
        )
    return TestResult(rule_id, case.name, not problems, "; ".join(problems))

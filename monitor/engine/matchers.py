"""Field matchers: one ``field|modifier|...: values`` key compiled once into a predicate.

Semantics (RULES.md "Modifiers"):
- a missing field never matches (except ``exists: false``); a list field matches when any element does;
- a list of values is ORed; ``all`` makes it AND;
- strings compare case-insensitively unless ``cased``; numbers and booleans compare by value, so
  ``user.id: 42`` matches 42 and "42";
- ``neq`` is the negation of equality over a present field: ``type|neq: [Login, Login Failed]`` matches
  every other type, and a list field matches when none of its elements equals a value.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from re import _parser as _sre_parser  # type: ignore[attr-defined]  # the stdlib's own regex parser
from typing import Any
from zoneinfo import ZoneInfo

from monitor.engine.calendars import Calendar, CalendarError, build_calendar
from monitor.events import AuditEvent, NormalizationError, format_timestamp, parse_timestamp

COMPARISONS = (
    "contains",
    "startswith",
    "endswith",
    "like",
    "glob",
    "re",
    "cidr",
    "exists",
    "neq",
    "gt",
    "gte",
    "lt",
    "lte",
    "calendar",
    "domain",
)
FLAGS = ("cased", "all", "in_list")
MODIFIERS = COMPARISONS + FLAGS

TOP_LEVEL = ("id", "source", "created_at", "updated_at", "type", "msg", "label")
OBJECTS = {
    "user": ("id", "email"),
    "workspace": ("id", "name"),
    "branch": ("id", "label"),
    "obj": ("type", "id"),
}
_DATE_LIKE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]|$)")
# Pattern matchers (like, glob, re) see at most this many characters of a text: a regex's cost may grow
# faster than the text, and event text is whatever an attacker typed. Substring tests are linear (and
# fast) and see the whole value.
MATCH_TEXT_LIMIT = 65_536
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


class MatcherError(ValueError):
    """A problem with one key or its values."""


Getter = Callable[[AuditEvent], Any]


def check_field(path: str) -> str | None:
    """None if the path names an event field, else a message saying what is known."""
    parts = path.split(".")
    if any(not part for part in parts):
        return f"{path!r} is not a field path"
    root = parts[0]
    if root in TOP_LEVEL:
        return None if len(parts) == 1 else f"{root} has no sub-fields"
    if root in OBJECTS:
        if len(parts) == 2 and parts[1] in OBJECTS[root]:
            return None
        return f"unknown field {path!r} ({', '.join(f'{root}.{sub}' for sub in OBJECTS[root])} are known)"
    if root == "data":
        return None if len(parts) > 1 else "use data.<key> to match inside the event data"
    known = ", ".join([*TOP_LEVEL, *(f"{o}.*" for o in OBJECTS), "data.*"])
    return f"unknown field {path!r} (known: {known})"


def make_getter(path: str) -> Getter:
    """A fast accessor for a checked field path; None when missing."""
    if path in ("id", "source", "created_at", "type", "msg"):
        name = path

        def attribute(event: AuditEvent) -> Any:
            return getattr(event, name)

        return attribute
    parts = tuple(path.split("."))
    if len(parts) == 1:
        key = parts[0]
        return lambda event: event.raw.get(key)
    if len(parts) == 2:
        outer, inner = parts

        def nested(event: AuditEvent) -> Any:
            node = event.raw.get(outer)
            return node.get(inner) if isinstance(node, dict) else None

        return nested

    def deep(event: AuditEvent) -> Any:
        node: Any = event.raw
        for part in parts:
            if not isinstance(node, dict):
                return None
            node = node.get(part)
        return node

    return deep


def canon(value: Any, cased: bool = False) -> str | None:
    """The comparison form of a scalar: strings casefolded unless cased; numbers and booleans by value."""
    if isinstance(value, str):
        return value if cased else value.casefold()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, datetime):
        return format_timestamp(value)
    return None


def to_instant(value: Any) -> datetime | None:
    """A datetime from a datetime field or a timestamp string; None when it is neither."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return parse_timestamp(value)
        except NormalizationError:
            return None
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        return float(value)
    return None


def parse_instant(value: Any, tz: ZoneInfo) -> datetime | None:
    """An ISO 8601 date or date-time from a rule; a value without zone is in ``tz``."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=tz)
    if isinstance(value, date):
        return datetime.combine(value, time(0), tz)
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=tz)


class Wildcard:
    """A ``like``/``glob`` pattern, matched against the whole text in one left-to-right pass.

    Translated to a regex (``.*drop.*table.*``), every run would make a backtracking engine retry each
    split of the text: quadratic for two runs (7 s on 80 KB), worse for more. Here the runs split the
    pattern into fixed-length pieces (literals and one-character wildcards, no repetition at all): the
    first must match at the start, the last at the end, and each one between is found, leftmost, after
    the previous one. Leftmost is always right for a run, so no choice is ever revisited: the work is the
    text's length times the pattern's. A backslash escapes the next character.
    """

    __slots__ = ("pieces", "lengths")

    def __init__(self, pattern: str, *, many: str, one: str, cased: bool) -> None:
        pieces: list[list[str]] = [[]]
        lengths = [0]
        escaped = False
        for ch in pattern:
            if escaped:
                pieces[-1].append(re.escape(ch))
                lengths[-1] += 1
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == many:
                pieces.append([])
                lengths.append(0)
            else:
                pieces[-1].append("." if ch == one else re.escape(ch))
                lengths[-1] += 1
        if escaped:  # a trailing backslash escapes nothing: it stands for itself
            pieces[-1].append(re.escape("\\"))
            lengths[-1] += 1
        flags = re.DOTALL | (0 if cased else re.IGNORECASE)
        self.pieces = tuple(re.compile("".join(piece), flags) for piece in pieces)
        self.lengths = tuple(lengths)

    def __call__(self, text: str) -> bool:
        pieces, lengths = self.pieces, self.lengths
        if len(pieces) == 1:
            return pieces[0].fullmatch(text) is not None
        end = len(text) - lengths[-1]  # where the last piece must start
        if end < lengths[0] or pieces[0].match(text) is None or pieces[-1].fullmatch(text, end) is None:
            return False
        position = lengths[0]
        for index in range(1, len(pieces) - 1):
            if lengths[index] == 0:
                continue
            found = pieces[index].search(text, position, end)
            if found is None:
                return False
            position = found.end()
        return True


def nested_quantifier(pattern: str, flags: int = 0) -> bool:
    """True when a repeat contains another repeat (``(a+)+``): a backtracking engine can then take
    exponential time on crafted text. Possessive repeats and atomic groups never backtrack."""

    def walk(items: Any, inside_repeat: bool) -> bool:
        for op, arg in items:
            name = str(op)
            if name in ("MAX_REPEAT", "MIN_REPEAT"):
                low, high, body = arg
                repeats = high > 1
                if repeats and inside_repeat:
                    return True
                if walk(body, inside_repeat or repeats):
                    return True
            elif name == "SUBPATTERN":
                if walk(arg[3], inside_repeat):
                    return True
            elif name == "BRANCH":
                if any(walk(branch, inside_repeat) for branch in arg[1]):
                    return True
            elif name in ("ASSERT", "ASSERT_NOT"):
                if walk(arg[1], inside_repeat):
                    return True
            elif name == "GROUPREF_EXISTS":
                if any(walk(branch, inside_repeat) for branch in arg[1:] if branch is not None):
                    return True
        return False

    try:
        return walk(_sre_parser.parse(pattern, flags).data, False)
    except Exception:  # noqa: BLE001 - re.compile has accepted the pattern; a parser quirk is no warning
        return False


def _domain_of(value: str) -> str:
    return value.rpartition("@")[2].strip().rstrip(".")


@dataclass
class Environment:
    """What a rule can refer to: lists, calendars, the default time zone."""

    lists: Mapping[str, Sequence[Any]]
    calendars: Mapping[str, Calendar]
    default_tz: ZoneInfo
    used_lists: set[str] = field(default_factory=set)


@dataclass
class KeyMatcher:
    """One compiled ``field|modifiers: values`` key of a selection."""

    key: str
    path: str
    line: int
    comparison: str  # "eq" or one of COMPARISONS
    getter: Getter
    scalar_test: Callable[[Any], bool]  # does one scalar match at least one value
    each_value: tuple[Callable[[Any], bool], ...] | None  # with ``all``: one test per value
    description: str  # the values as the rule wrote them, for explain
    warning: str | None = None  # compiles, but risky (a regex that can backtrack exponentially)

    def test_value(self, value: Any) -> bool:
        """Apply the key to a field value (which may be None or a list)."""
        if self.comparison == "exists":
            return self.scalar_test(value)
        if value is None:
            return False
        if self.comparison == "neq":
            if isinstance(value, list):
                present = [item for item in value if item is not None]
                return bool(present) and not any(self.scalar_test(item) for item in present)
            return not self.scalar_test(value)
        if isinstance(value, list):
            present = [item for item in value if item is not None]
            if self.each_value is not None:
                return bool(present) and all(any(test(item) for item in present) for test in self.each_value)
            return any(self.scalar_test(item) for item in present)
        if self.each_value is not None:
            return all(test(value) for test in self.each_value)
        return self.scalar_test(value)

    def __call__(self, event: AuditEvent) -> bool:
        return self.test_value(self.getter(event))


def parse_key(key: str) -> tuple[str, list[str]]:
    path, *modifiers = key.split("|")
    return path.strip(), [m.strip() for m in modifiers]


def compile_key(key: str, raw_values: Any, line: int, env: Environment) -> KeyMatcher:
    """Compile one selection key; raise MatcherError with a message for the rule author."""
    path, modifiers = parse_key(key)
    problem = check_field(path)
    if problem:
        raise MatcherError(problem)
    seen: set[str] = set()
    for modifier in modifiers:
        if modifier not in MODIFIERS:
            raise MatcherError(f"unknown modifier {modifier!r} (known: {', '.join(MODIFIERS)})")
        if modifier in seen:
            raise MatcherError(f"modifier {modifier!r} is given twice")
        seen.add(modifier)
    comparisons = [m for m in modifiers if m in COMPARISONS]
    if len(comparisons) > 1:
        raise MatcherError(f"modifiers {comparisons[0]!r} and {comparisons[1]!r} cannot be combined")
    comparison = comparisons[0] if comparisons else "eq"
    cased = "cased" in seen
    use_all = "all" in seen
    in_list = "in_list" in seen
    if cased and comparison in ("cidr", "exists", "gt", "gte", "lt", "lte", "calendar", "domain"):
        raise MatcherError(f"'cased' does not apply to {comparison!r}")
    if comparison in ("exists", "calendar") and in_list:
        raise MatcherError(f"'in_list' does not apply to {comparison!r}")
    if comparison in ("exists", "neq") and use_all:
        raise MatcherError(f"'all' does not apply to {comparison!r}")

    values = _values(raw_values, comparison, in_list, env)
    description = _describe_values(raw_values, in_list)
    getter = make_getter(path)

    if comparison == "exists":
        if len(values) != 1 or not isinstance(values[0], bool):
            raise MatcherError("exists takes true or false")
        wanted = values[0]
        return KeyMatcher(
            key, path, line, comparison, getter, lambda v: (v is not None) is wanted, None, description
        )

    tests = [_single_test(comparison, value, cased, env) for value in values]
    scalar_test = _any_test(comparison, values, tests, cased)
    each = tuple(tests) if use_all and len(tests) > 1 else None
    if use_all and not tests:
        each = ()
    warning = None
    if comparison == "re":
        risky = [str(value) for value in values if nested_quantifier(str(value))]
        if risky:
            warning = (
                f"nested quantifiers: {risky[0]!r} repeats a group that itself repeats and can take "
                "exponential time on crafted text (rewrite it so that no repeat contains another)"
            )
    return KeyMatcher(key, path, line, comparison, getter, scalar_test, each, description, warning)


def _describe_values(raw: Any, in_list: bool) -> str:
    if in_list:
        names = raw if isinstance(raw, list) else [raw]
        return "list " + ", ".join(str(n) for n in names)
    if isinstance(raw, list):
        return "[" + ", ".join(str(v) for v in raw) + "]"
    if isinstance(raw, dict):
        return "inline calendar"
    if isinstance(raw, bool):
        return "true" if raw else "false"
    return str(raw)


def _values(raw: Any, comparison: str, in_list: bool, env: Environment) -> list[Any]:
    if in_list:
        names = raw if isinstance(raw, list) else [raw]
        if not names:
            raise MatcherError("in_list needs the name of a list")
        values: list[Any] = []
        for name in names:
            if not isinstance(name, str):
                raise MatcherError(f"in_list takes list names, not {name!r}")
            if name not in env.lists:
                known = ", ".join(sorted(env.lists)) or "none"
                raise MatcherError(f"undefined list {name!r} (defined: {known})")
            env.used_lists.add(name)
            for item in env.lists[name]:
                if item is None or isinstance(item, dict | list):
                    raise MatcherError(f"list {name!r} holds {item!r}; lists hold plain values")
                values.append(item)
        return values
    if comparison == "calendar" and isinstance(raw, dict):
        return [raw]
    values = list(raw) if isinstance(raw, list) else [raw]
    if not values:
        raise MatcherError("an empty list of values matches nothing")
    for value in values:
        if value is None:
            raise MatcherError("null is not a value to match; use |exists: false for a missing field")
        if isinstance(value, list) or (isinstance(value, dict) and comparison != "calendar"):
            raise MatcherError(f"{value!r} is not a plain value")
    return values


def _single_test(comparison: str, value: Any, cased: bool, env: Environment) -> Callable[[Any], bool]:
    """A test of one scalar field value against one rule value."""
    if comparison in ("eq", "neq"):
        wanted = _eq_forms(value, cased)
        return lambda v: canon(v, cased) in wanted
    if comparison in ("contains", "startswith", "endswith"):
        needle = _string_value(value, comparison, cased)
        if comparison == "contains":
            return lambda v: (s := canon(v, cased)) is not None and needle in s
        if comparison == "startswith":
            return lambda v: (s := canon(v, cased)) is not None and s.startswith(needle)
        return lambda v: (s := canon(v, cased)) is not None and s.endswith(needle)
    if comparison == "re":
        regex = _regex([value], cased)
        limit = MATCH_TEXT_LIMIT  # endpos: the regex sees the first 64 KB without copying them
        return lambda v: (s := canon(v, True)) is not None and regex.search(s, 0, limit) is not None
    if comparison in ("like", "glob"):
        wildcard = _wildcard(comparison, value, cased)
        return lambda v: (s := canon(v, True)) is not None and wildcard(s[:MATCH_TEXT_LIMIT])
    if comparison == "cidr":
        network = _network(value)
        return lambda v: _in_networks(v, (network,))
    if comparison in ("gt", "gte", "lt", "lte"):
        return _ordering_test(comparison, value, env)
    if comparison == "calendar":
        calendar = _calendar(value, env)

        def in_calendar(v: Any) -> bool:
            instant = to_instant(v)
            return instant is not None and calendar.contains(instant)

        return in_calendar
    if comparison == "domain":
        domain = _domain_value(value)
        return lambda v: isinstance(v, str) and _domain_matches(_domain_of(v).casefold(), (domain,))
    raise AssertionError(comparison)


def _any_test(
    comparison: str, values: list[Any], tests: list[Callable[[Any], bool]], cased: bool
) -> Callable[[Any], bool]:
    """One scalar matches at least one value: fused into a set lookup, a tuple test or one regex."""
    if not tests:
        return lambda v: False
    if comparison in ("eq", "neq"):
        wanted: set[str] = set()
        for value in values:
            wanted |= _eq_forms(value, cased)
        frozen = frozenset(wanted)
        return lambda v: canon(v, cased) in frozen
    if comparison in ("startswith", "endswith"):
        needles = tuple(_string_value(value, comparison, cased) for value in values)
        if comparison == "startswith":
            return lambda v: (s := canon(v, cased)) is not None and s.startswith(needles)
        return lambda v: (s := canon(v, cased)) is not None and s.endswith(needles)
    if comparison in ("like", "glob") and len(values) > 1:
        wildcards = tuple(_wildcard(comparison, value, cased) for value in values)

        def any_wildcard(v: Any) -> bool:
            s = canon(v, True)
            if s is None:
                return False
            s = s[:MATCH_TEXT_LIMIT]
            return any(wildcard(s) for wildcard in wildcards)

        return any_wildcard
    if comparison == "cidr":
        networks = tuple(_network(value) for value in values)
        return lambda v: _in_networks(v, networks)
    if comparison == "domain":
        domains = tuple(_domain_value(value) for value in values)
        return lambda v: isinstance(v, str) and _domain_matches(_domain_of(v).casefold(), domains)
    if len(tests) == 1:
        return tests[0]
    frozen_tests = tuple(tests)
    return lambda v: any(test(v) for test in frozen_tests)


def _eq_forms(value: Any, cased: bool) -> set[str]:
    if isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(
            tzinfo=ZoneInfo("UTC")
        )  # an unquoted YAML time without zone: UTC, as on the wire
    elif isinstance(value, date) and not isinstance(value, datetime):
        value = value.isoformat()  # an unquoted YAML date: compare as the text the rule shows
    form = canon(value, cased)
    if form is None:
        raise MatcherError(f"{value!r} is not a plain value")
    forms = {form}
    if isinstance(value, str) and _DATE_LIKE.match(value):
        instant = to_instant(value)
        if instant is not None:  # so that created_at: "2026-03-04 10:00:00Z" matches the datetime field
            forms.add(format_timestamp(instant))
    return forms


def _string_value(value: Any, comparison: str, cased: bool) -> str:
    form = canon(value, cased)
    if form is None or isinstance(value, bool):
        raise MatcherError(f"{comparison} takes text, not {value!r}")
    return form


def _pattern_text(comparison: str, value: Any) -> str:
    if not isinstance(value, str):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise MatcherError(f"{comparison} takes text, not {value!r}")
        value = str(value)
    return value


def _wildcard(comparison: str, value: Any, cased: bool) -> Wildcard:
    text = _pattern_text(comparison, value)
    if comparison == "like":
        return Wildcard(text, many="%", one="_", cased=cased)
    return Wildcard(text, many="*", one="?", cased=cased)


def _regex(values: list[Any], cased: bool) -> re.Pattern[str]:
    sources = [_pattern_text("re", value) for value in values]
    flags = 0 if cased else re.IGNORECASE
    pattern = sources[0] if len(sources) == 1 else "|".join(f"(?:{s})" for s in sources)
    try:
        return re.compile(pattern, flags)
    except re.error as exc:
        raise MatcherError(
            f"bad regular expression {values[0] if len(values) == 1 else pattern!r}: {exc}"
        ) from None


def _network(value: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if not isinstance(value, str):
        raise MatcherError(f"cidr takes a network like 10.0.0.0/8, not {value!r}")
    try:
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise MatcherError(f"{value!r} is not a network like 10.0.0.0/8 or 2001:db8::/32") from None


def _in_networks(value: Any, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    if not isinstance(value, str):
        return False
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return False
    return any(address in network for network in networks)


def _domain_value(value: Any) -> str:
    if not isinstance(value, str) or not value.strip().lstrip("@.").strip():
        raise MatcherError(f"domain takes a domain like corp.io, not {value!r}")
    return value.strip().lstrip("@.").rstrip(".").casefold()


def _domain_matches(domain: str, allowed: tuple[str, ...]) -> bool:
    return any(domain == a or domain.endswith("." + a) for a in allowed) if domain else False


def _ordering_test(comparison: str, value: Any, env: Environment) -> Callable[[Any], bool]:
    number = _number(value) if not isinstance(value, date | datetime) else None
    if number is not None:
        bound_n = number
        compare_n = _COMPARE[comparison]

        def numeric(v: Any) -> bool:
            got = _number(v)
            return got is not None and compare_n(got, bound_n)

        return numeric
    instant = parse_instant(value, env.default_tz)
    if instant is None:
        raise MatcherError(f"{comparison} takes a number or an ISO 8601 date/time, not {value!r}")
    bound_t = instant
    compare_t = _COMPARE[comparison]

    def temporal(v: Any) -> bool:
        got = to_instant(v)
        return got is not None and compare_t(got, bound_t)

    return temporal


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
}


def _calendar(value: Any, env: Environment) -> Calendar:
    if isinstance(value, str):
        if value not in env.calendars:
            known = ", ".join(sorted(env.calendars)) or "none"
            raise MatcherError(f"undefined calendar {value!r} (defined: {known})")
        return env.calendars[value]
    if isinstance(value, dict):
        try:
            return build_calendar("(inline)", value, str(env.default_tz))
        except CalendarError as exc:
            raise MatcherError(f"inline calendar: {exc}") from None
    raise MatcherError(f"calendar takes a calendar name or an inline calendar, not {value!r}")

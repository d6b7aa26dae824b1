# ruff: noqa: E501 - a table of exact error messages reads best one message per line
"""Every validation error: its message, its FILE:LINE and its rule id; never a traceback."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.engine import RuleLoadError, load_ruleset

H = "id: r\ntitle: T\nseverity: low\n"

CASES = {
    # the ones RULES.md names
    "unknown key": (
        H + "match: {sel: {type: Login}}\nseverty: high\n",
        [
            "r.yml:5: r: unknown key 'severty' (expected id, title, description, severity, tags, enabled, match, "
            "threshold, new_value, throttle, exceptions, alert, tests, requires_lists, scope)"
        ],
    ),
    "unknown modifier": (
        H + "match:\n  sel:\n    type|contians: Login\n",
        [
            "r.yml:6: r: selection 'sel', key 'type|contians': unknown modifier 'contians' (known: contains, "
            "startswith, endswith, like, glob, re, cidr, exists, neq, gt, gte, lt, lte, calendar, domain, cased, "
            "all, in_list)"
        ],
    ),
    "bad regex": (
        H + 'match:\n  sel:\n    msg|re: "([a-z"\n',
        [
            "r.yml:6: r: selection 'sel', key 'msg|re': bad regular expression '([a-z': unterminated character "
            "set at position 1"
        ],
    ),
    "bad cidr": (
        H + "match:\n  sel:\n    data.ip|cidr: 10.0.0.0/33\n",
        [
            "r.yml:6: r: selection 'sel', key 'data.ip|cidr': '10.0.0.0/33' is not a network like 10.0.0.0/8 "
            "or 2001:db8::/32"
        ],
    ),
    "undefined list": (
        "lists:\n  known: [a]\n---\n" + H + "match:\n  sel:\n    type|in_list: destructive\n",
        ["r.yml:9: r: selection 'sel', key 'type|in_list': undefined list 'destructive' (defined: known)"],
    ),
    "undefined calendar": (
        H + "match:\n  sel:\n    created_at|calendar: office\n",
        [
            "r.yml:6: r: selection 'sel', key 'created_at|calendar': undefined calendar 'office' (defined: none)"
        ],
    ),
    "unused selection": (
        H + "match:\n  a: {type: Login}\n  b: {type: Logout}\n  condition: a\n",
        ["r.yml:6: r: selection 'b' is not used by the condition"],
    ),
    "missing selection": (
        H + "match:\n  a: {type: Login}\n  condition: a and b\n",
        ["r.yml:6: r: the condition names selection 'b', which is not defined (column 7)"],
    ),
    "pattern matching nothing": (
        H + "match:\n  a: {type: Login}\n  condition: a or 1 of sel_*\n",
        ["r.yml:6: r: '1 of sel_*' matches no selection (column 6)"],
    ),
    "duplicate id": (
        H + "match: {a: {type: Login}}\n---\n" + H + "match: {a: {type: Login}}\n",
        ["r.yml:6: r: duplicate id (first defined at r.yml:1)"],
    ),
    "bad duration": (
        H
        + "match: {a: {type: Login}}\nthreshold:\n  group_by: [user.email]\n  window: 10 minutes\n  count: 5\n",
        ["r.yml:7: r: threshold window: '10 minutes' is not a duration like 30s, 10m, 1h or 7d"],
    ),
    "duration without unit": (
        H + "match: {a: {type: Login}}\nnew_value:\n  fields: [user.email]\n  lookback: 90\n",
        ["r.yml:7: r: new_value lookback: a duration needs a unit: 90s, 90m, 90h or 90d"],
    ),
    "duration too long for a date": (
        H
        + "match: {a: {type: Login}}\nthreshold:\n  group_by: [user.email]\n  window: 99999999999d\n  count: 5\n",
        ["r.yml:7: r: threshold window: '99999999999d' is too long (at most 999999999d)"],
    ),
    "throttle too long for a date": (
        H + "match: {a: {type: Login}}\nthrottle: {key: [user.email], window: 99999999999999999999w}\n",
        ["r.yml:5: r: throttle window: '99999999999999999999w' is too long (at most 999999999d)"],
    ),
    "bad severity": (
        "id: r\ntitle: T\nseverity: urgent\nmatch: {a: {type: Login}}\n",
        ["r.yml:3: r: severity 'urgent' is not one of info, low, medium, high, critical"],
    ),
    "template failing on the rule's tests": (
        H + 'match: {a: {type: Login}}\nalert:\n  title: "Login by {{ event.usr.email }}"\n'
        "tests:\n  - name: one login\n    event: {type: Login, user: {id: 1, email: a@corp.io}}\n    expect: alert\n",
        [
            "r.yml:6: r: alert title: template error: 'dict object' has no attribute 'usr' (test 'one login', event 1)"
        ],
    ),
    "template on a threshold's group": (
        H + "match: {a: {type: Login}}\nthreshold: {group_by: [user.email], window: 1m, count: 2}\n"
        "alert:\n  text: \"{{ group['user.id'] }}\"\n"
        "tests:\n  - events: [{type: Login, user: {id: 1, email: a@corp.io}}]\n    expect: no_alert\n",
        [
            "r.yml:7: r: alert text: template error: 'dict object' has no attribute 'user.id' (test 'test 1', event 1)"
        ],
    ),
    "template syntax": (
        H + 'match: {a: {type: Login}}\nalert:\n  title: "{{ event.type "\n',
        [
            "r.yml:6: r: alert title: template syntax error: unexpected end of template, expected 'end of print "
            "statement'. (template line 1)"
        ],
    ),
    "template reaching for a dunder": (
        H + 'match: {a: {type: Login}}\nalert:\n  text: "{{ event.__class__ }}"\n',
        ["r.yml:6: r: alert text: access to '__class__' is refused by the sandbox"],
    ),
    "template reaching for a dunder by item": (
        H + "match: {a: {type: Login}}\nalert:\n  text: \"{{ event['__class__'] }}\"\n",
        ["r.yml:6: r: alert text: access to '__class__' is refused by the sandbox"],
    ),
    "template mutating its context (SecurityError)": (
        H + 'match: {a: {type: Login}}\nalert:\n  title: "{{ events.append(1) }}"\n'
        "tests:\n  - {event: {type: Login}, expect: alert}\n",
        [
            "r.yml:6: r: alert title: refused by the sandbox: access to attribute 'append' of 'list' object is "
            "unsafe. (test 'test 1', event 1)"
        ],
    ),
    "condition syntax": (
        H + "match:\n  a: {type: Login}\n  condition: a and (\n",
        [
            "r.yml:6: r: condition: expected a selection name, 'not', '1 of', 'all of' or '(', found the end at "
            "column 8"
        ],
    ),
    # structure
    "missing keys": (
        "id: r\n",
        [
            "r.yml:1: r: required key 'title' is missing",
            "r.yml:1: r: required key 'severity' is missing",
            "r.yml:1: r: required key 'match' is missing",
        ],
    ),
    "bad id": (
        "id: R!\ntitle: T\nseverity: low\nmatch: {a: {type: Login}}\n",
        ["r.yml:1: -: id 'R!' must match [a-z0-9._-]+"],
    ),
    "document without id": (
        "title: T\nseverity: low\n",
        ["r.yml:1: -: a document must be a rule (with id), or a lists: or calendars: document"],
    ),
    "document that is not a mapping": (
        "just text\n",
        ["r.yml:1: -: a document must be a rule (a mapping with id) or a lists:/calendars: mapping"],
    ),
    "condition required": (
        H + "match:\n  a: {type: Login}\n  b: {type: Logout}\n",
        ["r.yml:4: r: condition is required when match has more than one selection"],
    ),
    "empty selection": (H + "match:\n  a: {}\n", ["r.yml:5: r: selection 'a' is empty"]),
    "match not a mapping": (
        H + "match: [a, b]\n",
        ["r.yml:4: r: match must map selection names to selections"],
    ),
    "match without selection": (H + "match: {condition: a}\n", ["r.yml:4: r: match has no selection"]),
    "keyword as selection name": (
        H + "match:\n  not: {type: Login}\n",
        ["r.yml:5: r: 'not' cannot name a selection (letters, digits, _ . -; not a keyword)"],
    ),
    "unknown field": (
        H + "match:\n  a: {usr.email: a@corp.io}\n",
        [
            "r.yml:5: r: selection 'a', key 'usr.email': unknown field 'usr.email' (known: id, source, created_at, "
            "updated_at, type, msg, label, user.*, workspace.*, branch.*, obj.*, data.*)"
        ],
    ),
    "key given twice": (
        H + "match:\n  a: {type: Login}\n  a: {type: Logout}\n",
        ["r.yml:6: -: key 'a' given twice (first at line 5)"],
    ),
    # modifiers and values
    "two comparisons": (
        H + "match:\n  a: {msg|contains|endswith: x}\n",
        [
            "r.yml:5: r: selection 'a', key 'msg|contains|endswith': modifiers 'contains' and 'endswith' cannot be combined"
        ],
    ),
    "cased with cidr": (
        H + "match:\n  a: {data.ip|cidr|cased: 10.0.0.0/8}\n",
        ["r.yml:5: r: selection 'a', key 'data.ip|cidr|cased': 'cased' does not apply to 'cidr'"],
    ),
    "modifier twice": (
        H + "match:\n  a: {type|cased|cased: Login}\n",
        ["r.yml:5: r: selection 'a', key 'type|cased|cased': modifier 'cased' is given twice"],
    ),
    "null value": (
        H + "match:\n  a: {data.ip: null}\n",
        [
            "r.yml:5: r: selection 'a', key 'data.ip': null is not a value to match; use |exists: false for a missing field"
        ],
    ),
    "empty list of values": (
        H + "match:\n  a: {type: []}\n",
        ["r.yml:5: r: selection 'a', key 'type': an empty list of values matches nothing"],
    ),
    "exists not boolean": (
        H + "match:\n  a: {data.ip|exists: maybe}\n",
        ["r.yml:5: r: selection 'a', key 'data.ip|exists': exists takes true or false"],
    ),
    "gt not a number": (
        H + "match:\n  a: {data.n|gt: lots}\n",
        [
            "r.yml:5: r: selection 'a', key 'data.n|gt': gt takes a number or an ISO 8601 date/time, not 'lots'"
        ],
    ),
    "bad inline calendar": (
        H + "match:\n  a: {created_at|calendar: {days: someday}}\n",
        [
            "r.yml:5: r: selection 'a', key 'created_at|calendar': inline calendar: 'someday' is not a day "
            "(mon, tue, wed, thu, fri, sat, sun)"
        ],
    ),
    # stateful kinds
    "threshold and new_value": (
        H
        + "match: {a: {type: Login}}\nthreshold: {window: 1m, count: 2}\nnew_value: {fields: [user.email]}\n",
        ["r.yml:6: r: a rule is either a threshold or a new_value rule, not both"],
    ),
    "threshold count": (
        H + "match: {a: {type: Login}}\nthreshold:\n  window: 1m\n  count: 0\n",
        ["r.yml:7: r: threshold count must be a whole number of at least 1"],
    ),
    "threshold unknown key": (
        H + "match: {a: {type: Login}}\nthreshold:\n  window: 1m\n  count: 2\n  groupby: [user.email]\n",
        ["r.yml:8: r: unknown key 'groupby' in threshold (expected group_by, window, count, distinct)"],
    ),
    "throttle zero": (
        H + "match: {a: {type: Login}}\nthrottle:\n  window: 0s\n",
        ["r.yml:6: r: throttle window must be longer than zero"],
    ),
    "new_value field": (
        H + "match: {a: {type: Login}}\nnew_value:\n  fields: [user.mail]\n",
        ["r.yml:6: r: new_value fields: unknown field 'user.mail' (user.id, user.email are known)"],
    ),
    "exception shape": (
        H + "match: {a: {type: Login}}\nexceptions:\n  - name: ci\n    fields: [user.email, branch.label]\n"
        "    values:\n      - [ci@corp.io]\n",
        [
            "r.yml:9: r: exception 'ci': each entry of values needs 2 plain value(s), one per field "
            "(user.email, branch.label)"
        ],
    ),
    "requires an undefined list": (
        H + "match: {a: {type: Login}}\nrequires_lists: [nope]\n",
        ["r.yml:5: r: requires_lists: undefined list 'nope'"],
    ),
    "alert unknown key": (
        H + "match: {a: {type: Login}}\nalert:\n  titel: x\n",
        ["r.yml:6: r: unknown key 'titel' in alert (expected title, text, fields)"],
    ),
    "tags": (H + "match: {a: {type: Login}}\ntags: auth\n", ["r.yml:5: r: tags must be a list of text"]),
    "enabled": (
        H + "match: {a: {type: Login}}\nenabled: sometimes\n",
        ["r.yml:5: r: enabled must be true or false"],
    ),
    # lists and calendars documents
    "list defined twice": (
        "lists:\n  a: [x]\n---\nlists:\n  a: [y]\n",
        ["r.yml:5: -: list 'a' is defined twice (first at r.yml:2)"],
    ),
    "list of objects": (
        "lists:\n  a: [x, {y: 1}]\n",
        ["r.yml:2: -: list 'a' must be a list of plain values"],
    ),
    "lists document with other keys": (
        "lists:\n  a: [x]\nrules: []\n",
        ["r.yml:3: -: unknown key 'rules' in a lists/calendars document"],
    ),
    "bad calendar": (
        "calendars:\n  office:\n    timezone: UTC\n    hours: 8-19\n",
        ["r.yml:4: -: calendar 'office': '8-19' is not an hours range like \"08:00-19:00\""],
    ),
    "calendar with a bad zone": (
        "calendars:\n  office: {timezone: Europe/Paris-ish}\n",
        ["r.yml:2: -: calendar 'office': 'Europe/Paris-ish' is not an IANA time zone such as Europe/Berlin"],
    ),
    # tests inside rules
    "test cases": (
        H
        + "match: {a: {type: Login}}\ntests:\n  - name: one\n    event: {type: Login}\n  - name: two\n    events: []\n"
        "    expect: alert\n  - name: three\n    event: {type: Login}\n    expect: maybe\n  - name: four\n"
        "    event: {type: Login}\n    expect: no_alert\n    extra: 1\n",
        [
            "r.yml:6: r: test 'one': expect is required (alert, no_alert, or {alerts: N, titles: [...]})",
            "r.yml:9: r: test 'two': events must be a non-empty list",
            "r.yml:13: r: test 'three': expect must be alert, no_alert, or {alerts: N, titles: [...]}",
            "r.yml:17: r: test 'four': unknown key 'extra' (expected name, event, events, expect, state, lists, calendars)",
        ],
    ),
    "test event time": (
        H
        + "match: {a: {type: Login}}\ntests:\n  - events:\n      - {type: Login, created_at: yesterday}\n    expect: alert\n",
        ["r.yml:7: r: test 'test 1': event 1: unreadable timestamp 'yesterday'"],
    ),
    "test state on a rule without new_value": (
        H
        + "match: {a: {type: Login}}\ntests:\n  - event: {type: Login}\n    state: {seen: []}\n    expect: alert\n",
        ["r.yml:7: r: test 'test 1': state seeds new_value history, and this rule has no new_value"],
    ),
    "test repeat": (
        H
        + "match: {a: {type: Login}}\ntests:\n  - events:\n      - {repeat: 0, event: {type: Login}}\n    expect: alert\n",
        ["r.yml:7: r: test 'test 1': event 1: repeat must be a whole number from 1 to 100000"],
    ),
    "test titles count": (
        H
        + "match: {a: {type: Login}}\ntests:\n  - event: {type: Login}\n    expect:\n      alerts: 1\n      titles: [a, b]\n",
        ["r.yml:9: r: test 'test 1': titles lists 2 entries for 1 alerts"],
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_validation_error(load_errors, name: str) -> None:
    text, expected = CASES[name]
    assert load_errors(text) == expected


def test_yaml_syntax_errors_keep_their_line(load_errors) -> None:
    # libyaml and the pure-Python parser word it differently; the line and the context are the same
    [error] = load_errors(H + "match: {a: {type: Login}\n")
    assert error.startswith("r.yml:5: -: not valid YAML: while parsing a flow mapping: ")
    [error] = load_errors(H + "match:\n  a: {type: Login}\n   b: x\n")
    assert error.startswith("r.yml:6: -: not valid YAML: ")


def test_all_errors_are_reported_at_once(load_errors) -> None:
    errors = load_errors(
        """
        id: a
        title: A
        severity: loud
        match: {x: {type|nope: Login}}
        ---
        id: b
        title: B
        severity: low
        match: {x: {msg|re: "("}}
        """
    )
    assert [e.split(": ")[0] for e in errors] == ["r.yml:3", "r.yml:4", "r.yml:9"]


def test_errors_in_several_files_name_each_file(tmp_path: Path) -> None:
    (tmp_path / "a.yml").write_text(H + "match: {x: {type: Login}}\nbogus: 1\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.yaml").write_text(
        "id: b\ntitle: B\nseverity: low\nmatch: {x: {type: Login}}\n---\n" + H + "match: {x: {type: Login}}\n"
    )
    with pytest.raises(RuleLoadError) as caught:
        load_ruleset([tmp_path])
    assert caught.value.errors == [
        f"{tmp_path / 'a.yml'}:5: r: unknown key 'bogus' (expected id, title, description, severity, tags, enabled, "
        "match, threshold, new_value, throttle, exceptions, alert, tests, requires_lists, scope)",
        f"{tmp_path / 'sub' / 'b.yaml'}:6: r: duplicate id (first defined at {tmp_path / 'a.yml'}:1)",
    ]


def test_a_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuleLoadError) as caught:
        load_ruleset([tmp_path / "nope.yml"])
    assert caught.value.errors == [f"{tmp_path / 'nope.yml'}:0: -: no such rule file or folder"]


def test_config_overrides_are_validated(tmp_path: Path) -> None:
    (tmp_path / "r.yml").write_text(H + "match: {x: {type: Login}}\n")
    with pytest.raises(RuleLoadError) as caught:
        load_ruleset([tmp_path], calendars={"office": {"hours": "9-5"}}, lists={"bad": [{"a": 1}]})
    assert caught.value.errors == [
        "config:0: -: rules.lists.bad: must be a list of plain values",
        "config:0: -: rules.calendars.office: '9-5' is not an hours range like \"08:00-19:00\"",
    ]


def test_unknown_disabled_ids_are_warnings(tmp_path: Path) -> None:
    (tmp_path / "r.yml").write_text(H + "match: {x: {type: Login}}\n")
    ruleset = load_ruleset([tmp_path], disable=["r", "gone"])
    assert ruleset.rules == [] and [r.id for r in ruleset.all_rules] == ["r"]
    assert ruleset.warnings == ["config: rules.disable names 'gone', which no rule file defines"]


def test_recursive_aliases_and_alias_bombs_are_errors(load_errors) -> None:
    assert load_errors("a: &x [*x]\n") == ["r.yml:1: -: an alias refers to a node that contains it"]
    bomb = "lists:\n  a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"  {name}: &{name} [{', '.join([f'*{prev}'] * 10)}]\n"
        for prev, name in zip("abcde", "bcdef", strict=True)
    )
    [error] = load_errors(bomb)
    assert error.endswith("the document expands to more than 200000 values (aliases?)")


KEYS = st.sampled_from(
    [
        "id",
        "title",
        "severity",
        "match",
        "condition",
        "sel",
        "type",
        "type|in_list",
        "msg|re",
        "data.ip|cidr",
        "created_at|calendar",
        "threshold",
        "window",
        "count",
        "group_by",
        "distinct",
        "new_value",
        "fields",
        "throttle",
        "key",
        "alert",
        "text",
        "tests",
        "event",
        "events",
        "expect",
        "repeat",
        "lists",
        "calendars",
        "exceptions",
        "values",
        "hours",
        "days",
        "user.email|exists",
        "x|gt",
        "requires_lists",
        "state",
        "seen",
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 100),
    st.sampled_from(
        [
            "r",
            "Login",
            "high",
            "10m",
            "0s",
            "a and not b",
            "1 of sel*",
            "(",
            "{{ event.x }}",
            "{{ x.__class__ }}",
            "10.0.0.0/8",
            "[a-",
            "mon-fri",
            "22:00-06:00",
            "2026-03-04T10:00:00Z",
            "alert",
            "no_alert",
            "sel",
        ]
    ),
)
DOCS = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=5),
    max_leaves=25,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(docs=st.lists(DOCS, min_size=1, max_size=3))
def test_any_document_loads_or_fails_with_located_errors(tmp_path: Path, docs: list) -> None:
    """Whatever the YAML holds, loading either works or raises RuleLoadError with FILE:LINE messages."""
    path = tmp_path / "fuzz.yml"
    path.write_text(yaml.safe_dump_all(docs), encoding="utf-8")
    try:
        load_ruleset([path])
    except RuleLoadError as exc:
        assert exc.errors and all(re.match(rf"^{re.escape(str(path))}:\d+: \S+: .+", e) for e in exc.errors)

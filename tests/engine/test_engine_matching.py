"""Every modifier, list fields, missing fields, case handling, in_list and calendars in selections."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from monitor.engine import MemoryStateStore

BASE = """
lists:
  types: [Delete Table, Delete Record]
  nets: [10.0.0.0/8, "2001:db8::/32"]
  domains: [corp.io]
  empty: []
calendars:
  office: {timezone: UTC, days: mon-fri, hours: "08:00-19:00"}
---
id: t
title: T
severity: low
match:
  sel: %s
"""


def matcher(load_rules, selection: str):
    ruleset = load_rules(BASE % selection)
    rule = ruleset.rule("t")
    return rule.matches


@pytest.mark.parametrize(
    ("selection", "raw", "expected"),
    [
        # equality: case-insensitive by default, lists of values are ORed
        ("{type: delete table}", {"type": "Delete Table"}, True),
        ("{type: [Login, Delete Table]}", {"type": "Delete Table"}, True),
        ("{type: [Login, Logout]}", {"type": "Delete Table"}, False),
        ("{type|cased: delete table}", {"type": "Delete Table"}, False),
        ("{type|cased: Delete Table}", {"type": "Delete Table"}, True),
        ("{user.id: 42}", {"user": {"id": 42}}, True),
        ("{user.id: 42}", {"user": {"id": "42"}}, True),
        ("{user.id: '42'}", {"user": {"id": 42}}, True),
        ("{data.flag: true}", {"data": {"flag": True}}, True),
        ("{data.flag: true}", {"data": {"flag": False}}, False),
        ("{data.ratio: 0.5}", {"data": {"ratio": 0.5}}, True),
        # contains / startswith / endswith
        ("{msg|contains: LEGACY}", {"msg": "Deleted table legacy_orders"}, True),
        ("{msg|contains|cased: LEGACY}", {"msg": "Deleted table legacy_orders"}, False),
        ("{msg|startswith: deleted}", {"msg": "Deleted table x"}, True),
        ("{msg|startswith: table}", {"msg": "Deleted table x"}, False),
        ("{msg|endswith: [_orders, _users]}", {"msg": "Deleted table legacy_ORDERS"}, True),
        ("{msg|endswith|cased: [_orders]}", {"msg": "Deleted table legacy_ORDERS"}, False),
        # like: % any run, _ one character, anchored
        ("{msg|like: 'deleted % legacy_%'}", {"msg": "Deleted table legacy_orders"}, True),
        ("{msg|like: 'del_ted'}", {"msg": "Deleted"}, True),
        ("{msg|like: 'del_ted'}", {"msg": "Deleted table"}, False),
        ("{msg|like: '100\\%'}", {"msg": "100%"}, True),
        ("{msg|like: '100\\%'}", {"msg": "1000"}, False),
        ("{msg|like|cased: 'deleted%'}", {"msg": "Deleted"}, False),
        # glob: * and ?, anchored
        ("{type|glob: 'Delete *'}", {"type": "Delete Record"}, True),
        ("{type|glob: 'Delete *'}", {"type": "Undelete Record"}, False),
        ("{type|glob: 'Delete T?ble'}", {"type": "delete table"}, True),
        ("{type|glob|cased: 'delete *'}", {"type": "Delete Table"}, False),
        # re: searched, IGNORECASE unless cased
        ("{msg|re: 'legacy_\\w+'}", {"msg": "Deleted table LEGACY_orders"}, True),
        ("{msg|re|cased: 'legacy_\\w+'}", {"msg": "Deleted table LEGACY_orders"}, False),
        ("{msg|re: '^orders'}", {"msg": "legacy_orders"}, False),
        # cidr: IPv4 and IPv6; a non-address never matches
        ("{data.ip|cidr: 10.0.0.0/8}", {"data": {"ip": "10.2.3.4"}}, True),
        ("{data.ip|cidr: 10.0.0.0/8}", {"data": {"ip": "11.2.3.4"}}, False),
        ("{data.ip|cidr: '2001:db8::/32'}", {"data": {"ip": "2001:db8::1"}}, True),
        ("{data.ip|cidr: 10.0.0.0/8}", {"data": {"ip": "not an address"}}, False),
        ("{data.ip|cidr|in_list: nets}", {"data": {"ip": "2001:db8:1::9"}}, True),
        # exists
        ("{data.ip|exists: true}", {"data": {"ip": "1.2.3.4"}}, True),
        ("{data.ip|exists: true}", {"data": None}, False),
        ("{data.ip|exists: false}", {"data": {}}, True),
        ("{user.email|exists: false}", {"user": None}, True),
        ("{user.email|exists: false}", {"user": {"email": "a@corp.io"}}, False),
        # neq: present and equal to none of the values
        ("{type|neq: Login}", {"type": "Delete Table"}, True),
        ("{type|neq: [Login, delete table]}", {"type": "Delete Table"}, False),
        ("{data.kind|neq: x}", {"data": {}}, False),
        # gt / gte / lt / lte: numbers and numeric strings
        ("{data.rows|gt: 100}", {"data": {"rows": 101}}, True),
        ("{data.rows|gt: 100}", {"data": {"rows": 100}}, False),
        ("{data.rows|gte: 100}", {"data": {"rows": 100}}, True),
        ("{data.rows|lt: 100}", {"data": {"rows": "99.5"}}, True),
        ("{data.rows|lte: 100}", {"data": {"rows": 100.0}}, True),
        ("{data.rows|gt: 100}", {"data": {"rows": "many"}}, False),
        ("{data.rows|gt: 100}", {"data": {"rows": True}}, False),
        # in_list, alone or with another comparison; several lists
        ("{type|in_list: types}", {"type": "delete record"}, True),
        ("{type|in_list: types}", {"type": "Create Record"}, False),
        ("{type|in_list: [empty, types]}", {"type": "Delete Table"}, True),
        ("{type|in_list: empty}", {"type": "Delete Table"}, False),
        ("{msg|contains|in_list: domains}", {"msg": "user x@corp.io"}, True),
        # domain: exact domain or a subdomain, never a look-alike
        ("{data.email|domain: corp.io}", {"data": {"email": "a@corp.io"}}, True),
        ("{data.email|domain: corp.io}", {"data": {"email": "a@eu.CORP.io"}}, True),
        ("{data.email|domain: corp.io}", {"data": {"email": "a@evilcorp.io"}}, False),
        ("{data.email|domain|in_list: domains}", {"data": {"email": "a@corp.io.evil.example"}}, False),
        # all: every value must match
        ("{msg|contains|all: [legacy, orders]}", {"msg": "Deleted table legacy_orders"}, True),
        ("{msg|contains|all: [legacy, users]}", {"msg": "Deleted table legacy_orders"}, False),
        ("{label|all: [database, prod]}", {"label": ["prod", "database", "x"]}, True),
        ("{label|all: [database, prod]}", {"label": ["database"]}, False),
    ],
)
def test_modifier(load_rules, event, selection: str, raw: dict, expected: bool) -> None:
    raw.setdefault("type", "Something")
    event_type = raw.pop("type")
    assert matcher(load_rules, selection)(event(event_type, **raw)) is expected


def test_list_field_matches_on_any_element(load_rules, event) -> None:
    matches = matcher(load_rules, "{label: Database}")
    assert matches(event(label=["api", "database"]))
    assert not matches(event(label=["api"]))
    assert not matches(event(label=[]))
    assert matcher(load_rules, "{label|startswith: dat}")(event(label=[None, "database"]))
    # neq over a list field: none of its elements equals the value
    assert matcher(load_rules, "{label|neq: prod}")(event(label=["api", "database"]))
    assert not matcher(load_rules, "{label|neq: prod}")(event(label=["api", "prod"]))


@pytest.mark.parametrize(
    "selection",
    [
        "{user.email: a@corp.io}",
        "{user.email|neq: a@corp.io}",
        "{user.email|contains: corp}",
        "{user.email|re: '.*'}",
        "{user.email|like: '%'}",
        "{user.email|glob: '*'}",
        "{data.ip|cidr: 0.0.0.0/0}",
        "{data.rows|lt: 1000}",
        "{data.when|calendar: office}",
        "{user.email|in_list: domains}",
    ],
)
def test_a_missing_field_never_matches(load_rules, event, selection: str) -> None:
    matches = matcher(load_rules, selection)
    assert not matches(event(user=None, data=None))
    assert not matches(event())  # no user or data key at all
    assert not matches(event(user={"id": 1}, data={"other": 1}))


def test_datetimes_compare_against_iso_values(load_rules, event) -> None:
    after = matcher(load_rules, "{created_at|gte: '2026-03-04T10:00:00Z'}")
    assert after(event(at=datetime(2026, 3, 4, 10, 0, tzinfo=UTC)))
    assert not after(event(at=datetime(2026, 3, 4, 9, 59, 59, tzinfo=UTC)))
    before = matcher(load_rules, "{created_at|lt: '2026-03-04T11:00:00+01:00'}")
    assert not before(event(at=datetime(2026, 3, 4, 10, 0, tzinfo=UTC)))
    assert before(event(at=datetime(2026, 3, 4, 9, 59, tzinfo=UTC)))
    # a datetime inside the event data (any timestamp form Xano uses) compares too
    expires = matcher(load_rules, "{data.expires_at|lte: 2026-03-05}")
    assert expires(event(data={"expires_at": "2026-03-04 23:00:00+00"}))
    assert not expires(event(data={"expires_at": "2026-03-06 00:00:00+00"}))
    assert not expires(event(data={"expires_at": "soon"}))
    # equality with created_at compares the instant
    exactly = matcher(load_rules, "{created_at: '2026-03-04 11:00:00+01:00'}")
    assert exactly(event(at=datetime(2026, 3, 4, 10, 0, tzinfo=UTC)))


def test_a_date_without_zone_is_in_the_configured_zone(load_rules, event) -> None:
    ruleset = load_rules(BASE % "{created_at|gte: 2026-03-04}", default_timezone="Europe/Berlin")
    matches = ruleset.rule("t").matches
    assert matches(event(at=datetime(2026, 3, 3, 23, 0, tzinfo=UTC)))  # 00:00 in Berlin
    assert not matches(event(at=datetime(2026, 3, 3, 22, 59, tzinfo=UTC)))


def test_calendar_modifier_named_and_inline(load_rules, event) -> None:
    named = matcher(load_rules, "{created_at|calendar: office}")
    assert named(event(at=datetime(2026, 3, 4, 10, 0, tzinfo=UTC)))
    assert not named(event(at=datetime(2026, 3, 7, 10, 0, tzinfo=UTC)))  # Saturday
    inline = matcher(
        load_rules, "{created_at|calendar: {timezone: Asia/Tokyo, days: [sat], hours: '09:00-10:00'}}"
    )
    assert inline(event(at=datetime(2026, 3, 7, 0, 30, tzinfo=UTC)))  # 09:30 Saturday in Tokyo
    assert not inline(event(at=datetime(2026, 3, 7, 1, 30, tzinfo=UTC)))
    either = matcher(load_rules, "{created_at|calendar: [office, {days: sun}]}")
    assert either(event(at=datetime(2026, 3, 8, 3, 0, tzinfo=UTC)))


def test_selection_keys_are_anded_and_a_list_of_maps_is_ored(load_rules, event) -> None:
    anded = matcher(load_rules, "{type: Delete Table, user.email: a@corp.io}")
    assert anded(event("Delete Table", user={"email": "a@corp.io"}))
    assert not anded(event("Delete Table", user={"email": "b@corp.io"}))
    ored = matcher(load_rules, "[{type: Delete Table}, {user.email: a@corp.io}]")
    assert ored(event("Login", user={"email": "a@corp.io"}))
    assert ored(event("Delete Table", user={"email": "b@corp.io"}))
    assert not ored(event("Login", user={"email": "b@corp.io"}))


def test_exceptions_suppress_known_good_activity(load_rules, event) -> None:
    ruleset = load_rules(
        """
        id: t
        title: T
        severity: low
        match:
          sel: {type: Delete Table}
        exceptions:
          - {name: ci-on-staging, fields: [user.email, branch.label], values: [[ci@corp.io, staging]]}
        """
    )
    state = MemoryStateStore()
    ci = {"user": {"email": "CI@corp.io"}}
    assert ruleset.evaluate(event("Delete Table", branch={"label": "staging"}, **ci), state) == []
    assert len(ruleset.evaluate(event("Delete Table", branch={"label": "main"}, **ci), state)) == 1
    assert len(ruleset.evaluate(event("Delete Table", user={"email": "a@corp.io"}), state)) == 1


def test_rules_are_indexed_by_the_type_their_condition_pins(load_rules, event) -> None:
    ruleset = load_rules(
        """
        lists:
          destructive: [Delete Table]
        ---
        id: pinned.eq
        title: a
        severity: low
        match: {sel: {type: Delete Table}}
        ---
        id: pinned.list
        title: b
        severity: low
        match: {a: {type|in_list: destructive}, b: {user.email: x@corp.io}, condition: a or (a and b)}
        ---
        id: pinned.glob
        title: c
        severity: low
        match: {sel: {type|glob: "Delete *"}}
        ---
        id: unpinned.not
        title: d
        severity: low
        match: {sel: {type: Delete Table}, condition: not sel}
        ---
        id: unpinned.or
        title: e
        severity: low
        match: {a: {type: Delete Table}, b: {user.email: x@corp.io}, condition: a or b}
        """
    )
    ids = lambda t: [rule.id for rule in ruleset.candidates(t)]  # noqa: E731
    assert ids("Delete Table") == ["pinned.eq", "pinned.list", "pinned.glob", "unpinned.not", "unpinned.or"]
    assert ids("delete table") == ["pinned.eq", "pinned.list", "pinned.glob", "unpinned.not", "unpinned.or"]
    assert ids("Delete Record") == ["pinned.glob", "unpinned.not", "unpinned.or"]
    assert ids("Run Query") == ["unpinned.not", "unpinned.or"]
    # The index never changes an answer: brute force over every rule agrees.
    for event_type in ("Delete Table", "Delete Record", "Run Query"):
        for user in ("x@corp.io", "y@corp.io"):
            sample = event(event_type, user={"email": user})
            fired = {a.rule_id for a in ruleset.evaluate(sample, MemoryStateStore())}
            brute = {rule.id for rule in ruleset.rules if rule.matches(sample)}
            assert fired == brute


ODD_VALUES = [{"a": 1}, [{"a": 1}], [1, "a", None], 3.5, True, "", "2026-03-04T10:00:00Z", [[1]]]


@pytest.mark.parametrize(
    ("selection", "expected"),
    [
        # A list matches when one of its scalars does ([1, "a", None] holds "a"); an object, a list of objects
        # or of lists is never text, a number or a time, so it matches nothing (and |neq matches it).
        ("{data.x: a}", [False, False, True, False, False, False, False, False]),
        ("{data.x|contains: a}", [False, False, True, False, False, False, False, False]),
        ("{data.x|re: a}", [False, False, True, False, False, False, False, False]),
        ("{data.x|like: 'a%'}", [False, False, True, False, False, False, False, False]),
        ("{data.x|neq: a}", [True, True, False, True, True, True, True, True]),
        ("{data.x|all: [a, b]}", [False, False, False, False, False, False, False, False]),
        ("{data.x|cidr: 10.0.0.0/8}", [False, False, False, False, False, False, False, False]),
        ("{data.x|domain: corp.io}", [False, False, False, False, False, False, False, False]),
        # numbers compare by value; a boolean is not a number
        ("{data.x|gt: 3}", [False, False, False, True, False, False, False, False]),
        # only the timestamp string is a time: a Wednesday, 10:00 UTC, inside office hours
        ("{data.x|calendar: office}", [False, False, False, False, False, False, True, False]),
    ],
)
def test_odd_field_types_never_raise(load_rules, event, selection: str, expected: list[bool]) -> None:
    """A matcher meets whatever Xano sends: objects, lists of objects, numbers where text was expected.
    It neither raises nor matches an object by its printed form."""
    matches = matcher(load_rules, selection)
    assert [matches(event(data={"x": value})) for value in ODD_VALUES] == expected


def test_unquoted_yaml_dates_and_times_compare_as_written(load_rules, event) -> None:
    on_day = matcher(load_rules, "{data.day: 2026-03-04}")
    assert on_day(event(data={"day": "2026-03-04"}))
    assert not on_day(event(data={"day": "2026-03-05"}))
    at_time = matcher(load_rules, "{created_at: 2026-03-04 10:00:00}")
    assert at_time(event(at=datetime(2026, 3, 4, 10, 0, tzinfo=UTC)))

"""Thresholds, new values and throttles: windows in event time, edges, restarts and replays."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monitor.engine import MemoryStateStore, load_ruleset
from monitor.events import canonical_json
from monitor.store import SqliteStateStore, Store

T0 = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)
US = timedelta(microseconds=1)

BURST = """
id: burst
title: Burst
severity: high
tags: [auth]
match:
  failed: {type: Login Failed}
threshold: {group_by: [user.email], window: 10m, count: 5}
alert:
  title: "{{ count }} for {{ group['user.email'] }}"
  text: "{{ events | map(attribute='id') | join(',') }}"
  fields: [user.email, data.ip]
"""

SPRAY = """
id: spray
title: Spray
severity: high
match:
  failed: {type: Login Failed}
threshold: {group_by: [data.ip], distinct: user.email, window: 10m, count: 3}
alert:
  title: "{{ count }} accounts from {{ group['data.ip'] }}: {{ values | join(' ') }}"
"""

FIRST = """
id: first
title: First
severity: medium
match:
  admin: {type: Create Token}
new_value: {fields: [user.email], lookback: 30d, learning: %s}
"""

THROTTLED = """
id: noisy
title: Noisy
severity: low
match:
  sel: {type: Delete Record}
throttle: {key: [user.email], window: 1h}
"""


def failed(event, email: str = "a@corp.io", at: datetime = T0, **raw):
    return event("Login Failed", at=at, user={"id": 1, "email": email}, **raw)


def run(ruleset, events, state=None):
    state = state if state is not None else MemoryStateStore()
    return [alert for e in events for alert in ruleset.evaluate(e, state)]


# --- threshold -------------------------------------------------------------------------------------------


def test_threshold_fires_on_the_nth_event_with_the_window_events(load_rules, event) -> None:
    ruleset = load_rules(BURST)
    events = [failed(event, at=T0 + timedelta(seconds=50 * i), data={"ip": "1.2.3.4"}) for i in range(5)]
    state = MemoryStateStore()
    assert run(ruleset, events[:4], state) == []
    [alert] = run(ruleset, events[4:], state)
    assert alert.rule_id == "burst" and alert.severity == "high" and alert.tags == ("auth",)
    assert alert.title == "5 for a@corp.io"
    assert alert.text == ",".join(str(e.id) for e in events)
    assert alert.event_ids == tuple(e.id for e in events)
    assert alert.event_time == events[-1].created_at
    assert alert.group_key == "user.email=a@corp.io"
    assert alert.fields == {"user.email": "a@corp.io", "data.ip": "1.2.3.4"}
    assert alert.context["user"] == "a@corp.io" and alert.context["type"] == "Login Failed"
    assert alert.source == "test"


@pytest.mark.parametrize(
    ("last_after", "fires"), [(timedelta(minutes=10) - US, True), (timedelta(minutes=10), False)]
)
def test_threshold_window_is_half_open(load_rules, event, last_after: timedelta, fires: bool) -> None:
    """Five events fall within 10m when the last is less than 10m after the first."""
    ruleset = load_rules(BURST)
    times = [
        T0,
        T0 + timedelta(minutes=1),
        T0 + timedelta(minutes=2),
        T0 + timedelta(minutes=3),
        T0 + last_after,
    ]
    alerts = run(ruleset, [failed(event, at=t) for t in times])
    assert len(alerts) == int(fires)


def test_threshold_slides_past_old_events(load_rules, event) -> None:
    ruleset = load_rules(BURST)
    times = [
        T0 + timedelta(minutes=m) for m in (0, 4, 8, 11, 12, 13)
    ]  # at 13m the window holds 4..13: 5 events
    alerts = run(ruleset, [failed(event, at=t) for t in times])
    assert len(alerts) == 1
    assert alerts[0].event_time == times[-1] and len(alerts[0].event_ids) == 5


def test_after_firing_the_group_starts_afresh(load_rules, event) -> None:
    ruleset = load_rules(BURST)
    events = [failed(event, at=T0 + timedelta(seconds=10 * i)) for i in range(12)]
    alerts = run(ruleset, events)
    assert [len(a.event_ids) for a in alerts] == [5, 5]
    assert alerts[0].event_ids == tuple(e.id for e in events[:5])
    assert alerts[1].event_ids == tuple(e.id for e in events[5:10])
    assert alerts[0].id != alerts[1].id


def test_groups_are_separate_and_case_insensitive(load_rules, event) -> None:
    ruleset = load_rules(BURST)
    emails = ["a@corp.io", "b@corp.io", "A@CORP.IO", "b@corp.io", "a@corp.io", "a@corp.io", "b@corp.io"]
    alerts = run(ruleset, [failed(event, e, T0 + timedelta(seconds=i)) for i, e in enumerate(emails)])
    assert alerts == []
    alerts = run(
        ruleset, [failed(event, e, T0 + timedelta(seconds=i)) for i, e in enumerate(emails + ["a@corp.io"])]
    )
    assert [a.group_key for a in alerts] == ["user.email=a@corp.io"]


def test_events_without_the_group_value_are_not_counted(load_rules, event) -> None:
    ruleset = load_rules(BURST)
    events = [event("Login Failed", at=T0 + timedelta(seconds=i), user=None) for i in range(10)]
    assert run(ruleset, events) == []


def test_distinct_counts_values_not_events(load_rules, event) -> None:
    ruleset = load_rules(SPRAY)
    ip = {"data": {"ip": "198.51.100.7"}}
    events = [
        failed(event, "a@corp.io", T0, **ip),
        failed(event, "a@corp.io", T0 + timedelta(seconds=1), **ip),
        failed(event, "A@corp.io", T0 + timedelta(seconds=2), **ip),
        failed(event, "b@corp.io", T0 + timedelta(seconds=3), **ip),
        failed(event, "b@corp.io", T0 + timedelta(seconds=4), data={"ip": "198.51.100.8"}),
        failed(event, "c@corp.io", T0 + timedelta(seconds=5), **ip),
    ]
    state = MemoryStateStore()
    assert run(ruleset, events[:5], state) == []
    [alert] = run(ruleset, events[5:], state)
    assert alert.title == "3 accounts from 198.51.100.7: A@corp.io b@corp.io c@corp.io"
    # one event per distinct value: the latest of each
    assert alert.event_ids == (events[2].id, events[3].id, events[5].id)
    assert alert.group_key == "data.ip=198.51.100.7"


def test_distinct_ignores_events_without_the_value(load_rules, event) -> None:
    ruleset = load_rules(SPRAY)
    events = [
        event("Login Failed", at=T0 + timedelta(seconds=i), user=None, data={"ip": "1.1.1.1"})
        for i in range(5)
    ]
    assert run(ruleset, events) == []


def test_threshold_state_stays_small(load_rules, event) -> None:
    ruleset = load_rules(BURST.replace("count: 5", "count: 1000"))
    state = MemoryStateStore()
    run(ruleset, [failed(event, at=T0 + timedelta(seconds=30 * i)) for i in range(500)], state)
    [window] = [v for (rule_id, _source, _key), v in state._data.items() if rule_id == "burst"]
    value = window.to_state()  # as it is stored
    assert len(value) == 20  # only the last 10 minutes of events (one every 30 s)
    assert len(canonical_json(value)) < 2000


def test_the_same_event_twice_counts_once(load_rules, event) -> None:
    ruleset = load_rules(BURST)
    events = [failed(event, at=T0 + timedelta(seconds=i)) for i in range(4)]
    state = MemoryStateStore()
    assert run(ruleset, events + events, state) == []


def test_restart_in_the_middle_of_a_window_continues_the_count(
    tmp_path: Path, store_target: str, event
) -> None:
    """Three events, the process stops; a fresh RuleSet over the same archive counts on from three."""
    rules = tmp_path / "burst.yml"
    rules.write_text(BURST, encoding="utf-8")
    db = store_target
    events = [failed(event, at=T0 + timedelta(minutes=i)) for i in range(5)]
    with Store.open(db) as store, store.transaction():
        assert run(load_ruleset([rules]), events[:3], SqliteStateStore(store)) == []
    with Store.open(db) as store, store.transaction():
        assert run(load_ruleset([rules]), events[3:4], SqliteStateStore(store)) == []
    with Store.open(db) as store, store.transaction():
        [alert] = run(load_ruleset([rules]), events[4:], SqliteStateStore(store))
    assert alert.event_ids == tuple(e.id for e in events)


def test_a_rolled_back_cycle_repeats_with_the_same_alert(store_target: str, load_rules, event) -> None:
    """A crash after evaluating undoes the state too; the retry raises the same alert, with the same id."""
    ruleset = load_rules(BURST)
    events = [failed(event, at=T0 + timedelta(minutes=i)) for i in range(6)]
    with Store.open(store_target) as store:
        with store.transaction():
            run(ruleset, events[:3], SqliteStateStore(store))
        with pytest.raises(RuntimeError), store.transaction():
            first = run(ruleset, events[3:], SqliteStateStore(store))
            raise RuntimeError("disk full")
        with store.transaction():
            retry = run(ruleset, events[3:], SqliteStateStore(store))
    assert len(first) == 1 and [a.id for a in retry] == [a.id for a in first]


def test_a_backlog_gives_the_same_alerts_as_live_polling(load_rules, event) -> None:
    ruleset = load_rules(BURST + "\n---\n" + SPRAY + "\n---\n" + THROTTLED)
    events = []
    for i in range(120):
        email = f"u{i % 4}@corp.io"
        kind = "Delete Record" if i % 7 == 0 else "Login Failed"
        events.append(
            event(
                kind,
                at=T0 + timedelta(seconds=37 * i),
                user={"id": i % 4, "email": email},
                data={"ip": f"10.0.0.{i % 3}"},
            )
        )
    backlog = run(ruleset, events)
    state = MemoryStateStore()
    live = []
    for start in range(0, len(events), 9):  # cycles of nine events each
        live += run(ruleset, events[start : start + 9], state)
    assert [a.id for a in live] == [a.id for a in backlog] and backlog


# --- new_value -------------------------------------------------------------------------------------------


def test_new_value_fires_once_per_value_within_the_lookback(load_rules, event) -> None:
    ruleset = load_rules(FIRST % "0s")
    token = lambda email, at: event("Create Token", at=at, user={"email": email})  # noqa: E731
    state = MemoryStateStore()
    assert len(run(ruleset, [token("a@corp.io", T0)], state)) == 1
    assert run(ruleset, [token("A@corp.io", T0 + timedelta(days=1))], state) == []
    assert len(run(ruleset, [token("b@corp.io", T0 + timedelta(days=1))], state)) == 1
    [alert] = run(ruleset, [token("c@corp.io", T0 + timedelta(days=2))], state)
    assert alert.group_key == "user.email=c@corp.io" and alert.event_ids == (alert.event_ids[0],)


@pytest.mark.parametrize(("gap", "fires"), [(timedelta(days=30) - US, False), (timedelta(days=30), True)])
def test_new_value_lookback_edge(load_rules, event, gap: timedelta, fires: bool) -> None:
    """Seen within the lookback means less than 30d ago; each sighting renews it."""
    ruleset = load_rules(FIRST % "0s")
    state = MemoryStateStore()
    run(ruleset, [event("Create Token", at=T0 - timedelta(days=20), user={"email": "a@corp.io"})], state)
    run(ruleset, [event("Create Token", at=T0, user={"email": "a@corp.io"})], state)
    alerts = run(ruleset, [event("Create Token", at=T0 + gap, user={"email": "a@corp.io"})], state)
    assert len(alerts) == int(fires)


def test_new_value_learning_records_without_alerting(load_rules, event) -> None:
    ruleset = load_rules(FIRST % "7d")
    token = lambda email, at: event("Create Token", at=at, user={"email": email})  # noqa: E731
    state = MemoryStateStore()
    # learning starts at the first event the rule matches, not at any event
    assert run(ruleset, [event("Login", at=T0 - timedelta(days=30))], state) == []
    assert run(ruleset, [token("a@corp.io", T0)], state) == []
    assert run(ruleset, [token("b@corp.io", T0 + timedelta(days=7) - US)], state) == []
    assert run(ruleset, [token("a@corp.io", T0 + timedelta(days=8))], state) == []  # learned
    assert len(run(ruleset, [token("c@corp.io", T0 + timedelta(days=7))], state)) == 1


def test_new_value_over_several_fields_and_missing_values(load_rules, event) -> None:
    ruleset = load_rules(FIRST.replace("[user.email]", "[user.email, data.ip]") % "0s")
    state = MemoryStateStore()

    def mk(ip, minutes):
        data = {"ip": ip} if ip else None
        return event(
            "Create Token", at=T0 + timedelta(minutes=minutes), user={"email": "a@corp.io"}, data=data
        )

    assert len(run(ruleset, [mk("1.1.1.1", 0)], state)) == 1
    assert len(run(ruleset, [mk("2.2.2.2", 1)], state)) == 1
    assert run(ruleset, [mk("1.1.1.1", 2)], state) == []
    assert run(ruleset, [mk(None, 3)], state) == []  # a missing field is not a value


# --- throttle --------------------------------------------------------------------------------------------


def test_throttle_lets_one_alert_through_per_window_and_counts_the_rest(load_rules, event) -> None:
    ruleset = load_rules(THROTTLED)

    def delete(email, minutes):
        return event("Delete Record", at=T0 + timedelta(minutes=minutes), user={"email": email})

    state = MemoryStateStore()
    alerts = run(ruleset, [delete("a@corp.io", m) for m in (0, 5, 10, 59)], state)
    alerts += run(ruleset, [delete("b@corp.io", 20)], state)  # another key: its own window
    alerts += run(
        ruleset, [delete("a@corp.io", 60), delete("a@corp.io", 61), delete("a@corp.io", 130)], state
    )
    assert [(a.context["user"], a.suppressed_count) for a in alerts] == [
        ("a@corp.io", 0),
        ("b@corp.io", 0),
        ("a@corp.io", 3),  # exactly one hour after the alert let through: a new window
        ("a@corp.io", 1),
    ]
    assert alerts[0].group_key == "user.email=a@corp.io"


def test_throttle_on_a_threshold_counts_suppressed_firings(load_rules, event) -> None:
    ruleset = load_rules(BURST + "throttle: {key: [user.email], window: 1h}\n")
    events = [failed(event, at=T0 + timedelta(seconds=20 * i)) for i in range(30)]
    events += [failed(event, at=T0 + timedelta(hours=2, seconds=i)) for i in range(5)]
    alerts = run(ruleset, events)
    assert [a.suppressed_count for a in alerts] == [0, 5]

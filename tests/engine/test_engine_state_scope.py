"""Rule state per source, its upgrade, its bounds: pruning, chunked flushing, windows linear in events."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from monitor.engine import MemoryStateStore, RuleSet, load_ruleset
from monitor.events import AuditEvent, normalize
from monitor.resources import bundled_rules_dir
from monitor.store import SqliteStateStore, Store
from monitor.store.schema import upgrade_sqlite

T0 = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)

BURST = """
id: burst
title: Burst
severity: high
match:
  failed: {type: Login Failed}
threshold: {group_by: [user.email], window: 10m, count: 5}
%s
"""

FIRST = """
id: first
title: First
severity: medium
match:
  admin: {type: Create Token}
new_value: {fields: [user.email], lookback: 30d}
%s
"""

NOISY = """
id: noisy
title: Noisy
severity: low
match:
  sel: {type: Delete Record}
throttle: {key: [user.email], window: 1h}
%s
"""


class Events:
    """Entries of one or more sources, ids counting up per source."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def __call__(
        self, source: str, kind: str, at: datetime, email: str = "a@corp.io", **raw: Any
    ) -> AuditEvent:
        self.ids[source] = self.ids.get(source, 0) + 1
        entry = {
            "id": self.ids[source],
            "created_at": at.isoformat(),
            "type": kind,
            "user": {"id": 1, "email": email},
            **raw,
        }
        return normalize(source, entry)


def run(ruleset: RuleSet, events: list[AuditEvent], state: Any) -> list[Any]:
    return [alert for event in events for alert in ruleset.evaluate(event, state)]


# --- 11.20: per source by default, all_sources on request -------------------------------------------------


@pytest.mark.parametrize("scope", ["", "scope: source"])
def test_a_threshold_counts_each_source_apart_by_default(load_rules, scope: str) -> None:
    ruleset = load_rules(BURST % scope)
    make = Events()
    events = [make("eu" if i % 2 else "us", "Login Failed", T0 + timedelta(seconds=i)) for i in range(8)]
    assert run(ruleset, events, MemoryStateStore()) == []
    more = [make("us", "Login Failed", T0 + timedelta(seconds=10 + i)) for i in range(1)]
    [alert] = run(ruleset, events + more, MemoryStateStore())
    assert alert.source == "us" and len(alert.event_ids) == 5


def test_a_threshold_with_scope_all_sources_correlates_across_them(load_rules) -> None:
    ruleset = load_rules(BURST % "scope: all_sources")
    make = Events()
    events = [make("eu" if i % 2 else "us", "Login Failed", T0 + timedelta(seconds=i)) for i in range(5)]
    [alert] = run(ruleset, events, MemoryStateStore())
    assert alert.source == "us"  # the source of the event that completed the window


def test_all_sources_tells_events_of_two_sources_with_the_same_id_and_time_apart(load_rules) -> None:
    """Ids are only unique within one instance: eu's #1 and us's #1 at the same instant are two events."""
    ruleset = load_rules(BURST % "scope: all_sources")
    make = Events()
    events = [
        make(source, "Login Failed", T0 + timedelta(seconds=i)) for i in range(3) for source in ("eu", "us")
    ]
    [alert] = run(ruleset, events, MemoryStateStore())
    assert alert.event_ids == (1, 1, 2, 2, 3)


def test_a_value_first_seen_on_one_source_is_new_on_another(load_rules) -> None:
    make = Events()
    events = [make("eu", "Create Token", T0), make("us", "Create Token", T0 + timedelta(hours=1))]
    per_source = run(load_rules(FIRST % ""), events, MemoryStateStore())
    assert [a.source for a in per_source] == ["eu", "us"]
    shared = run(load_rules(FIRST % "scope: all_sources"), events, MemoryStateStore())
    assert [a.source for a in shared] == ["eu"]


def test_a_throttle_holds_back_per_source(load_rules) -> None:
    make = Events()
    events = [make(source, "Delete Record", T0 + timedelta(minutes=i)) for i, source in enumerate("abab")]
    assert [a.source for a in run(load_rules(NOISY % ""), events, MemoryStateStore())] == ["a", "b"]
    assert [a.source for a in run(load_rules(NOISY % "scope: all_sources"), events, MemoryStateStore())] == [
        "a"
    ]


def test_scope_is_validated(load_errors) -> None:
    assert load_errors(BURST % "scope: everywhere") == [
        "r.yml:7: burst: scope 'everywhere' is not one of source, all_sources"
    ]


def test_per_source_state_survives_a_restart_in_the_archive(store_target: str, load_rules) -> None:
    ruleset = load_rules(BURST % "")
    make = Events()
    with Store.open(store_target) as store:
        for i in range(4):
            with store.transaction():
                events = [
                    make(s, "Login Failed", T0 + timedelta(minutes=i, seconds=n))
                    for n, s in enumerate(("eu", "us"))
                ]
                assert run(ruleset, events, SqliteStateStore(store)) == []
    with Store.open(store_target) as store, store.transaction():
        [alert] = run(
            ruleset, [make("eu", "Login Failed", T0 + timedelta(minutes=5))], SqliteStateStore(store)
        )
    assert alert.source == "eu" and alert.event_ids == (1, 2, 3, 4, 5)


def test_the_longest_window_a_rule_may_name_is_stored(store_target: str, load_rules) -> None:
    """999999999d passes `rules check`; its expiry is past what SQLite's integers hold: the key is kept."""
    ruleset = load_rules(
        BURST.replace("10m", "999999999d") % "" + "\n---\n" + FIRST.replace("30d", "999999999d") % ""
    )
    make = Events()
    with Store.open(store_target) as store:
        with store.transaction():
            run(
                ruleset,
                [make("prod", kind, T0) for kind in ("Login Failed", "Create Token")],
                SqliteStateStore(store),
            )
        assert store.state_get("burst", 'g:["a@corp.io"]', "prod") == [[_micros(T0), 1, None, "Login Failed"]]
        assert store.state_get("first", 'v:["a@corp.io"]', "prod") == _micros(T0)


# --- 11.20: the upgrade keeps the state written before it ------------------------------------------------


def _schema_5_archive(path: Path, sources: list[str], rows: list[tuple[str, str, str]]) -> None:
    """An archive as the previous release left it: schema 5, rule state shared by every source."""
    conn = sqlite3.connect(path, isolation_level=None)
    upgrade_sqlite(conn, "0005")
    for source in sources:
        conn.execute("INSERT INTO cursors (source, last_id) VALUES (?, 100)", (source,))
    conn.executemany("INSERT INTO rule_state (rule_id, key, value) VALUES (?, ?, ?)", rows)
    conn.close()


def _micros(at: datetime) -> int:
    return (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


@pytest.mark.parametrize("sources", [["prod"], ["prod", "staging"]])
def test_state_written_before_the_upgrade_keeps_working(tmp_path: Path, load_rules, sources) -> None:
    window = [[_micros(T0 + timedelta(minutes=i)), 90 + i, None, "Login Failed"] for i in range(4)]
    legacy = [
        ("burst", 'g:["a@corp.io"]', repr(window).replace("None", "null").replace("'", '"')),
        ("first", 'v:["a@corp.io"]', str(_micros(T0))),
        ("monitor.source_unreachable", "prod", '{"watching_since":"2026-03-04T10:00:00.000000Z"}'),
    ]
    _schema_5_archive(tmp_path / "a.db", sources, legacy)
    ruleset = load_rules(BURST % "" + "\n---\n" + FIRST % "")
    with Store.open(tmp_path / "a.db") as store:
        assert store.state_get("monitor.source_unreachable", "prod") == {
            "watching_since": "2026-03-04T10:00:00.000000Z"
        }
        for source in sources:
            with store.transaction():
                fifth = normalize(
                    source,
                    {
                        "id": 101,
                        "created_at": (T0 + timedelta(minutes=5)).isoformat(),
                        "type": "Login Failed",
                        "user": {"email": "a@corp.io"},
                    },
                )
                token = normalize(
                    source,
                    {
                        "id": 102,
                        "created_at": (T0 + timedelta(days=1)).isoformat(),
                        "type": "Create Token",
                        "user": {"email": "a@corp.io"},
                    },
                )
                alerts = run(ruleset, [fifth, token], SqliteStateStore(store))
            # the window of four carries on and fires on the fifth; the user is known on every source
            assert [(a.rule_id, a.event_ids) for a in alerts] == [("burst", (90, 91, 92, 93, 101))]


# --- 16.5: state is bounded by the keys alive in the window ----------------------------------------------


def _spray(count: int, start: datetime = T0) -> Iterator[AuditEvent]:
    """Failed logins, one a second, each for a new email from a new address (as a scripted attack sends)."""
    for i in range(count):
        yield normalize(
            "prod",
            {
                "id": i + 1,
                "created_at": (start + timedelta(seconds=i)).isoformat(),
                "type": "Login Failed",
                "user": {"id": None, "email": f"victim{i}@corp.io"},
                "data": {"ip": f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"},
            },
        )


def _engine_rows(store: Store) -> int:
    return store.conn.execute("SELECT count(*) FROM rule_state WHERE rule_id LIKE 'xano.%'").fetchone()[0]


# On PostgreSQL each key read is a round trip (30 s for this test): once there, with the small cache.
@pytest.mark.parametrize(
    ("store_target", "cache_limit"),
    [("sqlite", None), ("sqlite", 500), ("postgresql", 500)],
    indirect=["store_target"],
)
def test_state_rows_stay_bounded_by_the_window(store_target: str, cache_limit: int | None) -> None:
    """20,000 distinct emails and addresses at one a second: the bundled pack's ten-minute windows hold
    600 of each; the rows of every expired key are gone in the same transaction."""
    ruleset = load_ruleset([bundled_rules_dir()])
    events = _spray(20_000)
    kwargs = {} if cache_limit is None else {"cache_limit": cache_limit}
    with Store.open(store_target) as store:
        for _cycle in range(4):
            with store.transaction():
                state = SqliteStateStore(store, **kwargs)
                for event in (next(events) for _ in range(5_000)):
                    ruleset.evaluate(event, state)
                    if cache_limit is not None:
                        assert state.cache_size <= cache_limit
            # two rules keep a row per key (burst by email, spray by address), each alive for 10 minutes
            assert _engine_rows(store) <= 2 * 600


def test_a_backtest_holds_only_the_keys_alive_in_the_window() -> None:
    """`rules backtest` runs over a whole archive with the in-memory store: it drops expired keys too."""
    ruleset = load_ruleset([bundled_rules_dir()])
    state = MemoryStateStore(prune_above=2_000)
    for event in _spray(20_000):
        ruleset.evaluate(event, state)
        assert len(state) <= 2_000


def test_a_backlog_through_a_small_cache_gives_the_same_alerts(store_target: str, load_rules) -> None:
    ruleset = load_rules(BURST % "")
    make = Events()
    events = [
        make("prod", "Login Failed", T0 + timedelta(seconds=7 * i), email=f"u{i % 9}@corp.io")
        for i in range(900)
    ]
    expected = [a.id for a in run(ruleset, events, MemoryStateStore())]
    with Store.open(store_target) as store, store.transaction():
        got = [a.id for a in run(ruleset, events, SqliteStateStore(store, cache_limit=4))]
    assert got == expected and len(expected) > 100


# --- 16.10: a threshold window costs O(events) -----------------------------------------------------------


def _engine_lines(ruleset: RuleSet, events: list[AuditEvent], state: Any) -> int:
    """Lines of monitor.engine executed (a step counter that needs no clock)."""
    steps = 0

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal steps
        if event == "line":
            steps += 1
        return tracer

    def calls(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "call" and frame.f_code.co_filename.endswith(("ruleset.py", "state.py")):
            return tracer
        return None

    sys.settrace(calls)
    try:
        run(ruleset, events, state)
    finally:
        sys.settrace(None)
    return steps


def test_a_large_threshold_costs_steps_linear_in_events(load_rules) -> None:
    """count: N over N events: the old window copied, scanned and sorted itself on every event (N^2)."""
    costs = {}
    for n in (250, 2_000):
        ruleset = load_rules(BURST.replace("count: 5", f"count: {n + 1}") % "")
        make = Events()
        events = [make("prod", "Login Failed", T0 + timedelta(milliseconds=i)) for i in range(n)]
        costs[n] = _engine_lines(ruleset, events, MemoryStateStore())
    assert costs[2_000] < 8 * costs[250] * 1.5, costs  # 8x the events: about 8x the work, not 64x


def test_a_large_threshold_writes_its_window_once_per_transaction(tmp_path: Path, load_rules) -> None:
    ruleset = load_rules(BURST.replace("count: 5", "count: 5000") % "")
    make = Events()
    events = [make("prod", "Login Failed", T0 + timedelta(milliseconds=i)) for i in range(3_000)]
    written: list[str] = []
    with Store.open(tmp_path / "a.db") as store:
        store.conn.set_trace_callback(lambda sql: written.append(sql) if "rule_state" in sql else None)
        with store.transaction():
            assert run(ruleset, events, SqliteStateStore(store)) == []
        store.conn.set_trace_callback(None)
        assert len(store.state_get("burst", 'g:["a@corp.io"]', "prod")) == 3_000
    writes = [sql for sql in written if sql.lstrip().upper().startswith(("INSERT", "UPDATE"))]
    assert len(writes) <= 2, len(writes)

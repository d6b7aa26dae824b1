"""A hostile or broken upstream, one poll cycle at a time, over real HTTP on 127.0.0.1 (the scripted page
server of security_support): single entries that used to stop the archive for good (poison pills), cycle
failures that went unrecorded, and entries that froze the cursor or shadowed real events. The rule is the
same throughout: a bad entry lands in ``rejected`` with its reason and the rest are archived; a failed cycle
is recorded on the cursor and shown by ``status``.
"""

from __future__ import annotations

import json
import os
import resource
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from monitor.config import Config
from monitor.daemon import Monitor
from monitor.poller import Poller
from monitor.status import status_data
from monitor.store import Store
from monitor.xano import RetryPolicy, XanoClient
from tests.conftest import FakeClock
from tests.security.security_support import PageServer

NOW = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)


@pytest.fixture
def server() -> Iterator[PageServer]:
    page_server = PageServer()
    yield page_server
    page_server.close()


def entry(event_id: Any, at: datetime, event_type: str = "Update Record", **extra: Any) -> dict[str, Any]:
    return {
        "id": event_id,
        "created_at": at.isoformat().replace("+00:00", "Z"),
        "type": event_type,
        "msg": f"event {event_id}",
        "user": {"id": 1, "email": "ana@corp.io"},
        **extra,
    }


def newest_first(entries: list[dict[str, Any]], per_page: int) -> list[list[Any]]:
    ordered = sorted(entries, key=lambda item: -int(item["id"]))
    return [ordered[start : start + per_page] for start in range(0, len(ordered), per_page)]


def config_for(server: PageServer, tmp_path: Path, **source: Any) -> Config:
    return Config.model_validate(
        {
            "timezone": "Europe/Berlin",
            "state": {"path": str(tmp_path / "a.db")},
            "sources": [
                {"name": "prod", "base_url": server.url, "token": "t0ken-xyz", "per_page": 50, **source}
            ],
            "alerts": {"console": False},
            "server": {"listen": ""},
        }
    )


class Cycle:
    """A Poller with a real client against the page server; no rules unless a test asks for the daemon."""

    def __init__(self, server: PageServer, config: Config, clock: FakeClock) -> None:
        self.server, self.config, self.clock = server, config, clock
        self.store = Store.open(config.state.path)
        self.poller = Poller(self.store, config, None, clock=clock, client_factory=self.client)

    def client(self, source: Any) -> XanoClient:
        return XanoClient(
            source.base_url,
            source.token.get_secret_value(),
            source_name=source.name,
            per_page=source.per_page,
            timeout=10,
            retry=RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.01),
            sleep=lambda seconds: None,
        )

    def poll(self) -> Any:
        return self.poller.poll(self.config.sources[0])

    def archived(self) -> dict[int, dict[str, Any]]:
        rows = self.store.conn.execute("SELECT event_id, raw FROM events ORDER BY event_id")
        return {row[0]: json.loads(row[1]) for row in rows}

    def rejected(self) -> list[tuple[str, str]]:
        return [(row[0], row[1]) for row in self.store.conn.execute("SELECT reason, raw FROM rejected")]

    def alerts(self) -> list[str]:
        return [row[0] for row in self.store.conn.execute("SELECT rule_id FROM alerts ORDER BY rule_id")]


@pytest.fixture
def cycle(server: PageServer, tmp_path: Path) -> Iterator[Cycle]:
    made = Cycle(server, config_for(server, tmp_path), FakeClock(NOW))
    yield made
    made.store.close()


# --- poison pills: one entry must never stop the archive ---------------------------------------------------


def test_an_entry_nested_a_thousand_levels_deep_is_rejected_and_the_rest_archived(cycle: Cycle) -> None:
    entries = [entry(100 + n, NOW - timedelta(minutes=n)) for n in range(10)]
    entries[4]["data"] = "DEEP"  # id 104: its data nests 1,000 levels deep in the body
    body = json.dumps({"items": entries[::-1], "curPage": 1, "nextPage": None})
    deep = '{"a":' * 999 + "{}" + "}" * 999
    cycle.server.pages = [entries]
    cycle.server.bodies[1] = body.replace('"DEEP"', deep).encode()

    result = cycle.poll()

    assert result.ok, result.error
    assert sorted(cycle.archived()) == [100, 101, 102, 103, 105, 106, 107, 108, 109]
    ((reason, raw),) = cycle.rejected()
    assert "deep" in reason and '"id": 104' in json.loads(raw)
    assert sorted(cycle.archived()) == [100, 101, 102, 103, 105, 106, 107, 108, 109]
    assert cycle.store.verify().ok
    assert cycle.poll().ok  # and the next cycle is not stuck on it either


def test_an_entry_at_the_end_of_the_calendar_is_rejected_while_its_rules_run(
    server: PageServer, tmp_path: Path
) -> None:
    """With the bundled rules and timezone Europe/Berlin, 9999-12-31T23:30Z is past year 9999 locally."""
    entries = [entry(200 + n, NOW - timedelta(minutes=n), "Update Record") for n in range(11)]
    entries.append(entry(300, datetime(9999, 12, 31, 23, 30, tzinfo=UTC), "Delete Table"))
    server.pages = newest_first(entries, 50)
    monitor = Monitor(config_for(server, tmp_path, plan_retention="60d"))
    try:
        outcome = monitor.run_once()
        (poll,) = outcome.polls
        assert poll.ok, poll.error
        archived = [row[0] for row in monitor.store.conn.execute("SELECT event_id FROM events")]
        rejected = monitor.store.conn.execute("SELECT reason, raw FROM rejected").fetchall()
    finally:
        monitor.close()
    assert sorted(archived) == list(range(200, 211))
    assert len(rejected) == 1 and json.loads(rejected[0][1])["id"] == 300
    assert "rules could not be evaluated" in rejected[0][0] and "Overflow" in rejected[0][0]


def test_a_token_that_cannot_be_sent_fails_the_cycle_as_a_configuration_error_shown_in_status(
    server: PageServer, tmp_path: Path
) -> None:
    config = config_for(server, tmp_path, token="t\u00f6ken-\u00e9")
    monitor = Monitor(config)
    try:
        (poll,) = monitor.run_once().polls
        status = status_data(monitor.store, config, NOW)
    finally:
        monitor.close()
    assert not poll.ok and poll.error_kind == "config"
    assert "token" in (poll.error or "") and "t\u00f6ken" not in (poll.error or "")
    (source,) = status["sources"]
    assert source["last_error_kind"] == "config" and "printable ASCII" in source["last_error"]
    assert server.requests == 0


def test_running_out_of_file_descriptors_is_a_recorded_cycle_failure(cycle: Cycle) -> None:
    cycle.server.pages = newest_first([entry(1, NOW)], 50)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held: list[int] = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        try:
            while True:
                held.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            pass  # EMFILE: the process is out of descriptors, as in the report
        result = cycle.poll()
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert not result.ok and result.error
    assert "Too many open files" in result.error or "Errno 24" in result.error
    cursor = cycle.store.get_cursor("prod")
    assert cursor is not None and cursor.last_error == result.error and cursor.error_kind
    assert cycle.poll().ok and sorted(cycle.archived()) == [1]


# --- frozen cursors and shadowed events ---------------------------------------------------------------------


def test_an_entry_with_the_largest_id_dated_in_the_future_does_not_freeze_the_cursor(cycle: Cycle) -> None:
    old = [entry(n, NOW - timedelta(hours=2, minutes=n)) for n in range(1, 61)]
    forged = entry(2**63 - 1, NOW + timedelta(days=365))
    cycle.server.pages = newest_first([*old, forged], 50)
    assert cycle.poll().ok

    cycle.clock.advance(timedelta(minutes=10))
    later = [entry(60 + n, NOW + timedelta(seconds=n)) for n in range(1, 112)]
    cycle.server.pages = newest_first([*old, forged, *later], 50)
    result = cycle.poll()

    assert result.ok, result.error
    missing = sorted({e["id"] for e in later} - set(cycle.archived()))
    assert missing == [], f"{len(missing)} of 111 later events never archived"


def test_a_server_ignoring_the_sort_with_one_entry_a_page_is_read_to_the_end(
    server: PageServer, tmp_path: Path
) -> None:
    made = Cycle(server, config_for(server, tmp_path, per_page=1), FakeClock(NOW))
    try:
        history = [entry(n, NOW - timedelta(hours=3) + timedelta(minutes=10 * n)) for n in range(1, 6)]
        server.pages = [[item] for item in history]  # oldest first, whatever was asked
        assert made.poll().ok
        made.clock.advance(timedelta(minutes=5))
        new = [entry(10 + n, NOW + timedelta(seconds=n)) for n in range(10)]
        new[3]["type"] = "Delete Table"
        server.pages = [[item] for item in [*history, *new]]
        result = made.poll()
        assert result.ok, result.error
        assert {e["id"] for e in new} <= set(made.archived())
    finally:
        made.store.close()


def test_ids_that_only_python_reads_as_numbers_do_not_shadow_real_events(cycle: Cycle) -> None:
    impostors = [entry("9_0", NOW), entry("\uff18\uff19", NOW), entry(" 88", NOW), entry(87.0, NOW)]
    real = [entry(n, NOW - timedelta(minutes=1)) for n in (87, 88, 89, 90)]
    cycle.server.pages = [[*impostors, *sorted(real, key=lambda e: -e["id"])]]

    assert cycle.poll().ok

    archived = cycle.archived()
    assert sorted(archived) == [87, 88, 89, 90]
    assert all(archived[n]["msg"] == f"event {n}" and archived[n]["id"] == n for n in archived)
    assert len(cycle.rejected()) == 4


def test_an_id_served_again_with_other_content_is_rejected_and_alerted(cycle: Cycle) -> None:
    first = entry(50, NOW - timedelta(minutes=2), msg="deleted table orders")
    other = {**first, "msg": "nothing to see"}
    cycle.server.pages = [[entry(51, NOW - timedelta(minutes=1)), first], [other]]
    assert cycle.poll().ok
    assert cycle.archived()[50]["msg"] == "deleted table orders"
    assert [json.loads(raw)["msg"] for _, raw in cycle.rejected()] == ["nothing to see"]
    assert cycle.alerts() == ["monitor.event_conflict"]

    # Later, inside the overlap window, the archived id comes back altered: recorded and alerted, once.
    cycle.clock.advance(timedelta(minutes=5))
    altered = {**first, "user": {"id": 9, "email": "mallory@evil.example"}}
    for _ in range(2):
        cycle.server.pages = [[entry(52, NOW), entry(51, NOW - timedelta(minutes=1)), altered]]
        assert cycle.poll().ok
    assert cycle.archived()[50] == first
    reasons = [reason for reason, _ in cycle.rejected()]
    assert len(reasons) == 2 and all("other content" in reason for reason in reasons)
    assert cycle.alerts() == ["monitor.event_conflict", "monitor.event_conflict"]
    assert cycle.store.verify().ok

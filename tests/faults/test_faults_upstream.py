"""The upstream misbehaving during a walk, with `audit-monitor run --once` in a subprocess: rate limits with
and without Retry-After, gateway errors, truncated and non-JSON pages, a page that stays broken, and new
events arriving between two pages of a newest-first walk (which shifts items onto the next page, so the same
items arrive twice across pages). In-process tests of the client cover each answer's classification
(tests/test_xano_client.py); these check the whole daemon ends with every invariant intact.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
from collections.abc import Callable

import pytest

from tests.faults.conftest import (
    Invariants,
    Scenario,
    archived_ids,
    kill9,
    query,
    reference_alert_ids,
    visible_ids,
    wait_until,
)


def retries(stdout: str) -> list[dict[str, object]]:
    records = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    return [r for r in records if r.get("event") == "retrying Xano request"]


def test_each_retryable_fault_mid_backfill_is_retried_on_its_page(
    scenario_factory: Callable[..., Scenario],
) -> None:
    s = scenario_factory()
    s.write_config(per_page=30, poll_interval="30s")  # ~11 pages; a 30 s retry budget
    expected_alerts = reference_alert_ids(s.sim, s.tmp)
    faults = {
        2: lambda sim: sim.inject_status(429, retry_after="1"),
        3: lambda sim: sim.inject_status(429),  # no Retry-After: exponential backoff with jitter
        4: lambda sim: sim.inject_status(502),
        5: lambda sim: sim.inject_status(503),
        6: lambda sim: sim.inject_status(504),
        7: lambda sim: sim.inject_truncated(),
        8: lambda sim: sim.inject_non_json(),
    }
    # Request n is page n until the first fault; from then on each fault adds one request (its retry).
    for request, inject in faults.items():
        s.sim.at_request(request + (request - 2), inject)
    requests_before, started = s.sim.request_count, time.monotonic()
    done = s.run_once(log_level="debug")  # each retry is a debug line (a failed cycle logs one error)
    elapsed = time.monotonic() - started

    seen = [(r["page"], r["status"], r["retry_after"]) for r in retries(done.stdout)]
    assert seen == [
        (2, 429, True),
        (3, 429, False),
        (4, 502, False),
        (5, 503, False),
        (6, 504, False),
        (7, 200, False),
        (8, 200, False),
    ], seen
    errors = [str(r["error"]) for r in retries(done.stdout)]
    assert "truncated" in errors[5] or "JSON" in errors[5], errors[5]
    assert "JSON" in errors[6] or "html" in errors[6].lower(), errors[6]
    delays = [float(str(r["delay"])) for r in retries(done.stdout)]
    assert delays[0] == 1.0 and elapsed >= 1.0  # Retry-After: 1 was honoured
    assert all(0 <= d <= 1.0 for d in delays[1:])  # a first retry's backoff: full jitter under 1 s
    pages = -(-len(visible_ids(s.sim)) // 30)
    assert s.sim.request_count - requests_before == pages + len(faults)
    Invariants(s).check(expected_alerts=expected_alerts)


def test_a_page_that_stays_broken_fails_the_cycle_and_moves_nothing(
    scenario_factory: Callable[..., Scenario],
) -> None:
    s = scenario_factory()
    s.write_config(per_page=50, poll_interval="1s")  # a retry budget of 1 s: the cycle gives up quickly
    s.prime()
    before = (archived_ids(s.db), s.cursor())
    added = [s.sim.add_event("Delete Table", user={"id": 12, "email": "jonas.weber@northwind.io"})]
    added += [s.sim.add_event("Update Function") for _ in range(120)]
    s.sim.at_request(2, lambda sim: sim.inject_truncated(50))  # page 2 of 3 never comes back whole

    failed = s.run_once(expect=1)
    assert "source sim:" in failed.stderr and "Traceback" not in failed.stderr
    assert "retry budget" in failed.stderr or "giving up" in failed.stderr, failed.stderr
    assert (archived_ids(s.db), s.cursor()) == before  # page 1 was read, but nothing is kept without page 2

    s.sim.inject_truncated(0)
    s.run_once()
    assert set(added) <= set(archived_ids(s.db))
    Invariants(s).check()


def test_new_events_during_a_newest_first_walk_repeat_items_across_pages_without_loss_or_duplicate(
    scenario_factory: Callable[..., Scenario],
) -> None:
    s = scenario_factory()
    s.write_config(per_page=40)
    s.prime()
    # A backlog of three pages, then 7 events arrive while page 2 is requested and 5 more at page 3: every
    # item on the pages after that moves down, so the tail of one page comes again at the head of the next.
    backlog = [s.sim.add_event("Update Record") for _ in range(110)]
    backlog.append(s.sim.add_event("Delete Table", user={"id": 14, "email": "max.bauer@northwind-labs.de"}))

    def arrive(count: int) -> Callable[..., object]:
        return lambda sim: [sim.add_event("Delete Record") for _ in range(count)]

    s.sim.at_request(2, arrive(7))
    s.sim.at_request(3, arrive(5))
    s.sim.served.clear()
    s.run_once()
    assert len(s.sim.served) - len(set(s.sim.served)) == 7 + 5  # the shift served those items twice
    archived = archived_ids(s.db)
    assert len(archived) == len(set(archived))
    assert set(backlog) <= set(archived)  # the shifted items were all read, once
    late = sorted(set(visible_ids(s.sim)) - set(archived))
    assert len(late) == 12 and min(late) > max(backlog)  # only the ones that arrived mid-walk are left

    s.run_once()  # the next cycle picks them up
    Invariants(s).check()


def staged(s: Scenario) -> int:
    try:
        return int(query(s.db, "SELECT count(*) FROM staging")[0][0])
    except sqlite3.OperationalError:  # the daemon has not created the file or its schema yet
        return 0


@pytest.mark.timeout(400)  # two daemons and a backfill at 45 % failures; slower on a busy machine
def test_a_backfill_completes_at_45_percent_failures_through_kill9_with_requests_linear_in_pages(
    scenario_factory: Callable[..., Scenario], seeded_rng: random.Random
) -> None:
    """poll_interval 1s gives each cycle a retry budget of 1 s, which ~45 % failures spend within a few pages:
    most cycles fail. Each keeps what it staged and the next goes on from there, so the backfill completes,
    also across a kill -9 in the middle, in O(pages) requests (starting over would take O(pages^2))."""
    s = scenario_factory(days=10, total_events=2650)
    s.write_config(per_page=100, poll_interval="1s")
    pages = -(-s.sim.event_count() // 100)
    assert pages == 27
    expected_alerts = reference_alert_ids(s.sim, s.tmp)
    s.sim.fail_randomly(0.45, seeded_rng)
    first = s.start_daemon("run")
    wait_until(lambda: staged(s) >= 800, timeout=180, what="a third of the backfill staged")
    kill9(first)
    assert staged(s) >= 800 and archived_ids(s.db) == []  # staged pages survive; nothing committed yet
    served_before_restart = len(s.sim.pages_served)

    s.start_daemon("run")
    wait_until(
        lambda: len(archived_ids(s.db)) == s.sim.event_count(), timeout=240, what="the backfill committed"
    )
    requests = s.sim.request_count
    assert s.sim.pages_served[served_before_restart] >= 8  # the restart went on from a staged page
    failed_cycles = sum(1 for daemon in s.daemons for _ in daemon.events("poll failed"))
    assert failed_cycles >= 3  # the budget did run out, repeatedly: the scenario is the one reported
    print(f"{requests} requests for {pages} pages, {failed_cycles} failed cycles")
    assert requests <= 5 * pages, f"{requests} requests for {pages} pages"
    s.sim.fail_randomly(0.0, seeded_rng)
    wait_until(lambda: not query(s.db, "SELECT 1 FROM outbox WHERE status != 'sent'"), 60, "alerts delivered")
    s.stop_daemons()
    Invariants(s).check(expected_alerts=expected_alerts)


@pytest.mark.timeout(300)
def test_a_long_backfill_completes_under_a_free_plan_rate_limit_with_requests_linear_in_pages(
    scenario_factory: Callable[..., Scenario],
) -> None:
    """Xano's Free plan serves 10 requests per 20 s and answers 429 with Retry-After past that. Here the
    simulator enforces the same count over a shorter window (10 per 4 s, so the test takes seconds, not
    minutes) against a 53-page backfill with poll_interval 2s: a cycle's retry budget (2 s) is often smaller
    than the Retry-After, so cycles fail at the limit. Each keeps the pages it staged and the next goes on
    from there: the backfill completes, every page read about once (starting over would be O(pages^2))."""
    s = scenario_factory(days=10, total_events=2650)
    s.write_config(per_page=50, poll_interval="2s")
    pages = -(-s.sim.event_count() // 50)
    assert pages == 53
    expected_alerts = reference_alert_ids(s.sim, s.tmp)
    s.sim.rate_limit(10, 4.0)
    s.start_daemon("run")

    def committed() -> int:
        try:
            return len(archived_ids(s.db))
        except sqlite3.OperationalError:  # the daemon has not created the file or its schema yet
            return 0

    wait_until(lambda: committed() == s.sim.event_count(), timeout=200, what="the backfill committed")
    requests, limited = s.sim.request_count, s.sim.rate_limited
    failed_cycles = sum(1 for daemon in s.daemons for _ in daemon.events("poll failed"))
    print(f"{requests} requests for {pages} pages, {limited} answered 429, {failed_cycles} failed cycles")
    assert limited >= 5  # the limit did bite, repeatedly
    assert failed_cycles >= 1  # a Retry-After past the cycle's budget ended cycles: the reported scenario
    assert requests - limited <= 2 * pages, f"{requests - limited} pages served for {pages} pages"
    assert requests <= 3 * pages, f"{requests} requests for {pages} pages"
    s.sim.rate_limit(0, 1.0)
    wait_until(lambda: not query(s.db, "SELECT 1 FROM outbox WHERE status != 'sent'"), 60, "alerts delivered")
    s.stop_daemons()
    Invariants(s).check(expected_alerts=expected_alerts)


def test_a_host_name_that_does_not_resolve_fails_run_once_at_the_first_attempt(
    scenario_factory: Callable[..., Scenario],
) -> None:
    s = scenario_factory(days=0.1)
    s.config.write_text(
        s.config.read_text(encoding="utf-8").replace(s.sim.base_url, "https://xano-instance.invalid"),
        encoding="utf-8",
    )
    failed = s.run_once(expect=1, log_level="debug")  # each retry would be a debug line
    assert retries(failed.stdout) == []  # no minutes of backoff for a name that never resolved
    assert "'xano-instance.invalid' does not resolve" in failed.stderr and "Traceback" not in failed.stderr
    status = s.cli("status")
    assert "[config]" in status.stdout, status.stdout
    assert s.run_once(expect=1).stderr.count("does not resolve") >= 1  # tried again by the next cycle

"""The upstream misbehaving during a walk, with `audit-monitor run --once` in a subprocess: rate limits with
and without Retry-After, gateway errors, truncated and non-JSON pages, a page that stays broken, and new
events arriving between two pages of a newest-first walk (which shifts items onto the next page, so the same
items arrive twice across pages). In-process tests of the client cover each answer's classification
(tests/test_xano_client.py); these check the whole daemon ends with every invariant intact.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from tests.faults.conftest import Invariants, Scenario, archived_ids, reference_alert_ids, visible_ids


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

"""kill -9 of `audit-monitor run` at random moments (seeded; the seed is printed), repeated, during a
backfill and during delivery; then a clean `run --once` finishes the work and every invariant holds.

SIGKILL runs no handler: whatever the process had not committed is gone. The archive, the rule state, the
alerts and the cursor move in one SQLite transaction, so after each kill the archive is either as before the
cycle or complete, never half a backfill. A kill between a message's send and the commit of its sent mark
re-sends that one message on restart: duplicates are allowed only up to the kills that landed while
delivery was under way (see docs/operations.md, "Delivery guarantees and the one duplicate window").
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable

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

KILLS = 6
KILLS_IN_WALK = 4  # of the backfill's kills; the others land after its last page


def pending_rows(s: Scenario) -> int:
    return (
        int(query(s.db, "SELECT count(*) FROM outbox WHERE status = 'pending'")[0][0]) if s.db.exists() else 0
    )


def resume_page(s: Scenario) -> int:
    """The page a restarted walk starts from: the last one staged, or 1."""
    if not s.db.exists():
        return 1
    rows = query(s.db, "SELECT value FROM meta WHERE key = 'walk_progress:sim'")
    return max(1, int(json.loads(rows[0][0])["last_page"])) if rows else 1


def test_kill9_at_random_moments_of_a_backfill(
    scenario_factory: Callable[..., Scenario], seeded_rng: random.Random
) -> None:
    s = scenario_factory(days=10, total_events=2500)
    s.write_config(per_page=100, poll_interval="1m")
    pages = -(-s.sim.event_count() // 100)
    kills_during_delivery = 0
    for kill in range(KILLS):
        archived_before = archived_ids(s.db) if s.db.exists() else []
        # A killed walk keeps its staged pages: the restart re-reads the last one and goes on from there.
        remaining = pages - resume_page(s) + 1
        if kill < KILLS_IN_WALK:
            # In the middle of the backfill's walk: after page n (n random), before its last pages.
            after_page, pause = seeded_rng.randint(1, max(1, remaining - 3)), seeded_rng.uniform(0, 0.05)
        elif not archived_before:
            # After the walk's last page: in the commit of the whole backfill or the delivery of its alerts.
            after_page, pause = remaining, seeded_rng.uniform(0, 0.8)
        else:
            # The backfill is in: kill the next, short cycle (or its delivery), with a new event that alerts.
            s.sim.add_event("Delete Table", user={"id": 15, "email": "sofia.klein@northwind-labs.de"})
            after_page, pause = 1, seeded_rng.uniform(0, 0.5)
        before = s.sim.request_count
        daemon = s.start_daemon("run")
        wait_until(
            lambda before=before, after_page=after_page: s.sim.request_count - before >= after_page,
            20,
            f"kill {kill}: page {after_page} of the walk",
            interval=0.01,
        )
        time.sleep(pause)
        kill9(daemon)
        archived = archived_ids(s.db) if s.db.exists() else []
        print(f"kill {kill}: after page {after_page} + {pause:.3f} s: {len(archived)} archived")
        # All or nothing: the cycle's events, its alerts and the cursor commit together.
        assert archived in (archived_before, visible_ids(s.sim)), f"kill {kill}: {len(archived)} archived"
        cursor = s.cursor() if s.db.exists() else None
        assert (cursor[0] if cursor else None) == (max(archived) if archived else None), (kill, cursor)
        kills_during_delivery += int(bool(archived))  # after a commit, delivery may have been under way

    s.run_once()
    expected_alerts = reference_alert_ids(s.sim, s.tmp)  # what one clean run raises on the same events
    duplicates = Invariants(s).check(
        allowed_duplicates=kills_during_delivery, expected_alerts=expected_alerts
    )
    print(f"{KILLS} kills, {kills_during_delivery} after the commit, {duplicates} duplicate messages")


def test_kill9_at_random_moments_of_delivery(
    scenario_factory: Callable[..., Scenario], seeded_rng: random.Random
) -> None:
    s = scenario_factory(days=2)
    s.write_config(poll_interval="1m")
    expected_alerts = reference_alert_ids(s.sim, s.tmp)
    assert len(expected_alerts) >= 20  # enough messages for every kill to land mid-delivery
    s.slack.delay = 0.15  # a slow Slack: each message is in flight for 150 ms, kills land inside sends
    kills = 0
    for kill in range(KILLS):
        daemon = s.start_daemon("run")
        accepted = len(s.slack.stub.posts())
        more = seeded_rng.randint(1, 3)
        wait_until(
            lambda target=accepted + more: len(s.slack.stub.posts()) >= target,
            60,
            f"kill {kill}: {more} more Slack messages",
            interval=0.01,
        )
        time.sleep(seeded_rng.uniform(0, 0.2))
        if pending_rows(s) == 0:
            daemon.stop()
            break  # all delivered before this kill: nothing left to interrupt
        kill9(daemon)
        kills += 1
    assert kills >= 3, "the kills should have landed during delivery; make delivery slower or longer"

    s.slack.delay = 0
    s.run_once()
    duplicates = Invariants(s).check(allowed_duplicates=kills, expected_alerts=expected_alerts)
    print(f"{kills} kills during delivery, {duplicates} duplicate messages")

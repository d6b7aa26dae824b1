"""`plan_retention: unlimited` (Enterprise/Custom plans): however long the monitor was down, nothing can
have expired upstream, so the poller records no retention gap and raises no `monitor.retention_gap`.
Real poll cycles against the simulator over HTTP on 127.0.0.1, with an injected clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from monitor.config import Config
from monitor.simulator import Simulator
from tests.conftest import FakeClock
from tests.test_poller import Harness


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[Simulator]:
    with Simulator(
        seed=5,
        clock=clock,
        history_start=clock.now - timedelta(days=1),
        events_per_day=100,
        live_background=False,
    ) as simulator:
        yield simulator


def harness_for(sim: Simulator, tmp_path: Path, clock: FakeClock, retention: str) -> Harness:
    config = Config.model_validate(
        {
            "state": {"path": str(tmp_path / f"{retention}.db")},
            "sources": [
                {"name": "prod", "base_url": sim.base_url, "token": sim.token, "plan_retention": retention}
            ],
        }
    )
    return Harness(sim, config, clock)


@pytest.mark.parametrize(("retention", "gap_expected"), [("unlimited", False), ("28d", True)])
def test_a_long_outage_raises_a_retention_gap_only_for_a_limited_plan(
    sim: Simulator, tmp_path: Path, clock: FakeClock, retention: str, gap_expected: bool
) -> None:
    harness = harness_for(sim, tmp_path, clock, retention)
    try:
        assert harness.poll().ok
        clock.advance(timedelta(days=400))
        assert harness.poll().ok
        kinds = sorted(gap["kind"] for gap in harness.store.gaps())
        rules = [row[0] for row in harness.store.conn.execute("SELECT rule_id FROM alerts")]
    finally:
        harness.store.close()
    assert "polling" in kinds  # the outage itself is still on record for the report
    assert ("retention" in kinds) is gap_expected
    assert ("monitor.retention_gap" in rules) is gap_expected

"""A delivery channel goes down while `audit-monitor run` works, then comes back: Slack answering 503 from its
edge, the SMTP server gone (connection refused). Nothing is lost or sent twice, the other channel is not
held up, and the channel is probed once per backoff step rather than once per alert.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest

from tests.faults.conftest import Invariants, Scenario, query, reference_alert_ids, restart_smtp, wait_until


def rows(s: Scenario, channel: str) -> list[tuple[str, int, str | None]]:
    return query(s.db, "SELECT status, attempts, last_error FROM outbox WHERE channel = ?", (channel,))


@pytest.mark.parametrize("channel", ["slack", "email"])
def test_a_channel_outage_then_recovery_delivers_every_alert_once(
    scenario_factory: Callable[..., Scenario], channel: str
) -> None:
    s = scenario_factory()
    # Each 1 s poll cycle ends with a delivery pass, so the retry goes out as soon as it is due (5 s +-20 %
    # after the failure) rather than on the 5 s delivery timer.
    s.write_config(poll_interval="1s")
    expected_alerts = reference_alert_ids(s.sim, s.tmp)
    other = "email" if channel == "slack" else "slack"
    if channel == "slack":
        s.slack.down = True
    else:
        s.smtp.controller.stop()

    daemon = s.start_daemon("run")
    failed = daemon.wait_event("delivery failed", 30, where=lambda r: r.get("channel") == channel)[0]
    assert failed["permanent"] is False
    assert ("503" in failed["error"]) if channel == "slack" else ("refused" in failed["error"].lower())
    # The other channel is not held up by the outage; the failing one keeps every row pending.
    wait_until(lambda: {r[0] for r in rows(s, other)} == {"sent"}, 30, f"{other} delivered during the outage")
    assert {r[0] for r in rows(s, channel)} == {"pending"}
    # Probed once per backoff step (5 s), not once per alert: the other rows were deferred with the first.
    probes = sum(r[1] for r in rows(s, channel))
    assert 1 <= probes <= 2 < len(rows(s, channel)), probes
    assert s.slack.refused == (probes if channel == "slack" else 0)

    if channel == "slack":
        s.slack.down = False
    else:
        restart_smtp(s.smtp)
    wait_until(
        lambda: {r[0] for r in rows(s, channel)} == {"sent"}, 30, f"{channel} delivered after recovery"
    )
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=15) == 0
    assert not daemon.events("delivery failing")  # a transient outage dead-letters nothing
    Invariants(s).check(expected_alerts=expected_alerts)

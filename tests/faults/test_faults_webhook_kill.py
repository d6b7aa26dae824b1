"""kill -9 of `audit-monitor run` while it delivers to a slow signed webhook (seeded; the seed is printed):
after a clean `run --once`, every alert routed to the webhook arrived, each id at least once, and repeated
only where a kill landed in the send -> record window; every request carries a valid Standard Webhooks
signature, and a repeat has the same ``webhook-id`` (so the receiver can drop it)."""

from __future__ import annotations

import base64
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from standardwebhooks import Webhook

from tests.alerts.alerts_support import Receiver
from tests.faults.conftest import Invariants, Scenario, kill9, query, reference_alert_ids, wait_until

KILLS = 5
SECRET = "whsec_" + base64.b64encode(b"kill-9-webhook-secret-0123456789").decode()


@pytest.fixture
def hook() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


def pending_webhook_rows(s: Scenario) -> int:
    if not s.db.exists():
        return 0
    rows = query(s.db, "SELECT count(*) FROM outbox WHERE status = 'pending' AND channel = 'webhook:n8n'")
    return int(rows[0][0])


def test_kill9_during_webhook_delivery_loses_nothing(
    scenario_factory: Callable[..., Scenario], seeded_rng: random.Random, hook: Receiver
) -> None:
    s = scenario_factory(days=2)
    s.write_config(
        poll_interval="1m",
        extra_alerts=(
            f'  webhooks:\n    - {{name: n8n, url: "{hook.url()}", secret: "{SECRET}", min_severity: info,'
            " timeout: 5s}\n"
        ),
    )
    expected_alerts = reference_alert_ids(s.sim, s.tmp)
    assert len(expected_alerts) >= 20
    hook.delay = 0.15  # each request in flight for 150 ms: kills land inside sends
    kills = 0
    for kill in range(KILLS):
        daemon = s.start_daemon("run")
        accepted = len(hook.requests)
        more = seeded_rng.randint(1, 3)
        wait_until(
            lambda target=accepted + more: len(hook.requests) >= target,
            60,
            f"kill {kill}: {more} more webhook requests",
            interval=0.01,
        )
        time.sleep(seeded_rng.uniform(0, 0.2))
        if pending_webhook_rows(s) == 0:
            daemon.stop()
            break
        kill9(daemon)
        kills += 1
    assert kills >= 2, "the kills should have landed during delivery; make delivery slower or longer"

    hook.delay = 0
    s.run_once()
    Invariants(s).check(allowed_duplicates=kills, expected_alerts=expected_alerts)  # Slack, email, outbox
    routed = {row[0] for row in query(s.db, "SELECT alert_id FROM outbox WHERE channel = 'webhook:n8n'")}
    assert expected_alerts <= routed
    for request in hook.requests:
        Webhook(SECRET).verify(request.raw, request.headers)
    counts = Counter(request.headers["webhook-id"] for request in hook.requests)
    assert set(counts) == routed, f"missing {sorted(routed - set(counts))[:5]}"
    duplicates = sum(n - 1 for n in counts.values())
    assert duplicates <= kills, f"{duplicates} repeated webhook-ids after {kills} kills"
    print(f"{kills} kills during webhook delivery, {duplicates} repeated webhook-ids")

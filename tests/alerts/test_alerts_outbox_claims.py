"""Two senders on one PostgreSQL outbox (replicas during a takeover): a row is claimed in a write
transaction just before its send, so no alert goes out twice while both run, and a claim left by a sender
that died runs out and the row is sent again. (On SQLite the archive's writer lock keeps a second sender
out, and rows are not claimed: tests/alerts/test_alerts_outbox.py.)

Each sender has a Store of its own (its own connection, as a second process has). The
channel is a recording one (what is under test is the outbox and the store, not a transport): it lets the
first sender hand over to the second in the middle of a send, the moment a takeover can land in.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from monitor.alerts.model import TRIGGER, Alert
from monitor.alerts.outbox import CLAIM_FOR, OutboxWorker
from monitor.store import Store
from tests.alerts.alerts_support import make_alert, record
from tests.conftest import FakeClock
from tests.postgres import PostgresServer


@pytest.fixture
def store_target(pg_server: PostgresServer, pg_template: str) -> str:
    """A migrated, empty PostgreSQL archive of this test's own."""
    return pg_server.new_database(template=pg_template)


class RecordingChannel:
    """Takes every alert it is given; ``during_send`` runs inside the first send (once)."""

    name = "hook"

    def __init__(self, sent: list[str], during_send: Callable[[], object] | None = None) -> None:
        self.sent = sent
        self.during_send = during_send

    def send(self, alert: Alert) -> str | None:
        if self.during_send is not None:
            hand_over, self.during_send = self.during_send, None
            hand_over()
        self.sent.append(alert.id)
        return None


def test_two_senders_never_send_the_same_row(store_target: str, clock: FakeClock) -> None:
    alerts = [make_alert(title=f"alert {i}") for i in range(4)]
    sent: list[str] = []
    with Store.open(store_target) as first_store, Store.open(store_target) as second_store:
        record(first_store, alerts, ["hook"], clock())
        second = OutboxWorker(second_store, {"hook": RecordingChannel(sent)}, clock=clock, digest_after=None)
        second_report = []
        # While the first sender's first message is on the wire, the second sender runs a whole pass.
        channel = RecordingChannel(sent, during_send=lambda: second_report.append(second.deliver_due()))
        first = OutboxWorker(first_store, {"hook": channel}, clock=clock, digest_after=None)
        first_report = first.deliver_due()
        assert sorted(sent) == sorted(a.id for a in alerts)  # each alert once
        assert first_report.sent + second_report[0].sent == len(alerts)
        assert second_report[0].sent == len(alerts) - 1  # all but the one in flight
        assert first_store.outbox_counts() == {"pending": 0, "sent": len(alerts), "dead": 0}


def test_a_claim_left_by_a_dead_sender_runs_out(store_target: str, clock: FakeClock) -> None:
    alert = make_alert()
    key = (alert.id, TRIGGER)  # an outbox row: the alert's trigger message on channel "hook"
    sent: list[str] = []
    with Store.open(store_target) as store:
        record(store, [alert], ["hook"], clock())
        with store.transaction():  # a sender claimed the row, then died before sending or recording
            assert store.claim_deliveries("hook", [key], clock(), clock() + CLAIM_FOR) == [key]
        with store.transaction():  # nobody claims a claimed row
            assert store.claim_deliveries("hook", [key], clock(), clock() + CLAIM_FOR) == []
        worker = OutboxWorker(store, {"hook": RecordingChannel(sent)}, clock=clock)
        assert worker.deliver_due().sent == 0
        clock.advance(CLAIM_FOR - timedelta(seconds=1))
        assert worker.deliver_due().sent == 0
        clock.advance(timedelta(seconds=1))
        assert worker.deliver_due().sent == 1
    assert sent == [alert.id]


def test_a_sender_that_may_not_send_leaves_every_row_due(store_target: str, clock: FakeClock) -> None:
    alerts = [make_alert(title=f"alert {i}") for i in range(2)]
    sent: list[str] = []
    with Store.open(store_target) as store:
        record(store, alerts, ["hook"], clock())
        fenced = OutboxWorker(store, {"hook": RecordingChannel(sent)}, clock=clock)
        fenced.may_send = lambda: False  # no longer the leader
        assert fenced.deliver_due().sent == 0
        assert sent == []
        leader = OutboxWorker(store, {"hook": RecordingChannel(sent)}, clock=clock)
        assert leader.deliver_due().sent == 2  # not delayed by a claim: the fenced sender claimed nothing
    assert sorted(sent) == sorted(a.id for a in alerts)

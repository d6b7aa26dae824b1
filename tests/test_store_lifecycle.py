"""The alert lifecycle in the store: transitions, silences, and the history as links of the hash chain."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from monitor.alerts.model import Alert
from monitor.store import Store, lifecycle
from tests.test_store import T0, archive, entry


def alert(event_id: int, user: str = "ana@corp.io", rule: str = "r.delete") -> Alert:
    return Alert(
        rule_id=rule, severity="high", title="t", text="x", source="prod", event_time=T0,
        event_ids=(event_id,), fields={"user.email": user}, context={"user": user},
    )  # fmt: skip


def recorded(store: Store, item: Alert, channels: tuple[str, ...] = ("slack",)) -> str:
    with store.transaction():
        assert store.record_alert(item, channels, T0)
    return item.id


def test_transitions_and_their_conflicts(store_target: str) -> None:
    with Store.open(store_target) as store:
        first, second = recorded(store, alert(1)), recorded(store, alert(2))
        lifecycle.transition(store, first, "acknowledged", actor="oncall", at=T0, note="mine")
        with pytest.raises(lifecycle.LifecycleError) as conflict:
            lifecycle.transition(store, first, "acknowledged", actor="oncall", at=T0)
        assert conflict.value.kind == "conflict"
        lifecycle.transition(store, first, "resolved", actor="cli:root", at=T0, disposition="false_positive")
        lifecycle.transition(store, second, "resolved", actor="oncall", at=T0)
        with pytest.raises(lifecycle.LifecycleError) as missing:
            lifecycle.transition(store, "nope", "resolved", actor="oncall", at=T0)
        assert missing.value.kind == "not_found"
        shown = lifecycle.get_alert(store, first)
        assert shown is not None and shown["status"] == "resolved"
        assert [(h["action"], h["actor"]) for h in shown["history"]] == [
            ("alert.acknowledged", "oncall"),
            ("alert.resolved", "cli:root"),
        ]
        assert shown["deliveries"][0]["channel"] == "slack"
        assert lifecycle.alert_counts(store)["resolved"] == 2


def test_history_is_part_of_the_chain_and_verify_catches_edits(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with Store.open(path) as store:
        archive(store, [entry(1), entry(2)])
        alert_id = recorded(store, alert(1))
        ack = lifecycle.transition(store, alert_id, "acknowledged", actor="oncall", at=T0, note="looking")
        archive(store, [entry(3, 1)])  # events after the action continue the chain from it
        result = store.verify()
        assert result.ok and result.actions == 1 and result.rows_checked == 3
        assert store.chain_link(ack.seq) == ack.hash
        assert store.head()[0] == ack.seq + 1
    conn = sqlite3.connect(path)
    conn.execute("UPDATE alert_actions SET actor = 'someone-else'")
    conn.commit()
    conn.close()
    with Store.open(path) as store:
        result = store.verify()
        assert not result.ok and result.bad_seq == ack.seq
        assert "alert history record hash does not match" in result.reason
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM alert_actions")
    conn.commit()
    conn.close()
    with Store.open(path) as store:
        result = store.verify()
        assert not result.ok and "missing" in result.reason


def test_a_prune_keeps_history_verifiable(store_target: str) -> None:
    with Store.open(store_target) as store:
        archive(store, [entry(1), entry(2)])
        alert_id = recorded(store, alert(1))
        lifecycle.transition(store, alert_id, "resolved", actor="oncall", at=T0)
        archive(store, [entry(3, 60 * 24 * 10)])
        assert store.prune_before(T0 + timedelta(days=5), at=T0 + timedelta(days=20)) == 2
        assert store.verify().ok
        assert lifecycle.alert_history(store, alert_id)[0].kind == "alert.resolved"


def test_silences_hold_back_matching_alerts_only_while_active(store_target: str) -> None:
    with Store.open(store_target) as store:
        silence = lifecycle.add_silence(
            store, rule_id="r.delete", match={"user": "ana@corp.io"}, until=T0 + timedelta(hours=1),
            reason="migration", actor="oncall", at=T0 - timedelta(minutes=1),
        )  # fmt: skip
        held, other_user, other_rule = alert(1), alert(2, user="bo@corp.io"), alert(3, rule="r.login")
        for item in (held, other_user, other_rule):
            recorded(store, item)
        statuses = {
            a["id"]: a["status"] for a in lifecycle.list_alerts(store, lifecycle.AlertQuery(()), limit=10)
        }
        assert statuses == {held.id: "silenced", other_user.id: "open", other_rule.id: "open"}
        assert (
            store.conn.execute("SELECT count(*) FROM outbox WHERE alert_id = ?", (held.id,)).fetchone()[0]
            == 0
        )
        assert lifecycle.silenced_counts(store, T0 - timedelta(days=1), T0 + timedelta(days=1)) == {
            silence.id: 1
        }
        # A self-monitoring alarm is never silenced by a silence that does not name it.
        broad = lifecycle.add_silence(
            store, rule_id=None, match={"source": "prod"}, until=T0 + timedelta(hours=1), reason="x",
            actor="oncall", at=T0 - timedelta(minutes=1),
        )  # fmt: skip
        assert not broad.matches(alert(9, rule="monitor.auth_failed"))
        assert broad.matches(alert(9))
        lifecycle.expire_silence(store, silence.id, actor="oncall", at=T0)
        lifecycle.expire_silence(store, broad.id, actor="oncall", at=T0)
        with pytest.raises(lifecycle.LifecycleError):
            lifecycle.expire_silence(store, silence.id, actor="oncall", at=T0 + timedelta(seconds=1))
        later = alert(4)
        with store.transaction():
            store.record_alert(later, ("slack",), T0 + timedelta(seconds=1))
        assert lifecycle.get_alert(store, later.id)["status"] == "open"  # type: ignore[index]
        kinds = [a.kind for a in lifecycle.actions_between(store, 0, store.head()[0])]
        assert kinds == ["silence.added", "silence.added", "silence.expired", "silence.expired"]
        assert store.verify().ok


def test_a_walk_in_two_parts_is_the_whole_walk_at_every_seam(store_target: str) -> None:
    """The report walks a long stretch in two processes: to a seq, and on from that seq's stored hash.
    Joined, the parts must say what one walk says, whatever link (event, prune record, history record)
    the seam falls on, and a bad row on either side of it must be found."""
    with Store.open(store_target) as store:
        archive(store, [entry(i, i) for i in range(1, 5)])  # pruned below
        archive(store, [entry(i, 60 * 24 * 10 + i) for i in range(5, 7)])
        alert_id = recorded(store, alert(5))
        lifecycle.transition(store, alert_id, "acknowledged", actor="oncall", at=T0)
        archive(store, [entry(i, 60 * 24 * 10 + i) for i in range(7, 9)])
        assert store.prune_before(T0 + timedelta(days=5), at=T0 + timedelta(days=20)) == 4
        archive(store, [entry(9, 60 * 24 * 11)])
        whole = store.verify()
        assert whole.ok and whole.prunes == 1 and whole.actions == 1 and whole.start_seq == 4
        for seam in range(whole.start_seq + 1, store.head()[0]):
            assert store.verify(through=seam).then(store.verify(after=seam)) == whole, seam
        with store.transaction():
            store.conn.execute("UPDATE events SET msg = 'edited' WHERE event_id = 7")  # outside the store API
        bad = store.conn.execute("SELECT seq FROM events WHERE event_id = 7").fetchone()[0]
        for seam in (bad - 1, bad, bad + 1):
            joined = store.verify(through=seam).then(store.verify(after=seam))
            assert not joined.ok and joined.bad_seq == bad and joined == store.verify(), seam

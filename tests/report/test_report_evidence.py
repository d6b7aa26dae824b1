"""The evidence-pack sections of the fixture month (March 2026, Berlin), worked out by hand from
report_data.py: cover, integrity, id continuity, privileged access, the change register, response."""

from __future__ import annotations

import io
import json
from pathlib import Path

from report_data import NOW, alert, utc

from monitor.alerts.console import ConsoleChannel
from monitor.alerts.model import Alert
from monitor.alerts.outbox import DeliveryError, OutboxWorker
from monitor.config import Config
from monitor.report import Period, build_report, compute_figures
from monitor.report.figures import ChainPoint, config_digest
from monitor.store import GENESIS_HASH, Store


def march(store: Store, config: Config):  # type: ignore[no-untyped-def]
    return compute_figures(store, config, Period.parse("2026-03", config.tz), now=NOW)


def test_cover_names_scope_version_and_digests(store: Store, config: Config) -> None:
    figures = march(store, config)
    cover = figures.cover
    assert cover is not None
    assert cover.report_id.startswith("2026-03-") and len(cover.report_id) == 8 + 16
    assert [s["name"] for s in cover.sources] == ["prod", "staging", "dev"]
    assert cover.workspaces == [
        {"source": "prod", "workspace": "shop", "events": 13},
        {"source": "staging", "workspace": "shop", "events": 1},
    ]
    assert len(cover.config_sha256) == 64 and len(cover.rules_sha256) == 64 and cover.rule_files >= 4
    # The same report twice has the same id; a later one a different id.
    assert march(store, config).cover.report_id == cover.report_id  # type: ignore[union-attr]


def test_config_digest_masks_secrets(tmp_path: Path) -> None:
    from report_data import fixture_config

    one = fixture_config(tmp_path)
    other = fixture_config(
        tmp_path,
        sources=[
            {"name": "prod", "base_url": "http://127.0.0.1:1", "token": "another", "plan_retention": "24h"},
            {"name": "staging", "base_url": "http://127.0.0.1:1", "token": "t", "plan_retention": "7d"},
            {"name": "dev", "base_url": "http://127.0.0.1:1", "token": "t"},
        ],
    )
    # A digest that changed with the token would let anyone test guesses of a short secret against it.
    assert config_digest(one) == config_digest(other)
    assert config_digest(one) != config_digest(fixture_config(tmp_path, timezone="UTC"))


def test_integrity_heads_at_the_month_edges_with_their_rows(store: Store, config: Config) -> None:
    integrity = march(store, config).integrity
    assert integrity is not None
    # prod's 16 events were archived on Feb 1 (rows 1-16), staging's one on Mar 15 (row 17).
    assert integrity.head_at_start.seq == 16 and integrity.head_at_end.seq == 17
    assert integrity.head_at_report.seq == 17 and integrity.head_at_report.hash == store.head_hash()
    assert integrity.head_at_start.hash == store.chain_link(16) != GENESIS_HASH
    assert (integrity.first_row, integrity.last_row) == (2, 17)
    # The walk chains from the row before the month's first event (row 1 < the opening head, row 16: prod's
    # March events were archived in advance by the fixture) and re-hashes every row after it.
    assert integrity.verify_ok and integrity.verify_rows == 16 and integrity.verify_detail == ""
    assert integrity.verify_from == ChainPoint(1, store.chain_link(1)) and not integrity.verify_whole  # type: ignore[arg-type]


def test_the_reports_walk_covers_the_month_and_says_where_it_started(
    store: Store, config: Config, tmp_path: Path
) -> None:
    """Rows before the walk's start (earlier months) are not re-read by the report, and it says so; a row of
    the month edited, or the starting link gone, fails it; `verify` still walks the whole chain."""
    with store.transaction():
        store.conn.execute("UPDATE events SET msg = 'edited' WHERE seq = 1")  # February's row, by hand
    integrity = march(store, config).integrity
    assert integrity is not None and integrity.verify_ok and integrity.verify_from.seq == 1
    whole = store.verify()
    assert not whole.ok and whole.bad_seq == 1 and whole.whole  # the full walk finds it
    files = build_report(store, config, Period.parse("2026-03", config.tz), tmp_path / "out", now=NOW)
    html, text = files.html.read_text(), files.text.read_text()
    assert "from row 1 (the month's opening head" in html and integrity.verify_from.hash in html
    assert f"walked from row 1 {integrity.verify_from.hash}" in text and "rows up to 1 (earlier" in text
    document = json.loads(files.json.read_text())  # type: ignore[union-attr]
    assert document["integrity"]["verify_from"] == {"seq": 1, "hash": integrity.verify_from.hash}
    assert document["integrity"]["verify_whole"] is False

    with store.transaction():
        store.conn.execute("UPDATE events SET msg = 'edited' WHERE seq = 9")  # a row of the month
    integrity = march(store, config).integrity
    assert integrity is not None and not integrity.verify_ok and integrity.verify_detail.startswith("row 9")

    with store.transaction():
        store.conn.execute("DELETE FROM events WHERE seq = 1")  # the link the walk chains from
    integrity = march(store, config).integrity
    assert integrity is not None and not integrity.verify_ok
    assert integrity.verify_detail == "row 1: row 1, where the walk was to start, is missing"


def test_a_month_from_the_archives_beginning_is_walked_whole(store: Store, config: Config) -> None:
    integrity = compute_figures(store, config, Period.parse("2026-02", config.tz), now=NOW).integrity
    assert integrity is not None and integrity.verify_ok and integrity.verify_whole
    assert integrity.verify_from == ChainPoint(0, GENESIS_HASH) and integrity.verify_rows == 17


def test_event_id_continuity_and_rejected_entries(store: Store, config: Config) -> None:
    with store.transaction():
        store.reject("prod", {"id": "x"}, "id is not an integer", utc("2026-03-03T10:00:00Z"))
        store.reject("prod", {"id": "y"}, "id is not an integer", utc("2026-04-03T10:00:00Z"))  # April
    figures = march(store, config)
    continuity = {c.source: (c.first_id, c.last_id, c.events, c.unseen) for c in figures.id_continuity}
    assert continuity == {"prod": (2, 16, 13, 2), "staging": (4, 4, 1, 0)}  # prod 14, 15 are April's
    assert figures.rejected == {"prod": 1}


def test_privileged_access_and_change_register(store: Store, config: Config) -> None:
    figures = march(store, config)
    assert figures.privileged_total == 3
    assert [(c.type, c.user, c.event_id) for c in figures.privileged] == [
        ("Update RBAC Permissions", "ben@corp.io", 3),
        ("Update Environment Variable", "ana@corp.io", 9),
        ("Delete User", "ana@corp.io", 13),
    ]
    assert figures.changes_total == 4
    assert [(c.type, c.branch, c.off_hours) for c in figures.changes] == [
        ("Create Table", "v1", False),
        ("set live branch", "v1", False),  # matched case-insensitively, shown as archived
        ("Update Function", "v1", False),
        ("Delete Table", "v1", True),  # Fri 19:30 CET
    ]
    assert figures.changes_off_hours == 1


class RefusingChannel:
    """Stands in for a channel whose server refuses permanently (a revoked token): the outcome under test
    is the dead letter the outbox records, not the remote side."""

    name = "slack"

    def send(self, alert: Alert) -> str | None:
        raise DeliveryError("invalid_auth", permanent=True)


def test_response_per_alert_with_deliveries_and_dead_letters(tmp_path: Path, config: Config) -> None:
    with Store.open(tmp_path / "response.db") as store:
        with store.transaction():
            fired = alert("xano.destructive.off-hours", "critical", "2026-03-27T18:30:00Z", 0, "r")
            store.record_alert(fired, ["console", "slack"], utc("2026-03-27T18:31:00Z"))
        printed = io.StringIO()
        worker = OutboxWorker(
            store,
            {"console": ConsoleChannel(config.tz, printed), "slack": RefusingChannel()},
            clock=lambda: utc("2026-03-27T18:32:00Z"),
        )
        worker.deliver_due()
        figures = march(store, config)
    # The dead letter raised monitor.delivery_failing through the console: the monitor's own health.
    assert [r.rule_id for r in figures.responses] == [
        "xano.destructive.off-hours",
        "monitor.delivery_failing",
    ]
    assert [a.rule_id for a in figures.monitor_alerts] == ["monitor.delivery_failing"]
    response = figures.responses[0]
    assert response.detected_at == utc("2026-03-27T18:31:00Z")
    by_channel = {d.channel: d for d in response.deliveries}
    assert by_channel["console"].status == "sent" and by_channel["slack"].status == "dead"
    assert response.delivered_at == utc("2026-03-27T18:32:00Z")
    assert by_channel["slack"].error and "invalid_auth" in by_channel["slack"].error
    # No one acknowledged or resolved it: left empty, never guessed.
    assert (response.acknowledged_at, response.resolved_at, response.disposition) == (None, None, None)
    assert figures.dead_letters == 1
    assert ("slack", "dead", 1) in {(d.channel, d.status, d.count) for d in figures.deliveries}
    controls = {c.control: c for c in figures.controls}
    assert controls["CC7.3"].status == "exception" and "1 dead letter" in controls["CC7.3"].summary


def test_control_summary_points_at_sections(store: Store, config: Config) -> None:
    controls = march(store, config).controls
    assert [c.control for c in controls] == [
        "CC6.2", "CC6.3", "CC7.2", "CC7.3", "CC8.1", "A.8.15", "A.8.16", "164.312(b)", "164.308(a)(1)(ii)(D)",
    ]  # fmt: skip
    by_id = {c.control: c for c in controls}
    assert by_id["A.8.15"].status == "exception"  # the fixture month has gaps
    assert by_id["CC6.2"].status == "review" and by_id["CC6.2"].section == "privileged-access"
    assert by_id["CC8.1"].summary == "4 change(s), 1 listed off-hours"


def test_a_broken_chain_shows_in_integrity(store: Store, config: Config) -> None:
    store.conn.execute("UPDATE events SET msg = 'edited' WHERE seq = 5")  # tampering, outside the store API
    integrity = march(store, config).integrity
    assert integrity is not None and not integrity.verify_ok and integrity.verify_detail.startswith("row 5")

"""The response section with the alert lifecycle: acknowledged/resolved times, disposition, MTTA/MTTR, still
open and silenced alerts, over the fixture month (March 2026, Berlin; report_data.py). Every action goes
through the store's lifecycle functions with a fixed clock; the expected figures are worked out below."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from report_data import FIXTURE_ALERTS, NOW, alert, fill_fixture, utc

from monitor.config import Config
from monitor.report import Period, build_report
from monitor.store import Store
from monitor.store.lifecycle import add_silence, transition

RECORDED = utc("2026-04-01T00:00:00Z")  # when fill_fixture recorded the fixture alerts (detected)
BURST_MARCH_5, BURST_MARCH_29, OFF_HOURS, RETENTION = (a.id for a in FIXTURE_ALERTS[:4])
SILENCE_REASON = "maintenance window CHG-42 <i>"
HELD_BACK = alert("xano.config.env-changed", "medium", "2026-03-30T10:00:00Z", 0, "held")


@pytest.fixture
def store(config: Config, store_target: str) -> Iterator[Store]:
    """The report's figures are SQL over the archive: these tests run on both backends."""
    with Store.open(store_target) as opened:
        fill_fixture(opened)
        yield opened


def act(store: Store) -> None:
    """Burst of the 5th: acknowledged after 10 min, resolved (benign) after 2 h. Burst of the 29th: resolved
    (true positive) after 1 h without an acknowledgement. Off-hours delete: acknowledged after 30 min, still
    open. Retention gap: untouched, open. One alert held back by a silence."""
    transition(store, BURST_MARCH_5, "acknowledged", actor="ana@corp.io", at=utc("2026-04-01T00:10:00Z"))
    transition(
        store, BURST_MARCH_5, "resolved", actor="ana@corp.io", at=utc("2026-04-01T02:00:00Z"),
        disposition="benign", note="a load test",
    )  # fmt: skip
    transition(
        store, BURST_MARCH_29, "resolved", actor="ben@corp.io", at=utc("2026-04-01T01:00:00Z"),
        disposition="true_positive",
    )  # fmt: skip
    transition(store, OFF_HOURS, "acknowledged", actor="ben@corp.io", at=utc("2026-04-01T00:30:00Z"))
    add_silence(
        store, rule_id=HELD_BACK.rule_id, match={}, until=utc("2026-04-02T00:00:00Z"), reason=SILENCE_REASON,
        actor="ops@corp.io", at=utc("2026-04-01T09:00:00Z"),
    )  # fmt: skip
    with store.transaction():
        store.record_alert(HELD_BACK, ["console"], utc("2026-04-01T10:00:00Z"))


# Worked out from act(): MTTA over the two acknowledged alerts, MTTR over the two resolved ones.
MTTA = (10 * 60 + 30 * 60) / 2  # 20 min
MTTR = (2 * 3600 + 1 * 3600) / 2  # 1 h 30 min


def test_lifecycle_figures_in_html_text_and_json(store: Store, config: Config, tmp_path: Path) -> None:
    act(store)
    files = build_report(store, config, Period.parse("2026-03", config.tz), tmp_path, now=NOW)
    figures = files.figures
    assert (figures.mtta_seconds, figures.mttr_seconds) == (MTTA, MTTR)
    assert (figures.acknowledged_total, figures.resolved_total) == (2, 2)
    assert figures.status_counts == {"open": 1, "acknowledged": 1, "resolved": 2, "silenced": 1}
    assert (figures.still_open, figures.silenced_total) == (2, 1)
    assert figures.dispositions == {"benign": 1, "true_positive": 1}

    by_id = {r.alert_id: r for r in figures.responses}
    first = by_id[BURST_MARCH_5]
    assert first.acknowledged_at == utc("2026-04-01T00:10:00Z")
    assert first.resolved_at == utc("2026-04-01T02:00:00Z")
    assert (first.disposition, first.status) == ("benign", "resolved")
    assert by_id[BURST_MARCH_29].acknowledged_at is None
    assert by_id[BURST_MARCH_29].disposition == "true_positive"
    assert (by_id[OFF_HOURS].status, by_id[OFF_HOURS].resolved_at) == ("acknowledged", None)
    held = by_id[HELD_BACK.id]
    assert (held.status, held.silence_reason, held.deliveries, held.delivered_at) == (
        "silenced",
        SILENCE_REASON,
        [],
        None,
    )

    summary = "2 acknowledged (MTTA 20 min), 2 resolved (MTTR 1 h 30 min), 2 still open, 1 silenced"
    html = files.html.read_text(encoding="utf-8")
    text = files.text.read_text(encoding="utf-8")
    for body in (html, text):
        assert summary in body
        # Berlin is on CEST on April 1st: 00:10 UTC is 02:10 local.
        assert "acknowledged 2026-04-01 02:10:00 CEST" in body
        assert "resolved 2026-04-01 04:00:00 CEST (benign)" in body
    # The silenced alert says so, with the silence's reason (escaped), and no channel delivery.
    assert "silenced: maintenance window CHG-42 &lt;i&gt;" in html
    assert "<i>" not in html
    held_line = next(line for line in text.splitlines() if "xano.config.env-changed" in line)
    assert f"silenced: {SILENCE_REASON}" in held_line
    assert "delivered" not in held_line and "console" not in held_line
    assert len(html.encode("utf-8")) < 100_000

    assert files.json is not None
    response = json.loads(files.json.read_text(encoding="utf-8"))["response"]
    assert (response["mtta_seconds"], response["mttr_seconds"]) == (MTTA, MTTR)
    assert (response["still_open"], response["silenced"]) == (2, 1)
    assert (response["acknowledged"], response["resolved"]) == (2, 2)
    assert response["dispositions"] == {"benign": 1, "true_positive": 1}
    rows = {row["alert_id"]: row for row in response["alerts"]["rows"]}
    assert rows[BURST_MARCH_5]["mtta_seconds"] == 600 and rows[BURST_MARCH_5]["mttr_seconds"] == 7200
    assert rows[BURST_MARCH_5]["acknowledged_at"] == "2026-04-01T02:10:00+02:00"
    assert rows[BURST_MARCH_29]["mtta_seconds"] is None and rows[BURST_MARCH_29]["open"] is False
    assert rows[OFF_HOURS]["open"] is True and rows[RETENTION]["open"] is True
    assert rows[HELD_BACK.id]["silenced"] is True and rows[HELD_BACK.id]["delivered_at"] is None
    assert rows[HELD_BACK.id]["silence_reason"] == SILENCE_REASON

    controls = {c.control: c for c in figures.controls}
    for control in ("CC7.3", "A.8.16"):
        assert summary in controls[control].summary


def test_without_actions_mtta_and_mttr_are_not_measured(store: Store, config: Config, tmp_path: Path) -> None:
    files = build_report(store, config, Period.parse("2026-03", config.tz), tmp_path, now=NOW)
    figures = files.figures
    assert (figures.mtta_seconds, figures.mttr_seconds) == (None, None)
    assert figures.still_open == 4 and figures.silenced_total == 0  # a, b, c, d of the fixture month
    assert files.json is not None
    response = json.loads(files.json.read_text(encoding="utf-8"))["response"]
    assert (response["mtta_seconds"], response["mttr_seconds"]) == (None, None)
    assert "MTTA not measured" in files.text.read_text(encoding="utf-8")

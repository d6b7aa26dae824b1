"""Coverage evidence: the poll success rate per source, and the reconciliation of the archive's count with
the ``itemsTotal`` Xano reports for the month, against the simulator over HTTP on 127.0.0.1.

The simulator answers a time-range count query from its ground truth and keeps such queries out of its
``request_count`` and its fault queue: a report must not consume a fault a test injected for the poller.
"""

from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from monitor.config import Config, SourceConfig, UnsetSecret
from monitor.daemon import Monitor
from monitor.events import parse_timestamp
from monitor.report import Period, build_report
from monitor.report.reconcile import NOT_RECONCILED
from monitor.simulator import Simulator
from monitor.store.polls import poll_stats, record_poll
from monitor.xano import RangeCount

BERLIN = ZoneInfo("Europe/Berlin")
OCTOBER = Period.parse("2026-10", BERLIN)
CLOCK = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)  # the report is made two days after October ended


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _config(tmp_path: Path, sim: Simulator, **source: Any) -> Config:
    return Config.model_validate(
        {
            "timezone": "Europe/Berlin",
            "state": {"path": str(tmp_path / "a.db")},
            "sources": [
                {"name": "sim", "base_url": sim.base_url, "token": sim.token, "workspace_id": 1,
                 "plan_retention": "60d", "per_page": 1000, **source}
            ],
            "alerts": {"console": False},
            "server": {"listen": ""},
            "report": {"out_dir": str(tmp_path / "reports")},
        }
    )  # fmt: skip


@contextmanager
def _simulator(**options: Any) -> Iterator[Simulator]:
    with Simulator(
        seed=11,
        clock=lambda: CLOCK,
        history_start=datetime(2026, 9, 27, tzinfo=UTC),
        events_per_day=60,
        live_background=False,
        **options,
    ) as sim:
        yield sim


def _october_served(sim: Simulator) -> int:
    """Independent count: the entries the simulator serves whose created_at falls in October (Berlin)."""
    return sum(
        1 for e in sim.visible_events(1) if OCTOBER.start <= parse_timestamp(e["created_at"]) < OCTOBER.end
    )


def _polled(config: Config, clock: Callable[[], datetime] = lambda: CLOCK) -> Monitor:
    monitor = Monitor(config, clock=clock, stdout=io.StringIO())
    assert monitor.poll(config.sources[0]).ok
    return monitor


def test_the_months_count_is_reconciled_with_xano_and_leaves_the_fault_queue_alone(tmp_path: Path) -> None:
    with _simulator() as sim:
        config = _config(tmp_path, sim)
        monitor = _polled(config)
        try:
            sim.inject_status(503, count=1)  # meant for the next poll: the report must not take it
            requests_before = sim.request_count
            files = build_report(monitor.store, config, OCTOBER, tmp_path / "out", now=CLOCK)
            assert sim.request_count == requests_before and sim.count_queries == 1
            # The injected fault is still queued: the next ordinary request receives it.
            answer = httpx.post(
                f"{sim.base_url}/api:meta/audit_log/search",
                json={"page": 1, "per_page": 1},
                headers={"Authorization": f"Bearer {sim.token}"},
            )
            assert answer.status_code == 503
        finally:
            monitor.close()
        expected = _october_served(sim)

    (line,) = files.figures.reconciliation
    assert line.status == "matches" and line.ours == line.xano == expected > 1000 and line.difference == 0
    start_ms = int(OCTOBER.start.timestamp() * 1000)
    end_ms = int(OCTOBER.end.timestamp() * 1000)
    assert line.query == (
        f"POST {sim.base_url}/api:meta/workspace/1/audit_log/search "
        '{"page":1,"per_page":1,"include_data":false,"sort":{"id":"desc"},'
        f'"search":[{{"created_at|>=":{start_ms}}},{{"created_at|<":{end_ms}}}]}}'
    )
    document = json.loads(files.json.read_text(encoding="utf-8")) if files.json else {}
    (reconciled,) = document["coverage"]["reconciliation"]
    assert reconciled["status"] == "matches" and reconciled["xano"] == expected
    assert reconciled["difference"] == 0 and reconciled["query"] == line.query
    html = files.html.read_text(encoding="utf-8")
    assert "Reconciliation with Xano" in html and "created_at|&gt;=" in html
    assert "is not documented by Xano for the audit log: a count is used only when the entry served" in html
    text = files.text.read_text(encoding="utf-8")
    assert "Reconciliation of sim with Xano: matches" in text and "that Xano does not document" in text
    logging = next(c for c in files.figures.controls if c.control == "A.8.15")
    assert "1 of 1 source(s) reconciled with Xano's itemsTotal" in logging.summary


def test_an_event_the_archive_missed_shows_as_a_difference_and_an_exception(tmp_path: Path) -> None:
    with _simulator() as sim:
        config = _config(tmp_path, sim)
        monitor = _polled(config)
        try:
            # Served only now, below the cursor's overlap window: the archive never got it.
            sim.add_event("Delete Table", created_at=datetime(2026, 10, 10, 9, tzinfo=UTC))
            files = build_report(monitor.store, config, OCTOBER, tmp_path / "out", now=CLOCK)
        finally:
            monitor.close()
    (line,) = files.figures.reconciliation
    assert line.status == "differs" and line.difference == 1 and line.xano == line.ours + 1
    assert "Xano reports 1 event(s) more than the archive holds" in line.reason
    logging = next(c for c in files.figures.controls if c.control == "A.8.15")
    assert logging.status == "exception" and "1 source(s) differ from Xano's count" in logging.summary


def test_a_month_outside_retention_is_not_reconciled_and_needs_no_token(tmp_path: Path) -> None:
    with _simulator() as sim:
        config = _config(tmp_path, sim)
        monitor = _polled(config)
        try:
            unset = UnsetSecret("sources[0].token: ${XANO_TOKEN} is not set")
            short = config.model_copy(
                update={
                    "sources": [
                        config.sources[0].model_copy(
                            update={"token": unset, "plan_retention": timedelta(days=1)}
                        )
                    ]
                }
            )
            files = build_report(monitor.store, short, OCTOBER, tmp_path / "out", now=CLOCK)
        finally:
            monitor.close()
        assert sim.count_queries == 0
    (line,) = files.figures.reconciliation
    assert line.status == NOT_RECONCILED and line.xano is None and line.difference is None
    assert "outside the plan's retention" in line.reason and "for 1 d," in line.reason
    assert "not reconciled" in files.html.read_text(encoding="utf-8")


def test_an_unset_token_is_a_reason_not_a_failure(tmp_path: Path) -> None:
    with _simulator() as sim:
        config = _config(tmp_path, sim)
        monitor = _polled(config)
        try:
            unset = UnsetSecret("sources[0].token: ${XANO_TOKEN} is not set")
            no_token = config.model_copy(
                update={"sources": [config.sources[0].model_copy(update={"token": unset})]}
            )
            files = build_report(monitor.store, no_token, OCTOBER, tmp_path / "out", now=CLOCK)
        finally:
            monitor.close()
    (line,) = files.figures.reconciliation
    assert line.status == NOT_RECONCILED and "token is not available" in line.reason
    assert "XANO_TOKEN" in line.reason


def test_a_server_that_ignores_the_filter_is_not_taken_at_its_word(tmp_path: Path) -> None:
    with _simulator(range_filters=False) as sim:
        config = _config(tmp_path, sim)
        monitor = _polled(config)
        try:
            files = build_report(monitor.store, config, OCTOBER, tmp_path / "out", now=CLOCK)
        finally:
            monitor.close()
    (line,) = files.figures.reconciliation
    assert line.status == NOT_RECONCILED and line.xano is None
    assert "did not apply the time-range filter" in line.reason


def test_an_unreachable_xano_is_a_reason(tmp_path: Path) -> None:
    with _simulator() as sim:
        config = _config(tmp_path, sim)
        monitor = _polled(config)
    try:
        # The simulator is stopped: connection refused, retried twice within a few seconds, then given up.
        files = build_report(monitor.store, config, OCTOBER, tmp_path / "out", now=CLOCK)
    finally:
        monitor.close()
    (line,) = files.figures.reconciliation
    assert line.status == NOT_RECONCILED and line.reason.startswith("Xano could not be asked")
    assert config.sources[0].token.get_secret_value() not in line.reason


def test_an_answer_without_items_total_is_not_reconciled(tmp_path: Path) -> None:
    with _simulator() as sim:
        config = _config(tmp_path, sim)
        monitor = _polled(config)
    try:
        # A stand-in for a server whose envelope lacks itemsTotal (neither the simulator nor Xano's guide
        # shape omits it, so this one answer is built here).
        @contextmanager
        def counter(source: SourceConfig) -> Iterator[Any]:
            class NoTotal:
                def count_range(self, since: datetime, until: datetime) -> RangeCount:
                    return RangeCount(None, None, "POST https://x/api:meta/audit_log/search {}")

            yield NoTotal()

        files = build_report(monitor.store, config, OCTOBER, tmp_path / "out", now=CLOCK, counter=counter)
    finally:
        monitor.close()
    (line,) = files.figures.reconciliation
    assert line.status == NOT_RECONCILED and line.reason == "Xano's answer holds no itemsTotal"


def test_a_running_month_is_not_reconciled(tmp_path: Path) -> None:
    with _simulator() as sim:
        config = _config(tmp_path, sim)
        monitor = _polled(config)
        try:
            files = build_report(
                monitor.store, config, Period.parse("2026-11", BERLIN), tmp_path / "o", now=CLOCK
            )
        finally:
            monitor.close()
        assert sim.count_queries == 0
    (line,) = files.figures.reconciliation
    assert line.status == NOT_RECONCILED and line.reason == "the month is not over yet"


# --- poll success rate -------------------------------------------------------------------------------------


def test_poll_success_rate_counts_each_cycle_of_the_month(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 10, 20, 9, 0, tzinfo=UTC))
    with Simulator(
        seed=11, clock=clock, history_start=datetime(2026, 10, 15, tzinfo=UTC), events_per_day=40,
        live_background=False,
    ) as sim:  # fmt: skip
        config = _config(tmp_path, sim)
        monitor = Monitor(config, clock=clock, stdout=io.StringIO())
        try:
            source = config.sources[0]
            assert monitor.poll(source).ok
            clock.now += timedelta(minutes=5)
            sim.inject_status(401)  # a rejected token: the cycle fails at once, kind "auth"
            assert monitor.poll(source).error_kind == "auth"
            clock.now += timedelta(minutes=5)
            assert monitor.poll(source).ok
            clock.now = datetime(2026, 11, 1, 0, 30, tzinfo=UTC)  # November in Berlin: not October's
            assert monitor.poll(source).ok
            files = build_report(monitor.store, config, OCTOBER, tmp_path / "out", now=CLOCK, counter=None)
        finally:
            monitor.close()
    (polls,) = files.figures.polls
    assert (polls.source, polls.cycles, polls.ok, polls.failed) == ("sim", 3, 2, 1)
    assert polls.failed_by_kind == {"auth": 1} and polls.success_rate == pytest.approx(2 / 3)
    assert polls.recorded_from is None
    document = json.loads(files.json.read_text(encoding="utf-8")) if files.json else {}
    assert document["coverage"]["poll_success_rate"] == pytest.approx(2 / 3)
    assert document["coverage"]["polls"][0]["failed_by_kind"] == {"auth": 1}
    html = files.html.read_text(encoding="utf-8")
    assert "66.7%" in html and "failed cycles: auth 1" in html
    assert "Polls of sim: 2 of 3 cycles committed (66.7%); failed: auth 1" in files.text.read_text("utf-8")
    logging = next(c for c in files.figures.controls if c.control == "A.8.15")
    assert "poll success 66.7% (2 of 3 cycles)" in logging.summary
    (line,) = files.figures.reconciliation  # counter=None: Xano is not asked, and the report says so
    assert line.status == NOT_RECONCILED and "not asked" in line.reason


def test_a_month_before_poll_outcomes_were_recorded_says_not_recorded(tmp_path: Path) -> None:
    with _simulator() as sim:
        config = _config(tmp_path, sim)
        _polled(config).close()
        # The archive as an older release left it: schema 6, no poll outcomes.
        with sqlite3.connect(config.state.path) as conn:
            conn.execute("DROP TABLE polls")
            conn.execute("DROP TABLE alembic_version")  # releases before Alembic had none
            # ...and none of the later migrations (8: the alert lifecycle and search indexes; 10: the
            # report's indexes).
            for statement in (
                "DROP TABLE alert_actions", "DROP TABLE silences", "DROP INDEX alerts_status_time",
                "DROP INDEX events_user_time", "DROP INDEX events_type_time",
                "ALTER TABLE alerts DROP COLUMN status", "ALTER TABLE alerts DROP COLUMN silence_id",
                "DROP INDEX events_source_time_cover", "DROP INDEX events_archived_at",
                'CREATE INDEX "idx_events_source_created_ms" ON "events" ("source", "created_ms")',
            ):  # fmt: skip
                conn.execute(statement)
            conn.execute("PRAGMA user_version=6")
        upgraded_at = datetime.now(UTC)
        monitor = Monitor(config, clock=lambda: CLOCK, stdout=io.StringIO())  # migrates to the latest
        try:
            files = build_report(monitor.store, config, OCTOBER, tmp_path / "out", now=CLOCK, counter=None)
        finally:
            monitor.close()
    (polls,) = files.figures.polls
    assert polls.cycles == 0 and polls.success_rate is None
    assert polls.recorded_from is not None and polls.recorded_from >= upgraded_at - timedelta(seconds=5)
    control = next(c for c in files.figures.controls if c.control == "A.8.15")
    assert "poll success rate not recorded" in control.summary
    html = files.html.read_text(encoding="utf-8")
    assert "not recorded" in html and "poll outcomes recorded from" in html


def test_poll_rows_follow_the_archives_retention(tmp_path: Path) -> None:
    with _simulator() as sim:
        config = _config(tmp_path, sim)
        config = config.model_copy(update={"state": config.state.model_copy(update={"retention_days": 30})})
        monitor = _polled(config)
        try:
            record_poll(
                monitor.store,
                "sim",
                started=CLOCK - timedelta(days=40),
                ended=CLOCK - timedelta(days=40),
                ok=True,
            )
            span = (CLOCK - timedelta(days=100), CLOCK + timedelta(days=1))
            assert poll_stats(monitor.store, *span)["sim"].cycles == 2
            monitor.apply_retention()
            assert poll_stats(monitor.store, *span)["sim"].cycles == 1  # the old row went with the events
        finally:
            monitor.close()

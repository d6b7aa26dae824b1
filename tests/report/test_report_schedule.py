"""Exactly once per period: claims across restarts and concurrent processes, missed periods, retries.

Two "processes" are two Store connections on one file (SQLite's BEGIN IMMEDIATE locks the file, not the
connection's process); time is an injected clock; mail goes to a real SMTP server on 127.0.0.1.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import EmailMessage
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from report_data import Mailbox, fill_fixture, fixture_config, mail_config, utc

from monitor.config import Config, EmailConfig
from monitor.daemon import Monitor, run_daemon
from monitor.events import format_timestamp
from monitor.report import due_periods
from monitor.report.mail import smtp_deliver
from monitor.report.schedule import ReportScheduler, claim_period, get_claim
from monitor.store import Store

BERLIN = ZoneInfo("Europe/Berlin")
MONTHLY = "0 8 1 * *"


class Clock:
    def __init__(self, now: str) -> None:
        self.now = utc(now)

    def __call__(self) -> datetime:
        return self.now


def keys(periods: list) -> list[str]:  # type: ignore[type-arg]
    return [p.key for p in periods]


# --- due periods -------------------------------------------------------------------------------------------


def test_the_first_of_the_month_at_eight_makes_the_previous_month_due() -> None:
    since = utc("2026-03-20T10:00:00Z")
    assert keys(due_periods(MONTHLY, BERLIN, since, utc("2026-04-01T05:59:59Z"))) == []  # 07:59:59 CEST
    assert keys(due_periods(MONTHLY, BERLIN, since, utc("2026-04-01T06:00:00Z"))) == ["2026-03"]
    assert keys(due_periods(MONTHLY, BERLIN, since, utc("2026-06-15T00:00:00Z"))) == [
        "2026-03",
        "2026-04",
        "2026-05",
    ]
    # Winter time: 08:00 CET is 07:00 UTC.
    assert keys(due_periods(MONTHLY, BERLIN, utc("2026-11-20T00:00:00Z"), utc("2026-12-01T06:59:00Z"))) == []
    assert keys(due_periods(MONTHLY, BERLIN, utc("2026-11-20T00:00:00Z"), utc("2026-12-01T07:00:00Z"))) == [
        "2026-11"
    ]


def test_a_fresh_installation_does_not_mail_reports_about_months_before_it() -> None:
    now = utc("2026-04-15T10:00:00Z")
    assert due_periods(MONTHLY, BERLIN, now, now) == []


def test_a_frequent_cron_costs_one_evaluation_per_month() -> None:
    started = time.perf_counter()
    periods = due_periods("* * * * *", BERLIN, utc("2025-01-01T00:00:00Z"), utc("2026-06-15T00:00:00Z"))
    assert keys(periods)[-1] == "2026-05" and len(periods) == 12  # capped to the twelve newest
    assert time.perf_counter() - started < 2


# --- claims ------------------------------------------------------------------------------------------------


def test_two_connections_race_for_a_claim_and_exactly_one_wins(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    now = utc("2026-04-01T06:00:00Z")
    with Store.open(path) as first, Store.open(path) as second:
        barrier = threading.Barrier(2)
        results: dict[str, object] = {}

        def attempt(name: str, store: Store) -> None:
            barrier.wait()
            results[name] = claim_period(store, "2026-03", name, now)

        threads = [threading.Thread(target=attempt, args=(n, s)) for n, s in (("a", first), ("b", second))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        winners = [name for name, claim in results.items() if claim is not None]
        assert len(results) == 2 and len(winners) == 1
        claim = get_claim(first, "2026-03")
        assert claim is not None and claim.claimed_by == winners[0] and claim.status == "sending"


def test_an_abandoned_claim_is_taken_over_only_once_stale(tmp_path: Path) -> None:
    now = utc("2026-04-01T06:30:00Z")
    with Store.open(tmp_path / "a.db") as store:
        assert claim_period(store, "2026-03", "dead:1:x", now - timedelta(minutes=5)) is not None
        assert claim_period(store, "2026-03", "me", now) is None  # five minutes: maybe still sending
        taken = claim_period(store, "2026-03", "me", now + timedelta(minutes=15))
        assert taken is not None and taken.claimed_by == "me" and taken.attempts == 2


# --- the scheduler -----------------------------------------------------------------------------------------


def test_exactly_once_across_a_restart(tmp_path: Path, mailbox: Mailbox) -> None:
    config = mail_config(tmp_path, mailbox)
    clock = Clock("2026-03-20T10:00:00Z")
    with Store.open(config.state.path) as store:
        fill_fixture(store)
        first = ReportScheduler(store, config, clock=clock)
        assert first.run_due() == []
        clock.now = utc("2026-04-01T06:00:01Z")
        assert [r.outcome for r in first.run_due()] == ["sent"]
        assert first.run_due() == []  # the hourly catch-up of the same process
    # The daemon restarts an hour later: a new process, a new connection, a new owner id.
    clock.now = utc("2026-04-01T07:00:00Z")
    with Store.open(config.state.path) as store:
        second = ReportScheduler(store, config, clock=clock)
        assert second.owner != first.owner
        assert second.due() == [] and second.run_due() == []
    assert len(mailbox.messages) == 1


def test_two_processes_sharing_the_file_send_once(tmp_path: Path, mailbox: Mailbox) -> None:
    config = mail_config(tmp_path, mailbox)
    clock = Clock("2026-03-20T10:00:00Z")
    with Store.open(config.state.path) as store:
        fill_fixture(store)
        ReportScheduler(store, config, clock=clock).since()
    clock.now = utc("2026-04-01T06:00:01Z")
    barrier = threading.Barrier(2)

    def slow_deliver(email: EmailConfig, recipients: list[str], message: EmailMessage) -> str:
        time.sleep(0.3)  # the other process tries to claim while this one is talking SMTP
        return smtp_deliver(email, recipients, message)

    outcomes: list[list[str]] = []

    def daemon_process() -> None:
        with Store.open(config.state.path) as store:
            scheduler = ReportScheduler(store, config, clock=clock, deliver=slow_deliver)
            barrier.wait()
            outcomes.append([r.outcome for r in scheduler.run_due()])

    threads = [threading.Thread(target=daemon_process) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == [[], ["sent"]]
    assert len(mailbox.messages) == 1


def test_a_process_that_listed_the_month_before_another_finished_does_not_send_it_again(
    tmp_path: Path, mailbox: Mailbox
) -> None:
    """B lists the month as due, A sends it meanwhile, then B gets to it: B's claim must see it done.

    The threaded test above keeps B inside A's "sending" window; this one reaches the done check.
    """
    config = mail_config(tmp_path, mailbox)
    clock = Clock("2026-03-20T10:00:00Z")
    with Store.open(config.state.path) as store:
        fill_fixture(store)
        ReportScheduler(store, config, clock=clock).since()
    clock.now = utc("2026-04-01T06:00:01Z")
    with Store.open(config.state.path) as store_a, Store.open(config.state.path) as store_b:
        a = ReportScheduler(store_a, config, clock=clock, owner="host:1:a")
        b = ReportScheduler(store_b, config, clock=clock, owner="host:2:b")
        listed = b.due()
        assert keys(listed) == ["2026-03"]
        assert [r.outcome for r in a.run_due()] == ["sent"]
        clock.now += timedelta(hours=1)  # long after A's claim would have gone stale, had it not finished
        assert [b.send_period(period) for period in listed] == [None]
    assert len(mailbox.messages) == 1
    with Store.open(config.state.path) as store:
        claim = get_claim(store, "2026-03")
    assert claim is not None and claim.status == "sent" and claim.claimed_by == "host:1:a"


def test_periods_missed_while_down_are_sent_at_the_next_start(tmp_path: Path, mailbox: Mailbox) -> None:
    config = mail_config(tmp_path, mailbox)
    clock = Clock("2026-02-20T10:00:00Z")
    with Store.open(config.state.path) as store:
        fill_fixture(store)
        assert ReportScheduler(store, config, clock=clock).run_due() == []
    # Down from Feb 20 until May 3: three fire times (Mar 1, Apr 1, May 1) passed.
    clock.now = utc("2026-05-03T09:00:00Z")
    with Store.open(config.state.path) as store:
        runs = ReportScheduler(store, config, clock=clock).run_due()
        assert [(r.period, r.outcome) for r in runs] == [
            ("2026-02", "sent"),
            ("2026-03", "sent"),
            ("2026-04", "sent"),
        ]
    subjects = [str(message_from_bytes(m.original_content)["Subject"]) for m in mailbox.messages]
    assert [s.split(":")[0] for s in subjects] == [
        "Xano compliance report February 2026",
        "Xano compliance report March 2026",
        "Xano compliance report April 2026",
    ]


def test_a_failed_send_stays_due_and_is_retried(
    tmp_path: Path, mailbox: Mailbox, caplog: pytest.LogCaptureFixture
) -> None:
    config = mail_config(tmp_path, mailbox)
    clock = Clock("2026-03-20T10:00:00Z")
    mailbox.fail_next = 1  # the server answers 451 once
    with Store.open(config.state.path) as store:
        fill_fixture(store)
        scheduler = ReportScheduler(store, config, clock=clock)
        scheduler.run_due()
        clock.now = utc("2026-04-01T06:00:01Z")
        with caplog.at_level(logging.ERROR, logger="monitor.report"):
            [failed] = scheduler.run_due()
        assert failed.outcome == "failed" and "451" in failed.detail
        record = next(r for r in caplog.records if r.getMessage().startswith("monthly report failed"))
        assert record.period == "2026-03" and "451" in record.error  # type: ignore[attr-defined]
        claim = get_claim(store, "2026-03")
        assert claim is not None and claim.status == "failed" and claim.sent_at is None
        assert mailbox.messages == []
        clock.now += timedelta(hours=1)  # the hourly catch-up
        [retried] = scheduler.run_due()
        assert retried.outcome == "sent"
        claim = get_claim(store, "2026-03")
        assert claim is not None and claim.status == "sent" and claim.attempts == 2 and claim.error is None
    assert len(mailbox.messages) == 1


def test_without_recipients_the_report_is_written_once_and_not_mailed(tmp_path: Path) -> None:
    config = fixture_config(tmp_path)
    clock = Clock("2026-03-20T10:00:00Z")
    with Store.open(config.state.path) as store:
        fill_fixture(store)
        scheduler = ReportScheduler(store, config, clock=clock)
        scheduler.run_due()
        clock.now = utc("2026-04-01T06:00:01Z")
        [run] = scheduler.run_due()
        assert run.outcome == "written"
        assert scheduler.run_due() == []
    assert (Path(config.report.out_dir) / "compliance-report-2026-03.csv").exists()


def test_the_monitor_sends_a_due_report(tmp_path: Path, mailbox: Mailbox) -> None:
    config = mail_config(tmp_path, mailbox)
    clock = Clock("2026-03-20T10:00:00Z")
    with Store.open(config.state.path) as store:
        fill_fixture(store)
    monitor = Monitor(config, clock=clock)
    try:
        assert monitor.send_due_reports() == []
        clock.now = utc("2026-04-01T06:00:01Z")
        [run] = monitor.send_due_reports()
        assert run.outcome == "sent" and run.files is not None
        # Off-hours follow the loaded rule set's business_hours (the bundled pack's, Mon-Fri 08-19).
        assert run.files.figures.calendar == (
            "Mon-Fri 08:00-19:00 Europe/Berlin (business_hours calendar of the rule set)"
        )
    finally:
        monitor.close()
    assert len(mailbox.messages) == 1


def test_the_daemon_sends_a_missed_report_at_start(tmp_path: Path, mailbox: Mailbox) -> None:
    base = mail_config(tmp_path, mailbox)
    config = Config.model_validate({**base.model_dump(by_alias=True, exclude={"sources"}), "sources": []})
    with Store.open(config.state.path) as store:
        fill_fixture(store)
        # The daemon ran in March (the scheduler's start is recorded), then was down over Apr 1 08:00.
        store.set_meta("report_schedule_since", format_timestamp(utc("2026-03-20T10:00:00Z")))
    monitor = Monitor(config, clock=lambda: datetime(2026, 4, 2, 9, 0, tzinfo=UTC))
    stop = threading.Event()
    daemon = threading.Thread(target=run_daemon, args=(monitor, stop))
    daemon.start()
    try:
        deadline = time.monotonic() + 20
        while not mailbox.messages and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        daemon.join(20)
    assert not daemon.is_alive()
    assert len(mailbox.messages) == 1 and b"March 2026" in mailbox.messages[0].original_content
    with Store.open(config.state.path) as store:
        claim = get_claim(store, "2026-03")
        assert claim is not None and claim.status == "sent"

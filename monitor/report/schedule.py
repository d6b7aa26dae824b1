"""Sending the monthly report once per period: claims in the store, due periods from the cron schedule.

A period (``YYYY-MM``) is claimed by compare-and-set inside ``BEGIN IMMEDIATE``: of two processes sharing
the archive, exactly one gets the claim; the other sees it and stays quiet. The claim becomes ``sent``
only after the SMTP server accepted the message, and ``failed`` (retryable) when it did not. A process
that dies while ``sending`` leaves a claim that another run takes over after ``STALE_CLAIM``: that one
window (the SMTP server accepted, the process died before recording it) is the only way a report can
go out twice, and the re-send carries the same Message-ID.

Due periods: the schedule (``report.schedule``, cron in the configured zone, default 08:00 on the 1st)
firing in month M makes the calendar month before M due. Every fire time since the scheduler first ran
on this archive, up to now, counts; so a fire missed while the daemon was down is caught up at the next
start, and a fresh installation does not mail reports about months before it existed.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from monitor.config import Config
from monitor.engine.calendars import Calendar
from monitor.events import format_timestamp
from monitor.report.figures import Period
from monitor.report.mail import Deliver, ReportSendError, send_report_email, smtp_deliver
from monitor.report.render import ReportError, ReportFiles, build_report
from monitor.store import Claim, Store, StoreError

log = logging.getLogger("monitor.report")

STALE_CLAIM = timedelta(minutes=15)  # far above an SMTP send with its timeouts; a claim older is abandoned
MAX_CATCH_UP = 12  # periods sent at one start after a long outage, newest first
SINCE_KEY = "report_schedule_since"


def process_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


# --- claims ------------------------------------------------------------------------------------------------


def get_claim(store: Store, period: str) -> Claim | None:
    return store.get_claim(period)


def claim_period(
    store: Store, period: str, owner: str, now: datetime, stale_after: timedelta = STALE_CLAIM
) -> Claim | None:
    """Take the period for sending, or return None when it is done or another process is sending it.

    Compare-and-set: the read and the write happen inside one write transaction, which the store grants
    to one connection at a time across processes.
    """
    with store.transaction():
        current = store.get_claim(period)
        if current is None:
            store.insert_claim(period, owner, now)
        elif current.done:
            return None
        elif current.status == "sending" and now - current.claimed_at < stale_after:
            return None  # someone is sending it right now
        else:
            if current.status == "sending":
                log.warning(
                    "taking over an abandoned report claim",
                    extra={
                        "period": period,
                        "claimed_by": current.claimed_by,
                        "claimed_at": current.claimed_at.isoformat(),
                    },
                )
            store.take_over_claim(current, owner, now)
        return store.get_claim(period)


def finish_claim(
    store: Store,
    period: str,
    owner: str,
    now: datetime,
    *,
    status: str,
    message_id: str | None = None,
    error: str | None = None,
) -> bool:
    """Record the outcome of our claim; False if the claim is no longer ours (taken over as stale)."""
    return store.finish_claim(period, owner, now, status, message_id, error)


def record_manual_send(store: Store, period: str, owner: str, now: datetime, message_id: str) -> None:
    """``report --send`` mailed the period: the scheduler must not send it again."""
    store.record_sent_report(period, owner, now, message_id)


# --- due periods -------------------------------------------------------------------------------------------


def due_periods(
    schedule: str, tz: ZoneInfo, since: datetime, now: datetime, limit: int = MAX_CATCH_UP
) -> list[Period]:
    """Periods whose report the schedule asked for at a fire time in [since, now], oldest first.

    One trigger evaluation per month (the first fire at or after the month's start, or ``since``), so
    a minutely cron over a year's outage costs twelve evaluations, not half a million.
    """
    trigger = CronTrigger.from_crontab(schedule, timezone=tz)
    month = Period.containing(now, tz)
    periods: list[Period] = []
    while len(periods) < limit and month.end > since:
        probe = max(month.start, since).astimezone(tz)
        fire = trigger.get_next_fire_time(None, probe)
        if fire is not None and fire < month.end and fire <= now:
            periods.append(month.previous())
        month = month.previous()
    return periods[::-1]


# --- the scheduler -----------------------------------------------------------------------------------------


@dataclass
class ReportRun:
    period: str
    outcome: str  # sent | written | failed
    detail: str = ""
    files: ReportFiles | None = field(default=None, repr=False)

    @property
    def failed(self) -> bool:
        return self.outcome == "failed"


class ReportScheduler:
    """Sends the due monthly reports; the daemon calls ``run_due`` at start, on the cron and hourly.

    Not thread-safe (like the Monitor): call it from the daemon's single worker thread.
    """

    def __init__(
        self,
        store: Store,
        config: Config,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        owner: str | None = None,
        deliver: Deliver = smtp_deliver,
        calendars: Callable[[], dict[str, Calendar] | None] = lambda: None,
        stale_after: timedelta = STALE_CLAIM,
    ) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self.owner = owner or process_identity()
        self.deliver = deliver
        self.calendars = calendars
        self.stale_after = stale_after

    def since(self) -> datetime:
        """When the scheduler first ran on this archive (recorded on the first call)."""
        return datetime.fromisoformat(self.store.set_meta_once(SINCE_KEY, format_timestamp(self.clock())))

    def due(self) -> list[Period]:
        """Due periods not yet sent (a failed or abandoned one is due again)."""
        now = self.clock()
        periods = due_periods(self.config.report.schedule, self.config.tz, self.since(), now)
        pending = []
        for period in periods:
            claim = get_claim(self.store, period.key)
            if claim is None or not claim.done:
                pending.append(period)
        return pending

    def run_due(self) -> list[ReportRun]:
        """Build and send every due period this process can claim. Never raises: failures are logged,
        left retryable, and returned."""
        try:
            periods = self.due()
        except StoreError as exc:
            log.error("monthly report: cannot read the schedule state", extra={"error": str(exc)})
            return [ReportRun("?", "failed", str(exc))]
        return [run for run in (self.send_period(p) for p in periods) if run is not None]

    def send_period(self, period: Period) -> ReportRun | None:
        """Claim, build into ``report.out_dir``, email to ``report.to``, record. None if not ours to send."""
        now = self.clock()
        claim = claim_period(self.store, period.key, self.owner, now, self.stale_after)
        if claim is None:
            return None
        out_dir = Path(self.config.report.out_dir)
        try:
            files = build_report(
                self.store, self.config, period, out_dir, now=now, calendars=self.calendars()
            )
            if not self.config.report.to:
                finish_claim(self.store, period.key, self.owner, self.clock(), status="written")
                log.info(
                    "monthly report written (report.to is empty: not emailed)",
                    extra={"period": period.key, "html": str(files.html), "events": files.rows},
                )
                return ReportRun(period.key, "written", str(files.html), files)
            message_id = send_report_email(files, self.config, now=self.clock(), deliver=self.deliver)
        except Exception as exc:
            known = isinstance(exc, ReportError | ReportSendError | StoreError | OSError)
            error = str(exc) if known else f"unexpected {type(exc).__name__}: {exc}"
            log.error(
                "monthly report failed; it stays due and is retried within the hour and at the next start",
                extra={"period": period.key, "attempt": claim.attempts, "error": error},
                exc_info=not known,
            )
            try:
                finish_claim(self.store, period.key, self.owner, self.clock(), status="failed", error=error)
            except StoreError as store_exc:  # the claim stays 'sending' and is taken over once stale
                log.error(
                    "cannot record the failed report", extra={"period": period.key, "error": str(store_exc)}
                )
            return ReportRun(period.key, "failed", error)
        if not finish_claim(
            self.store, period.key, self.owner, self.clock(), status="sent", message_id=message_id
        ):
            log.warning(
                "monthly report sent, but the claim was taken over meanwhile", extra={"period": period.key}
            )
        log.info(
            "monthly report sent",
            extra={
                "period": period.key,
                "recipients": len(self.config.report.to),
                "message_id": message_id,
                "events": files.rows,
            },
        )
        return ReportRun(period.key, "sent", message_id, files)


def produce_report(
    store: Store,
    config: Config,
    period: Period,
    out_dir: str | os.PathLike[str],
    *,
    now: datetime,
    send: bool = False,
    deliver: Deliver = smtp_deliver,
    calendars: dict[str, Calendar] | None = None,
) -> ReportRun:
    """``audit-monitor report``: write the three files; with ``send`` email them to ``report.to`` and
    record the period as sent, so the scheduler does not mail it a second time. An explicit send always
    sends (a re-send on request). Raises ReportError / ReportSendError."""
    files = build_report(store, config, period, out_dir, now=now, calendars=calendars)
    if not send:
        return ReportRun(period.key, "written", str(files.html), files)
    message_id = send_report_email(files, config, now=now, deliver=deliver)
    record_manual_send(store, period.key, f"cli:{process_identity()}", now, message_id)
    log.info("monthly report sent on request", extra={"period": period.key, "message_id": message_id})
    return ReportRun(period.key, "sent", message_id, files)

"""The running monitor: one store, the rules, a worker per source, the outbox; signals and shutdown.

Each source is polled by a worker thread of its own, on its interval (a cycle that overruns is followed
at once by the next, never by two at a time), so one source trickling its answers cannot delay another
source, the delivery of alerts or the monthly report. Delivery has a worker of its own, woken after
every cycle and every 5 s; the report, its catch-up, retention and the daily verify of the hash chain run
on APScheduler's one worker (so a verify never walks the chain while a prune cuts it).
Every thread reads and writes the archive through its own SQLite connection; writes are serialised by
the store (one transaction at a time in this process, BEGIN IMMEDIATE across processes). Each cycle's
reading has an overall deadline (``cycle_deadline``); a longer walk goes on from its last staged page.
The HTTP application (monitor.web) runs in its own thread: /healthz and /metrics read only
``Monitor.metrics``; the API and the console open their own connections to the archive.

Leadership (monitor/store/leadership.py): on PostgreSQL several daemons may share the database and only the
leader works; the workers of a standby wait (``Monitor.leading``) while the HTTP application keeps serving,
and start at once when it takes over (delivery, the report and retention catch up then). Every cycle, every
page of a walk and every send asks ``Monitor.is_leader()``; every write transaction of the store checks the
lock inside the transaction (``Store.commit_guard``). On SQLite the writer lock already made this process the
only writer, and it leads from the start.

Signals: SIGTERM/SIGINT set the stop event. Every wait in a cycle looks at it: between pages and between
chunks of an answer, a retry's backoff, a Slack rate-limit wait, a wait for the archive's write lock;
a cycle stopped that way commits nothing and the next start repeats it. Work that still runs
``SHUTDOWN_GRACE`` seconds later (a socket that sends nothing, a channel that does not answer) is
abandoned: ``run_daemon`` returns False and the CLI exits without waiting for it. That is as safe as
``kill -9``: a transaction not committed is rolled back by SQLite, an alert whose send was cut off is
still pending in the outbox and goes out at the next start. SIGHUP re-reads the rules; a cycle in
flight finishes with the rules it started its commit with, and rules that fail validation leave the
running ones in force.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from apscheduler.executors.pool import ThreadPoolExecutor as JobExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from monitor import selfmon
from monitor.alerts.console import ConsoleChannel
from monitor.alerts.email import EmailChannel
from monitor.alerts.outbox import Channel, DeliveryReport, OutboxWorker
from monitor.alerts.pagerduty import PagerDutyChannel
from monitor.alerts.slack import SlackChannel
from monitor.alerts.teams import TeamsChannel
from monitor.alerts.webhook import EventLoader, RuleTitles, WebhookChannel
from monitor.anchors import publish_anchor_if_due
from monitor.config import Config, SourceConfig, effective_console, load_config
from monitor.engine import RuleLoadError, RuleSet, ruleset_from_config
from monitor.metrics import Metrics
from monitor.poller import ClientFactory, PollCancelled, Poller, PollResult, default_client_factory
from monitor.report.schedule import ReportRun, ReportScheduler
from monitor.store import Store, StoreError, StoreInterrupted, VerifyRecord
from monitor.store.leadership import LEADER, Leadership, leadership_for
from monitor.store.polls import prune_polls_before
from monitor.web import WebServer
from monitor.xano import XanoClient

log = logging.getLogger("monitor.daemon")

Clock = Callable[[], datetime]
RulesLoader = Callable[[], RuleSet]

RETENTION_EVERY = timedelta(days=1)
VERIFY_EVERY = timedelta(days=1)  # and once at start: the console's integrity panel shows the last one
DELIVERY_EVERY = 5.0  # seconds between deliveries when no cycle asks for one sooner
SHUTDOWN_GRACE = 5.0  # seconds work in flight gets after SIGTERM before the process exits regardless
ONCE_LEAD_WAIT = 15.0  # seconds `run --once` waits to hear whether it may lead (connect, try the lock)
STANDBY_TICK = 0.5  # seconds between a standby worker's looks at whether this process leads now
STANDBY_METRICS_SECONDS = 15.0  # how stale a standby's archive gauges (events, lag, outbox) may be
MIN_CYCLE_DEADLINE = timedelta(minutes=10)


def cycle_deadline(source: SourceConfig) -> timedelta:
    """How long one cycle may read from ``source``: three poll intervals, at least ten minutes.

    Each request is bounded by the source's ``timeout`` (the whole request), but a server answering every
    page just inside it could hold a cycle for hours; this bounds the cycle, so its failure is recorded
    and shown. A walk cut by it (a long backfill) goes on from its last staged page in the next cycle.
    """
    return max(3 * source.poll_interval, MIN_CYCLE_DEADLINE)


def build_channels(
    config: Config,
    stdout: TextIO | None = None,
    *,
    events: EventLoader | None = None,
    rule_titles: RuleTitles | None = None,
) -> dict[str, Channel]:
    """Every configured channel by its outbox name. ``events`` and ``rule_titles`` fill webhook payloads
    (``rule_titles`` also PagerDuty's custom_details)."""
    channels: dict[str, Channel] = {}
    alerts = config.alerts
    if effective_console(config):
        channels["console"] = ConsoleChannel(config.tz, stdout)
    if alerts.slack is not None:
        channels["slack"] = SlackChannel(alerts.slack, config.tz)
    if alerts.email is not None:
        channels["email"] = EmailChannel(alerts.email, config.tz)
    for hook in alerts.webhooks:
        extra: dict[str, Any] = {}
        if events is not None:
            extra["events"] = events
        if rule_titles is not None:
            extra["rule_titles"] = rule_titles
        channels[hook.channel] = WebhookChannel(hook, config.tz, **extra)
    if alerts.teams is not None:
        channels["teams"] = TeamsChannel(alerts.teams, config.tz)
    if alerts.pagerduty is not None:
        channels["pagerduty"] = (
            PagerDutyChannel(alerts.pagerduty, config.tz, rule_titles=rule_titles)
            if rule_titles is not None
            else PagerDutyChannel(alerts.pagerduty, config.tz)
        )
    return channels


@dataclass
class CycleOutcome:
    polls: list[PollResult] = field(default_factory=list)
    delivery: DeliveryReport = field(default_factory=DeliveryReport)
    reports: list[ReportRun] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        reports_ok = not any(r.failed for r in self.reports)
        return all(p.ok for p in self.polls) and not self.delivery.failed and reports_ok


class Monitor:
    """Everything the daemon holds. ``poll`` may run for different sources on different threads at once
    (the store gives each thread its own connection); everything else from one thread at a time."""

    def __init__(
        self,
        config: Config,
        *,
        store: Store | None = None,
        ruleset: RuleSet | None = None,
        clock: Clock = lambda: datetime.now(UTC),
        client_factory: ClientFactory = default_client_factory,
        stdout: TextIO | None = None,
        leadership: Leadership | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.store = store or Store.open(config.state.target())
        # On PostgreSQL, one of the processes sharing the database leads (polls, delivers, reports); on
        # SQLite the writer lock already made this process the only writer. Started by run_daemon/run_once.
        self.leadership = leadership or leadership_for(config.state.target(), config.state.label())
        self.leading = threading.Event()  # set while this process leads: the workers wait on it
        if self.store.is_postgresql:
            self.store.commit_guard = self.leadership.guard_transaction
        self.ruleset = ruleset if ruleset is not None else ruleset_from_config(config)
        self.poller = Poller(self.store, config, self.ruleset, clock=clock, client_factory=client_factory)
        channels = build_channels(
            config, stdout, events=self.store.events_by_id, rule_titles=self._rule_title
        )
        self.outbox = OutboxWorker(
            self.store, channels, clock=clock, digest_after=config.alerts.digest_after, tz=config.tz
        )
        self.metrics = Metrics(clock)
        self.metrics.attach_leadership(self.leadership.describe)
        self.leadership.add_listener(self._role_changed)
        self.outbox.may_send = self.is_leader
        # Off-hours in the report follow the rule set's business_hours calendar (also after a SIGHUP reload).
        self.reports = ReportScheduler(
            self.store, config, clock=clock, calendars=lambda: self.ruleset.calendars
        )
        self._stop: threading.Event | None = None
        self._standby_metrics_lock = threading.Lock()
        self._standby_metrics_at = time.monotonic()  # seeded at start

    # leadership ---------------------------------------------------------------------------------------

    def is_leader(self) -> bool:
        return self.leadership.is_leader()

    def _role_changed(self, role: str, _reason: str) -> None:
        self.metrics.observe_role(role)
        if role == LEADER:
            self.leading.set()
        else:
            self.leading.clear()

    def _rule_title(self, rule_id: str) -> str | None:
        """The loaded rule's title (after a SIGHUP reload too); None for monitor.* and removed rules."""
        try:
            return self.ruleset.rule(rule_id).title
        except KeyError:
            return None

    def poll(self, source: SourceConfig) -> PollResult:
        if not self.is_leader():  # a standby (or a leader fenced a moment ago) leaves it to the leader
            return PollResult(source.name, False, error="not the leader", error_kind="cancelled")
        self.metrics.poll_started(source.name)
        problem = self.archive_problem()
        result = self.poller.poll(source) if problem is None else self._archive_gone(source, problem)
        self.metrics.observe_poll(result)
        self.metrics.observe_store(self.store)
        return result

    def refresh_standby_metrics(self) -> None:
        """A standby's archive gauges, from the shared database, at most every STANDBY_METRICS_SECONDS
        (every source's worker calls this while it waits to lead)."""
        now = time.monotonic()
        with self._standby_metrics_lock:
            if now - self._standby_metrics_at < STANDBY_METRICS_SECONDS:
                return
            self._standby_metrics_at = now
        try:
            self.metrics.refresh_archive_gauges(self.store, [s.name for s in self.config.sources])
        except StoreError as exc:  # the database is away: /healthz says so; the gauges keep their values
            log.debug("standby metrics not refreshed", extra={"error": str(exc)})
        except Exception:  # called from a source's worker, which must outlive it to lead one day
            log.exception("standby metrics not refreshed")

    def archive_problem(self) -> str | None:
        """Before each cycle and delivery: is ``state.path`` still the file this process opened?

        Deleted or replaced under the daemon, the file it holds open is no longer the archive anyone reads:
        writing on would archive and alert into a file that vanishes at exit, and reopening the path would
        archive and alert everything again. So every cycle fails loudly until an operator restores the file
        and restarts: poll error kind "store", the log, /healthz 503 naming it.
        """
        problem = self.store.file_problem()
        self.metrics.observe_archive_file(problem)
        return problem

    def _archive_gone(self, source: SourceConfig, problem: str) -> PollResult:
        log.error("poll failed", extra={"source": source.name, "error_kind": "store", "error": problem})
        return PollResult(source.name, False, error=problem, error_kind="store")

    def deliver(self) -> DeliveryReport:
        if not self.is_leader():
            return DeliveryReport()  # the leader delivers; the outbox keeps everything for it
        problem = self.archive_problem()
        if problem is not None:
            # The outbox in the file it holds is no one's record any more: the next start sends from the
            # archive at state.path (at least once), rather than this process recording into a lost file.
            log.error("delivery skipped", extra={"error": problem})
            return DeliveryReport(errors=[problem])
        try:
            # After every cycle (and on the delivery timer): raise or end monitor.source_unreachable and
            # auth_failed episodes, so their notices go out in this same delivery.
            selfmon.check_sources(self.store, self.config, self.clock(), self.poller.page_received_at)
        except StoreError as exc:
            log.error("self-monitoring check failed", extra={"error": str(exc)})
        try:
            publish_anchor_if_due(self.store, self.config, self.clock())  # queued, then sent below
        except StoreError as exc:
            log.error("cannot queue the chain anchor", extra={"error": str(exc)})
        report = self.outbox.deliver_due()
        self.metrics.observe_delivery(report)
        if report.outcomes:
            self.metrics.observe_store(self.store)
        return report

    def apply_retention(self) -> int:
        """Prune events older than ``state.retention_days`` (0 = keep forever); the chain stays verifiable."""
        days = self.config.state.retention_days
        if days <= 0 or not self.is_leader():
            return 0
        cutoff = self.clock() - timedelta(days=days)
        deleted = self.store.prune_before(cutoff)
        prune_polls_before(self.store, cutoff)  # poll outcomes follow the events' retention
        self.metrics.observe_prune(self.store, deleted)
        log.info(
            "retention pruned",
            extra={
                "deleted": deleted,
                "cutoff": cutoff.isoformat(),
                "retention_days": days,
                "events_left": self.store.event_count(),
            },
        )
        return deleted

    def verify_chain(self) -> VerifyRecord:
        """Walk the whole hash chain, as ``audit-monitor verify`` does, and keep the outcome for the console,
        ``status`` and /metrics; a chain that does not verify raises ``monitor.chain_broken``.

        Runs on the scheduler's worker, never on a poll thread; SIGTERM ends the walk between batches
        (``StoreInterrupted``), and the next start verifies again.
        """
        started = time.monotonic()
        result = self.store.verify()
        seconds = time.monotonic() - started
        record = selfmon.record_verify(self.store, self.config, result, self.clock(), seconds)
        self.metrics.observe_verify(record)
        facts = {"rows_checked": record.rows_checked, "seconds": record.seconds, "head_seq": record.head_seq}
        if record.ok:
            log.info("hash chain verified", extra=facts)
        else:
            log.error(
                "hash chain does not verify",
                extra={**facts, "bad_seq": record.bad_seq, "bad_source": record.bad_source,
                       "bad_event_id": record.bad_event_id, "reason": record.reason},
            )  # fmt: skip
        return record

    def verify_if_leading(self) -> VerifyRecord | None:
        """The scheduled verify: the leader's work (a standby's record would be refused by the store)."""
        return self.verify_chain() if self.is_leader() else None

    def lead_once(self) -> None:
        """For one cycle outside the daemon (``run --once``): take the lead, or raise ``NotLeading`` naming
        the process that leads (on PostgreSQL; on SQLite this process is the only writer already)."""
        if self.is_leader() or self.leadership.take_once(ONCE_LEAD_WAIT):
            return
        label = self.config.state.label()
        error = self.leadership.database_error
        if error is not None:
            raise NotLeading(f"{label}: cannot take the leader lock: {error}")
        holder = self.leadership.holder
        raise NotLeading(
            f"{label}: another process leads ({holder or 'its name is unknown'}): "
            "`run --once` works only when no `run` leads this database"
        )

    def run_once(self) -> CycleOutcome:
        """One cycle of every source (side by side, so a slow source delays only itself), then delivery
        and the reports due. Takes the lead first (``lead_once``)."""
        self.lead_once()
        outcome = CycleOutcome()
        sources = self.config.sources
        if len(sources) == 1:
            outcome.polls.append(self.poll(sources[0]))
        elif sources:
            with ThreadPoolExecutor(max_workers=len(sources), thread_name_prefix="poll") as pool:
                outcome.polls.extend(pool.map(self._poll_on_pool, sources))
        if self.stopping():
            return outcome  # stopping: the outbox keeps the alerts, the next run sends the reports
        outcome.delivery = self.deliver()
        outcome.reports = self.send_due_reports()
        return outcome

    def _poll_on_pool(self, source: SourceConfig) -> PollResult:
        try:
            return self.poll(source)
        finally:
            self.store.release_thread()  # the pool's thread ends with this call: so does its connection

    def stopping(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    def attach_stop(self, stop: threading.Event) -> None:
        """Make every wait of a cycle end when ``stop`` is set, and bound each cycle's reading.

        A long walk stops at the next page or chunk of an answer, a retry's backoff sleep (a Retry-After
        may ask for minutes) and a Slack rate-limit wait end, and so does a wait for the archive's write
        lock; each cycle of the default client reads for at most ``cycle_deadline``."""
        self._stop = stop
        # A walk also stops at its next page when this process stops leading (fenced): nothing of it commits.
        self.poller.cancel = _StopOrFenced(stop, self.leadership)
        self.store.interrupt = stop
        for channel in self.outbox.channels.values():
            if isinstance(channel, SlackChannel):
                channel.stop = stop
        if self.poller.client_factory is not default_client_factory:
            return  # a caller's own client (tests): its waits are its own

        def sleep_unless_stopping(seconds: float) -> None:
            if stop.wait(seconds):
                raise PollCancelled

        def raise_if_stopping() -> None:
            if stop.is_set() or not self.is_leader():
                raise PollCancelled

        def client_for_one_cycle(source: SourceConfig) -> XanoClient:
            # Called once per cycle, at the start of its walk: the deadline is the cycle's.
            return default_client_factory(
                source,
                sleep=sleep_unless_stopping,
                check_stop=raise_if_stopping,
                deadline=time.monotonic() + cycle_deadline(source).total_seconds(),
            )

        self.poller.client_factory = client_for_one_cycle

    def send_due_reports(self) -> list[ReportRun]:
        """Build and email every monthly report that is due and not yet sent (claimed once per period)."""
        if not self.is_leader():
            return []  # the leader sends them (each period is claimed once, in the store)
        problem = self.archive_problem()
        if problem is not None:  # a claim recorded in a lost file would send the month again later
            log.error("monthly report skipped", extra={"error": problem})
            return []
        return self.reports.run_due()

    def reload_rules(self, ruleset: RuleSet) -> None:
        self.ruleset = ruleset
        self.poller.evaluator = ruleset

    def reload_rules_from(self, load: RulesLoader) -> bool:
        """Load and validate rules with ``load``; on any error keep the running rules and log why."""
        try:
            ruleset = load()
        except RuleLoadError as exc:
            log.error(
                "rules reload failed; the previous rules stay in force",
                extra={"errors": exc.errors, "rules_in_force": len(self.ruleset.rules)},
            )
            return False
        except Exception as exc:  # e.g. the config file no longer parses: same answer, keep what runs
            log.error(
                "rules reload failed; the previous rules stay in force",
                extra={"errors": [str(exc)], "rules_in_force": len(self.ruleset.rules)},
            )
            return False
        self.reload_rules(ruleset)
        log.info("rules reloaded", extra={"rules": len(ruleset.rules), "files": len(ruleset.files)})
        return True

    def close(self) -> None:
        self.leadership.close()  # releases the leader lock: a standby takes over at its next try
        self.store.close()


class _StopOrFenced(threading.Event):
    """The poller's cancel flag: set when the daemon stops, and also while this process does not lead."""

    def __init__(self, stop: threading.Event, leadership: Leadership) -> None:
        super().__init__()
        self._stop, self._leadership = stop, leadership

    def is_set(self) -> bool:
        return self._stop.is_set() or not self._leadership.is_leader()


class NotLeading(Exception):
    """``run --once`` on PostgreSQL while another process leads (the message names it)."""


def config_rules_loader(config_path: str | None, running: Config) -> RulesLoader:
    """SIGHUP's loader: re-read the config file for its ``rules`` section (paths, lists, calendars,
    disable) and load those rule files. Other sections need a restart: a change there is logged, not applied.
    """

    def load() -> RuleSet:
        fresh = load_config(config_path)
        if fresh.model_dump(exclude={"rules"}) != running.model_dump(exclude={"rules"}):
            log.warning("config changes outside rules are applied only at the next start")
        return ruleset_from_config(running.model_copy(update={"rules": fresh.rules}))

    return load


@dataclass
class OnceRun:
    """How ``run --once`` ended: ``outcome`` is None when work was still running at the end of the grace."""

    outcome: CycleOutcome | None
    stopped: bool  # SIGTERM/SIGINT (or ``stop``) arrived


def run_once_until_stopped(monitor: Monitor, stop: threading.Event | None = None) -> OnceRun:
    """``run --once``: one cycle of every source, delivery and the reports due, where SIGTERM/SIGINT stop
    it as they stop the daemon: the waits end, and what still runs ``SHUTDOWN_GRACE`` later is abandoned
    (``outcome`` None: exit without waiting for it)."""
    stop = stop or threading.Event()
    monitor.lead_once()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda _signum, _frame: stop.set())
    monitor.attach_stop(stop)
    outcome: list[CycleOutcome] = []
    failure: list[BaseException] = []

    def once() -> None:
        try:
            outcome.append(monitor.run_once())
        except BaseException as exc:  # re-raised on the caller's thread below
            failure.append(exc)

    # The cycle runs on a thread of its own, so the main thread stays free to notice the signal.
    worker = threading.Thread(target=once, name="once", daemon=True)
    worker.start()
    while worker.is_alive() and not stop.wait(0.2):
        pass
    worker.join(SHUTDOWN_GRACE if stop.is_set() else None)
    if worker.is_alive():
        log.warning("stopping without waiting for work in flight", extra={"grace_s": SHUTDOWN_GRACE})
        return OnceRun(None, True)
    if failure:
        raise failure[0]
    return OnceRun(outcome[0], stop.is_set())


class _InFlight:
    """The names of the jobs running now, so shutdown can wait for them (or name what it abandons)."""

    def __init__(self) -> None:
        self._names: list[str] = []
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def track(self, name: str) -> Iterator[None]:
        with self._changed:
            self._names.append(name)
        try:
            yield
        finally:
            with self._changed:
                self._names.remove(name)
                self._changed.notify_all()

    def wait_idle(self, timeout: float) -> list[str]:
        """Wait until nothing runs or ``timeout`` passes; the names of what still runs."""
        with self._changed:
            self._changed.wait_for(lambda: not self._names, timeout=timeout)
            return sorted(self._names)


def run_daemon(
    monitor: Monitor,
    stop: threading.Event | None = None,
    *,
    rules_loader: RulesLoader | None = None,
    reload: threading.Event | None = None,
) -> bool:
    """Poll every source on its interval and deliver alerts until SIGTERM/SIGINT (or ``stop`` is set).

    Serves /healthz and /metrics on ``server.listen`` (raises ``ServerError`` when it cannot listen),
    prunes the archive daily when ``state.retention_days`` is set, and reloads the rules with
    ``rules_loader`` (default: the running config's rule paths) on SIGHUP or when ``reload`` is set.

    Returns True when all work ended within ``SHUTDOWN_GRACE`` of the stop (the store is closed), False
    when some was still running: the caller should then exit without waiting for it (the CLI does).
    """
    stop = stop or threading.Event()
    reload = reload or threading.Event()
    load_rules = rules_loader or (lambda: ruleset_from_config(monitor.config))

    def on_signal(signum: int, _frame: object) -> None:
        # Only set flags here: the work happens on the main loop and the worker threads.
        if signum == signal.SIGHUP:
            reload.set()
        else:
            stop.set()

    # First thing, so a SIGHUP during start-up (seeding metrics reads the archive) cannot kill the process.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGHUP, on_signal)
    monitor.attach_stop(stop)
    monitor.metrics.seed(
        monitor.store,
        [s.name for s in monitor.config.sources],
        channels=monitor.outbox.channels,
        rules=[(rule.id, rule.severity) for rule in monitor.ruleset.rules],
    )
    server = WebServer(monitor.config, monitor.metrics) if monitor.config.server.listen else None
    if server is not None:
        server.start()
    in_flight = _InFlight()
    deliver_soon = threading.Event()

    def guarded(name: str, work: Callable[[], object], **log_extra: str) -> None:
        """Run one job, tracked for shutdown; a job must never kill its thread."""
        with in_flight.track(name):
            try:
                work()
            except StoreInterrupted:
                pass  # stopping while waiting for the write lock: the next start does it
            except Exception:
                log.exception(f"{name.split(':')[0]} job crashed", extra=log_extra)

    def source_worker(source: SourceConfig) -> None:
        interval = source.poll_interval.total_seconds()
        next_start = time.monotonic()
        while not stop.wait(max(0.0, next_start - time.monotonic())):
            if not monitor.leading.wait(STANDBY_TICK):
                next_start = time.monotonic()  # the first cycle at once when this process comes to lead
                monitor.refresh_standby_metrics()
                continue
            started = time.monotonic()
            guarded(f"poll:{source.name}", lambda: monitor.poll(source), source=source.name)
            deliver_soon.set()  # the cycle's alerts go out now, not at the next delivery tick
            # The next cycle on the interval; at once when this one overran it (never two at a time).
            next_start = started + interval

    def delivery_worker() -> None:
        while True:
            deliver_soon.wait(DELIVERY_EVERY)
            deliver_soon.clear()
            if stop.is_set():  # stopping: the outbox keeps the alerts for the next start
                return
            guarded("delivery", monitor.deliver)

    workers = [
        threading.Thread(target=source_worker, args=(source,), name=f"poll:{source.name}", daemon=True)
        for source in monitor.config.sources
    ]
    workers.append(threading.Thread(target=delivery_worker, name="deliver", daemon=True))
    scheduler = BackgroundScheduler(
        executors={"default": JobExecutor(max_workers=1)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        timezone=monitor.config.tz,
    )
    now = datetime.now(UTC)

    def scheduled(name: str, work: Callable[[], object]) -> Callable[[], None]:
        def job() -> None:
            if not stop.is_set():  # jobs still queued at shutdown: the next start does them
                guarded(name, work)

        return job

    retention_job = scheduled("retention", monitor.apply_retention)
    if monitor.config.state.retention_days > 0:
        every = RETENTION_EVERY.total_seconds()
        scheduler.add_job(retention_job, "interval", seconds=every, next_run_time=now, id="retention")
    verify_job = scheduled("verify", monitor.verify_if_leading)
    scheduler.add_job(
        verify_job, "interval", seconds=VERIFY_EVERY.total_seconds(), next_run_time=now, id="verify"
    )
    # The monthly report on its cron (configured zone); plus at start (a period missed while down) and
    # hourly (a failed send is retried). Each period is claimed in the store, so these never send twice.
    report_job = scheduled("report", monitor.send_due_reports)
    report_cron = CronTrigger.from_crontab(monitor.config.report.schedule, timezone=monitor.config.tz)
    scheduler.add_job(report_job, report_cron, id="report")
    scheduler.add_job(report_job, "interval", hours=1, next_run_time=now, id="report-catch-up")

    for worker in workers:
        worker.start()
    scheduler.start()

    def on_role_change(role: str, _reason: str) -> None:
        if role != LEADER:
            return
        # Just took over: deliver what the outbox holds, and catch up the reports and retention now.
        deliver_soon.set()
        if not stop.is_set():
            scheduler.add_job(report_job, id="report-on-takeover", replace_existing=True)
            if monitor.config.state.retention_days > 0:
                scheduler.add_job(retention_job, id="retention-on-takeover", replace_existing=True)

    took_over = [False]

    def role_listener(role: str, reason: str) -> None:
        if took_over[0]:
            on_role_change(role, reason)
        took_over[0] = True  # the first call is the role at start: the jobs above run at start anyway

    monitor.leadership.add_listener(role_listener)
    monitor.leadership.start()  # a standby serves the endpoint and waits in its workers until it leads
    log.info(
        "daemon started",
        extra={"sources": [s.name for s in monitor.config.sources], "rules": len(monitor.ruleset.rules)},
    )
    clean = False
    try:
        while not stop.wait(0.2):
            if reload.is_set():
                reload.clear()
                log.info("reloading rules")
                # A swap of one reference: each commit in flight keeps the rule set it started with.
                monitor.reload_rules_from(load_rules)
        log.info("stopping")
    finally:
        stop.set()
        deliver_soon.set()
        scheduler.shutdown(wait=False)
        abandoned = in_flight.wait_idle(SHUTDOWN_GRACE)
        for worker in workers:
            worker.join(timeout=0.5 if not abandoned else 0)
        if server is not None:
            server.stop()
        if abandoned:
            # Safe as kill -9: nothing uncommitted survives, pending alerts stay pending.
            log.warning(
                "stopping without waiting for work in flight",
                extra={"abandoned": abandoned, "grace_s": SHUTDOWN_GRACE},
            )
        else:
            monitor.close()
            clean = True
        log.info("daemon stopped")
    return clean

"""The running monitor: one store, the rules, a poller per cycle, the outbox; APScheduler wiring and signals.

All jobs run on one worker thread, so the SQLite connection is never used by two threads at once
and no two cycles of a source ever overlap (APScheduler's max_instances=1 and coalesce as well).
The HTTP endpoint (/healthz, /metrics) runs in its own thread and reads only ``Monitor.metrics``.

Signals: SIGTERM/SIGINT stop the scheduler and let the cycle in flight end: a normal cycle finishes
and commits; a long walk (a backfill, a backlog) is abandoned at the next page with nothing committed,
so the process exits within seconds and the next start repeats the walk. SIGHUP re-reads the rules on
the worker thread between cycles; rules that fail validation leave the running ones in force.
"""

from __future__ import annotations

import functools
import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from apscheduler.executors.pool import ThreadPoolExecutor
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
from monitor.server import HealthServer
from monitor.store import Store, StoreError
from monitor.store.polls import prune_polls_before

log = logging.getLogger("monitor.daemon")

Clock = Callable[[], datetime]
RulesLoader = Callable[[], RuleSet]

RETENTION_EVERY = timedelta(days=1)


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
    """Everything the daemon holds. Not thread-safe: call it from one thread."""

    def __init__(
        self,
        config: Config,
        *,
        store: Store | None = None,
        ruleset: RuleSet | None = None,
        clock: Clock = lambda: datetime.now(UTC),
        client_factory: ClientFactory = default_client_factory,
        stdout: TextIO | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.store = store or Store.open(config.state.path)
        self.ruleset = ruleset if ruleset is not None else ruleset_from_config(config)
        self.poller = Poller(self.store, config, self.ruleset, clock=clock, client_factory=client_factory)
        channels = build_channels(
            config, stdout, events=self.store.events_by_id, rule_titles=self._rule_title
        )
        self.outbox = OutboxWorker(
            self.store, channels, clock=clock, digest_after=config.alerts.digest_after, tz=config.tz
        )
        self.metrics = Metrics(clock)
        # Off-hours in the report follow the rule set's business_hours calendar (also after a SIGHUP reload).
        self.reports = ReportScheduler(
            self.store, config, clock=clock, calendars=lambda: self.ruleset.calendars
        )

    def _rule_title(self, rule_id: str) -> str | None:
        """The loaded rule's title (after a SIGHUP reload too); None for monitor.* and removed rules."""
        try:
            return self.ruleset.rule(rule_id).title
        except KeyError:
            return None

    def poll(self, source: SourceConfig) -> PollResult:
        self.metrics.poll_started(source.name)
        problem = self.archive_problem()
        result = self.poller.poll(source) if problem is None else self._archive_gone(source, problem)
        self.metrics.observe_poll(result)
        self.metrics.observe_store(self.store)
        return result

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
        problem = self.archive_problem()
        if problem is not None:
            # The outbox in the file it holds is no one's record any more: the next start sends from the
            # archive at state.path (at least once), rather than this process recording into a lost file.
            log.error("delivery skipped", extra={"error": problem})
            return DeliveryReport(errors=[problem])
        try:
            # After every cycle (and on the delivery timer): raise or end monitor.source_unreachable and
            # auth_failed episodes, so their notices go out in this same delivery.
            selfmon.check_sources(self.store, self.config, self.clock())
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
        if days <= 0:
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

    def run_once(self) -> CycleOutcome:
        outcome = CycleOutcome()
        for source in self.config.sources:
            outcome.polls.append(self.poll(source))
        outcome.delivery = self.deliver()
        outcome.reports = self.send_due_reports()
        return outcome

    def send_due_reports(self) -> list[ReportRun]:
        """Build and email every monthly report that is due and not yet sent (claimed once per period)."""
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
        self.store.close()


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


def run_daemon(
    monitor: Monitor,
    stop: threading.Event | None = None,
    *,
    rules_loader: RulesLoader | None = None,
    reload: threading.Event | None = None,
) -> None:
    """Poll every source on its interval and deliver alerts until SIGTERM/SIGINT (or ``stop`` is set).

    Serves /healthz and /metrics on ``server.listen`` (raises ``ServerError`` when it cannot listen),
    prunes the archive daily when ``state.retention_days`` is set, and reloads the rules with
    ``rules_loader`` (default: the running config's rule paths) on SIGHUP or when ``reload`` is set.
    """
    stop = stop or threading.Event()
    reload = reload or threading.Event()
    load_rules = rules_loader or (lambda: ruleset_from_config(monitor.config))

    def on_signal(signum: int, _frame: object) -> None:
        # Only set flags here: the work happens on the main loop and the worker thread.
        if signum == signal.SIGHUP:
            reload.set()
        else:
            stop.set()

    # First thing, so a SIGHUP during start-up (seeding metrics reads the archive) cannot kill the process.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGHUP, on_signal)
    # Shutdown abandons a long walk at the next page (nothing committed) instead of finishing it,
    # and cuts short a retry's backoff sleep (a Retry-After may ask for minutes).
    monitor.poller.cancel = stop
    for channel in monitor.outbox.channels.values():
        if isinstance(channel, SlackChannel):
            channel.stop = stop  # a rate-limit wait ends at SIGTERM
    if monitor.poller.client_factory is default_client_factory:

        def sleep_unless_stopping(seconds: float) -> None:
            if stop.wait(seconds):
                raise PollCancelled

        monitor.poller.client_factory = functools.partial(default_client_factory, sleep=sleep_unless_stopping)
    monitor.metrics.seed(
        monitor.store,
        [s.name for s in monitor.config.sources],
        channels=monitor.outbox.channels,
        rules=[(rule.id, rule.severity) for rule in monitor.ruleset.rules],
    )
    server = HealthServer(monitor.config, monitor.metrics) if monitor.config.server.listen else None
    if server is not None:
        server.start()
    scheduler = BackgroundScheduler(
        executors={"default": ThreadPoolExecutor(max_workers=1)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        timezone=monitor.config.tz,
    )
    now = datetime.now(UTC)

    def poll_job(source: SourceConfig) -> None:
        if stop.is_set():
            return
        try:
            monitor.poll(source)
            if not stop.is_set():  # stopping: the outbox keeps the alerts for the next start
                monitor.deliver()
        except Exception:  # a job must never kill the scheduler thread
            log.exception("poll job crashed", extra={"source": source.name})

    def deliver_job() -> None:
        if stop.is_set():  # jobs still queued at shutdown: exit now, the next start does them
            return
        try:
            monitor.deliver()
        except Exception:
            log.exception("delivery job crashed")

    for source in monitor.config.sources:
        scheduler.add_job(
            poll_job,
            "interval",
            args=[source],
            seconds=source.poll_interval.total_seconds(),
            next_run_time=now,
            id=f"poll:{source.name}",
        )
    scheduler.add_job(deliver_job, "interval", seconds=5, id="deliver")

    def retention_job() -> None:
        if stop.is_set():
            return
        try:
            monitor.apply_retention()
        except Exception:
            log.exception("retention job crashed")

    if monitor.config.state.retention_days > 0:
        every = RETENTION_EVERY.total_seconds()
        scheduler.add_job(retention_job, "interval", seconds=every, next_run_time=now, id="retention")

    def report_job() -> None:
        if stop.is_set():
            return
        try:
            monitor.send_due_reports()
        except Exception:
            log.exception("report job crashed")

    # The monthly report on its cron (configured zone); plus at start (a period missed while down) and
    # hourly (a failed send is retried). Each period is claimed in the store, so these never send twice.
    report_cron = CronTrigger.from_crontab(monitor.config.report.schedule, timezone=monitor.config.tz)
    scheduler.add_job(report_job, report_cron, id="report")
    scheduler.add_job(report_job, "interval", hours=1, next_run_time=now, id="report-catch-up")

    def reload_job() -> None:
        if not stop.is_set():
            monitor.reload_rules_from(load_rules)

    scheduler.start()
    log.info(
        "daemon started",
        extra={"sources": [s.name for s in monitor.config.sources], "rules": len(monitor.ruleset.rules)},
    )
    try:
        while not stop.wait(0.2):
            if reload.is_set():
                reload.clear()
                log.info("reloading rules")
                # On the single worker: after the cycle in flight, never in the middle of one.
                scheduler.add_job(reload_job, id="reload-rules", replace_existing=True)
        log.info("stopping")
    finally:
        # Let the cycle in flight end: its transaction either commits or rolls back whole.
        scheduler.shutdown(wait=True)
        monitor.close()
        if server is not None:
            server.stop()
        log.info("daemon stopped")

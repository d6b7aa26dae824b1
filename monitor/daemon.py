"""The running monitor: one store, the rules, a poller per cycle, the outbox; APScheduler wiring and signals.

All jobs run on one worker thread, so the SQLite connection is never used by two threads at once
and no two cycles of a source ever overlap (APScheduler's max_instances=1 and coalesce as well).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TextIO

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from monitor.alerts.console import ConsoleChannel
from monitor.alerts.outbox import Channel, DeliveryReport, OutboxWorker
from monitor.config import Config, SourceConfig, effective_console
from monitor.engine import RuleSet, ruleset_from_config
from monitor.poller import ClientFactory, Poller, PollResult, default_client_factory
from monitor.store import Store

log = logging.getLogger("monitor.daemon")

Clock = Callable[[], datetime]


def build_channels(config: Config, stdout: TextIO | None = None) -> dict[str, Channel]:
    channels: dict[str, Channel] = {}
    if effective_console(config):
        channels["console"] = ConsoleChannel(config.tz, stdout)
    return channels


@dataclass
class CycleOutcome:
    polls: list[PollResult] = field(default_factory=list)
    delivery: DeliveryReport = field(default_factory=DeliveryReport)

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.polls) and not self.delivery.failed


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
        self.outbox = OutboxWorker(self.store, build_channels(config, stdout), clock=clock)

    def poll(self, source: SourceConfig) -> PollResult:
        return self.poller.poll(source)

    def deliver(self) -> DeliveryReport:
        return self.outbox.deliver_due()

    def run_once(self) -> CycleOutcome:
        outcome = CycleOutcome()
        for source in self.config.sources:
            outcome.polls.append(self.poll(source))
        outcome.delivery = self.deliver()
        return outcome

    def reload_rules(self, ruleset: RuleSet) -> None:
        self.ruleset = ruleset
        self.poller.evaluator = ruleset

    def close(self) -> None:
        self.store.close()


def run_daemon(monitor: Monitor, stop: threading.Event | None = None) -> None:
    """Poll every source on its interval and deliver alerts until SIGTERM/SIGINT (or ``stop`` is set)."""
    stop = stop or threading.Event()
    scheduler = BackgroundScheduler(
        executors={"default": ThreadPoolExecutor(max_workers=1)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        timezone=monitor.config.tz,
    )
    now = datetime.now(UTC)

    def poll_job(source: SourceConfig) -> None:
        try:
            monitor.poll(source)
            monitor.deliver()
        except Exception:  # a job must never kill the scheduler thread
            log.exception("poll job crashed", extra={"source": source.name})

    def deliver_job() -> None:
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

    def on_signal(signum: int, _frame: object) -> None:
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    scheduler.start()
    log.info("daemon started", extra={"sources": [s.name for s in monitor.config.sources]})
    try:
        stop.wait()
    finally:
        # Let the cycle in flight finish: its transaction either commits or rolls back whole.
        scheduler.shutdown(wait=True)
        monitor.close()
        log.info("daemon stopped")

"""Prometheus series and the health facts of the running daemon.

One ``Metrics`` object per daemon, with its own ``CollectorRegistry`` (never the process-global
one), so tests can build as many as they like. It is fed on the daemon's worker thread, from the
results the poller and the outbox already produce and from a few cheap queries on the store the
worker owns; the HTTP thread only reads it. That way the HTTP thread never touches the SQLite
connection, and a wedged worker shows up as stale health instead of hanging the probe.

Counters count what this process did and start at zero in every process, as Prometheus expects:
``increase()`` and ``rate()`` read a counter that comes back lower as a reset, and one that came back
seeded from the archive after a prune (lower, but not zero) as a burst of new events. What the archive
holds is a gauge (``archive_events``, ``outbox_messages``). Every label set known at start (each source,
channel and rule, with each outcome or kind) is created at zero, so the first dead letter or the first
alert of a rule is an increase from 0 that ``increase(...[1h]) > 0`` can see, not a series born at 1.
No ``_created`` series are exported: nothing here reads them, and each restart would move them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, disable_created_metrics
from prometheus_client.exposition import choose_encoder

if TYPE_CHECKING:  # the poller imports the HTTP client; metrics only reads its results
    from monitor.alerts.outbox import DeliveryReport
    from monitor.poller import PollResult
    from monitor.store import Store, VerifyRecord

Clock = Callable[[], datetime]


# Process-wide in prometheus_client (read when a registry is collected): this process exports no
# ``_created`` series from any registry.
disable_created_metrics()

# The label values each counter can take, created at zero for every source / channel at start.
POLL_OUTCOMES = ("ok", "error", "cancelled")
# Every kind the poller records for a failed cycle (``Poller._failed``): auth (401/403), config (a
# configuration-class error such as a host name that never resolved), unavailable (the API could not be
# read), store (the archive could not be written), internal (a bug or an exhausted resource in one cycle).
POLL_ERROR_KINDS = ("auth", "config", "unavailable", "store", "internal")
DELIVERY_OUTCOMES = ("sent", "retried", "dead", "deferred")

# A steady-state cycle takes well under a second; a backfill takes minutes.
POLL_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("xano-audit-monitor")
    except Exception:  # a source checkout without an installed distribution
        return "unknown"


@dataclass(frozen=True)
class SourceFacts:
    """What the daemon knows about one source's polling, for /healthz."""

    polled_since_start: bool = False  # a cycle (ok or not) has completed in this process
    last_success_at: datetime | None = None
    last_error: str | None = None
    last_error_kind: str | None = None
    poll_started_at: datetime | None = None  # set while a cycle is in flight


@dataclass(frozen=True)
class HealthFacts:
    sources: dict[str, SourceFacts] = field(default_factory=dict)
    dead_letters: dict[str, datetime] = field(default_factory=dict)  # channel -> newest dead letter
    archive_problem: str | None = None  # the archive file was deleted or replaced under the daemon
    # The leadership's own account (monitor.store.leadership): "role" (leader | standby), and on PostgreSQL
    # "database_error" while the lock connection cannot reach the server.
    leadership: dict[str, Any] = field(default_factory=lambda: {"role": "leader"})


class Metrics:
    """The daemon's Prometheus registry plus the facts /healthz judges. Thread-safe."""

    def __init__(self, clock: Clock = _utcnow) -> None:
        self.clock = clock
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        Info("audit_monitor_build", "The running audit-monitor version.", registry=r).info(
            {"version": _version()}
        )
        self.events_archived = Counter(
            "audit_monitor_events_archived",
            "Events appended to the archive by this process (0 at start; pruning does not lower it).",
            ["source"],
            registry=r,
        )
        self.archive_events = Gauge(
            "audit_monitor_archive_events",
            "Events the archive holds now (drops after retention pruning).",
            ["source"],
            registry=r,
        )
        self.polls = Counter(
            "audit_monitor_polls",
            "Poll cycles finished by this process, by outcome (ok, error, cancelled).",
            ["source", "outcome"],
            registry=r,
        )
        self.poll_errors = Counter(
            "audit_monitor_poll_errors",
            "Failed poll cycles by error kind (auth, config, unavailable, store, internal).",
            ["source", "kind"],
            registry=r,
        )
        self.poll_duration = Histogram(
            "audit_monitor_poll_duration_seconds",
            "Duration of a poll cycle (walk and commit).",
            ["source"],
            buckets=POLL_BUCKETS,
            registry=r,
        )
        self.lag = Gauge(
            "audit_monitor_lag_seconds",
            "Now minus the created_at of the newest archived event.",
            ["source"],
            registry=r,
        )
        self.last_success = Gauge(
            "audit_monitor_last_success_timestamp_seconds",
            "Unix time of the last successful poll cycle.",
            ["source"],
            registry=r,
        )
        self.alerts = Counter(
            "audit_monitor_alerts",
            "Alerts recorded in the archive by this process, by rule and severity.",
            ["rule", "severity"],
            registry=r,
        )
        self.deliveries = Counter(
            "audit_monitor_deliveries",
            "Outbox rows by channel and delivery outcome: sent, retried (transient error), dead (dead "
            "letter), deferred (not tried: the channel had just failed). Counted by this process.",
            ["channel", "outcome"],
            registry=r,
        )
        self.outbox = Gauge(
            "audit_monitor_outbox_messages",
            "Outbox rows by channel and status (pending is the queue depth).",
            ["channel", "status"],
            registry=r,
        )
        self.archive_bytes = Gauge(
            "audit_monitor_archive_bytes",
            "Size of the SQLite archive on disk (database and WAL).",
            registry=r,
        )
        self.role = Gauge(
            "audit_monitor_role",
            "1 for this process's role: leader (polls, delivers, reports) or standby (waits to take over).",
            ["role"],
            registry=r,
        )
        for role, value in (("leader", 1), ("standby", 0)):  # until told otherwise (SQLite: always)
            self.role.labels(role).set(value)
        self.pruned = Counter(
            "audit_monitor_pruned_events", "Events deleted by retention pruning in this process.", registry=r
        )
        self.auth_failures = Counter(
            "audit_monitor_http_auth_failures",
            "Wrong tokens presented to the API (a bearer token) or the console (sign-in), by surface.",
            ["surface"],
            registry=r,
        )
        self.auth_throttled = Counter(
            "audit_monitor_http_auth_throttled",
            "Requests answered 429 because their address presented too many wrong tokens, by surface.",
            ["surface"],
            registry=r,
        )
        self.chain_verified = Gauge(
            "audit_monitor_chain_verified_timestamp_seconds",
            "Unix time the daemon last finished verifying the archive's hash chain (0: not yet).",
            registry=r,
        )
        self.chain_ok = Gauge(
            "audit_monitor_chain_ok",
            "1 when the daemon's last verify of the hash chain passed; 0 when it found a bad row, or "
            "before the first verify (then the timestamp is 0).",
            registry=r,
        )
        self._lock = threading.Lock()
        self._sources: dict[str, SourceFacts] = {}
        self._newest: dict[str, datetime] = {}
        self._dead_letters: dict[str, datetime] = {}
        self._archive_problem: str | None = None
        # Alerts the store held at the last look (from start): the counter moves by the difference.
        self._alerts_seen: dict[tuple[str, str], int] = {}
        self._outbox_keys: set[tuple[str, str]] = set()
        self._leadership: Callable[[], dict[str, Any]] = lambda: {"role": "leader"}

    # feeding (worker thread) --------------------------------------------------------------------------

    def seed(
        self,
        store: Store,
        sources: list[str],
        *,
        channels: Iterable[str] = (),
        rules: Iterable[tuple[str, str]] = (),
    ) -> None:
        """At start: the gauges from what the store holds; every counter at zero for each known label set
        (``sources``, ``channels``, the (rule id, severity) pairs of ``rules``, and those the store names)."""
        for name in sources:
            self.events_archived.labels(name)
            for outcome in POLL_OUTCOMES:
                self.polls.labels(name, outcome)
            for kind in POLL_ERROR_KINDS:
                self.poll_errors.labels(name, kind)
        with self._lock:
            for name in sources:
                self._sources.setdefault(name, SourceFacts())
        self.refresh_archive_gauges(store, sources)
        # The alerts already recorded are the baseline: only those recorded from now on are counted.
        self._alerts_seen = store.alert_counts()
        for key in sorted(set(self._alerts_seen) | set(rules)):
            self.alerts.labels(*key)
        outbox_channels = {channel for channel, _status in store.outbox_depth()}
        for channel in sorted(set(channels) | outbox_channels):
            for outcome in DELIVERY_OUTCOMES:
                self.deliveries.labels(channel, outcome)
        for surface in ("api", "console"):
            self.auth_failures.labels(surface)
            self.auth_throttled.labels(surface)

    def refresh_archive_gauges(self, store: Store, sources: Collection[str]) -> None:
        """The gauges that describe the shared archive rather than this process's own work: the events it
        holds and the newest per source (the lag), each source's last successful poll, the outbox depth,
        the last dead letter, the size and the last verify. At start; and on a standby, which polls and
        delivers nothing, on its poll timer, so its /metrics follow what the leader does (counters stay
        this process's own)."""
        counts = store.event_counts_by_source()
        for name in sorted(set(sources) | set(counts)):
            held = int(counts.get(name, 0))
            self.archive_events.labels(name).set(held)
            newest = store.newest_event_time(name) if held else None
            if newest is not None:
                self._set_newest(name, newest)
        for cursor in store.cursors():
            if cursor.source in sources and cursor.last_success_at is not None:
                self._success(cursor.source, cursor.last_success_at)
        last_verify = store.last_verify()
        if last_verify is not None:
            self.observe_verify(last_verify)
        self._observe_outbox(store)

    def _observe_outbox(self, store: Store) -> None:
        depth = store.outbox_depth()
        self._outbox_keys |= set(depth)
        for key in self._outbox_keys:
            self.outbox.labels(*key).set(depth.get(key, 0))
        # A dead row's next_attempt_at is the moment it was dead-lettered (the outbox worker sets it so).
        dead = store.last_dead_letter_at()
        with self._lock:
            self._dead_letters = dead
        self.archive_bytes.set(store.file_size())

    def poll_started(self, source: str) -> None:
        with self._lock:
            facts = self._sources.get(source, SourceFacts())
            self._sources[source] = replace(facts, poll_started_at=self.clock())

    def observe_poll(self, result: PollResult) -> None:
        """After a cycle: count it, and when it committed, move the archive series and health facts."""
        cancelled = result.error_kind == "cancelled"
        outcome = "ok" if result.ok else ("cancelled" if cancelled else "error")
        self.polls.labels(result.source, outcome).inc()
        self.poll_duration.labels(result.source).observe(result.duration)
        if result.ok:
            self.events_archived.labels(result.source).inc(result.new)
            self.archive_events.labels(result.source).inc(result.new)
            if result.newest_event_at is not None:
                self._set_newest(result.source, result.newest_event_at)
            self._success(result.source, self.clock())
            with self._lock:
                facts = self._sources.get(result.source, SourceFacts())
                self._sources[result.source] = replace(
                    facts,
                    polled_since_start=True,
                    poll_started_at=None,
                    last_error=None,
                    last_error_kind=None,
                )
            return
        if not cancelled:
            self.poll_errors.labels(result.source, result.error_kind or "unknown").inc()
        with self._lock:
            facts = self._sources.get(result.source, SourceFacts())
            self._sources[result.source] = replace(
                facts,
                polled_since_start=facts.polled_since_start or not cancelled,
                poll_started_at=None,
                last_error=result.error if not cancelled else facts.last_error,
                last_error_kind=result.error_kind if not cancelled else facts.last_error_kind,
            )

    def observe_delivery(self, report: DeliveryReport) -> None:
        """After an outbox pass: rows by (channel, outcome) as the worker counted them."""
        for (channel, outcome), rows in report.outcomes.items():
            self.deliveries.labels(channel, outcome).inc(rows)

    def observe_store(self, store: Store) -> None:
        """Alerts, outbox depth, dead letters and file size, from the store (cheap queries)."""
        for (rule, severity), count in store.alert_counts().items():
            self._advance(self.alerts, self._alerts_seen, (rule, severity), count)
        self._observe_outbox(store)

    def observe_verify(self, record: VerifyRecord) -> None:
        self.chain_verified.set(record.verified_at.timestamp())
        self.chain_ok.set(1 if record.ok else 0)

    def observe_prune(self, store: Store, deleted: int) -> None:
        self.pruned.inc(deleted)
        counts = store.event_counts_by_source()
        for name in set(counts) | set(self._newest):
            self.archive_events.labels(name).set(int(counts.get(name, 0)))
        self.archive_bytes.set(store.file_size())

    # reading (any thread) -----------------------------------------------------------------------------

    def attach_leadership(self, describe: Callable[[], dict[str, Any]]) -> None:
        """Where /healthz reads the role from (live: a lease that ran out shows at once)."""
        self._leadership = describe

    def observe_role(self, role: str) -> None:
        """A role change: the ``role`` gauge says 1 for the role this process has now."""
        for name in ("leader", "standby"):
            self.role.labels(name).set(1 if name == role else 0)

    def observe_archive_file(self, problem: str | None) -> None:
        """The daemon's check of the archive file before a cycle: None while it is the file it opened."""
        with self._lock:
            self._archive_problem = problem

    def health_facts(self) -> HealthFacts:
        with self._lock:
            return HealthFacts(
                sources=dict(self._sources),
                dead_letters=dict(self._dead_letters),
                archive_problem=self._archive_problem,
                leadership=dict(self._leadership()),
            )

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """(body, Content-Type) for a scrape's Accept header: the classic text format unless the
        scraper asks for OpenMetrics or text 1.0.0, so Prometheus 2 and 3 both parse it."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    # helpers ------------------------------------------------------------------------------------------

    def _success(self, source: str, at: datetime) -> None:
        self.last_success.labels(source).set(at.timestamp())
        with self._lock:
            facts = self._sources.get(source, SourceFacts())
            self._sources[source] = replace(facts, last_success_at=at)

    def _set_newest(self, source: str, newest: datetime) -> None:
        with self._lock:
            known = source in self._newest
            self._newest[source] = newest
        if not known:
            # Computed at scrape time, so the lag keeps growing while polls fail.
            self.lag.labels(source).set_function(lambda: self._lag_seconds(source))

    def _lag_seconds(self, source: str) -> float:
        with self._lock:
            newest = self._newest.get(source)
        return (self.clock() - newest).total_seconds() if newest is not None else float("nan")

    @staticmethod
    def _advance(
        counter: Counter, seen: dict[tuple[str, str], int], key: tuple[str, str], count: int
    ) -> None:
        delta = count - seen.get(key, 0)
        if delta > 0 or key not in seen:
            counter.labels(*key).inc(max(delta, 0))
        seen[key] = max(count, seen.get(key, 0))

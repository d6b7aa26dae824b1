"""``/healthz``: is the daemon doing its job? (served by monitor.web with ``/metrics``).

Health is judged from facts the daemon's worker thread records in ``Metrics`` (in memory), not by
querying SQLite per request: the worker owns the only connection, a probe must never wait on a
long backfill transaction, and "starting" (no cycle completed by this process yet) is process state
that the store cannot know. A hung worker still shows: its sources' last success grows old.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from monitor.config import Config, SourceConfig
from monitor.events import format_timestamp
from monitor.metrics import HealthFacts
from monitor.timeutil import format_duration

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


MIN_STALE_AFTER = timedelta(seconds=30)
DEAD_LETTER_WINDOW = timedelta(hours=1)


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port). Raises ValueError naming the problem."""
    host, sep, port_text = listen.strip().rpartition(":")
    if not sep or not port_text.isdigit() or not host:
        raise ValueError(f"{listen!r} is not host:port (e.g. 127.0.0.1:9108 or 0.0.0.0:9108)")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"{listen!r}: port {port} is out of range")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


def stale_after(source: SourceConfig, config: Config) -> timedelta:
    """How old a source's last success may be before /healthz fails: max(3 x poll_interval, 30 s)."""
    if config.server.stale_after is not None:
        return config.server.stale_after
    return max(3 * source.poll_interval, MIN_STALE_AFTER)


def evaluate_health(config: Config, facts: HealthFacts, now: datetime) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body). 503 names every reason; "starting" until each source completed a cycle.

    Every body says the process's ``role``. A standby (PostgreSQL: another process leads) does not poll, so
    its sources cannot be stale: it is healthy while it can reach the database to take over (200), and 503
    naming the database's error when it cannot."""
    role = str(facts.leadership.get("role", "leader"))
    if role != "leader":
        return _standby_health(facts, now, role)
    reasons: list[str] = []
    starting: list[str] = []
    sources: dict[str, Any] = {}
    for source in config.sources:
        f = facts.sources.get(source.name)
        limit = stale_after(source, config)
        entry: dict[str, Any] = {"stale_after_seconds": limit.total_seconds()}
        if f is None or not f.polled_since_start:
            starting.append(source.name)
            entry["state"] = "starting"
        if f is not None:
            if f.last_success_at is not None:
                age = (now - f.last_success_at).total_seconds()
                entry["last_success_at"] = format_timestamp(f.last_success_at)
                entry["last_success_age_seconds"] = round(age, 1)
            if f.poll_started_at is not None:
                entry["poll_running_seconds"] = round((now - f.poll_started_at).total_seconds(), 1)
            if f.last_error:
                entry["last_error"] = f.last_error.splitlines()[0][:300]
                entry["last_error_kind"] = f.last_error_kind
        if f is not None and f.polled_since_start:
            if f.last_success_at is None:
                reasons.append(
                    f"source {source.name}: no successful poll yet ({f.last_error_kind or 'error'})"
                )
                entry["state"] = "failing"
            elif now - f.last_success_at > limit:
                reasons.append(
                    f"source {source.name}: last successful poll "
                    f"{format_duration(now - f.last_success_at)} ago "
                    f"(limit {format_duration(limit)})"
                    + (f"; last error: {f.last_error_kind}" if f.last_error_kind else "")
                )
                entry["state"] = "stale"
            else:
                entry["state"] = "ok"
        sources[source.name] = entry
    dead: dict[str, str] = {}
    for channel, at in sorted(facts.dead_letters.items()):
        if now - at < DEAD_LETTER_WINDOW:
            dead[channel] = format_timestamp(at)
            reasons.append(f"channel {channel}: dead letter {format_duration(now - at)} ago")
    if facts.archive_problem is not None:
        # At once, not after stale_after: every cycle fails until someone restores the file and restarts.
        reasons.insert(0, f"archive: {facts.archive_problem}")
    body: dict[str, Any] = {"status": "ok", "role": role, "time": format_timestamp(now), "sources": sources}
    if dead:
        body["dead_letters"] = dead
    if starting:
        body["status"] = "starting"
        body["reasons"] = [f"source {name}: first poll has not completed yet" for name in starting] + reasons
        return 503, body
    if reasons:
        body["status"] = "unhealthy"
        body["reasons"] = reasons
        return 503, body
    return 200, body


def _standby_health(facts: HealthFacts, now: datetime, role: str) -> tuple[int, dict[str, Any]]:
    body: dict[str, Any] = {"status": "ok", "role": role, "time": format_timestamp(now)}
    error = facts.leadership.get("database_error")
    if error:
        body["status"] = "unhealthy"
        body["reasons"] = [f"database: {error} (this standby could not take over)"]
        return 503, body
    return 200, body

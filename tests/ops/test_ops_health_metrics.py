"""/healthz judgement, the metrics registry fed from a real store, and the HTTP endpoint on 127.0.0.1.

No fakes beyond an injected clock: the store is a real SQLite file, the endpoint a real socket.
"""

from __future__ import annotations

import errno
import json
import socket
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitor.alerts.model import Alert
from monitor.alerts.outbox import DeliveryReport
from monitor.config import Config, SourceConfig
from monitor.events import canonical_json, format_timestamp, normalize
from monitor.metrics import Metrics
from monitor.poller import Poller
from monitor.store import Cursor, Store
from monitor.web import ServerError, WebServer, evaluate_health, parse_listen, stale_after
from monitor.xano import XanoClient
from tests.conftest import FakeClock


class Result:
    """The fields of poller.PollResult that Metrics reads (the poller module needs the HTTP client)."""

    def __init__(self, source: str, ok: bool, **kw: object) -> None:
        self.source, self.ok = source, ok
        self.new = int(kw.get("new", 0))  # type: ignore[call-overload]
        self.duration = float(kw.get("duration", 0.5))  # type: ignore[arg-type]
        self.error = kw.get("error")
        self.error_kind = kw.get("error_kind")
        self.newest_event_at = kw.get("newest_event_at")


def config(tmp_path: Path, **server: object) -> Config:
    return Config.model_validate(
        {
            "state": {"path": str(tmp_path / "a.db")},
            "sources": [
                {
                    "name": "prod",
                    "base_url": "http://127.0.0.1:1",
                    "token": "t-secret",
                    "poll_interval": "5m",
                },
                {"name": "dev", "base_url": "http://127.0.0.1:1", "token": "t-secret", "poll_interval": "2s"},
            ],
            "server": {"listen": "127.0.0.1:0", **server},
        }
    )


def entry(event_id: int, at: datetime, type_: str = "Delete Table") -> dict[str, object]:
    return {
        "id": event_id,
        "created_at": format_timestamp(at),
        "type": type_,
        "msg": f"event {event_id}",
        "user": {"id": 1, "email": "ana@corp.io"},
        "workspace": {"id": 1, "name": "shop"},
    }


def archive(store: Store, source: str, ids: range, start: datetime) -> None:
    with store.transaction():
        prev = store.head_hash()
        for i, event_id in enumerate(ids):
            raw = entry(event_id, start + timedelta(minutes=i))
            prev = store.archive(normalize(source, raw), canonical_json(raw), prev, start)


def alert(rule: str, severity: str, event_id: int, at: datetime) -> Alert:
    return Alert(
        rule_id=rule,
        severity=severity,
        title=rule,
        text=rule,
        source="prod",
        event_time=at,
        event_ids=(event_id,),
    )


# --- /healthz judgement ----------------------------------------------------------------------------------


def test_stale_threshold_is_three_intervals_with_a_30s_floor(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    assert stale_after(cfg.source("prod"), cfg) == timedelta(minutes=15)
    assert stale_after(cfg.source("dev"), cfg) == timedelta(seconds=30)
    explicit = config(tmp_path, stale_after="5s")
    assert stale_after(explicit.source("prod"), explicit) == timedelta(seconds=5)


def test_health_starting_then_ok_then_stale_then_ok(tmp_path: Path, clock: FakeClock) -> None:
    cfg = config(tmp_path)
    metrics = Metrics(clock)
    with Store.open(cfg.state.path) as store:
        metrics.seed(store, ["prod", "dev"])

    status, body = evaluate_health(cfg, metrics.health_facts(), clock())
    assert status == 503 and body["status"] == "starting"
    assert any("prod" in r and "first poll" in r for r in body["reasons"])

    metrics.observe_poll(Result("prod", True))  # type: ignore[arg-type]
    status, body = evaluate_health(cfg, metrics.health_facts(), clock())
    assert status == 503 and body["status"] == "starting"  # dev has not completed its first cycle
    metrics.observe_poll(Result("dev", True))  # type: ignore[arg-type]
    status, body = evaluate_health(cfg, metrics.health_facts(), clock())
    assert status == 200 and body["status"] == "ok" and body["sources"]["dev"]["state"] == "ok"

    clock.advance(timedelta(seconds=31))  # past dev's 30 s floor, well inside prod's 15 min
    metrics.observe_poll(Result("dev", False, error="connection refused", error_kind="unavailable"))  # type: ignore[arg-type]
    status, body = evaluate_health(cfg, metrics.health_facts(), clock())
    assert status == 503 and body["status"] == "unhealthy"
    assert body["reasons"] == [
        "source dev: last successful poll 31 s ago (limit 30 s); last error: unavailable"
    ]
    assert body["sources"]["prod"]["state"] == "ok" and body["sources"]["dev"]["state"] == "stale"
    assert body["sources"]["dev"]["last_error"] == "connection refused"

    metrics.observe_poll(Result("dev", True))  # type: ignore[arg-type]
    assert evaluate_health(cfg, metrics.health_facts(), clock())[0] == 200


def test_health_and_the_role_gauge_say_leader_or_standby(tmp_path: Path, clock: FakeClock) -> None:
    cfg = config(tmp_path)
    metrics = Metrics(clock)
    with Store.open(cfg.state.path) as store:
        metrics.seed(store, ["prod", "dev"])
    for source in ("prod", "dev"):
        metrics.observe_poll(Result(source, True))  # type: ignore[arg-type]
    # SQLite (no leadership attached): the sole writer leads.
    status, body = evaluate_health(cfg, metrics.health_facts(), clock())
    assert (status, body["role"]) == (200, "leader")

    # A standby on PostgreSQL: its sources are the leader's business, however old their last success.
    facts: dict[str, object] = {"role": "standby"}
    metrics.attach_leadership(lambda: facts)
    metrics.observe_role("standby")
    clock.advance(timedelta(hours=2))
    status, body = evaluate_health(cfg, metrics.health_facts(), clock())
    assert (status, body["status"], body["role"]) == (200, "ok", "standby")
    assert "sources" not in body
    exposition = metrics.exposition()[0].decode()
    assert 'audit_monitor_role{role="standby"} 1.0' in exposition
    assert 'audit_monitor_role{role="leader"} 0.0' in exposition
    # A standby that cannot reach the database could not take over: 503, naming why.
    facts["database_error"] = "postgresql://monitor@db:5432/audit: connection refused"
    status, body = evaluate_health(cfg, metrics.health_facts(), clock())
    assert (status, body["role"]) == (503, "standby")
    assert body["reasons"] == [
        "database: postgresql://monitor@db:5432/audit: connection refused (this standby could not take over)"
    ]

    metrics.attach_leadership(lambda: {"role": "leader"})
    metrics.observe_role("leader")
    for source in ("prod", "dev"):
        metrics.observe_poll(Result(source, True))  # type: ignore[arg-type]
    assert evaluate_health(cfg, metrics.health_facts(), clock())[1]["role"] == "leader"
    assert 'audit_monitor_role{role="leader"} 1.0' in metrics.exposition()[0].decode()


def test_a_source_that_never_succeeded_is_unhealthy_after_its_first_cycle(
    tmp_path: Path, clock: FakeClock
) -> None:
    cfg = config(tmp_path)
    metrics = Metrics(clock)
    for name in ("prod", "dev"):
        metrics.observe_poll(Result(name, False, error="401", error_kind="auth"))  # type: ignore[arg-type]
    status, body = evaluate_health(cfg, metrics.health_facts(), clock())
    assert status == 503 and body["status"] == "unhealthy"
    assert "source prod: no successful poll yet (auth)" in body["reasons"]


def test_last_success_from_the_store_counts_after_a_restart(tmp_path: Path, clock: FakeClock) -> None:
    cfg = config(tmp_path)
    with Store.open(cfg.state.path) as store:
        with store.transaction():
            for name in ("prod", "dev"):
                store.save_cursor(
                    Cursor(source=name, last_id=1, last_success_at=clock.now - timedelta(minutes=20))
                )
        metrics = Metrics(clock)
        metrics.seed(store, ["prod", "dev"])
    # A restart: the first cycles fail, so the store's last success (20 min ago) is what is judged.
    for name in ("prod", "dev"):
        metrics.observe_poll(Result(name, False, error="503", error_kind="unavailable"))  # type: ignore[arg-type]
    status, body = evaluate_health(cfg, metrics.health_facts(), clock())
    assert status == 503
    assert [r.split(":")[0] for r in body["reasons"]] == ["source prod", "source dev"]
    assert "20 min ago" in body["reasons"][0]


def test_dead_letter_younger_than_an_hour_fails_health(tmp_path: Path, clock: FakeClock) -> None:
    cfg = config(tmp_path)
    metrics = Metrics(clock)
    with Store.open(cfg.state.path) as store:
        archive(store, "prod", range(1, 3), clock.now - timedelta(hours=1))
        with store.transaction():
            store.record_alert(alert("r.x", "high", 1, clock.now), ["slack", "console"], clock.now)
            store.conn.execute(
                "UPDATE outbox SET status = 'dead', attempts = 1, next_attempt_at = ?, "
                "last_error = 'invalid_auth' WHERE channel = 'slack'",
                (format_timestamp(clock.now - timedelta(minutes=12)),),
            )
        metrics.seed(store, ["prod", "dev"])
    for name in ("prod", "dev"):
        metrics.observe_poll(Result(name, True))  # type: ignore[arg-type]
    status, body = evaluate_health(cfg, metrics.health_facts(), clock())
    assert status == 503 and body["reasons"] == ["channel slack: dead letter 12 min ago"]
    assert "slack" in body["dead_letters"]
    clock.advance(timedelta(minutes=49))
    for name in ("prod", "dev"):
        metrics.observe_poll(Result(name, True))  # type: ignore[arg-type]
    assert evaluate_health(cfg, metrics.health_facts(), clock())[0] == 200


# --- metrics ---------------------------------------------------------------------------------------------


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.exposition()[0].decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_start_from_zero_and_follow_the_store(tmp_path: Path, clock: FakeClock) -> None:
    with Store.open(tmp_path / "a.db") as store:
        archive(store, "prod", range(100, 130), clock.now - timedelta(hours=2))
        archive(store, "dev", range(500, 505), clock.now - timedelta(hours=3))
        with store.transaction():
            store.record_alert(alert("r.delete", "high", 100, clock.now), ["console", "slack"], clock.now)
            store.record_alert(alert("r.delete", "high", 101, clock.now), ["console"], clock.now)
            store.record_alert(alert("r.login", "medium", 102, clock.now), ["console"], clock.now)
            # console delivered one on the first try; slack needed two retries then went through.
            store.conn.execute(
                "UPDATE outbox SET status='sent', attempts=1 WHERE channel='console' AND alert_id=?",
                (alert("r.delete", "high", 100, clock.now).id,),
            )
            store.conn.execute("UPDATE outbox SET status='sent', attempts=3 WHERE channel='slack'")
        metrics = Metrics(clock)
        metrics.seed(store, ["prod", "dev"], channels=["console", "slack"])  # a restart

        # Gauges describe the archive; counters count what this process did, so far nothing.
        s = samples(metrics)
        assert s[("audit_monitor_events_archived_total", (("source", "prod"),))] == 0
        assert s[("audit_monitor_archive_events", (("source", "prod"),))] == 30
        assert s[("audit_monitor_archive_events", (("source", "dev"),))] == 5
        assert s[("audit_monitor_alerts_total", (("rule", "r.delete"), ("severity", "high")))] == 0
        assert s[("audit_monitor_deliveries_total", (("channel", "slack"), ("outcome", "sent")))] == 0
        assert s[("audit_monitor_outbox_messages", (("channel", "console"), ("status", "pending")))] == 2
        newest = clock.now - timedelta(hours=2) + timedelta(minutes=29)
        assert s[("audit_monitor_lag_seconds", (("source", "prod"),))] == (clock.now - newest).total_seconds()
        assert s[("audit_monitor_archive_bytes", ())] > 0

        # A cycle: 3 new events and an alert, then the console sends its pending alerts.
        archive(store, "prod", range(130, 133), clock.now)
        with store.transaction():
            store.record_alert(alert("r.login", "medium", 130, clock.now), ["console"], clock.now)
        clock.advance(timedelta(seconds=90))
        metrics.observe_poll(Result("prod", True, new=3, duration=0.7, newest_event_at=clock.now))  # type: ignore[arg-type]
        metrics.observe_poll(Result("dev", False, error="x", error_kind="unavailable", duration=2.0))  # type: ignore[arg-type]
        with store.transaction():
            store.conn.execute("UPDATE outbox SET status='sent', attempts=1 WHERE status='pending'")
        metrics.observe_delivery(DeliveryReport(sent=3, outcomes=Counter({("console", "sent"): 3})))
        metrics.observe_store(store)

        s = samples(metrics)
        assert s[("audit_monitor_events_archived_total", (("source", "prod"),))] == 3
        assert s[("audit_monitor_archive_events", (("source", "prod"),))] == store.event_count("prod") == 33
        assert s[("audit_monitor_alerts_total", (("rule", "r.login"), ("severity", "medium")))] == 1
        assert s[("audit_monitor_alerts_total", (("rule", "r.delete"), ("severity", "high")))] == 0
        assert s[("audit_monitor_polls_total", (("outcome", "ok"), ("source", "prod")))] == 1
        assert s[("audit_monitor_polls_total", (("outcome", "error"), ("source", "dev")))] == 1
        assert s[("audit_monitor_poll_errors_total", (("kind", "unavailable"), ("source", "dev")))] == 1
        assert s[("audit_monitor_poll_duration_seconds_count", (("source", "prod"),))] == 1
        assert s[("audit_monitor_poll_duration_seconds_bucket", (("le", "1.0"), ("source", "prod")))] == 1
        assert s[("audit_monitor_lag_seconds", (("source", "prod"),))] == 0
        assert (
            s[("audit_monitor_last_success_timestamp_seconds", (("source", "prod"),))]
            == clock.now.timestamp()
        )
        assert s[("audit_monitor_deliveries_total", (("channel", "console"), ("outcome", "sent")))] == 3
        assert s[("audit_monitor_outbox_messages", (("channel", "console"), ("status", "pending")))] == 0

        # Retention: the "held now" gauge drops, the counter of events archived by this process does not.
        deleted = store.prune_before(clock.now - timedelta(minutes=30))
        metrics.observe_prune(store, deleted)
        s = samples(metrics)
        assert deleted == 35
        assert s[("audit_monitor_archive_events", (("source", "prod"),))] == 3
        assert s[("audit_monitor_archive_events", (("source", "dev"),))] == 0
        assert s[("audit_monitor_pruned_events_total", ())] == 35
        assert s[("audit_monitor_events_archived_total", (("source", "prod"),))] == 3


def test_after_a_prune_and_a_restart_no_counter_goes_down_without_a_reset(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A counter that restarts lower than it was, but above zero, is read by increase() and rate() as
    growth from zero: 14,279 -> 12,101 looks like 12,101 new events. Each process starts at zero."""
    with Store.open(tmp_path / "a.db") as store:
        archive(store, "prod", range(1, 41), clock.now - timedelta(days=3))
        first = Metrics(clock)
        first.seed(store, ["prod"])
        archive(store, "prod", range(41, 51), clock.now)
        first.observe_poll(Result("prod", True, new=10, newest_event_at=clock.now))  # type: ignore[arg-type]
        before = samples(first)[("audit_monitor_events_archived_total", (("source", "prod"),))]
        first.observe_prune(store, store.prune_before(clock.now - timedelta(days=1)))
        assert store.event_count("prod") == 10

        second = Metrics(clock)  # the restart
        second.seed(store, ["prod"])
        after = samples(second)[("audit_monitor_events_archived_total", (("source", "prod"),))]
        assert after == 0 or after >= before, (before, after)


def test_every_known_label_set_starts_at_zero_and_no_created_series(tmp_path: Path, clock: FakeClock) -> None:
    """So that increase(audit_monitor_deliveries_total{outcome="dead"}[1h]) > 0 sees the first dead letter:
    a series born at 1 has no earlier sample to increase from."""
    with Store.open(tmp_path / "a.db") as store:
        metrics = Metrics(clock)
        metrics.seed(
            store,
            ["prod"],
            channels=["slack", "email"],
            rules=[("r.delete", "high"), ("r.login", "medium")],
        )
    s = samples(metrics)
    for channel in ("slack", "email"):
        for outcome in ("sent", "retried", "dead", "deferred"):
            assert s[("audit_monitor_deliveries_total", (("channel", channel), ("outcome", outcome)))] == 0
    for outcome in ("ok", "error", "cancelled"):
        assert s[("audit_monitor_polls_total", (("outcome", outcome), ("source", "prod")))] == 0
    for kind in ("auth", "unavailable", "store"):
        assert s[("audit_monitor_poll_errors_total", (("kind", kind), ("source", "prod")))] == 0
    assert s[("audit_monitor_events_archived_total", (("source", "prod"),))] == 0
    assert s[("audit_monitor_alerts_total", (("rule", "r.delete"), ("severity", "high")))] == 0
    assert s[("audit_monitor_alerts_total", (("rule", "r.login"), ("severity", "medium")))] == 0
    # Neither exposition format carries _created series (a restart would move them; nothing reads them).
    for accept in (None, "application/openmetrics-text; version=1.0.0"):
        body = metrics.exposition(accept)[0].decode()
        assert "_created" not in body, accept
        assert "audit_monitor_deliveries_total" in body


def test_every_error_kind_the_poller_records_starts_at_zero_and_is_counted(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A host name that never resolved is a `config` failure (11.9) and one cycle hitting an unexpected
    exception an `internal` one (16.2): both are series from 0 at start and move when such a cycle fails,
    like auth / unavailable / store. The DNS failure is real (.invalid never resolves, RFC 6761); the file
    descriptor exhaustion is raised by the client factory, as it cannot be caused here without starving
    the test process itself."""
    config = Config.model_validate(
        {
            "state": {"path": str(tmp_path / "a.db")},
            "sources": [
                {
                    "name": "prod",
                    "base_url": "https://xano-instance.invalid",
                    "token": "t0ken-abc",
                    "workspace_id": 1,
                }
            ],
        }
    )
    with Store.open(config.state.path) as store:
        metrics = Metrics(clock)
        metrics.seed(store, ["prod"])
        before = samples(metrics)
        for kind in ("auth", "config", "unavailable", "store", "internal"):
            assert before[("audit_monitor_poll_errors_total", (("kind", kind), ("source", "prod")))] == 0

        poller = Poller(store, config, None, clock=clock)
        dns = poller.poll(config.sources[0])
        assert (dns.ok, dns.error_kind) == (False, "config"), dns

        def out_of_descriptors(source: SourceConfig, **_: object) -> XanoClient:
            raise OSError(errno.EMFILE, "Too many open files")

        poller.client_factory = out_of_descriptors
        internal = poller.poll(config.sources[0])
        assert (internal.ok, internal.error_kind) == (False, "internal"), internal
        metrics.observe_poll(dns)
        metrics.observe_poll(internal)
    after = samples(metrics)
    assert after[("audit_monitor_poll_errors_total", (("kind", "config"), ("source", "prod")))] == 1
    assert after[("audit_monitor_poll_errors_total", (("kind", "internal"), ("source", "prod")))] == 1
    assert after[("audit_monitor_polls_total", (("outcome", "error"), ("source", "prod")))] == 2


def test_two_registries_in_one_process_do_not_clash(clock: FakeClock) -> None:
    a, b = Metrics(clock), Metrics(clock)
    a.observe_poll(Result("prod", True, new=2))  # type: ignore[arg-type]
    assert samples(a)[("audit_monitor_polls_total", (("outcome", "ok"), ("source", "prod")))] == 1
    assert ("audit_monitor_polls_total", (("outcome", "ok"), ("source", "prod"))) not in samples(b)


# --- the HTTP endpoint -----------------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path, clock: FakeClock) -> Iterator[tuple[str, Metrics]]:
    metrics = Metrics(clock)
    server = WebServer(config(tmp_path), metrics, clock=clock)
    host, port = server.start()
    try:
        yield f"http://{host}:{port}", metrics
    finally:
        server.stop()


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback test URL
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def test_endpoint_serves_healthz_and_metrics(served: tuple[str, Metrics]) -> None:
    base, metrics = served
    status, ctype, body = get(base + "/healthz")
    assert status == 503 and ctype == "application/json" and json.loads(body)["status"] == "starting"
    for name in ("prod", "dev"):
        metrics.observe_poll(Result(name, True, new=4))  # type: ignore[arg-type]
    status, _, body = get(base + "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    status, ctype, body = get(base + "/metrics")
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4")  # what Prometheus 2 and 3 parse
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert {
        "audit_monitor_polls",
        "audit_monitor_events_archived",
        "audit_monitor_poll_duration_seconds",
    } <= names
    assert get(base + "/nope")[0] == 404


def test_endpoint_that_cannot_listen_says_where(tmp_path: Path, clock: FakeClock) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = WebServer(config(tmp_path, listen=f"127.0.0.1:{port}"), Metrics(clock), clock=clock)
        with pytest.raises(ServerError, match=f"server.listen 127.0.0.1:{port}: cannot listen"):
            server.start()


def test_parse_listen() -> None:
    assert parse_listen("0.0.0.0:9108") == ("0.0.0.0", 9108)  # noqa: S104 - parsing, not binding
    assert parse_listen("[::]:9108") == ("::", 9108)
    with pytest.raises(ValueError, match="not host:port"):
        parse_listen("9108")

"""Self-monitoring: source_unreachable fires once per episode and says once when polling recovers;
an auth failure supersedes it and announces its own recovery; notices travel through the outbox."""

from __future__ import annotations

import io
from datetime import datetime, timedelta

from alerts_support import Clock, SlackStub, make_config, slack_config

from monitor import selfmon
from monitor.alerts.console import ConsoleChannel
from monitor.alerts.outbox import OutboxWorker
from monitor.alerts.routing import channels_for
from monitor.alerts.slack import SlackChannel
from monitor.config import Config
from monitor.store import Cursor, Store

SOURCE = {"name": "prod", "base_url": "http://127.0.0.1:9", "token": "tok", "poll_interval": "1m"}


def config(**kwargs: object) -> Config:
    return make_config(sources=[SOURCE], **kwargs)  # type: ignore[arg-type]


def succeed(store: Store, at: datetime) -> None:
    cursor = store.get_cursor("prod") or Cursor(source="prod")
    with store.transaction():
        store.save_cursor(
            Cursor(
                source="prod",
                last_id=cursor.last_id or 1,
                last_created_at=at,
                last_success_at=at,
                last_attempt_at=at,
            )
        )


def fail(store: Store, at: datetime, kind: str = "unavailable", message: str = "HTTP 503 from Xano") -> None:
    store.record_poll_failure("prod", at=at, kind=kind, message=message)


def monitor_alerts(store: Store) -> list[tuple[str, str, str]]:
    return [
        (rule, severity, title)
        for rule, severity, title in store.conn.execute(
            "SELECT rule_id, severity, title FROM alerts WHERE rule_id LIKE 'monitor.%' "
            "ORDER BY recorded_at, rowid"
        )
    ]


def test_source_unreachable_fires_once_per_episode_and_recovers_once(store: Store, clock: Clock) -> None:
    cfg = config()
    start = clock()
    succeed(store, start)
    assert selfmon.check_sources(store, cfg, clock()) == 0
    for _ in range(3):  # three failing minutes: exactly at the limit, not past it
        clock.advance(timedelta(minutes=1))
        fail(store, clock())
        assert selfmon.check_sources(store, cfg, clock()) == 0
    clock.advance(timedelta(seconds=1))
    fail(store, clock())
    assert selfmon.check_sources(store, cfg, clock()) == 1
    for _ in range(60):  # an hour more of failures: the episode was announced, nothing new
        clock.advance(timedelta(minutes=1))
        fail(store, clock())
        assert selfmon.check_sources(store, cfg, clock()) == 0
    clock.advance(timedelta(minutes=1))
    succeed(store, clock())
    assert selfmon.check_sources(store, cfg, clock()) == 1
    assert selfmon.check_sources(store, cfg, clock()) == 0

    assert monitor_alerts(store) == [
        ("monitor.source_unreachable", "high", "Source prod unreachable: no successful poll for 3 min 1 s"),
        ("monitor.source_unreachable.recovered", "info", "Source prod recovered: polling succeeds again"),
    ]
    out = io.StringIO()
    report = OutboxWorker(store, {"console": ConsoleChannel(cfg.tz, out)}, clock=clock).deliver_due()
    assert report.sent == 2
    printed = out.getvalue()
    assert "[HIGH] Source prod unreachable" in printed and "HTTP 503 from Xano" in printed
    assert "[INFO] Source prod recovered" in printed

    # A new outage is a new episode with a new alert.
    for _ in range(4):
        clock.advance(timedelta(minutes=1))
        fail(store, clock())
        selfmon.check_sources(store, cfg, clock())
    assert [a[0] for a in monitor_alerts(store)].count("monitor.source_unreachable") == 2


def test_a_source_that_never_succeeded(store: Store, clock: Clock) -> None:
    cfg = config()
    fail(store, clock())
    assert selfmon.check_sources(store, cfg, clock()) == 0  # starts watching now
    clock.advance(timedelta(minutes=3, seconds=1))
    fail(store, clock())
    assert selfmon.check_sources(store, cfg, clock()) == 1
    text = store.conn.execute("SELECT text FROM alerts").fetchone()[0]
    assert "No poll of this source has succeeded" in text
    clock.advance(timedelta(minutes=1))
    succeed(store, clock())
    assert selfmon.check_sources(store, cfg, clock()) == 1
    assert monitor_alerts(store)[-1][0] == "monitor.source_unreachable.recovered"


def test_state_survives_a_restart(tmp_path: object, clock: Clock) -> None:
    path = f"{tmp_path}/m.db"
    cfg = config()
    with Store.open(path) as store:
        succeed(store, clock())
        clock.advance(timedelta(minutes=5))
        fail(store, clock())
        assert selfmon.check_sources(store, cfg, clock()) == 1
    clock.advance(timedelta(minutes=5))
    with Store.open(path) as store:
        fail(store, clock())
        assert selfmon.check_sources(store, cfg, clock()) == 0  # still the same, announced episode
        succeed(store, clock())
        assert selfmon.check_sources(store, cfg, clock()) == 1


def test_auth_failure_supersedes_unreachable_and_announces_its_recovery(store: Store, clock: Clock) -> None:
    cfg = config()
    succeed(store, clock())
    last_success = clock()
    clock.advance(timedelta(minutes=1))
    # What the poller does on a 401: note the failure and record monitor.auth_failed in the outbox.
    fail(store, clock(), kind="auth", message="HTTP 401: token rejected")
    alert = selfmon.auth_failed("prod", "HTTP 401: token rejected", last_success, clock())
    with store.transaction():
        store.record_alert(alert, channels_for(alert, cfg), clock())
    for _ in range(20):
        assert selfmon.check_sources(store, cfg, clock()) == 0
        clock.advance(timedelta(minutes=1))
        fail(store, clock(), kind="auth", message="HTTP 401: token rejected")
    succeed(store, clock())
    assert selfmon.check_sources(store, cfg, clock()) == 1
    assert selfmon.check_sources(store, cfg, clock()) == 0
    assert [a[0] for a in monitor_alerts(store)] == ["monitor.auth_failed", "monitor.auth_failed.recovered"]
    channels = store.conn.execute(
        "SELECT o.channel FROM outbox o JOIN alerts a ON a.id = o.alert_id WHERE a.rule_id = ?",
        ("monitor.auth_failed.recovered",),
    ).fetchall()
    assert channels == [("console",)]


def test_recovery_reaches_whoever_heard_of_the_failure_whatever_their_floor(
    slack: SlackStub, store: Store, clock: Clock
) -> None:
    cfg = config(slack=slack_config(slack, min_severity="high"))
    assert cfg.alerts.slack is not None
    worker = OutboxWorker(store, {"slack": SlackChannel(cfg.alerts.slack, cfg.tz)}, clock=clock)
    succeed(store, clock())
    clock.advance(timedelta(minutes=10))
    fail(store, clock())
    selfmon.check_sources(store, cfg, clock())
    clock.advance(timedelta(minutes=1))
    succeed(store, clock())
    selfmon.check_sources(store, cfg, clock())
    assert worker.deliver_due().sent == 2
    texts = [p.body["text"] for p in slack.posts()]
    assert texts[0].startswith("HIGH: Source prod unreachable")
    assert texts[1].startswith("INFO: Source prod recovered")  # info, though slack's floor is high


def test_a_long_first_backfill_that_keeps_receiving_pages_is_not_unreachable(
    store: Store, clock: Clock
) -> None:
    """A first backfill of a large instance spans many poll intervals with no completed cycle. While its
    walk keeps receiving pages the source answers; once pages stop arriving it is unreachable."""
    cfg = config()
    assert selfmon.check_sources(store, cfg, clock(), {}) == 0  # starts watching now
    for _ in range(10):  # ten minutes of walking, a page a minute, no cycle completed yet
        clock.advance(timedelta(minutes=1))
        assert selfmon.check_sources(store, cfg, clock(), {"prod": clock()}) == 0
    last_page = clock()
    clock.advance(timedelta(minutes=3))  # pages stopped: exactly at the limit, still quiet
    assert selfmon.check_sources(store, cfg, clock(), {"prod": last_page}) == 0
    clock.advance(timedelta(seconds=1))
    assert selfmon.check_sources(store, cfg, clock(), {"prod": last_page}) == 1
    assert [rule for rule, _, _ in monitor_alerts(store)] == ["monitor.source_unreachable"]

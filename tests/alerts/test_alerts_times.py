"""Durations and times in what people read: ``47 s`` and ``2 h 5 min``, never ``0:00:47.345672``; times in
the configured zone to the second, never raw UTC with microseconds. Self-monitoring alerts as delivered to
the console, ``status`` and the dead-letter list."""

from __future__ import annotations

import io
import re
from datetime import timedelta
from zoneinfo import ZoneInfo

from alerts_support import Clock, make_alert, make_config, record

from monitor import selfmon
from monitor.alerts.console import ConsoleChannel
from monitor.alerts.outbox import DeliveryError, OutboxWorker, list_dead_letters, render_dead_letters
from monitor.alerts.routing import channels_for
from monitor.config import Config
from monitor.events import canonical_json, format_timestamp, normalize
from monitor.status import render_status
from monitor.store import Cursor, Store
from monitor.timeutil import format_duration, format_time

SOURCE = {"name": "prod", "base_url": "http://127.0.0.1:9", "token": "tok", "poll_interval": "1m"}
BERLIN = ZoneInfo("Europe/Berlin")
RAW = re.compile(r"\d:\d\d:\d\d\.\d|\d{2}:\d{2}:\d{2}\.\d+|\+00:00|T\d\d:\d\d")  # timedelta/ISO leftovers


def config() -> Config:
    return make_config(sources=[SOURCE], console=True)


def assert_human(text: str) -> None:
    assert not RAW.search(text), RAW.search(text)


def test_format_duration_and_format_time() -> None:
    assert format_duration(timedelta(seconds=47.345672)) == "47 s"
    assert format_duration(timedelta(hours=2, minutes=5, seconds=9)) == "2 h 5 min"
    assert format_duration(timedelta(minutes=3, seconds=47)) == "3 min 47 s"
    assert format_duration(timedelta(seconds=30)) == "30 s"
    assert format_duration(timedelta(days=7)) == "7 d"
    assert format_duration(timedelta(days=1, hours=3, minutes=2)) == "1 d 3 h"
    assert format_duration(0.4) == "0 s"
    assert format_duration(7500.0) == "2 h 5 min"
    moment = make_alert().event_time + timedelta(microseconds=345672)
    assert format_time(moment, BERLIN) == "2026-03-04 10:30:00 CET"


def test_self_monitoring_alerts_say_47_s_and_local_times(store: Store, clock: Clock) -> None:
    cfg = config()
    clock.advance(timedelta(microseconds=345672))  # a real clock is never on a whole second
    start = clock()
    with store.transaction():
        store.save_cursor(Cursor("prod", last_id=1, last_created_at=start, last_success_at=start))
    clock.advance(timedelta(minutes=3, seconds=47))
    store.record_poll_failure("prod", at=clock(), kind="unavailable", message="HTTP 503 from Xano")
    assert selfmon.check_sources(store, cfg, clock()) == 1
    clock.advance(timedelta(minutes=2))
    with store.transaction():
        store.save_cursor(Cursor("prod", last_id=1, last_created_at=clock(), last_success_at=clock()))
    assert selfmon.check_sources(store, cfg, clock()) == 1
    gap = selfmon.retention_gap("prod", start, clock(), timedelta(seconds=30), clock(), cfg.tz)
    with store.transaction():
        store.record_alert(gap, channels_for(gap, cfg), clock())

    out = io.StringIO()
    report = OutboxWorker(store, {"console": ConsoleChannel(cfg.tz, out)}, clock=clock).deliver_due()
    assert report.sent == 3
    printed = out.getvalue()
    assert "Source prod unreachable: no successful poll for 3 min 47 s" in printed
    assert "The last successful poll was at 2026-03-04 11:00:00 CET, 3 min 47 s ago" in printed
    assert "(the limit is 3 min, three poll intervals)" in printed
    assert (
        "A poll succeeded at 2026-03-04 11:05:47 CET after failures since 2026-03-04 11:00:00 CET" in printed
    )
    assert "between 2026-03-04 11:00:00 CET and 2026-03-04 11:05:47 CET" in printed
    assert "the plan's retention of 30 s" in printed
    assert_human(printed)


def test_delivery_recovery_and_dead_letters_read_in_local_time(store: Store, clock: Clock) -> None:
    class Flaky:
        name = "flaky"
        fail = True

        def send(self, alert: object) -> str | None:
            if Flaky.fail:
                raise DeliveryError("HTTP 400 bad request", permanent=True)
            return None

    out = io.StringIO()
    tz = config().tz
    clock.advance(timedelta(microseconds=345672))
    record(store, [make_alert()], ["flaky"], clock())
    worker = OutboxWorker(store, {"flaky": Flaky(), "console": ConsoleChannel(tz, out)}, clock=clock, tz=tz)
    worker.deliver_due()
    listing = render_dead_letters(list_dead_letters(store), tz)
    assert "2026-03-04 11:00:00 CET" in listing
    Flaky.fail = False
    clock.advance(timedelta(hours=2, minutes=5))
    record(store, [make_alert(title="later")], ["flaky"], clock())
    worker.deliver_due()
    printed = out.getvalue()
    assert (
        "flaky accepted a message at 2026-03-04 13:05:00 CET after failing since 2026-03-04 11:00:00 CET"
        in printed
    )
    assert_human(printed + listing)


def test_status_shows_lag_as_a_duration_and_times_in_the_zone(store: Store, clock: Clock) -> None:
    cfg = config()
    clock.advance(timedelta(microseconds=345672))
    raw = {"id": 1, "created_at": format_timestamp(clock()), "type": "Login", "msg": "m", "user": None}
    with store.transaction():
        store.archive(normalize("prod", raw), canonical_json(raw), store.head_hash(), clock())
    with store.transaction():
        store.save_cursor(
            Cursor(
                "prod",
                last_id=1,
                last_success_at=clock() - timedelta(seconds=47),
                last_error="HTTP 503",
                last_error_at=clock() - timedelta(seconds=5),
                error_kind="unavailable",
            )
        )
    clock.advance(timedelta(hours=2, minutes=5))
    text = render_status(store, cfg, clock())
    assert "2026-03-04 10:59:13 CET" in text  # last success, in Europe/Berlin, to the second
    assert "2026-03-04 10:59:55 CET [unavailable] HTTP 503" in text
    assert "  2 h 5 min  " in text  # the lag: now minus the newest archived event
    assert "oldest 2026-03-04 11:00:00 CET" in text
    assert_human(text)

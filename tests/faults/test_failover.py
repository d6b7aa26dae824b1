"""Two replicas of `audit-monitor run` (real subprocesses) on one PostgreSQL database, against the simulator
over HTTP and the Slack stub, while events keep arriving; the leader is killed or cut off, and the standby
takes over (monitor/store/leadership.py, docs/operations.md "Running two replicas").

- kill -9 of the leader, five times in a row (the killed one restarted as the new standby): each time the
  standby leads within 30 s (its /healthz says ``"role": "leader"``) and has a successful cycle;
- a network cut between the leader and PostgreSQL (a proxy that swallows the traffic without closing
  anything): the leader fences itself (its /healthz says standby; no poll and no message from anyone until
  the other leads), and the standby leads within 30 s.

Afterwards every simulator event is archived exactly once, ``verify`` passes, every alert a clean run raises
was raised and delivered, and no Slack message went out twice, except a send that was on the wire when its
sender was killed or cut off: that alert is sent again by the new leader (its claim ran out), with the same
alert id (the receiver's idempotency key), and the test checks each such repeat: after a kill it must be
the last message Slack accepted before that kill (the one on the wire), after the cut it must have been
sent around the cut. The real lease timings are used (10 s lease, 20 s server idle timeout, 3 s retry).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.alerts.alerts_support import BOT_TOKEN
from tests.faults.conftest import FaultySlack, Scenario, kill9, reference_alert_ids, wait_until
from tests.ops.conftest import REPO, Daemon, http_get
from tests.postgres import PostgresServer
from tests.tcp_proxy import BlackHoleProxy

KILLS = 5
TAKEOVER_LIMIT = 30.0  # seconds: the promise
CLAIM_RUNS_OUT = 45.0 + 15.0  # outbox.CLAIM_FOR, plus a delivery tick and a cycle
API_TOKEN = "replica-test-token-0123456789"


def config_text(s: Scenario) -> str:
    return f"""\
timezone: Europe/Berlin
state: {{url: "${{AM_STATE_URL}}"}}
sources:
  - name: sim
    base_url: "{s.sim.base_url}"
    token: "${{SIM_TOKEN}}"
    poll_interval: 1s
    per_page: 100
    plan_retention: 60d
alerts:
  console: false
  digest_after: 100000
  slack: {{token: "${{SLACK_BOT_TOKEN}}", channel: "#sec", base_url: "{s.slack.stub.base_url}",
          min_severity: info, timeout: 5s}}
server: {{listen: "127.0.0.1:0", stale_after: 30s, tokens: [{{name: ops, token: "${{API_TOKEN}}"}}]}}
"""


class Replicas:
    """The replicas of one scenario: each a `run` subprocess with its own state URL (direct or proxied)."""

    def __init__(self, s: Scenario, url: str) -> None:
        self.s, self.url = s, url
        s.config.write_text(config_text(s), encoding="utf-8")
        self.running: list[Daemon] = []

    def start(self, url: str | None = None) -> Daemon:
        env = {
            "SIM_TOKEN": self.s.token,
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "API_TOKEN": API_TOKEN,
            "AM_STATE_URL": url or self.url,
        }
        daemon = Daemon(self.s.config, self.s.tmp, env, "run")
        self.s.daemons.append(daemon)
        self.running.append(daemon)
        return daemon

    def forget(self, daemon: Daemon) -> None:
        self.running.remove(daemon)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "monitor.cli", "--config", str(self.s.config), *args],
            cwd=self.s.tmp,
            env={
                **os.environ,
                "PYTHONPATH": str(REPO),
                "SIM_TOKEN": self.s.token,
                "SLACK_BOT_TOKEN": BOT_TOKEN,
                "API_TOKEN": API_TOKEN,
                "AM_STATE_URL": self.url,
            },
            capture_output=True,
            text=True,
            timeout=120,
        )


def health(daemon: Daemon) -> dict[str, Any]:
    daemon.assert_running()
    _status, body = http_get(daemon.base_url + "/healthz", timeout=5)
    return json.loads(body)  # type: ignore[no-any-return]


def role(daemon: Daemon) -> str:
    return str(health(daemon)["role"])


def has_cycled_since(daemon: Daemon, moment: str) -> bool:
    """Whether ``daemon`` leads and finished a successful cycle after ``moment`` (ISO time, UTC)."""
    body = health(daemon)
    last = body.get("sources", {}).get("sim", {}).get("last_success_at")
    return body["role"] == "leader" and last is not None and last > moment


def leader_among(daemons: list[Daemon], timeout: float) -> Daemon:
    def one_leader() -> Daemon | None:
        leaders = [d for d in daemons if role(d) == "leader"]
        assert len(leaders) <= 1, "two replicas say they lead"
        return leaders[0] if leaders else None

    return wait_until(one_leader, timeout, "a leader", interval=0.2)  # type: ignore[no-any-return]


def utc_now_iso() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="microseconds")


def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql).fetchall()  # type: ignore[arg-type]


class EventFeed:
    """Events keep arriving while the replicas fail over: one every ``every`` seconds, a table deletion
    (an alert) every fourth."""

    def __init__(self, s: Scenario, every: float = 0.3) -> None:
        self.s, self.every = s, every
        self._stop = threading.Event()
        self.added = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> EventFeed:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.added += 1
            if self.added % 4 == 0:
                self.s.sim.add_event("Delete Table", user={"id": 17, "email": "lena.fischer@northwind.io"})
            else:
                self.s.sim.add_event("Update Record")


def settle(replicas: Replicas, url: str, timeout: float) -> None:
    """Wait until the archive holds every simulator event and the outbox has nothing left to send."""

    def settled() -> bool:
        archived = query(url, "SELECT count(*) FROM events")[0][0]
        pending = query(url, "SELECT count(*) FROM outbox WHERE status <> 'sent'")[0][0]
        return bool(archived == replicas.s.sim.event_count() and pending == 0)

    wait_until(settled, timeout, "every event archived and every alert delivered", interval=0.5)


def in_flight_at_a_kill(kills: list[float]) -> Callable[[list[float], int], bool]:
    """A repeat is allowed when its first send was the last message Slack accepted before a kill ended (each
    moment in ``kills`` is taken after the killed process was reaped). A leader sends one message at a time
    and records it as sent before the next, so only that one can be unrecorded when it dies, however long
    its record took on a slow host."""

    def allowed(accepted_at: list[float], index: int) -> bool:
        first = accepted_at[index]
        for end in kills:
            if first <= end and not any(first < other <= end for other in accepted_at):
                return True
        return False

    return allowed


def near(windows: list[tuple[float, float]]) -> Callable[[list[float], int], bool]:
    """A repeat is allowed when its first send came within a second before a window or inside it."""

    def allowed(accepted_at: list[float], index: int) -> bool:
        return any(start - 1.0 <= accepted_at[index] <= end for start, end in windows)

    return allowed


def check_invariants(replicas: Replicas, url: str, may_repeat: Callable[[list[float], int], bool]) -> int:
    """Archive, chain, alerts and messages as the module docstring says; returns the repeated messages."""
    s = replicas.s
    rows = query(url, "SELECT event_id FROM events")
    ids = Counter(int(row[0]) for row in rows)
    twice = sorted(i for i, n in ids.items() if n > 1)
    assert not twice, f"archived more than once: {twice[:20]}"
    truth = {int(e["id"]) for e in s.sim.visible_events()}
    assert set(ids) == truth, (
        f"missing {sorted(truth - set(ids))[:10]}, unknown {sorted(set(ids) - truth)[:10]}"
    )

    done = replicas.cli("verify")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith(f"OK: {len(truth)} events"), done.stdout

    expected = reference_alert_ids(s.sim, s.tmp)
    raised = {row[0] for row in query(url, "SELECT id FROM alerts WHERE rule_id NOT LIKE 'monitor.%'")}
    assert expected and raised == expected, (
        f"missing {sorted(expected - raised)[:5]}, unexpected {sorted(raised - expected)[:5]}"
    )
    outbox = {row[0] for row in query(url, "SELECT alert_id FROM outbox WHERE channel = 'slack'")}
    accepted = s.slack.accepted_alert_ids()
    counts = Counter(accepted)
    assert set(counts) == outbox, f"never arrived: {sorted(outbox - set(counts))[:5]}"
    repeats = 0
    for alert_id, n in counts.items():
        if n == 1:
            continue
        repeats += n - 1
        # Only a send on the wire when its sender died or was cut off may go out again (same alert id).
        assert may_repeat(s.slack.accepted_at, accepted.index(alert_id)), (
            f"alert {alert_id} delivered {n} times, its first send was not in flight at a kill or the cut"
        )
    return repeats


@pytest.fixture
def pg_database(pg_url: str) -> str:
    return pg_url


@pytest.fixture
def slow_slack(slack: FaultySlack) -> FaultySlack:
    slack.delay = 0.15  # each message in flight for 150 ms: a kill can land inside a send
    return slack


def test_kill9_of_the_leader_five_times_loses_and_repeats_nothing(
    scenario_factory: Callable[..., Scenario],
    pg_database: str,
    slow_slack: FaultySlack,
    seeded_rng: random.Random,
) -> None:
    s = scenario_factory(days=1, events_per_day=150)
    replicas = Replicas(s, pg_database)
    daemons = [replicas.start(), replicas.start()]
    leader = leader_among(daemons, 60)
    wait_until(lambda: has_cycled_since(leader, "1970"), 60, "the first leader's first cycle")
    kills: list[float] = []
    takeovers: list[float] = []
    first_cycles: list[float] = []
    with EventFeed(s):
        for kill in range(KILLS):
            standby = next(d for d in replicas.running if d is not leader)
            assert role(standby) == "standby"
            time.sleep(seeded_rng.uniform(0.5, 2.5))  # at a random moment of the leader's work
            killed_at, killed_iso = time.perf_counter(), utc_now_iso()
            kill9(leader)
            replicas.forget(leader)
            kills.append(time.perf_counter())
            wait_until(lambda standby=standby: role(standby) == "leader", TAKEOVER_LIMIT, "the takeover")
            takeovers.append(time.perf_counter() - killed_at)
            wait_until(
                lambda standby=standby, at=killed_iso: has_cycled_since(standby, at),
                TAKEOVER_LIMIT,
                "the new leader's first cycle",
                interval=0.2,
            )
            first_cycles.append(time.perf_counter() - killed_at)
            assert first_cycles[-1] < TAKEOVER_LIMIT
            leader = standby
            restarted = replicas.start()  # the killed one comes back, as the standby
            wait_until(lambda d=restarted: role(d) == "standby", 30, "the restarted replica to stand by")
            print(
                f"kill {kill}: leader after {takeovers[-1]:.1f} s, first cycle after {first_cycles[-1]:.1f} s"
            )
    settle(replicas, pg_database, CLAIM_RUNS_OUT + 30)
    print(
        f"takeover median {statistics.median(takeovers):.1f} s (max {max(takeovers):.1f}); first cycle "
        f"median {statistics.median(first_cycles):.1f} s (max {max(first_cycles):.1f})"
    )
    for daemon in list(replicas.running):
        daemon.stop()
        assert daemon.proc.returncode == 0
    repeats = check_invariants(replicas, pg_database, in_flight_at_a_kill(kills))
    assert repeats <= KILLS
    print(
        f"{KILLS} kills, {repeats} messages repeated after a kill, {len(s.slack.accepted_alert_ids())} sent"
    )


def proxied(url: str, proxy: BlackHoleProxy) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, f"{parts.username}@127.0.0.1:{proxy.port}", parts.path, "", ""))


@pytest.fixture
def proxy(pg_server: PostgresServer) -> Iterator[BlackHoleProxy]:
    between = BlackHoleProxy("127.0.0.1", pg_server.port)
    yield between
    between.close()


def test_a_leader_cut_off_from_the_database_fences_itself_and_the_standby_takes_over(
    scenario_factory: Callable[..., Scenario], pg_database: str, slack: FaultySlack, proxy: BlackHoleProxy
) -> None:
    s = scenario_factory(days=1, events_per_day=150)
    replicas = Replicas(s, pg_database)
    cut_off = replicas.start(proxied(pg_database, proxy))
    wait_until(lambda: role(cut_off) == "leader", 60, "the proxied replica to lead")
    wait_until(lambda: has_cycled_since(cut_off, "1970"), 60, "its first cycle")
    standby = replicas.start()
    wait_until(lambda: role(standby) == "standby", 60, "the direct replica to stand by")
    s.sim.add_event("Delete Table", user={"id": 18, "email": "jan.koch@northwind.io"})
    settle(replicas, pg_database, 30)  # the leader did its work through the proxy

    proxy.black_hole()
    cut_at = time.perf_counter()
    s.sim.add_event(
        "Delete Table", user={"id": 19, "email": "eva.schulz@northwind.io"}
    )  # for the next leader
    wait_until(lambda: role(cut_off) != "leader", 10 + 3, "the cut-off leader to fence itself")
    fenced_after = time.perf_counter() - cut_at
    assert role(standby) == "standby", "the standby led before the old leader fenced itself"
    # From now on, until the standby leads, nobody polls the simulator or sends a message.
    requests, messages = s.sim.request_count, len(s.slack.stub.posts())
    while True:
        sampled = (s.sim.request_count, len(s.slack.stub.posts()))
        if role(standby) == "leader":
            break
        assert sampled == (requests, messages), "polls or messages after the leader fenced itself"
        assert time.perf_counter() - cut_at < TAKEOVER_LIMIT, "no takeover within 30 s of the cut"
        time.sleep(0.2)
    took_over_after = time.perf_counter() - cut_at
    assert took_over_after < TAKEOVER_LIMIT
    print(f"fenced after {fenced_after:.1f} s, standby led after {took_over_after:.1f} s")

    settle(replicas, pg_database, CLAIM_RUNS_OUT + 30)
    body = health(cut_off)
    assert body["role"] == "standby"  # it keeps trying through the cut, in vain
    repeats = check_invariants(replicas, pg_database, near([(cut_at - 1.0, cut_at + 10.0)]))
    assert repeats <= 1


def metric(daemon: Daemon, line_start: str) -> float:
    _status, body = http_get(daemon.base_url + "/metrics")
    for line in body.decode().splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no {line_start} in /metrics")


def test_a_standby_serves_health_metrics_the_api_and_reads_and_takes_over_a_clean_stop(
    scenario_factory: Callable[..., Scenario], pg_database: str
) -> None:
    s = scenario_factory(days=1, events_per_day=150)
    replicas = Replicas(s, pg_database)
    leader = replicas.start()
    wait_until(lambda: has_cycled_since(leader, "1970"), 60, "the leader's first cycle")
    standby = replicas.start()
    wait_until(lambda: role(standby) == "standby", 60, "the second replica to stand by")

    status, body = http_get(standby.base_url + "/healthz")
    assert status == 200 and json.loads(body)["role"] == "standby", body
    assert metric(standby, 'audit_monitor_role{role="standby"}') == 1.0
    assert metric(standby, 'audit_monitor_role{role="leader"}') == 0.0
    assert metric(leader, 'audit_monitor_role{role="leader"}') == 1.0
    assert metric(leader, 'audit_monitor_role{role="standby"}') == 0.0
    # The standby's archive gauges follow what the leader archives (read from the shared database every
    # 15 s), rather than keeping their values from its start.
    archived = 'audit_monitor_archive_events{source="sim"}'
    before, added_at = metric(standby, archived), time.time()
    s.sim.add_event("Update Record")
    wait_until(lambda: metric(leader, archived) == before + 1, 60, "the leader to archive the new event")
    wait_until(lambda: metric(standby, archived) == before + 1, 40, "the standby's gauge to follow")
    # ... and so does each source's last successful poll (the leader's cycle that archived it, or later).
    assert metric(standby, 'audit_monitor_last_success_timestamp_seconds{source="sim"}') >= added_at - 1
    # The console's API reads the shared archive on the standby too.
    import urllib.request

    request = urllib.request.Request(  # noqa: S310 - loopback URL
        standby.base_url + "/api/v1/events?limit=5", headers={"Authorization": f"Bearer {API_TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback URL
        assert len(json.loads(answer.read())["items"]) == 5
    # Read commands work beside both; `run --once` does not compete with the leader.
    assert replicas.cli("status").returncode == 0
    once = replicas.cli("run", "--once")
    assert once.returncode == 2, once.stderr
    assert "another process leads" in once.stderr and f"pid {leader.proc.pid}" in once.stderr, once.stderr
    # Who leads, in the logs: the leader's role change and the standby's view of it.
    assert leader.events("role changed")[-1]["role"] == "leader"
    seen = standby.events("standby: another process leads")
    assert seen and f"pid {leader.proc.pid}" in seen[0]["leader"]
    assert not standby.events("poll cycle"), "a standby polled"

    stopped_at = time.perf_counter()
    leader.stop()  # SIGTERM: the lock is released on the way out
    assert leader.proc.returncode == 0
    wait_until(lambda: role(standby) == "leader", 10, "the standby to take over a clean stop")
    print(f"a clean stop handed over in {time.perf_counter() - stopped_at:.1f} s")
    released = [r for r in leader.events("role changed") if r["role"] == "standby"]
    assert released and "released" in released[-1]["reason"]
    assert standby.events("role changed")[-1]["reason"] == "took the leader lock"
    standby.wait_event("poll cycle", 30)

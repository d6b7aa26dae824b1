"""Fault injection: the daemon as a real subprocess (`audit-monitor run` / `run --once`) against the simulator
on 127.0.0.1, the Slack stub (slack-sdk through ``base_url``) and a real aiosmtpd server, with faults thrown
at it from outside. After each scenario the end-to-end invariants are checked (see ``Invariants``):

- every event the simulator serves is archived exactly once (ids per source, no duplicate, no gap) and
  ``audit-monitor verify`` exits 0;
- every alert the rules raise is recorded and delivered: each outbox row is sent, and the alert ids the Slack
  stub and the SMTP server accepted are exactly the outbox's; duplicates only where a kill landed in the
  send -> record window (the caller says how many it allows; zero where nothing was killed during delivery).

Helpers come from the existing tests (the subprocess wrapper and queries of tests/ops, the Slack stub and
the SMTP server of tests/alerts); what is here is only what fault injection adds to them.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from monitor.config import parse_config
from monitor.daemon import Monitor
from monitor.simulator import Simulator
from tests.alerts.alerts_support import BOT_TOKEN, SlackStub, SmtpServer, start_smtp
from tests.ops.conftest import REPO, Daemon, query, wait_until

__all__ = [
    "REPO",
    "Daemon",
    "FaultySlack",
    "Invariants",
    "ScriptedSimulator",
    "Scenario",
    "archived_ids",
    "kill9",
    "query",
    "restart_smtp",
    "wait_until",
]

SMTP_RECIPIENTS = ["security@example.com"]
_ALERT_ID_IN_SLACK = re.compile(r"\balert ([0-9a-f]{32})\b")
_ALERT_ID_IN_EMAIL = re.compile(r"^<([0-9a-f]{32})@[^@>]+>$")  # <alert-id@sender-domain>


# --- the simulator, with faults at chosen requests ----------------------------------------------------------


class ScriptedSimulator(Simulator):
    """The simulator, plus actions run when the n-th audit-log request arrives (before it is answered).

    The simulator's own switches (``inject_status`` ...) hit the *next* request; this places them on a given
    page of a walk (mid-backfill), and lets events arrive between two pages of one walk (page shift).
    It overrides the private request counter and page builder because the simulator has no hook there.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.before_request: dict[int, list[Callable[[Simulator], object]]] = {}
        self.served: list[int] = []  # the id of every item served, in order (repeats show page shifts)
        self.pages_served: list[int] = []  # the page number of every page built, in order
        self.fault_rate = 0.0
        self._fault_rng: random.Random | None = None

    def fail_randomly(self, rate: float, rng: random.Random) -> None:
        """From now on a ``rate`` share of requests fails: 429 with Retry-After, 502, or a truncated page."""
        self.fault_rate, self._fault_rng = rate, rng

    def at_request(self, number: int, action: Callable[[Simulator], object]) -> None:
        """Run ``action(self)`` when request ``number`` (counted from now, 1 = the next one) arrives."""
        self.before_request.setdefault(self.request_count + number, []).append(action)

    def _page(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        envelope = super()._page(*args, **kwargs)
        self.served.extend(int(item["id"]) for item in envelope["items"])
        self.pages_served.append(int(envelope["curPage"]))
        return envelope

    def _count_request(self) -> None:
        with self._lock:
            super()._count_request()
            for action in self.before_request.pop(self.request_count, []):
                action(self)
            if self._fault_rng is not None and self._fault_rng.random() < self.fault_rate:
                fault = self._fault_rng.choice(["429", "502", "truncated"])
                if fault == "429":
                    self.inject_status(429, retry_after="1")
                elif fault == "502":
                    self.inject_status(502)
                else:
                    self.inject_truncated()


def archived_ids(db: Path) -> list[int]:
    """Like tests/ops' helper, but the connection is closed at once (``with sqlite3.connect()`` leaves it
    open until garbage collection, and an open file keeps a filesystem from being remounted read-only)."""
    return [row[0] for row in query(db, "SELECT event_id FROM events ORDER BY event_id")]


def visible_ids(sim: Simulator) -> list[int]:
    return sorted(int(e["id"]) for e in sim.visible_events())


# --- Slack that can be slow or down -------------------------------------------------------------------------


@dataclass
class FaultySlack:
    """The Slack stub of tests/alerts, able to answer slowly (so a kill lands while a message is in flight)
    or to be down (503 from Slack's edge, as in an outage). Only accepted messages reach ``stub.requests``.
    """

    stub: SlackStub
    delay: float = 0.0
    down: bool = False
    refused: int = 0  # requests answered 503 while down
    accepted_at: list[float] = field(default_factory=list)  # perf_counter() as each message is taken

    @classmethod
    def start(cls) -> FaultySlack:
        stub = SlackStub()
        faulty = cls(stub)
        base = stub.server.RequestHandlerClass

        class Handler(base):  # type: ignore[misc, valid-type]
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                if faulty.down:
                    self.rfile.read(int(self.headers.get("Content-Length") or 0))
                    faulty.refused += 1
                    body = b"<html>503 Service Unavailable</html>"
                    self.send_response(503)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if faulty.delay:
                    # Slack is slow: it takes the message halfway through the delay and answers at the end. A
                    # client killed in the first half is gone before Slack takes it (nothing is posted); one
                    # killed in the second half never hears that its message was posted: the window.
                    raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                    time.sleep(faulty.delay / 2)
                    if _client_gone(self.connection):
                        self.close_connection = True
                        return
                    faulty.accepted_at.append(time.perf_counter())
                    time.sleep(faulty.delay / 2)
                    self.rfile = io.BytesIO(raw)
                else:
                    faulty.accepted_at.append(time.perf_counter())
                super().do_POST()

        stub.server.RequestHandlerClass = Handler
        # A killed client leaves a broken pipe behind; that is the scenario, not an error worth printing.
        stub.server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        stub.thread.start()
        return faulty

    def stop(self) -> None:
        self.stub.server.shutdown()
        self.stub.server.server_close()

    def accepted_alert_ids(self) -> list[str]:
        """The alert id of every message Slack accepted (one per alert: the tests set a high digest_after)."""
        ids = []
        for request in self.stub.posts():
            found = _ALERT_ID_IN_SLACK.findall(json.dumps(request.body.get("blocks", "")))
            assert len(found) == 1, f"a Slack message without exactly one alert id: {request.raw[:300]}"
            ids.append(found[0])
        return ids


def _client_gone(connection: socket.socket) -> bool:
    """True when the client closed its end (killed): its request was read, so EOF is all it can still send."""
    readable, _, _ = select.select([connection], [], [], 0)
    if not readable:
        return False
    try:
        return connection.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def restart_smtp(server: SmtpServer) -> None:
    """Listen again on the same port with the same recorder (an aiosmtpd Controller cannot be restarted)."""
    server.controller = Controller(server.recorder, hostname=server.host, port=server.port, ready_timeout=10)
    server.controller.start()


def email_alert_ids(smtp: SmtpServer) -> list[str]:
    ids = []
    for message in smtp.recorder.messages:
        match = _ALERT_ID_IN_EMAIL.match(str(message["Message-ID"]))
        assert match, f"an email that is not one alert: {message['Message-ID']} {message['Subject']}"
        ids.append(match.group(1))
    return ids


# --- a scenario: simulator, config file, channels, subprocesses ---------------------------------------------


@dataclass
class Scenario:
    sim: Simulator
    tmp: Path
    token: str
    slack: FaultySlack
    smtp: SmtpServer
    db: Path
    config: Path = field(init=False)
    daemons: list[Daemon] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.config = self.tmp / "audit-monitor.yaml"
        self.write_config()

    def write_config(
        self,
        *,
        poll_interval: str = "1s",
        per_page: int = 100,
        digest_after: int = 100_000,
        extra_alerts: str = "",
    ) -> None:
        """Slack gets every alert (min_severity info), email the high and critical ones: both channels carry
        traffic. A high digest_after keeps one message per alert, so each message names its alert.
        ``extra_alerts``: more ``alerts`` keys as YAML lines indented by two (webhooks, teams, pagerduty)."""
        self.config.write_text(
            f"""\
timezone: Europe/Berlin
state: {{path: "{self.db}"}}
sources:
  - name: sim
    base_url: "{self.sim.base_url}"
    token: "${{SIM_TOKEN}}"
    poll_interval: {poll_interval}
    per_page: {per_page}
    plan_retention: 60d
alerts:
  console: false
  digest_after: {digest_after}
  slack: {{token: "${{SLACK_BOT_TOKEN}}", channel: "#sec", base_url: "{self.slack.stub.base_url}",
          min_severity: info, timeout: 5s}}
  email:
    smtp: {{host: {self.smtp.host}, port: {self.smtp.port}, security: none, timeout: 5s}}
    from: monitor@example.com
    to: {SMTP_RECIPIENTS}
    min_severity: high
{extra_alerts}server: {{listen: ""}}
""",
            encoding="utf-8",
        )

    @property
    def env(self) -> dict[str, str]:
        return {"SIM_TOKEN": self.token, "SLACK_BOT_TOKEN": BOT_TOKEN}

    def start_daemon(self, *args: str) -> Daemon:
        daemon = Daemon(self.config, self.tmp, self.env, *args)
        self.daemons.append(daemon)
        return daemon

    def cli(
        self, *args: str, timeout: float = 60, preexec_fn: Callable[[], None] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "monitor.cli", "--config", str(self.config), *args],
            cwd=self.tmp,
            env={**os.environ, "PYTHONPATH": str(REPO), **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=preexec_fn,  # noqa: PLW1509 - only to drop privileges for the read-only scenario
        )

    def run_once(self, *, expect: int = 0, log_level: str = "info") -> subprocess.CompletedProcess[str]:
        done = self.cli("run", "--once", "--log-level", log_level)
        assert done.returncode == expect, f"run --once exited {done.returncode}\n{done.stderr[-3000:]}"
        return done

    def prime(self) -> None:
        """Archive what the simulator holds now and deliver its alerts, in this process (a fast baseline for
        scenarios whose fault hits a later cycle; the subprocess does the faulty cycle)."""
        config = parse_config(self.config.read_text(encoding="utf-8"), str(self.config), self.env)
        monitor = Monitor(config)
        try:
            outcome = monitor.run_once()
        finally:
            monitor.close()
        assert outcome.ok, (outcome.polls, outcome.delivery.errors)

    def cursor(self) -> tuple[Any, ...] | None:
        rows = query(
            self.db, "SELECT last_id, last_created_at, last_success_at FROM cursors WHERE source='sim'"
        )
        return rows[0] if rows else None

    def stop_daemons(self) -> None:
        for daemon in self.daemons:
            daemon.stop()


def kill9(daemon: Daemon) -> None:
    """SIGKILL: no handler runs, nothing is flushed or rolled back by the process itself."""
    if daemon.proc.poll() is None:
        os.kill(daemon.proc.pid, signal.SIGKILL)
    daemon.proc.wait(timeout=10)
    daemon.stop()  # closes the log files


def reference_alert_ids(sim: Simulator, tmp: Path) -> set[str]:
    """The alerts the rules raise on what the simulator holds now: a clean, fault-free run in this process."""
    data = {
        "timezone": "Europe/Berlin",
        "state": {"path": str(tmp / "reference.db")},
        "sources": [{"name": "sim", "base_url": sim.base_url, "token": sim.token, "plan_retention": "60d"}],
        "alerts": {"console": False},
        "server": {"listen": ""},
    }
    monitor = Monitor(parse_config(json.dumps(data), "reference.yaml", {}))
    try:
        assert monitor.run_once().polls[0].ok
        rows = monitor.store.conn.execute(
            "SELECT id FROM alerts WHERE rule_id NOT LIKE 'monitor.%'"
        ).fetchall()
    finally:
        monitor.close()
    return {row[0] for row in rows}


@dataclass
class Invariants:
    """What must hold after every scenario; ``check`` returns the duplicate messages it saw."""

    scenario: Scenario

    def check(self, *, allowed_duplicates: int = 0, expected_alerts: set[str] | None = None) -> int:
        """``expected_alerts`` defaults to what one clean run raises on the simulator's events now: a run
        that raised no alert (or other ones) must fail the check, not pass it for want of a comparison."""
        self.archive_matches_the_simulator()
        self.verify_passes()
        if expected_alerts is None:
            expected_alerts = reference_alert_ids(self.scenario.sim, self.scenario.tmp)
        assert expected_alerts, "a clean run raises no alert here: the scenario cannot check delivery"
        return self.alerts_delivered(allowed_duplicates, expected_alerts)

    def archive_matches_the_simulator(self) -> None:
        ids = archived_ids(self.scenario.db)
        truth = visible_ids(self.scenario.sim)
        duplicates = sorted(i for i, n in Counter(ids).items() if n > 1)
        assert not duplicates, f"archived more than once: {duplicates[:20]}"
        missing = sorted(set(truth) - set(ids))
        extra = sorted(set(ids) - set(truth))
        assert not missing and not extra, f"missing {len(missing)} {missing[:20]}; unknown {extra[:20]}"
        assert len(ids) == len(truth) == self.scenario.sim.event_count()

    def verify_passes(self) -> None:
        done = self.scenario.cli("verify")
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.startswith(f"OK: {len(archived_ids(self.scenario.db))} events"), done.stdout

    def alerts_delivered(self, allowed_duplicates: int, expected_alerts: set[str]) -> int:
        db = self.scenario.db
        alerts = {row[0] for row in query(db, "SELECT id FROM alerts")}
        raised = {row[0] for row in query(db, "SELECT id FROM alerts WHERE rule_id NOT LIKE 'monitor.%'")}
        assert raised == expected_alerts, (
            f"rules raised {len(raised)} alerts, a clean run raises {len(expected_alerts)}: "
            f"missing {sorted(expected_alerts - raised)[:5]}, "
            f"unexpected {sorted(raised - expected_alerts)[:5]}"
        )
        rows = query(db, "SELECT alert_id, channel, status FROM outbox")
        not_sent = [row for row in rows if row[2] != "sent"]
        assert not not_sent, f"outbox rows not delivered: {not_sent[:10]}"
        assert {row[0] for row in rows} <= alerts
        duplicates = 0
        received = {
            "slack": Counter(self.scenario.slack.accepted_alert_ids()),
            "email": Counter(email_alert_ids(self.scenario.smtp)),
        }
        for channel, counts in received.items():
            expected = {alert_id for alert_id, name, _ in rows if name == channel}
            missing = expected - set(counts)
            unexpected = set(counts) - expected
            assert not missing, f"{channel}: {len(missing)} alerts never arrived: {sorted(missing)[:5]}"
            assert not unexpected, f"{channel}: messages for alerts the outbox does not hold: {unexpected}"
            duplicates += sum(n - 1 for n in counts.values())
        assert duplicates <= allowed_duplicates, (
            f"{duplicates} duplicate messages; at most {allowed_duplicates} may come from kills in the "
            "send -> record window"
        )
        return duplicates


# --- fixtures -----------------------------------------------------------------------------------------------


@pytest.fixture
def token() -> str:
    return "xmt-" + secrets.token_hex(16)


@pytest.fixture
def slack() -> Iterator[FaultySlack]:
    faulty = FaultySlack.start()
    yield faulty
    faulty.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = start_smtp()
    yield server
    server.controller.stop()


@pytest.fixture
def scenario_factory(
    tmp_path: Path, token: str, slack: FaultySlack, smtp: SmtpServer
) -> Iterator[Callable[..., Scenario]]:
    """``make(days=2, events_per_day=150, total_events=None, db=None)``: a simulator (planted incidents on, no
    background after the start, so the truth is exactly what the test adds) and a config for it."""
    made: list[Scenario] = []
    sims: list[Simulator] = []

    def make(
        *, days: float = 2, events_per_day: int = 150, total_events: int | None = None, db: Path | None = None
    ) -> Scenario:
        sim = ScriptedSimulator(
            seed=23,
            token=token,
            history_start=datetime.now(UTC) - timedelta(days=days),
            events_per_day=events_per_day,
            total_events=total_events,
            live_background=False,
        )
        sim.start()
        sims.append(sim)
        scenario = Scenario(sim, tmp_path, token, slack, smtp, db or tmp_path / "archive.db")
        made.append(scenario)
        return scenario

    try:
        yield make
    finally:
        for scenario in made:
            scenario.stop_daemons()
        for sim in sims:
            sim.stop()


@pytest.fixture
def seeded_rng(request: pytest.FixtureRequest) -> random.Random:
    """A random generator for kill moments; the seed is printed so a failure can be replayed
    (FAULTS_SEED=<n> pytest ...)."""
    seed = int(os.environ.get("FAULTS_SEED") or random.SystemRandom().randrange(1_000_000))
    print(f"\n{request.node.name}: FAULTS_SEED={seed}")
    return random.Random(seed)


# --- a filesystem the test can fill up or make read-only ----------------------------------------------------


class Tmpfs:
    """A size-limited tmpfs mounted on a test directory: a real full disk (ENOSPC) and a real read-only
    filesystem (EROFS), which neither chmod (root ignores it) nor RLIMIT_FSIZE (EFBIG, which SQLite reports
    as a disk I/O error, not a full disk) give. Needs the privilege to mount; the caller skips without it."""

    def __init__(self, where: Path, size: str) -> None:
        self.where = where
        where.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise PermissionError(done.stderr.strip() or "mount failed")

    def remount(self, options: str) -> None:
        done = subprocess.run(
            ["mount", "-o", f"remount,{options}", str(self.where)], capture_output=True, text=True
        )
        assert done.returncode == 0, f"remount,{options}: {done.stderr}"

    def used_bytes(self) -> int:
        return shutil.disk_usage(self.where).used

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.where)], check=False, capture_output=True)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Tmpfs]]:
    mounted: list[Tmpfs] = []

    def mount(size: str) -> Tmpfs:
        if shutil.which("mount") is None:
            pytest.skip("no mount command: a real full or read-only filesystem cannot be made here")
        try:
            fs = Tmpfs(tmp_path / f"fs{len(mounted)}", size)
        except PermissionError as exc:
            pytest.skip(f"cannot mount a tmpfs here ({exc}): a real full disk needs one")
        mounted.append(fs)
        return fs

    try:
        yield mount
    finally:
        for fs in mounted:
            fs.unmount()

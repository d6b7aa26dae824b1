"""Alert delay benchmark: from a table deletion in Xano to the Slack message, through the running daemon.

Real parts: ``audit-monitor run`` as a subprocess (poll interval ``--poll-interval``, default 1 s), the
simulator serving real HTTP on 127.0.0.1 and a minimal Slack Web API on 127.0.0.1 (both in this process),
reached through the product's slack-sdk channel. Once the daemon has caught up with the simulator's
history, a ``Delete Table`` event (which the bundled pack's ``xano.table.deleted`` alerts on) is
inserted, ``--repeat`` times, each at a random moment of the poll cycle. Two delays per event, on this
process's monotonic clock:

- poll to Slack: from the moment the simulator built the response page that first carried the event
  (the poll that sees it) to the moment the Slack stub received the chat.postMessage naming it. This
  is the monitor's own latency: the rest of the walk, the commit, the rules, the outbox, the send.
  Target: at most 5 s.
- insertion to Slack: from the insertion to the same receipt, the poll interval's wait included.

    python -m bench.bench_delay [--repeat 10] [--poll-interval 1]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.common import monitor_command, stop_process
from monitor.simulator import Simulator

TARGET_SECONDS = 5.0
WAIT_SECONDS = 60.0  # for one alert to arrive: far above the target, so a slow run is measured, not lost


class TimedSimulator(Simulator):
    """The simulator, noting when a response page first carried each watched event."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.watched: set[int] = set()
        self.first_served: dict[int, float] = {}

    def _page(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        envelope = super()._page(*args, **kwargs)
        served = time.monotonic()  # the page is built; sending it takes the next millisecond
        for item in envelope["items"]:
            if item["id"] in self.watched:
                self.first_served.setdefault(item["id"], served)
        return envelope


class SlackReceiver:
    """The part of Slack's Web API the channel uses: chat.postMessage answers ok; arrivals are timed.

    (tests/alerts/alerts_support.py has the scriptable stub the tests use; a benchmark needs only the
    arrival times, and does not import the test suite.)
    """

    def __init__(self) -> None:
        self.posts: list[tuple[float, str]] = []  # (monotonic arrival, request body)
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode("utf-8")
                arrived = time.monotonic()
                with receiver.arrived:
                    if self.path.endswith("/chat.postMessage"):
                        receiver.posts.append((arrived, body))
                        receiver.arrived.notify_all()
                    ts = f"{time.time():.6f}"
                reply = json.dumps({"ok": True, "channel": "C0BENCH", "ts": ts, "message": {"ts": ts}})
                data = reply.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/api/"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> SlackReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, marker: str, timeout: float, alive: Any) -> float:
        """The arrival time of the first message whose body contains ``marker``."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while True:
                for arrived, body in self.posts:
                    if marker in body:
                        return arrived
                alive()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SystemExit(f"no Slack message for {marker!r} within {timeout:.0f} s")
                self.arrived.wait(min(left, 0.5))


class Daemon:
    """``audit-monitor run`` in a subprocess; its output goes to files, shown if it dies."""

    def __init__(self, config: Path, workdir: Path) -> None:
        self.stdout = open(workdir / "daemon.out", "wb")  # noqa: SIM115 - closed in stop()
        self.stderr = open(workdir / "daemon.err", "wb")  # noqa: SIM115
        self.workdir = workdir
        argv = monitor_command(config, "run", "--log-level", "warning")
        self.proc = subprocess.Popen(argv, stdout=self.stdout, stderr=self.stderr, cwd=workdir)

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise SystemExit(
                f"the daemon exited with {self.proc.returncode}:\n"
                f"{(self.workdir / 'daemon.err').read_text(errors='replace')[-3000:]}"
            )

    def stop(self) -> None:
        try:
            stop_process(self.proc)
        finally:
            self.stdout.close()
            self.stderr.close()


def write_config(workdir: Path, sim: Simulator, slack: SlackReceiver, poll_interval: float) -> Path:
    path = workdir / "audit-monitor.yaml"
    path.write_text(
        f"state: {{path: {workdir / 'archive.db'}}}\n"
        "sources:\n"
        f"  - {{name: sim, base_url: '{sim.base_url}', token: {sim.token}, workspace_id: {sim.workspace_id},"
        f" poll_interval: {poll_interval:g}s}}\n"
        "alerts:\n"
        "  console: false\n"
        f"  slack: {{token: xoxb-bench-token, channel: '#security', base_url: '{slack.base_url}'}}\n"
        "server: {listen: ''}\n",
        encoding="utf-8",
    )
    return path


def wait_caught_up(sim: Simulator, daemon: Daemon, timeout: float = 60) -> None:
    """Two requests served: the first poll (the backfill of the history) has committed and delivered."""
    deadline = time.monotonic() + timeout
    while sim.request_count < 2:
        daemon.check_alive()
        if time.monotonic() > deadline:
            raise SystemExit(f"the daemon did not poll twice within {timeout:.0f} s")
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=10, help="table deletions to time")
    parser.add_argument("--poll-interval", type=float, default=1.0, help="the source's poll_interval, s")
    args = parser.parse_args(argv)
    rng = random.Random(5)  # noqa: S311 - when to insert, not a secret
    now = datetime.now(UTC)
    poll_to_slack: list[float] = []
    insert_to_slack: list[float] = []
    sim = TimedSimulator(
        seed=31, history_start=now - timedelta(hours=2), incidents=False, live_events_per_minute=6
    )
    with (
        sim,
        SlackReceiver() as slack,
        tempfile.TemporaryDirectory(prefix="bench-delay-") as tmp,
    ):
        workdir = Path(tmp)
        daemon = Daemon(write_config(workdir, sim, slack, args.poll_interval), workdir)
        try:
            wait_caught_up(sim, daemon)
            for number in range(args.repeat):
                time.sleep(rng.uniform(0, args.poll_interval))  # a random moment of the poll cycle
                marker = f"bench_delay_table_{number}"
                # Hidden until it is watched, so no poll can serve it unnoticed.
                event_id = sim.add_event(
                    "Delete Table", msg=f"Deleted table {marker}", hidden=True, data={"table": marker}
                )
                sim.watched.add(event_id)
                inserted = time.monotonic()
                sim.reveal(event_id)
                received = slack.wait_for(marker, WAIT_SECONDS, daemon.check_alive)
                poll_to_slack.append(received - sim.first_served[event_id])
                insert_to_slack.append(received - inserted)
        finally:
            daemon.stop()

    result = {
        "repeat": float(args.repeat),
        "poll_interval_s": args.poll_interval,
        "poll_to_slack_median_s": statistics.median(poll_to_slack),
        "poll_to_slack_max_s": max(poll_to_slack),
        "insert_to_slack_median_s": statistics.median(insert_to_slack),
        "insert_to_slack_max_s": max(insert_to_slack),
    }
    print(f"{args.repeat} table deletions, poll interval {args.poll_interval:g} s; "
          f"target: poll to Slack <= {TARGET_SECONDS:g} s\n")  # fmt: skip
    print("| delay | median | max |")
    print("| --- | ---: | ---: |")
    print(f"| poll that sees the event -> Slack | {result['poll_to_slack_median_s']:.2f} s "
          f"| {result['poll_to_slack_max_s']:.2f} s |")  # fmt: skip
    print(f"| insertion -> Slack | {result['insert_to_slack_median_s']:.2f} s "
          f"| {result['insert_to_slack_max_s']:.2f} s |")  # fmt: skip
    return result


if __name__ == "__main__":
    main()

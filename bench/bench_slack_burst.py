"""Slack burst benchmark: a burst of alerts through the outbox to a Slack that rate-limits like the real one.

Real parts: the store on a temporary file, the outbox worker and the product's Slack channel (slack-sdk
through ``base_url``) posting to a minimal Web API on 127.0.0.1 in this process. The stub accepts at most
one message per second per channel and answers the rest ``429`` with ``Retry-After: 1``, as Slack does.
``--alerts`` alerts (default 20, digests off) are due at once; one ``deliver_due`` pass must deliver them all,
in order. Figures: the seconds from the start of the pass to the last accepted message (target: about 25 s
for 20 alerts), the 429s answered, and whether the pass reported a failure.

    python -m bench.bench_slack_burst [--alerts 20]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from monitor.alerts.model import Alert
from monitor.alerts.outbox import OutboxWorker
from monitor.alerts.slack import SlackChannel
from monitor.config import parse_config
from monitor.store import Store

TARGET_SECONDS_FOR_20 = 25.0
RATE_LIMIT_SECONDS = 1.0


class RateLimitedSlack:
    """chat.postMessage with Slack's per-channel limit of about one message per second."""

    def __init__(self) -> None:
        self.accepted: list[tuple[float, str]] = []  # (monotonic time, fallback text)
        self.refused = 0
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()
        slack = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                now = time.monotonic()
                with slack._lock:
                    channel = str(body.get("channel"))
                    limited = now - slack._last.get(channel, -1e9) < RATE_LIMIT_SECONDS
                    if limited:
                        slack.refused += 1
                    else:
                        slack._last[channel] = now
                        slack.accepted.append((now, str(body.get("text", ""))))
                reply: dict[str, Any] = {"ok": False, "error": "ratelimited"}
                status = 429
                if not limited:
                    ts = f"{time.time():.6f}"
                    reply, status = {"ok": True, "channel": "C0BENCH", "ts": ts, "message": {"ts": ts}}, 200
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if limited:
                    self.send_header("Retry-After", "1")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/api/"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)


def run(alerts: int) -> dict[str, float]:
    slack = RateLimitedSlack()
    slack.thread.start()
    now = datetime.now(UTC)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-slack-") as tmp:
            config = parse_config(
                json.dumps(
                    {
                        "state": {"path": str(Path(tmp) / "burst.db")},
                        "alerts": {
                            "digest_after": 100_000,
                            "slack": {"token": "xoxb-bench", "channel": "#sec", "base_url": slack.base_url},
                        },
                        "server": {"listen": ""},
                    }
                ),
                "bench.yaml",
                {},
            )
            assert config.alerts.slack is not None
            burst = [
                Alert(
                    rule_id="bench.burst",
                    severity="high",
                    title=f"burst {n:03d}",
                    text="",
                    source="bench",
                    event_time=now + timedelta(milliseconds=n),
                    event_ids=(n + 1,),
                )
                for n in range(alerts)
            ]
            with Store.open(Path(tmp) / "burst.db") as store:
                with store.transaction():
                    for alert in burst:
                        store.record_alert(alert, ["slack"], now)
                worker = OutboxWorker(
                    store,
                    {"slack": SlackChannel(config.alerts.slack, config.tz)},
                    digest_after=config.alerts.digest_after,  # off: every alert its own message
                )
                started = time.monotonic()
                report = worker.deliver_due()
        titles = [text.split(": ", 1)[1].split(" (")[0] for _, text in slack.accepted]
        last = slack.accepted[-1][0] - started if slack.accepted else float("nan")
        return {
            "alerts": float(alerts),
            "seconds_to_last": last,
            "refused_429": float(slack.refused),
            "delivered": float(report.sent),
            "failed": float(report.failed),
            "in_order": float(titles == [a.title for a in burst]),
        }
    finally:
        slack.server.shutdown()
        slack.server.server_close()


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--alerts", type=int, default=20)
    args = parser.parse_args(argv)
    figures = run(args.alerts)
    print(
        f"{figures['delivered']:.0f}/{args.alerts} alerts delivered in one pass, "
        f"{'in order' if figures['in_order'] else 'OUT OF ORDER'}, "
        f"{figures['refused_429']:.0f} answered 429; last accepted {figures['seconds_to_last']:.1f} s "
        f"after the pass started (target for 20: <= {TARGET_SECONDS_FOR_20:g} s); "
        f"pass reported {'a failure' if figures['failed'] else 'no failure'}"
    )
    return figures


if __name__ == "__main__":
    main()

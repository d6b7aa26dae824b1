"""`audit-monitor demo`: the whole monitor against the embedded simulator, with no credentials and no network.

It backfills five weeks of simulated traffic (with planted incidents), prints the alerts on the
console, keeps polling live traffic for a while, then prints a summary, verifies the archive and
writes the monthly compliance report of the simulated month into the output folder.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from monitor.config import AlertsConfig, Config
from monitor.daemon import Monitor
from monitor.report import build_report
from monitor.report.figures import fullest_recent_month
from monitor.simulator import Simulator
from monitor.store.files import acquire_writer_lock

POLL_SECONDS = 5


def demo_config(base_url: str, token: str, out: Path, alerts: AlertsConfig | None = None) -> Config:
    config = Config.model_validate(
        {
            "timezone": "Europe/Berlin",
            "state": {"path": str(out / "demo.db")},
            "sources": [
                {
                    "name": "demo",
                    "base_url": base_url,
                    "token": token,
                    "workspace_id": 1,
                    "poll_interval": f"{POLL_SECONDS}s",
                    "per_page": 500,
                    # The simulator never expires an event of its 35-day history: a plan that keeps
                    # them longer is what it serves, so the report warns of no upstream loss.
                    "plan_retention": "60d",
                }
            ],
            # The simulated team's own domains: a user created at any other domain is flagged.
            "rules": {"lists": {"allowed_email_domains": ["northwind.io", "northwind-labs.de"]}},
            "alerts": {"console": True},
            "report": {"out_dir": str(out)},
            "server": {"listen": ""},
        }
    )
    if alerts is None:
        return config
    # The operator's channels, with the console kept on so the demo still shows what it sends.
    return config.model_copy(update={"alerts": alerts.model_copy(update={"console": True})})


def _fresh(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        (out / f"demo.db{suffix}").unlink(missing_ok=True)


def run_demo(out: Path, *, seconds: int = 30, alerts: AlertsConfig | None = None) -> int:
    """Raises ``ArchiveLocked`` when another demo (or a `run` with that archive) is writing in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    # Before clearing the folder: a second demo in the same folder must not delete the first one's archive.
    with acquire_writer_lock(out / "demo.db"):
        return _run_demo(out, seconds=seconds, alerts=alerts)


def _run_demo(out: Path, *, seconds: int, alerts: AlertsConfig | None) -> int:
    _fresh(out)
    say = print
    with Simulator(seed=7, live_events_per_minute=60.0) as sim:
        config = demo_config(sim.base_url, sim.token, out, alerts)
        say(
            f"simulator: a Xano-compatible audit log at {sim.base_url} (workspace 1), "
            f"{len(sim.incidents)} planted incidents"
        )
        monitor = Monitor(config, stdout=sys.stdout)
        try:
            source = config.sources[0]
            started = time.monotonic()
            result = monitor.poll(source)
            if not result.ok:
                say(f"backfill failed: {result.error}")
                return 1
            say(
                f"backfill: {result.new} events archived from {result.pages} pages "
                f"in {result.duration:.1f}s; {result.alerts} alerts"
            )
            monitor.deliver()
            deadline = started + seconds
            while time.monotonic() + POLL_SECONDS < deadline:
                time.sleep(POLL_SECONDS)
                result = monitor.poll(source)
                say(
                    f"poll: {result.fetched} read, {result.new} new, {result.alerts} alerts"
                    if result.ok
                    else f"poll failed: {result.error}"
                )
                monitor.deliver()
            by_rule: Counter[str] = Counter()
            for (rule_id, _severity), count in monitor.store.alert_counts().items():
                by_rule[rule_id] += count
            verified = monitor.store.verify()
            say("")
            say(f"summary: {monitor.store.event_count()} events archived in {config.state.path}")
            for rule_id, count in sorted(by_rule.items()):
                say(f"  {count:4d}  {rule_id}")
            say(
                f"verify: {'OK' if verified.ok else 'FAILED'} "
                f"({verified.rows_checked} rows, head {verified.head_hash[:16]}…)"
            )
            # The monthly report for the simulated month: the previous or the current calendar month in
            # Europe/Berlin, whichever holds more of the simulated events.
            now = datetime.now(UTC)
            period = fullest_recent_month(monitor.store, config.tz, now)
            calendars = monitor.ruleset.calendars
            files = build_report(monitor.store, config, period, out, now=now, calendars=calendars)
            say(
                f"report: {period.label} ({config.timezone}), {files.rows} events, "
                f"{files.figures.critical_total} security-critical, {files.figures.alerts_total} alerts"
            )
            for path in (files.html, files.text, files.csv):
                say(f"  {path}")
        finally:
            monitor.close()
    return 0

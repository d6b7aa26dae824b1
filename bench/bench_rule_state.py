"""Rule state under attacker-controlled values, and matchers on attacker-controlled text.

1. State: failed logins, one a second, each for a new email from a new address (a scripted spray), through
   the bundled pack and the daemon's SQLite state store, in one transaction as a backlog cycle commits them.
   Measured in a child process: its peak RSS, the seconds, and the ``rule_state`` rows left. Target: peak
   RSS < 150 MB at 600,000 distinct keys; rows bounded by the keys alive in the pack's ten-minute windows.
2. A threshold of ``count: 5000`` over 5,000 events of one group (the window that used to be copied,
   sorted and rewritten on every event), through the same store.
3. ``glob``/``like`` on a 240 KB message that almost matches.

    python -m bench.bench_rule_state [--keys 600000] [--skip-state]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import machine_description, run_measured

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _state_child(keys: int, db: str) -> None:
    """The workload, in its own process so that its peak RSS is its own."""
    from monitor.engine import load_ruleset
    from monitor.events import normalize
    from monitor.resources import bundled_rules_dir
    from monitor.store import SqliteStateStore, Store

    ruleset = load_ruleset([bundled_rules_dir()])
    started = time.perf_counter()
    alerts = 0
    with Store.open(db) as store:
        with store.transaction():
            state = SqliteStateStore(store)
            for i in range(keys):
                event = normalize(
                    "prod",
                    {
                        "id": i + 1,
                        "created_at": (START + timedelta(seconds=i)).isoformat(),
                        "type": "Login Failed",
                        "msg": "Login failed",
                        "user": {"id": None, "email": f"victim{i}@corp.io"},
                        "data": {"ip": f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"},
                    },
                )
                alerts += len(ruleset.evaluate(event, state))
        seconds = time.perf_counter() - started
        rows = store.conn.execute("SELECT count(*) FROM rule_state").fetchone()[0]
    print(
        json.dumps(
            {"seconds": seconds, "rows": rows, "alerts": alerts, "db_mb": Path(db).stat().st_size / 2**20}
        )
    )


def _threshold_figure() -> float:
    from monitor.engine import load_ruleset
    from monitor.events import normalize
    from monitor.store import SqliteStateStore, Store

    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp) / "r.yml"
        rules.write_text(
            "id: big\ntitle: Big\nseverity: low\nmatch: {a: {type: Login Failed}}\n"
            "threshold: {group_by: [user.email], window: 1h, count: 5000}\n",
            encoding="utf-8",
        )
        ruleset = load_ruleset([rules])
        events = [
            normalize(
                "prod",
                {
                    "id": i + 1,
                    "created_at": (START + timedelta(milliseconds=100 * i)).isoformat(),
                    "type": "Login Failed",
                    "user": {"email": "a@corp.io"},
                },
            )
            for i in range(5000)
        ]
        with Store.open(Path(tmp) / "a.db") as store:
            started = time.perf_counter()
            with store.transaction():
                state = SqliteStateStore(store)
                fired = sum(len(ruleset.evaluate(event, state)) for event in events)
            seconds = time.perf_counter() - started
        assert fired == 1, fired
        return seconds


def _wildcard_figures() -> dict[str, float]:
    from monitor.engine.matchers import Wildcard

    text = "drop " * 48_000  # 240 KB, "drop" everywhere and "table" nowhere
    figures = {}
    for name, wildcard in (
        ("glob '*drop*table*', 240 KB", Wildcard("*drop*table*", many="*", one="?", cased=False)),
        ("like '%a%a%a%a%b', 64 KB of a", Wildcard("%a%a%a%a%b", many="%", one="_", cased=False)),
    ):
        subject = "a" * 65_536 if "like" in name else text
        started = time.perf_counter()
        assert not wildcard(subject)
        figures[name] = time.perf_counter() - started
    return figures


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keys", type=int, default=600_000)
    parser.add_argument("--skip-state", action="store_true")
    parser.add_argument("--child", metavar="DB", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _state_child(args.keys, args.child)
        return {}
    print(machine_description(), "\n")
    result: dict[str, float] = {}
    print("| case | figure |")
    print("| --- | ---: |")
    if not args.skip_state:
        with tempfile.TemporaryDirectory() as tmp:
            run = run_measured(
                [
                    sys.executable,
                    "-m",
                    "bench.bench_rule_state",
                    "--keys",
                    str(args.keys),
                    "--child",
                    f"{tmp}/a.db",
                ]
            ).check()
        child = json.loads(run.stdout)
        result.update(
            state_peak_rss_mb=run.peak_rss_mb, state_rows=child["rows"], state_seconds=child["seconds"]
        )
        print(f"| {args.keys:,} distinct failed logins: peak RSS | {run.peak_rss_mb:.0f} MB |")
        print(f"| rule_state rows after | {child['rows']:,} |")
        print(f"| archive file after | {child['db_mb']:.1f} MB |")
        print(
            f"| evaluate + state | {child['seconds']:.1f} s ({args.keys / child['seconds']:,.0f} events/s) |"
        )
    seconds = _threshold_figure()
    result["threshold_5000_seconds"] = seconds
    print(f"| threshold count 5000, 5,000 events of one group | {seconds:.2f} s |")
    for name, value in _wildcard_figures().items():
        result[name] = value
        print(f"| {name} | {value * 1000:.1f} ms |")
    return result


if __name__ == "__main__":
    main()

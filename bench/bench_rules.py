"""Rule-evaluation benchmark: events per second through the bundled pack, and how it scales with rules.

Events are generated in-process (a team's mix of API runs, record edits, logins, the odd failed login,
deletion and administrative change) and normalised before the clock starts: the figure is
``RuleSet.evaluate`` alone, with the in-memory state store, on one core. The pack is then cloned
(every rule again under new ids) to show how the cost grows with the number of rules, and the pack is run
once with the type index switched off to show what the index buys.

    python -m bench.bench_rules [--events 1000000] [--scales 1,5,20] [--chunk 50000] [--no-index-comparison]
"""

from __future__ import annotations

import argparse
import random
import re
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from monitor.engine import MemoryStateStore, RuleSet, load_ruleset
from monitor.events import AuditEvent, normalize
from monitor.resources import bundled_rules_dir

# Roughly the simulator's business-hours mix, plus the rare events the pack watches for.
MIX = {
    "Run Query": 260,
    "Update Record": 120,
    "Create Record": 110,
    "Update Function": 120,
    "Login": 70,
    "Update Query": 70,
    "Update API Group": 50,
    "Read Workspace": 30,
    "Update Table": 15,
    "Add Field": 15,
    "Delete Record": 12,
    "Update Task": 15,
    "Login Failed": 4,
    "Create Branch": 2,
    "Merge Branch": 2,
    "Delete Branch": 1,
    "Delete Table": 1,
    "Update RBAC Permissions": 1,
    "Create User": 1,
    "Create Token": 1,
    "Update Environment Variable": 1,
    "Set Live Branch": 1,
}
START = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)


def generate(count: int, chunk: int, seed: int = 7) -> Iterator[list[AuditEvent]]:
    """Chunks of normalised events, one to three seconds apart, ids ascending."""
    rng = random.Random(seed)
    types = list(MIX)
    weights = list(MIX.values())
    users = [{"id": i, "email": f"dev{i}@corp.io"} for i in range(40)]
    workspaces = [{"id": 1, "name": "shop-backend"}, {"id": 2, "name": "internal-tools"}]
    moment = START
    produced = 0
    while produced < count:
        size = min(chunk, count - produced)
        kinds = rng.choices(types, weights, k=size)
        events = []
        for offset, kind in enumerate(kinds):
            moment += timedelta(milliseconds=rng.randint(1000, 3000))
            user = users[rng.randrange(len(users))]
            entry = {
                "id": produced + offset + 1,
                "created_at": moment.isoformat(),
                "type": kind,
                "msg": f"{kind} #{produced + offset}",
                "label": ["database"],
                "user": user,
                "workspace": workspaces[offset & 1],
                "branch": {"id": 70, "label": "v1"},
                "data": {"ip": f"203.0.113.{user['id']}", "email": f"new{offset}@corp.io"},
            }
            events.append(normalize("bench", entry))
        produced += size
        yield events


def cloned_pack(times: int, workdir: Path) -> list[Path]:
    """The bundled pack, with every rule repeated ``times`` times under new ids (lists and calendars once)."""
    paths = []
    for source in sorted(bundled_rules_dir().glob("*.yml")):
        text = source.read_text(encoding="utf-8")
        paths.append(source)
        if "\nid:" not in "\n" + text:
            continue  # the lists and calendars file
        for copy in range(1, times):
            clone = workdir / f"{source.stem}-clone{copy}.yml"
            clone.write_text(re.sub(r"(?m)^id: (\S+)", rf"id: \1.clone{copy}", text), encoding="utf-8")
            paths.append(clone)
    return paths


def without_index(ruleset: RuleSet) -> RuleSet:
    """The rule set with its type index switched off: every event meets every active rule."""
    every_rule = tuple(rule for rule in ruleset.rules if not rule.idle)
    ruleset.candidates = lambda event_type: every_rule  # type: ignore[method-assign]
    return ruleset


def measure(ruleset: RuleSet, count: int, chunk: int) -> tuple[float, int]:
    """(seconds spent in evaluate, alerts raised) over ``count`` generated events."""
    state = MemoryStateStore()
    elapsed = 0.0
    alerts = 0
    for events in generate(count, chunk):
        evaluate = ruleset.evaluate
        started = time.perf_counter()
        for event in events:
            alerts += len(evaluate(event, state))
        elapsed += time.perf_counter() - started
    return elapsed, alerts


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--scales", default="1,5,20", help="pack copies to measure, comma-separated")
    parser.add_argument("--chunk", type=int, default=50_000, help="events generated (and held) at a time")
    parser.add_argument(
        "--no-index-comparison",
        action="store_true",
        help="skip the run of the pack without its type index (what the index buys)",
    )
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for times in [int(s) for s in args.scales.split(",")]:
            workdir = Path(tmp) / f"x{times}"
            workdir.mkdir()
            started = time.perf_counter()
            ruleset = load_ruleset(cloned_pack(times, workdir), default_timezone="Europe/Berlin")
            loaded = time.perf_counter() - started
            elapsed, alerts = measure(ruleset, args.events, args.chunk)
            rows.append((f"pack x{times}", len(ruleset.rules), loaded, elapsed, alerts))
            if times == 1 and not args.no_index_comparison:
                unindexed = without_index(
                    load_ruleset(cloned_pack(1, workdir), default_timezone="Europe/Berlin")
                )
                elapsed, alerts = measure(unindexed, args.events, args.chunk)
                rows.append(("pack x1, no type index", len(unindexed.rules), loaded, elapsed, alerts))
    print(f"{args.events:,} events, one core, evaluate() only (events normalised beforehand)\n")
    print("| rules | count | load s | evaluate s | events/s | µs/event | alerts |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, count, loaded, elapsed, alerts in rows:
        print(
            f"| {name} | {count} | {loaded:.2f} | {elapsed:.2f} | {args.events / elapsed:,.0f} "
            f"| {elapsed / args.events * 1e6:.2f} | {alerts:,} |"
        )
    # Figures by row name ("pack x1_events_per_s", ...), and the bundled pack's under plain names.
    result: dict[str, float] = {"events": float(args.events)}
    for name, count, loaded, elapsed, alerts in rows:
        result[f"{name}_events_per_s"] = args.events / elapsed
        if name == "pack x1":
            result.update(
                rules=float(count), events_per_s=args.events / elapsed, alerts=float(alerts), load_s=loaded
            )
    return result


if __name__ == "__main__":
    main()

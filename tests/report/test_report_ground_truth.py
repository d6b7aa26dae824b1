"""The report's figures against independent counts over the simulator's ground truth.

The simulator (over HTTP on 127.0.0.1) serves five weeks around October 2026 in Europe/Berlin, the month
daylight saving ends (745 hours: Sunday the 25th has 25). The monitor polls it, then every figure is
recounted here from the entries the simulator serves, bucketed with zoneinfo, not with the report's code.
Events planted a minute either side of each local month edge and in the repeated hour catch a report that
used UTC months, a fixed offset or UTC days.
"""

from __future__ import annotations

import io
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from monitor.config import Config
from monitor.daemon import Monitor
from monitor.events import parse_timestamp
from monitor.report import Period, compute_figures
from monitor.report.figures import CHANGE_TYPES, CRITICAL_TYPES, PRIVILEGED_TYPES
from monitor.simulator import Simulator

BERLIN = ZoneInfo("Europe/Berlin")
CLOCK = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)
EDGES = [  # (UTC instant, what it is in Berlin)
    datetime(2026, 9, 30, 21, 59, tzinfo=UTC),  # Sep 30 23:59 CEST: before
    datetime(2026, 9, 30, 22, 0, tzinfo=UTC),  # Oct 1 00:00 CEST: first instant of the month
    datetime(2026, 10, 25, 0, 30, tzinfo=UTC),  # Oct 25 02:30 CEST, the first 02:30 of the night
    datetime(2026, 10, 25, 1, 30, tzinfo=UTC),  # Oct 25 02:30 CET, the repeated hour
    datetime(2026, 10, 31, 22, 59, tzinfo=UTC),  # Oct 31 23:59 CET: last minute of the month
    datetime(2026, 10, 31, 23, 0, tzinfo=UTC),  # Nov 1 00:00 CET: after
]


def test_october_figures_match_the_simulators_ground_truth(tmp_path: Path) -> None:
    with Simulator(
        seed=5,
        clock=lambda: CLOCK,
        history_start=datetime(2026, 9, 27, tzinfo=UTC),
        events_per_day=120,
        live_background=False,
    ) as sim:
        for instant in EDGES:
            sim.add_event(
                "Update RBAC Permissions", created_at=instant, user={"id": 99, "email": "edge@x.io"}
            )
        sim.add_event("Run Query", created_at=datetime(2026, 10, 12, 9, tzinfo=UTC), user=None)
        config = Config.model_validate(
            {
                "timezone": "Europe/Berlin",
                "state": {"path": str(tmp_path / "a.db")},
                "sources": [
                    {"name": "sim", "base_url": sim.base_url, "token": sim.token, "workspace_id": 1,
                     "plan_retention": "60d", "per_page": 1000}
                ],
                "alerts": {"console": False},
                "server": {"listen": ""},
            }
        )  # fmt: skip
        monitor = Monitor(config, clock=lambda: CLOCK, stdout=io.StringIO())
        try:
            assert monitor.poll(config.sources[0]).ok
            period = Period.parse("2026-10", BERLIN)
            figures = compute_figures(monitor.store, config, period, now=CLOCK + timedelta(hours=1))
        finally:
            monitor.close()
        served = sim.visible_events(1)

    # Independent counts: each served entry's time in Berlin, October or not.
    october = [e for e in served if _local(e["created_at"]).strftime("%Y-%m") == "2026-10"]
    assert period.hours == 745
    assert figures.total == len(october) > 3000
    types = Counter(e["type"] for e in october)
    assert {t.type: t.count for t in figures.types} == dict(types)
    days = Counter(_local(e["created_at"]).day for e in october)
    assert {d.day.day: d.count for d in figures.days} == {day: days.get(day, 0) for day in range(1, 32)}
    emails = {e["user"]["email"] for e in october if e.get("user")}
    assert figures.active_users == len(emails) and "edge@x.io" in emails
    assert figures.users_total == len(emails) + (any(not e.get("user") for e in october))
    assert figures.critical_total == sum(types[t] for t in CRITICAL_TYPES)
    assert figures.privileged_total == sum(types[t] for t in PRIVILEGED_TYPES)
    assert figures.changes_total == sum(types[t] for t in CHANGE_TYPES)
    edge_rows = [c for c in figures.privileged if c.user == "edge@x.io"]
    assert [c.time.strftime("%m-%d %H:%M %Z") for c in edge_rows] == [
        "10-01 00:00 CEST", "10-25 02:30 CEST", "10-25 02:30 CET", "10-31 23:59 CET",
    ]  # fmt: skip
    [continuity] = figures.id_continuity
    ids = sorted(e["id"] for e in october)
    assert (continuity.first_id, continuity.last_id, continuity.events) == (ids[0], ids[-1], len(ids))
    assert figures.integrity is not None and figures.integrity.verify_ok


def _local(created_at: object) -> datetime:
    return parse_timestamp(created_at).astimezone(BERLIN)

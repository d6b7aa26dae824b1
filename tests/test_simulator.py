"""The simulator as a client sees it: real HTTP on 127.0.0.1, time from an injected clock."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from monitor.events import normalize
from monitor.simulator import INCIDENT_KINDS, Simulator
from tests.conftest import FakeClock

BERLIN = ZoneInfo("Europe/Berlin")
COMPANY_DOMAINS = {"northwind.io", "northwind-labs.de"}
VOCABULARY = {
    *(f"{verb} Workspace" for verb in ("Create", "Update", "Reset", "Read", "Delete")),
    "Create Branch", "Merge Branch", "Delete Branch", "Set Live Branch",
    *(f"{verb} Table" for verb in ("Create", "Update", "Delete", "Restore")),
    "Create Record", "Update Record", "Delete Record", "Add Field", "Update Field", "Delete Field",
    *(f"{verb} API Group" for verb in ("Create", "Update", "Delete")),
    *(f"{verb} Query" for verb in ("Create", "Update", "Delete", "Run")),
    *(f"{verb} {noun}" for verb in ("Create", "Update", "Delete") for noun in ("Function", "Task")),
    "Install Add-on", "Update Add-on", "Remove Add-on",
    *(f"{verb} Environment Variable" for verb in ("Create", "Update", "Delete")),
    "Login", "Login Failed", "Create User", "Update User", "Delete User", "Update RBAC Permissions",
    "Create Token", "Revoke Token", "Update Security Policy",
}  # fmt: skip
ADMIN_TYPES = {
    "Update RBAC Permissions", "Create Token", "Revoke Token", "Update Security Policy", "Create User",
    "Delete User", "Set Live Branch", "Delete Workspace", "Reset Workspace", "Delete Table",
    "Update Environment Variable",
}  # fmt: skip
ENVELOPE_KEYS = {
    "items", "itemsReceived", "curPage", "nextPage", "prevPage", "offset", "perPage", "itemsTotal",
    "pageTotal",
}  # fmt: skip
ENTRY_KEYS = {
    "id", "created_at", "updated_at", "type", "msg", "label", "data", "obj", "user", "workspace", "branch",
}  # fmt: skip


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[Simulator]:
    with Simulator(seed=7, clock=clock) as simulator:
        yield simulator


def client(sim: Simulator, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token or sim.token}"}
    return httpx.Client(base_url=sim.base_url, headers=headers, timeout=10)


def get(sim: Simulator, path: str = "/api:meta/workspace/1/audit_log", **params: Any) -> httpx.Response:
    with client(sim) as http:
        return http.get(path, params=params)


def search(
    sim: Simulator, path: str = "/api:meta/workspace/1/audit_log/search", **body: Any
) -> dict[str, Any]:
    with client(sim) as http:
        response = http.post(path, json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def walk(sim: Simulator, per_page: int, **body: Any) -> list[dict[str, Any]]:
    items, page = [], 1
    with client(sim) as http:
        while page is not None:
            envelope = http.post(
                "/api:meta/audit_log/search", json={"page": page, "per_page": per_page, **body}
            ).json()
            items.extend(envelope["items"])
            page = envelope["nextPage"]
    return items


def when(entry: dict[str, Any]) -> datetime:
    return normalize("sim", entry).created_at


# --- the API contract -------------------------------------------------------------------------------------


def test_envelope_shape_and_paging_arithmetic(sim: Simulator) -> None:
    total = len(sim.visible_events())
    assert total > 10_000  # 35 days of a team's work
    per_page = 1000
    pages = -(-total // per_page)
    seen: list[int] = []
    for number in range(1, pages + 2):
        response = get(sim, page=number, per_page=per_page, include_data="true")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json; charset=utf-8"
        assert int(response.headers["content-length"]) == len(response.content)
        envelope = response.json()
        assert set(envelope) == ENVELOPE_KEYS
        assert envelope["curPage"] == number
        assert envelope["perPage"] == per_page
        assert envelope["offset"] == (number - 1) * per_page
        assert envelope["itemsTotal"] == total
        assert envelope["pageTotal"] == pages
        assert envelope["itemsReceived"] == len(envelope["items"])
        assert envelope["prevPage"] == (number - 1 if number > 1 else None)
        assert envelope["nextPage"] == (number + 1 if number < pages else None)
        if number < pages:
            assert len(envelope["items"]) == per_page
        elif number == pages:
            assert len(envelope["items"]) == total - (pages - 1) * per_page
        else:
            assert envelope["items"] == []  # past the end: nothing, and no next page
        seen.extend(entry["id"] for entry in envelope["items"])
    assert len(seen) == len(set(seen)) == total
    entry = get(sim, per_page=1, include_data=1).json()["items"][0]
    assert ENTRY_KEYS <= set(entry)
    assert isinstance(entry["label"], list) and isinstance(entry["obj"], dict)


def test_get_is_newest_first_and_search_sorts_either_way(sim: Simulator) -> None:
    newest = [entry["id"] for entry in get(sim, per_page=300).json()["items"]]
    assert newest == sorted(newest, reverse=True)
    all_ids = sorted(entry["id"] for entry in sim.visible_events())
    assert newest[0] == all_ids[-1]
    ascending = search(sim, page=1, per_page=300, sort={"id": "asc"})["items"]
    assert [entry["id"] for entry in ascending] == all_ids[:300]
    descending = search(sim, page=2, per_page=300, sort={"id": "desc"})["items"]
    assert [entry["id"] for entry in descending] == all_ids[::-1][300:600]
    default = search(sim, page=1, per_page=300)["items"]
    assert [entry["id"] for entry in default] == newest
    by_time = search(sim, page=1, per_page=300, sort={"created_at": "asc"})["items"]
    assert [when(entry) for entry in by_time] == sorted(when(entry) for entry in by_time)
    assert search(sim, page=1, per_page=5, search=[{"type": "nonsense"}])["itemsTotal"] == len(all_ids)


def test_bad_parameters_answer_400(sim: Simulator) -> None:
    assert get(sim, page=0).status_code == 400
    assert get(sim, per_page="many").status_code == 400
    with client(sim) as http:
        response = http.post("/api:meta/audit_log/search", json={"sort": {"colour": "asc"}})
        assert response.status_code == 400
        assert response.json()["code"] == "ERROR_CODE_INPUT_ERROR"
        assert http.post("/api:meta/audit_log/search", content=b"{not json").status_code == 400


def test_per_page_is_capped_and_the_envelope_says_so(clock: FakeClock) -> None:
    with Simulator(seed=1, clock=clock, history_start=clock.now - timedelta(days=2), max_per_page=100) as sim:
        envelope = get(sim, per_page=1000).json()
        assert envelope["perPage"] == 100 and len(envelope["items"]) == 100
        assert envelope["pageTotal"] == -(-envelope["itemsTotal"] // 100)


@pytest.mark.parametrize("header", [None, "Bearer wrong-token", "Basic sim-token", "sim-token"])
def test_a_missing_or_wrong_token_is_401(sim: Simulator, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    with httpx.Client(base_url=sim.base_url, timeout=10) as http:
        response = http.get("/api:meta/workspace/1/audit_log", headers=headers)
    assert response.status_code == 401
    assert response.json() == {"code": "ERROR_CODE_UNAUTHORIZED", "message": "Invalid token."}


def test_workspaces_unknown_known_and_instance_wide(sim: Simulator) -> None:
    assert get(sim, "/api:meta/workspace/99/audit_log").status_code == 404
    assert get(sim, "/api:meta/workspace/99/audit_log").json()["code"] == "ERROR_CODE_NOT_FOUND"
    assert get(sim, "/api:meta/nothing/here").status_code == 404
    assert get(sim, "/api:meta/workspace/2/audit_log").json()["itemsTotal"] == 0  # exists, quiet
    workspace = get(sim, per_page=50).json()
    instance = get(sim, "/api:meta/audit_log", per_page=50).json()
    assert workspace["itemsTotal"] == instance["itemsTotal"]
    assert workspace["items"] == instance["items"]
    other = sim.add_event("Update Function", workspace={"id": 2, "name": "internal-tools"})
    assert [entry["id"] for entry in get(sim, "/api:meta/workspace/2/audit_log").json()["items"]] == [other]
    assert get(sim, "/api:meta/audit_log").json()["itemsTotal"] == workspace["itemsTotal"] + 1
    assert other not in {entry["id"] for entry in sim.visible_events(workspace_id=1)}


def test_include_data(sim: Simulator) -> None:
    without = get(sim, per_page=200).json()["items"]
    assert all(entry["data"] is None for entry in without)
    with_data = get(sim, per_page=200, include_data="true").json()["items"]
    assert all(isinstance(entry["data"], dict) for entry in with_data)
    assert any("ip" in entry["data"] for entry in with_data)
    assert search(sim, per_page=5, include_data=False)["items"][0]["data"] is None


def test_the_same_seed_gives_the_same_log(clock: FakeClock) -> None:
    start = clock.now - timedelta(days=5)
    with Simulator(seed=42, clock=clock, history_start=start) as first:
        one = first.visible_events()
        one_incidents = first.incidents
    with Simulator(seed=42, clock=clock, history_start=start) as second:
        assert second.visible_events() == one
        assert second.incidents == one_incidents
    with Simulator(seed=43, clock=clock, history_start=start) as third:
        assert third.visible_events() != one


# --- traffic ----------------------------------------------------------------------------------------------


def test_traffic_looks_like_a_team_at_work(sim: Simulator) -> None:
    events = sim.visible_events()
    assert {entry["type"] for entry in events} <= VOCABULARY
    emails = {entry["user"]["email"] for entry in events if entry["user"]}
    assert 8 <= len(emails) <= 12 and {email.split("@")[1] for email in emails} >= COMPANY_DOMAINS
    assert any(entry["user"] is None for entry in events)  # system events
    assert any(set(entry) - ENTRY_KEYS for entry in events)  # an unknown extra key now and then
    local = [(entry, when(entry).astimezone(BERLIN)) for entry in events]
    people = [(e, t) for e, t in local if e["user"] and not e["user"]["email"].startswith("api-runner")]
    in_hours = [t for _, t in people if t.weekday() < 5 and 8 <= t.hour < 19]
    assert len(in_hours) / len(people) > 0.85
    night = [e for e, t in local if t.hour < 5]
    assert night and Counter(e["type"] for e in night).most_common(1)[0][0] == "Run Query"
    types = Counter(entry["type"] for entry in events)
    common = ("Update Function", "Update API Group", "Create Record", "Update Record", "Login", "Run Query")
    assert all(types[name] > 100 for name in common), types
    assert 0 < types["Login Failed"] < 120 and types["Merge Branch"] > 0 and types["Create Branch"] > 0
    planted = {event_id for incident in sim.incidents for event_id in incident.event_ids}
    for entry in events:  # admin and destructive actions happen only in planted incidents
        if entry["type"] in ADMIN_TYPES:
            assert entry["id"] in planted, entry


def test_created_at_comes_in_every_documented_format(sim: Simulator) -> None:
    forms: Counter[str] = Counter()
    for entry in sim.visible_events():
        value = entry["created_at"]
        assert entry["updated_at"] == value
        if isinstance(value, int):
            forms["epoch_ms"] += 1
        elif re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}\+00", value):
            forms["postgres"] += 1
        elif re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", value):
            forms["iso_z"] += 1
        elif re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+0[12]:00", value):
            forms["iso_offset"] += 1
        else:
            raise AssertionError(f"unexpected created_at {value!r}")
    assert set(forms) == {"epoch_ms", "postgres", "iso_z", "iso_offset"}
    assert forms["postgres"] > forms["epoch_ms"] > forms["iso_offset"]


def test_ids_increase_with_gaps_in_time_order(sim: Simulator) -> None:
    events = sim.visible_events()
    ids = [entry["id"] for entry in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert any(b - a > 1 for a, b in zip(ids, ids[1:], strict=False))
    times = [when(entry) for entry in events]
    assert all(a <= b for a, b in zip(times, times[1:], strict=False))


def test_ids_continue_above_ids_after(clock: FakeClock) -> None:
    """A simulator continuing an archive: every id, of the history and of added events, is above it."""
    with Simulator(
        seed=3, clock=clock, history_start=clock.now - timedelta(days=1), ids_after=2_000_000
    ) as sim:
        added = sim.add_event("Delete Table")
        ids = [entry["id"] for entry in sim.visible_events()]
    assert len(ids) > 10 and min(ids) > 2_000_000
    assert added == max(ids)
    with pytest.raises(ValueError, match="ids_after"):
        Simulator(clock=clock, ids_after=-1)


# --- planted incidents ------------------------------------------------------------------------------------


def test_every_incident_kind_is_planted_with_the_right_events(sim: Simulator, clock: FakeClock) -> None:
    by_id = {entry["id"]: entry for entry in sim.visible_events()}
    assert {incident.kind for incident in sim.incidents} == set(INCIDENT_KINDS)
    starts = [incident.start for incident in sim.incidents]
    assert starts == sorted(starts)
    for incident in sim.incidents:
        events = [by_id[event_id] for event_id in incident.event_ids]  # every one is served
        times = [when(entry) for entry in events]
        types = Counter(entry["type"] for entry in events)
        span = max(times) - min(times)
        assert incident.start == min(times) and incident.description
        kind = incident.kind
        if kind == "failed_login_burst":
            assert types["Login Failed"] >= 6 and span <= timedelta(minutes=10)
            assert len({entry["user"]["email"] for entry in events}) == 1
        elif kind == "ip_spray":
            assert set(types) == {"Login Failed"} and span <= timedelta(minutes=10)
            assert len({entry["data"]["ip"] for entry in events}) == 1
            assert len({entry["user"]["email"] for entry in events}) >= 5
        elif kind == "bulk_delete":
            assert types["Delete Record"] >= 25 and span <= timedelta(minutes=5)
            assert len({entry["user"]["email"] for entry in events}) == 1
        elif kind == "off_hours_delete":
            assert set(types) == {"Delete Table"}
            assert all(2 <= t.astimezone(BERLIN).hour <= 4 for t in times)
        elif kind == "table_delete":
            assert set(types) == {"Delete Table"}
            local = [t.astimezone(BERLIN) for t in times]
            assert all(t.weekday() < 5 and 9 <= t.hour < 18 for t in local)
        elif kind == "workspace_destruction":
            assert set(types) == {"Delete Workspace", "Reset Workspace"}
        elif kind == "security_policy":
            assert set(types) == {"Update Security Policy"}
        elif kind == "rbac_change":
            assert set(types) == {"Update RBAC Permissions"}
        elif kind == "first_admin_action":
            assert set(types) <= {"Update RBAC Permissions", "Create Token"}
            actor = events[0]["user"]["email"]
            earlier_admin = [
                entry
                for entry in by_id.values()
                if entry["type"] in ADMIN_TYPES
                and entry["user"]
                and entry["user"]["email"] == actor
                and when(entry) < incident.start
            ]
            assert earlier_admin == []
        elif kind == "foreign_user":
            assert set(types) == {"Create User"}
            email = events[0]["data"]["email"]
            assert email.split("@")[1] not in COMPANY_DOMAINS and email in events[0]["msg"]
        elif kind == "token_events":
            assert set(types) == {"Create Token", "Revoke Token"}
        elif kind == "live_branch":
            assert set(types) == {"Set Live Branch"}
        elif kind == "env_var_change":
            assert set(types) == {"Update Environment Variable"}
        elif kind == "user_admin":
            assert set(types) == {"Create User", "Delete User"}
    latest = max(incident.start for incident in sim.incidents)
    assert clock.now - timedelta(days=4) < latest < clock.now
    assert min(incident.start for incident in sim.incidents) < clock.now - timedelta(days=28)


def test_a_short_history_still_holds_every_incident(clock: FakeClock) -> None:
    with Simulator(seed=2, clock=clock, history_start=clock.now - timedelta(days=7)) as sim:
        assert {incident.kind for incident in sim.incidents} == set(INCIDENT_KINDS)
        start = clock.now - timedelta(days=7)
        assert all(start <= incident.start <= clock.now for incident in sim.incidents)
    with Simulator(
        seed=2, clock=clock, history_start=clock.now - timedelta(days=3), incidents=False
    ) as quiet:
        assert quiet.incidents == []


# --- time, live traffic, late commits ---------------------------------------------------------------------


def test_live_traffic_appears_as_the_clock_advances(sim: Simulator, clock: FakeClock) -> None:
    before = sim.visible_events()
    newest = max(entry["id"] for entry in before)
    clock.advance(timedelta(days=1))
    after = sim.visible_events()
    fresh = [entry for entry in after if entry["id"] > newest]
    assert len(after) == len(before) + len(fresh)
    assert 250 < len(fresh) < 900  # a Wednesday 11:00 to Thursday 11:00 of a 400-a-day team
    assert all(clock.now - timedelta(days=1) < when(entry) <= clock.now for entry in fresh)


def test_live_events_per_minute_and_a_future_event(clock: FakeClock) -> None:
    start = clock.now - timedelta(hours=1)
    quiet = {"events_per_day": 0, "incidents": False}
    with Simulator(seed=4, clock=clock, history_start=start, live_events_per_minute=6, **quiet) as sim:  # type: ignore[arg-type]
        assert sim.visible_events() == []
        future = sim.add_event("Update Function", created_at=clock.now + timedelta(minutes=30))
        clock.advance(timedelta(minutes=10))
        live = sim.visible_events()
        assert 54 <= len(live) <= 66 and future not in {entry["id"] for entry in live}
        clock.advance(timedelta(minutes=25))
        assert future in {entry["id"] for entry in sim.visible_events()}


def test_live_background_can_be_switched_off(clock: FakeClock) -> None:
    with Simulator(
        seed=4, clock=clock, history_start=clock.now - timedelta(days=1), live_background=False
    ) as sim:
        count = len(sim.visible_events())
        clock.advance(timedelta(hours=5))
        assert len(sim.visible_events()) == count


def test_hidden_event_is_a_late_commit_once_revealed(sim: Simulator, clock: FakeClock) -> None:
    late = sim.add_event("Delete Table", created_at=clock.now - timedelta(minutes=2), hidden=True, msg="late")
    clock.advance(timedelta(minutes=1))
    newer = sim.add_event("Update Function", user=None, branch=None, request_id="r-1")
    assert late < newer
    served = {entry["id"]: entry for entry in sim.visible_events()}
    assert late not in served and newer in served
    assert served[newer]["user"] is None and served[newer]["branch"] is None
    assert served[newer]["request_id"] == "r-1"
    sim.reveal(late)
    page = {entry["id"]: entry for entry in get(sim, per_page=10).json()["items"]}
    ids = list(page)
    assert ids[0] == newer and ids.index(late) > 0  # newest-first by id: below the newer one
    assert page[late]["msg"] == "late" and page[late]["type"] == "Delete Table"
    by_time = search(sim, per_page=20, sort={"created_at": "desc"})["items"]
    assert by_time[0]["id"] == newer and late in [entry["id"] for entry in by_time]
    assert [when(entry) for entry in by_time] == sorted((when(entry) for entry in by_time), reverse=True)
    with pytest.raises(KeyError):
        sim.reveal(1)


# --- faults -----------------------------------------------------------------------------------------------


def test_injected_faults_come_in_the_order_queued(sim: Simulator) -> None:
    sim.inject_status(429, count=1, retry_after="3")
    sim.inject_status(503)
    sim.inject_truncated()
    sim.inject_non_json()
    with client(sim) as http:
        limited = http.get("/api:meta/workspace/1/audit_log")
        assert limited.status_code == 429 and limited.headers["retry-after"] == "3"
        assert limited.json()["code"] == "ERROR_CODE_TOO_MANY_REQUESTS"
        assert http.get("/api:meta/workspace/1/audit_log").status_code == 503
        truncated = http.get("/api:meta/workspace/1/audit_log", params={"per_page": 100})
        assert truncated.status_code == 200
        assert int(truncated.headers["content-length"]) == len(truncated.content)
        with pytest.raises(json.JSONDecodeError):
            json.loads(truncated.content)
        html = http.get("/api:meta/workspace/1/audit_log")
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        assert http.get("/api:meta/workspace/1/audit_log").status_code == 200


def test_a_plan_rate_limit_answers_429_with_the_seconds_until_the_window_frees(sim: Simulator) -> None:
    sim.rate_limit(3, 60.0)  # a window far longer than the test: the fourth request in it is refused
    with client(sim) as http:
        assert [http.get("/api:meta/workspace/1/audit_log").status_code for _ in range(3)] == [200] * 3
        limited = http.get("/api:meta/workspace/1/audit_log")
        assert limited.status_code == 429 and limited.json()["code"] == "ERROR_CODE_TOO_MANY_REQUESTS"
        assert 59 <= int(limited.headers["retry-after"]) <= 60
        assert sim.rate_limited == 1
        sim.rate_limit(0, 1.0)  # lifted
        assert http.get("/api:meta/workspace/1/audit_log").status_code == 200
    with pytest.raises(ValueError, match="rate limit"):
        sim.rate_limit(10, 0)


def test_count_zero_cancels_queued_faults(sim: Simulator) -> None:
    sim.inject_status(503, count=100)
    sim.inject_status(502, count=1)
    sim.inject_status(503, count=0)
    assert get(sim).status_code == 502
    assert get(sim).status_code == 200


def test_faults_do_not_hit_unauthorised_requests_and_requests_are_counted(sim: Simulator) -> None:
    sim.inject_status(503)
    before = sim.request_count
    with httpx.Client(base_url=sim.base_url, timeout=10) as http:
        assert http.get("/api:meta/workspace/1/audit_log").status_code == 401
    assert get(sim).status_code == 503
    assert sim.request_count == before + 2


# --- control endpoint, lifecycle --------------------------------------------------------------------------


def test_control_endpoint_steers_the_simulator(sim: Simulator, clock: FakeClock) -> None:
    with client(sim) as http:
        assert http.post("/_sim/control", json={"inject_status": {"status": 503, "count": 2}}).json()["ok"]
        assert http.get("/api:meta/audit_log").status_code == 503
        assert http.get("/api:meta/audit_log").status_code == 503
        added = http.post(
            "/_sim/control",
            json={
                "add_event": {
                    "type": "Delete Table",
                    "user": {"id": 3, "email": "a@corp.io"},
                    "created_at": (clock.now - timedelta(minutes=1)).isoformat(),
                    "data": {"table": {"id": 1, "name": "t"}},
                    "hidden": True,
                }
            },
        ).json()
        (event_id,) = added["event_ids"]
        assert event_id not in {entry["id"] for entry in sim.visible_events()}
        assert http.post("/_sim/control", json={"reveal": event_id}).status_code == 200
        entry = {entry["id"]: entry for entry in sim.visible_events()}[event_id]
        assert entry["user"] == {"id": 3, "email": "a@corp.io"} and entry["data"]["table"]["name"] == "t"
        assert when(entry) == clock.now - timedelta(minutes=1)
        http.post("/_sim/control", json={"inject_truncated": 1})
        with pytest.raises(json.JSONDecodeError):
            json.loads(http.get("/api:meta/audit_log").content)
        described = http.post("/_sim/control", json={"describe": True}).json()
        assert {incident["kind"] for incident in described["incidents"]} == set(INCIDENT_KINDS)
        assert described["request_count"] == sim.request_count
        assert http.post("/_sim/control", json={"explode": True}).status_code == 400
    with httpx.Client(base_url=sim.base_url, timeout=10) as anonymous:
        assert anonymous.post("/_sim/control", json={"inject_truncated": 1}).status_code == 401
    assert get(sim).status_code == 200  # the refused command queued nothing


def test_binds_loopback_and_stop_closes_kept_alive_connections(clock: FakeClock) -> None:
    sim = Simulator(seed=1, clock=clock, history_start=clock.now - timedelta(days=1))
    base_url = sim.start()
    assert base_url.startswith("http://127.0.0.1:") and sim.base_url == base_url
    http = client(sim)
    assert http.get("/api:meta/audit_log").status_code == 200
    sim.stop()
    with pytest.raises(httpx.TransportError):
        http.get("/api:meta/audit_log")
    http.close()


def test_serve_forever_runs_until_sigterm(tmp_path: Any) -> None:
    code = "from monitor.simulator import serve_forever; serve_forever('127.0.0.1', 0, seed=3, token='t0k')"
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+", first)
        assert match, first + (process.stderr.read() if process.stderr else "")
        response = httpx.get(f"{match.group(0)}/api:meta/audit_log", headers={"Authorization": "Bearer t0k"})
        assert response.status_code == 200 and response.json()["itemsTotal"] > 10_000
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_simulate_envelope_guide_serves_pages_as_xanos_guide_shows_them(tmp_path: Any) -> None:
    """`audit-monitor simulate --envelope guide`: {"items": [...], "itemsTotal": N} and no paging keys."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "monitor.cli",
            "simulate",
            "--port",
            "0",
            "--envelope",
            "guide",
            "--token",
            "t0k",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+", first)
        assert match, first + (process.stderr.read() if process.stderr else "")
        headers = {"Authorization": "Bearer t0k"}
        url = f"{match.group(0)}/api:meta/workspace/1/audit_log/search"
        body = httpx.post(url, headers=headers, json={"page": 2, "per_page": 10}).json()
        assert (
            set(body) == {"items", "itemsTotal"} and len(body["items"]) == 10 and body["itemsTotal"] > 10_000
        )
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# --- scale ------------------------------------------------------------------------------------------------


def test_a_million_events_serve_first_and_last_pages(clock: FakeClock) -> None:
    with Simulator(seed=9, clock=clock, total_events=1_000_000, live_background=False) as sim:
        with client(sim) as http:
            first = http.get("/api:meta/audit_log", params={"per_page": 500}).json()
            assert first["itemsTotal"] == 1_000_000 and first["pageTotal"] == 2000
            last = http.post("/api:meta/audit_log/search", json={"page": 2000, "per_page": 500}).json()
            assert last["nextPage"] is None and len(last["items"]) == 500
            oldest = http.post(
                "/api:meta/audit_log/search", json={"page": 1, "per_page": 500, "sort": {"id": "asc"}}
            ).json()["items"]
        assert last["items"][::-1] == oldest  # the last page newest-first is the first oldest-first
        newest_ids = [entry["id"] for entry in first["items"]]
        assert newest_ids == sorted(newest_ids, reverse=True) and newest_ids[0] > oldest[-1]["id"]
        assert {incident.kind for incident in sim.incidents} == set(INCIDENT_KINDS)
        assert when(oldest[0]) >= clock.now - timedelta(days=35)

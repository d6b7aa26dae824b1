"""The JSON API over HTTP against the running daemon; counts are computed from the simulator's own entries
(its ground truth), never from the archive the API reads."""

from __future__ import annotations

import collections
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

import httpx

from monitor.events import format_timestamp
from monitor.report.figures import category_of
from monitor.timeutil import parse_cli_date
from tests.ops.conftest import REPO, query, wait_until
from tests.web.conftest import RESPONDER, VIEWER, Web


def _iso(us_or_ms: int) -> datetime:
    return datetime.fromtimestamp(us_or_ms / 1000, tz=UTC)


def truth(web: Web) -> list[dict[str, object]]:
    return web.sim.visible_events()


def created(entry: dict[str, object]) -> datetime:
    # The simulator serves created_at as epoch ms or as text; the archive's normalisation is the reference
    # for the text form, so compare through it.
    from monitor.events import normalize

    return normalize("sim", entry).created_at


# --- auth ---------------------------------------------------------------------------------------------------


def test_every_data_endpoint_needs_a_token_and_probes_stay_open(web: Web) -> None:
    anonymous, wrong = web.client(), web.client("not-a-token-" + "x" * 20)
    for path in ("/api/v1/events", "/api/v1/alerts", "/api/v1/silences", "/api/v1/stats", "/api/v1/status"):
        for client in (anonymous, wrong):
            response = client.get(path)
            assert response.status_code == 401, (path, response.text)
            assert response.json()["error"] == "unauthorized"
            assert response.headers["www-authenticate"].startswith("Bearer")
        assert web.viewer.get(path).status_code == 200, path
        assert web.responder.get(path).status_code == 200, path
    # Basic auth with the right token is not a bearer token.
    assert (
        web.client(None, Authorization=f"Basic {web.viewer_token}").get("/api/v1/events").status_code == 401
    )
    assert anonymous.get("/healthz").status_code in (200, 503)
    assert anonymous.get("/metrics").status_code == 200
    assert anonymous.get("/api/v1/openapi.json").status_code == 200


def test_viewer_cannot_change_anything(web: Web) -> None:
    alert_id = any_alert(web)
    for path, body in (
        (f"/api/v1/alerts/{alert_id}/acknowledge", {}),
        (f"/api/v1/alerts/{alert_id}/resolve", {}),
        ("/api/v1/silences", {"rule": "ops.table-delete", "until": "2099-01-01T00:00:00Z", "reason": "x"}),
    ):
        response = web.viewer.post(path, json=body)
        assert response.status_code == 403, path
        assert response.json() == {
            "error": "forbidden",
            "detail": f"token {VIEWER} is a viewer: responders only",
        }
    assert web.viewer.delete("/api/v1/silences/1").status_code == 403
    assert web.viewer.get(f"/api/v1/alerts/{alert_id}").json()["status"] == "open"


def test_requests_are_logged_with_the_token_name_never_the_token(web: Web) -> None:
    web.viewer.get("/api/v1/events", params={"limit": 1})
    web.client("wrong-token-" + "y" * 20).get("/api/v1/events")
    records = web.daemon.wait_event(
        "api request", 10, where=lambda r: r.get("actor") == VIEWER and r.get("path") == "/api/v1/events"
    )
    assert records[0]["status"] == 200 and records[0]["method"] == "GET"
    assert web.daemon.wait_event("api request refused", 10)[0]["status"] == 401
    logs = web.daemon.stdout_path.read_text() + web.daemon.stderr_path.read_text()
    for secret in (web.viewer_token, web.responder_token, "wrong-token-" + "y" * 20):
        assert secret not in logs


# --- events -------------------------------------------------------------------------------------------------


def test_walking_every_page_returns_every_archived_event_once(web: Web) -> None:
    expected = {("sim", int(e["id"])) for e in truth(web)}  # type: ignore[call-overload]
    items = web.all_events(web.viewer, limit=97)
    seen = [(i["source"], i["id"]) for i in items]
    assert len(seen) == len(set(seen))
    assert set(seen) >= expected
    # Newest first.
    times = [i["created_at"] for i in items]
    assert times == sorted(times, reverse=True)
    first = items[0]
    assert set(first) == {
        "source",
        "id",
        "created_at",
        "type",
        "msg",
        "user",
        "workspace",
        "branch",
        "category",
    }
    assert first["category"] == category_of(first["type"])


def test_filters_match_the_simulators_ground_truth(web: Web) -> None:
    entries = truth(web)
    by_user = collections.Counter(
        (e.get("user") or {}).get("email")
        for e in entries  # type: ignore[union-attr]
    )
    user, expected_count = next((u, n) for u, n in by_user.most_common() if u)
    items = web.all_events(web.viewer, user=user, limit=1000)
    assert len(items) == expected_count and {i["user"] for i in items} == {user}

    by_type = collections.Counter(str(e["type"]) for e in entries)
    (t1, n1), (t2, n2) = by_type.most_common(2)
    items = web.all_events(web.viewer, type=[t1, t2], limit=1000)
    assert len(items) == n1 + n2

    both = [e for e in entries if e["type"] == t1 and (e.get("user") or {}).get("email") == user]  # type: ignore[union-attr]
    assert len(web.all_events(web.viewer, type=t1, user=user)) == len(both)

    # A time window, until exclusive: the middle day of the history.
    times = sorted(created(e) for e in entries)
    since, until = times[len(times) // 3], times[2 * len(times) // 3]
    window = [t for t in times if since <= t < until]
    items = web.all_events(
        web.viewer, since=format_timestamp(since), until=format_timestamp(until), limit=1000
    )
    assert len(items) == len(window)

    # q: a substring of msg, case-insensitive.
    word = "table"
    expected = [e for e in entries if word in str(e["msg"]).lower()]
    assert expected, "the simulator's history mentions tables"
    assert len(web.all_events(web.viewer, q=word.upper(), limit=1000)) == len(expected)

    workspace = next(str(e["workspace"]["name"]) for e in entries if e.get("workspace"))  # type: ignore[index]
    expected_ws = [e for e in entries if (e.get("workspace") or {}).get("name") == workspace]  # type: ignore[union-attr]
    assert len(web.all_events(web.viewer, workspace=workspace, limit=1000)) == len(expected_ws)
    assert web.all_events(web.viewer, source="nope") == []


def test_pages_are_exactly_once_while_events_arrive(web: Web) -> None:
    before = {int(e["id"]) for e in truth(web)}  # type: ignore[call-overload]
    web.wait_archived(len(before))
    stop = threading.Event()

    def insert() -> None:
        while not stop.is_set():
            web.sim.add_event("Update Record", msg="arriving during the walk")
            stop.wait(0.02)

    writer = threading.Thread(target=insert)
    writer.start()
    try:
        archived_at_start = web.archived()
        items: list[dict[str, object]] = []
        cursor = None
        while True:
            params: dict[str, object] = {"limit": 25}
            if cursor:
                params["cursor"] = cursor
            body = web.viewer.get("/api/v1/events", params=params).json()
            items.extend(body["items"])
            cursor = body["next_cursor"]
            if cursor is None:
                break
        archived_at_end = web.archived()
    finally:
        stop.set()
        writer.join()
    assert archived_at_end > archived_at_start, "events were archived during the walk"
    ids = [int(i["id"]) for i in items]  # type: ignore[call-overload]
    assert len(ids) == len(set(ids)), "an event came twice"
    assert before <= set(ids), "an event archived before the walk was missed"


def test_event_detail_has_the_raw_entry_and_its_chain_hash(web: Web) -> None:
    entry = truth(web)[5]
    response = web.viewer.get(f"/api/v1/events/sim/{entry['id']}")
    assert response.status_code == 200
    body = response.json()
    assert body["raw"] == entry
    seq, hash_ = query(web.db, "SELECT seq, hash FROM events WHERE event_id = ?", (entry["id"],))[0]
    assert body["chain"] == {"seq": seq, "hash": hash_}
    missing = web.viewer.get("/api/v1/events/sim/999999999")
    assert missing.status_code == 404 and missing.json()["error"] == "no such event"
    assert web.viewer.get("/api/v1/events/sim/abc").json()["detail"]["parameter"] == "id"


def test_bad_parameters_are_400_naming_the_parameter(web: Web) -> None:
    cases = [
        ("/api/v1/events", {"limit": "0"}, "limit"),
        ("/api/v1/events", {"limit": "1001"}, "limit"),
        ("/api/v1/events", {"limit": "ten"}, "limit"),
        ("/api/v1/events", {"since": "yesterday"}, "since"),
        ("/api/v1/events", {"since": "2026-03-02", "until": "2026-03-01"}, "until"),
        ("/api/v1/events", {"cursor": "garbage!"}, "cursor"),
        ("/api/v1/events", {"cursor": "WyJhIiwiYiJd"}, "cursor"),  # a cursor of the alerts list
        ("/api/v1/events", {"usr": "a@b.c"}, "usr"),
        ("/api/v1/events", {"source": ["a", "b"]}, "source"),
        ("/api/v1/alerts", {"status": "closed"}, "status"),
        ("/api/v1/alerts", {"severity": "urgent"}, "severity"),
        ("/api/v1/stats", {"bucket": "week"}, "bucket"),
        ("/api/v1/stats", {"group_by": "ip"}, "group_by"),
    ]
    for path, params, name in cases:
        response = web.viewer.get(path, params=params)
        assert response.status_code == 400, (path, params, response.text)
        body = response.json()
        assert body["error"] == f"bad parameter {name}" and body["detail"]["parameter"] == name, body


# --- alerts and their lifecycle -----------------------------------------------------------------------------


def new_alert(web: Web) -> str:
    """A fresh open alert of the ops rule (a Delete Table added to the simulator)."""
    before = {
        a["id"]
        for a in web.viewer.get("/api/v1/alerts", params={"status": "all", "limit": 1000}).json()["items"]
    }
    web.sim.add_event("Delete Table", msg="dropped table orders")

    def fresh() -> str | None:
        items = web.viewer.get("/api/v1/alerts", params={"status": "all", "limit": 1000}).json()["items"]
        return next((a["id"] for a in items if a["id"] not in before), None)

    return str(wait_until(fresh, 60, "a new alert"))


def any_alert(web: Web) -> str:
    items = web.viewer.get("/api/v1/alerts").json()["items"]
    return str(items[0]["id"]) if items else new_alert(web)


def test_alerts_list_matches_the_ground_truth(web: Web) -> None:
    new_alert(web)
    deletes = [e for e in truth(web) if e["type"] == "Delete Table"]
    items = web.viewer.get("/api/v1/alerts", params={"status": "all", "limit": 1000}).json()["items"]
    assert len(items) == len(deletes)
    assert {a["rule"] for a in items} == {"ops.table-delete"}
    assert {a["severity"] for a in items} == {"high"}
    paged: list[str] = []
    cursor = None
    while True:
        params = {"status": "all", "limit": 2, **({"cursor": cursor} if cursor else {})}
        body = web.viewer.get("/api/v1/alerts", params=params).json()
        paged += [a["id"] for a in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert paged == [a["id"] for a in items]
    assert web.viewer.get("/api/v1/alerts", params={"severity": "low", "status": "all"}).json()["items"] == []


def test_acknowledge_then_resolve_with_history_and_conflicts(web: Web) -> None:
    alert_id = new_alert(web)
    detail = web.viewer.get(f"/api/v1/alerts/{alert_id}").json()
    assert detail["status"] == "open" and detail["history"] == [] and detail["deliveries"] == []
    ack = web.responder.post(f"/api/v1/alerts/{alert_id}/acknowledge", json={"note": "looking"})
    assert ack.status_code == 200 and ack.json()["status"] == "acknowledged"
    again = web.responder.post(f"/api/v1/alerts/{alert_id}/acknowledge", json={})
    assert again.status_code == 409 and again.json()["error"] == "invalid transition"
    done = web.responder.post(
        f"/api/v1/alerts/{alert_id}/resolve", json={"note": "planned cleanup", "disposition": "benign"}
    )
    assert done.status_code == 200
    history = done.json()["history"]
    assert [(h["action"], h["actor"], h["from"], h["to"]) for h in history] == [
        ("alert.acknowledged", RESPONDER, "open", "acknowledged"),
        ("alert.resolved", RESPONDER, "acknowledged", "resolved"),
    ]
    assert history[1]["note"] == "planned cleanup" and history[1]["disposition"] == "benign"
    assert web.responder.post(f"/api/v1/alerts/{alert_id}/resolve").status_code == 409
    assert web.responder.post(f"/api/v1/alerts/{alert_id}/acknowledge").status_code == 409
    # open -> resolved directly
    other = new_alert(web)
    assert web.responder.post(f"/api/v1/alerts/{other}/resolve").json()["status"] == "resolved"
    # 404, bad disposition, unknown field, not JSON
    assert web.responder.post("/api/v1/alerts/feedface/acknowledge").status_code == 404
    bad = web.responder.post(f"/api/v1/alerts/{new_alert(web)}/resolve", json={"disposition": "maybe"})
    assert bad.status_code == 400 and bad.json()["detail"]["parameter"] == "disposition"
    assert (
        web.responder.post(f"/api/v1/alerts/{other}/resolve", json={"notes": "x"}).json()["detail"][
            "parameter"
        ]
        == "notes"
    )
    not_json = web.responder.post(
        f"/api/v1/alerts/{other}/resolve", content=b"{", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 400
    statuses = {
        a["id"]: a["status"]
        for a in web.viewer.get("/api/v1/alerts", params={"status": "resolved"}).json()["items"]
    }
    assert statuses.get(alert_id) == "resolved" and statuses.get(other) == "resolved"
    # The history is part of the chain: verify walks it.
    verify = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "--config", str(web.config), "verify"],
        capture_output=True, text=True, cwd=REPO, timeout=60,
        env={"SIM_TOKEN": web.sim_token, "PATH": "/usr/bin:/bin",
             "API_TOKEN_VIEWER": web.viewer_token, "API_TOKEN_RESPONDER": web.responder_token},
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_silences_hold_back_matching_alerts(web: Web) -> None:
    until = format_timestamp(datetime.now(UTC) + timedelta(hours=1))
    created_silence = web.responder.post(
        "/api/v1/silences",
        json={
            "rule": "ops.table-delete",
            "match": {"user": "a@corp.io"},
            "until": until,
            "reason": "migration",
        },
    )
    assert created_silence.status_code == 201, created_silence.text
    silence = created_silence.json()
    assert silence["active"] and silence["created_by"] == RESPONDER
    web.sim.add_event("Delete Table", user={"id": 3, "email": "a@corp.io"}, msg="silenced drop")

    def silenced() -> list[dict[str, object]]:
        return web.viewer.get("/api/v1/alerts", params={"status": "silenced"}).json()["items"]  # type: ignore[no-any-return]

    held = wait_until(silenced, 60, "a silenced alert")
    assert held[0]["silence_id"] == silence["id"]
    assert query(web.db, "SELECT count(*) FROM outbox WHERE alert_id = ?", (held[0]["id"],))[0][0] == 0
    # Another user's delete is not silenced.
    assert web.viewer.get(f"/api/v1/alerts/{new_alert(web)}").json()["status"] == "open"
    listed = web.viewer.get("/api/v1/silences", params={"active": "true"}).json()["items"]
    assert [s["id"] for s in listed] == [silence["id"]]
    expired = web.responder.delete(f"/api/v1/silences/{silence['id']}")
    assert expired.status_code == 200 and not expired.json()["active"]
    assert web.responder.delete(f"/api/v1/silences/{silence['id']}").status_code == 409
    assert web.responder.delete("/api/v1/silences/99999").status_code == 404
    assert web.viewer.get("/api/v1/silences", params={"active": "true"}).json()["items"] == []
    for body, name in (
        ({"until": until, "reason": "x"}, "match"),
        ({"rule": "r", "until": "2000-01-01T00:00:00Z", "reason": "x"}, "until"),
        ({"rule": "r", "until": until}, "reason"),
        ({"rule": "r", "match": {"user": 3}, "until": until, "reason": "x"}, "match"),
    ):
        response = web.responder.post("/api/v1/silences", json=body)
        assert response.status_code == 400 and response.json()["detail"]["parameter"] == name, response.text


# --- stats, status, documentation, headers ------------------------------------------------------------------


def test_stats_count_what_the_simulator_served(web: Web) -> None:
    entries = truth(web)
    times = sorted(created(e) for e in entries)
    since = times[0].replace(hour=0, minute=0, second=0, microsecond=0)
    until = since + timedelta(days=2)
    inside = [e for e in entries if since <= created(e) < until]
    body = web.viewer.get(
        "/api/v1/stats", params={"since": format_timestamp(since), "until": format_timestamp(until)}
    ).json()
    assert body["total"] == len(inside)
    expected = collections.Counter(category_of(str(e["type"])) for e in inside)
    assert {k: v for k, v in body["totals"].items() if v} == dict(expected)
    per_day = collections.Counter(created(e).date().isoformat() for e in inside)
    days = [(since + timedelta(days=n)).date().isoformat() for n in range(2)]
    assert [(s["start"][:10], sum(s["counts"].values())) for s in body["series"]] == [
        (day, per_day[day]) for day in days
    ]  # every day of the period, in order, a day without events too
    hourly = web.viewer.get(
        "/api/v1/stats",
        params={"since": format_timestamp(since), "until": format_timestamp(until), "bucket": "hour",
                "group_by": "user"},
    ).json()  # fmt: skip
    users = collections.Counter((e.get("user") or {}).get("email") or "" for e in inside)  # type: ignore[union-attr]
    assert hourly["totals"] == dict(users)
    per_hour = collections.Counter(created(e).replace(minute=0, second=0, microsecond=0) for e in inside)
    hours = [since + timedelta(hours=n) for n in range(48)]
    assert [(datetime.fromisoformat(s["start"]), sum(s["counts"].values())) for s in hourly["series"]] == [
        (hour, per_hour[hour]) for hour in hours
    ]
    assert len(per_hour) < 48  # some hours of the period are empty, and listed above with no counts


def test_stats_list_empty_buckets_and_refuse_more_than_ten_thousand(web: Web) -> None:
    quiet = {"since": "2001-03-01T00:00:00Z", "until": "2001-03-01T03:30:00Z", "bucket": "hour"}
    body = web.viewer.get("/api/v1/stats", params=quiet).json()
    assert body["total"] == 0
    assert body["series"] == [
        {"start": f"2001-03-01T0{h}:00:00.000000+00:00", "counts": {}} for h in range(4)
    ]  # the bucket holding until's last instant too, and none after
    exact = web.viewer.get("/api/v1/stats", params={**quiet, "until": "2001-03-01T03:00:00Z"}).json()
    assert len(exact["series"]) == 3
    decades_utc = {"since": "2000-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}  # 9,497 days
    decades = web.viewer.get("/api/v1/stats", params={**decades_utc, "bucket": "hour"})
    assert decades.status_code == 400
    assert "227928 hourly buckets, at most 10000" in decades.text and "bucket" in decades.text
    by_day = web.viewer.get("/api/v1/stats", params=decades_utc)
    assert by_day.status_code == 200 and len(by_day.json()["series"]) == 9497


def test_status_is_what_status_json_prints(web: Web) -> None:
    body = web.viewer.get("/api/v1/status").json()
    assert [s["source"] for s in body["sources"]] == ["sim"]
    assert body["sources"][0]["archived"] == web.archived() or body["sources"][0]["archived"] > 0


def test_openapi_lists_every_endpoint_and_parameter(web: Web) -> None:
    doc = web.client().get("/api/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == {
        "/api/v1/events", "/api/v1/events/{source}/{id}", "/api/v1/alerts", "/api/v1/alerts/{id}",
        "/api/v1/alerts/{id}/acknowledge", "/api/v1/alerts/{id}/resolve", "/api/v1/silences",
        "/api/v1/silences/{id}", "/api/v1/stats", "/api/v1/status",
    }  # fmt: skip
    names = {p["name"] for p in doc["paths"]["/api/v1/events"]["get"]["parameters"]}
    assert names == {
        "since",
        "until",
        "source",
        "type",
        "user",
        "workspace",
        "branch",
        "q",
        "limit",
        "cursor",
    }


def test_security_headers_cors_and_size_limits(web: Web) -> None:
    response = web.viewer.get("/api/v1/events", params={"limit": 1})
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-frame-options"] == "DENY"
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert web.client().get("/nope").json()["error"] == "not found"
    preflight = {"Origin": "https://my-app.weweb.io", "Access-Control-Request-Method": "GET",
                 "Access-Control-Request-Headers": "authorization"}  # fmt: skip
    allowed = web.client().options("/api/v1/events", headers=preflight)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://my-app.weweb.io"
    denied = web.client().options("/api/v1/events", headers={**preflight, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in denied.headers
    simple = web.client(web.viewer_token, Origin="https://my-app.weweb.io").get("/api/v1/status")
    assert simple.headers["access-control-allow-origin"] == "https://my-app.weweb.io"
    big = web.responder.post(
        "/api/v1/silences", content=b"{" + b" " * 70_000 + b"}", headers={"content-type": "application/json"}
    )
    assert big.status_code == 413
    chunked = web.responder.post(
        "/api/v1/silences",
        content=iter([b"{" + b" " * 40_000, b" " * 40_000 + b"}"]),
        headers={"content-type": "application/json"},
    )
    assert chunked.status_code == 413
    assert httpx.get(web.base_url + "/api/v1/events", headers={"x-big": "a" * 20_000}).status_code in (
        400,
        431,
    )
    assert parse_cli_date("2026-03-04", UTC).tzinfo is not None
    assert _iso(0).year == 1970

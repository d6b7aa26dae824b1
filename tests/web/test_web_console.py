"""The console over HTTP: sign-in, CSRF, cookie flags, XSS payloads in event fields rendered inert, and (with
Debian's Chromium driven by Playwright, skipped with one line when absent) the pages a person uses."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from monitor.events import format_timestamp
from tests.ops.conftest import wait_until
from tests.web.conftest import RESPONDER, Web

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
ENABLE = "apt-get install -y --no-install-recommends chromium && pip install playwright"

XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'


def sign_in(web: Web, token: str) -> httpx.Client:
    client = httpx.Client(base_url=web.base_url, timeout=10)
    form = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    response = client.post("/login", data={"csrf": csrf.group(1), "token": token, "next": "/"})
    assert response.status_code == 303 and response.headers["location"] == "/"
    return client


def page_csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


def test_sign_in_sets_a_strict_httponly_cookie_and_sign_out_ends_it(web: Web) -> None:
    client = httpx.Client(base_url=web.base_url, timeout=10)
    assert client.get("/").status_code == 303  # to the sign-in page
    form = client.get("/login")
    assert "script-src 'self'" in form.headers["content-security-policy"]
    wrong = client.post("/login", data={"csrf": page_csrf(form.text), "token": "x" * 30})
    assert wrong.status_code == 401 and "not valid" in wrong.text
    signed = client.post("/login", data={"csrf": page_csrf(wrong.text), "token": web.viewer_token})
    assert signed.status_code == 303
    cookie = next(h for h in signed.headers.get_list("set-cookie") if h.startswith("am_session="))
    flags = {part.strip().lower() for part in cookie.split(";")}
    assert "httponly" in flags and "samesite=strict" in flags and "path=/" in flags
    assert "secure" not in flags  # plain http on loopback; Secure when the request came over https
    assert web.viewer_token not in cookie
    dashboard = client.get("/")
    assert dashboard.status_code == 200 and "Dashboard" in dashboard.text
    out = client.post("/logout", data={"csrf": page_csrf(dashboard.text)})
    assert out.status_code == 303
    assert client.get("/", follow_redirects=False).status_code == 303
    logs = web.daemon.stdout_path.read_text() + web.daemon.stderr_path.read_text()
    assert web.viewer_token not in logs and web.responder_token not in logs
    assert web.daemon.wait_event("console sign-in", 10)[0]["actor"] == "weweb"


def test_behind_a_local_https_proxy_the_session_cookie_is_secure(web: Web) -> None:
    # A reverse proxy on this host that ended TLS says so in X-Forwarded-Proto (believed from loopback only).
    client = httpx.Client(base_url=web.base_url, timeout=10, headers={"X-Forwarded-Proto": "https"})
    form = client.get("/login")
    login_cookie = next(h for h in form.headers.get_list("set-cookie") if h.startswith("am_login="))
    assert "secure" in {part.strip().lower() for part in login_cookie.split(";")}
    nonce = form.headers["set-cookie"].split("am_login=", 1)[1].split(";", 1)[0]
    # Sent by hand: the client keeps a Secure cookie from going back over this plain-http hop, as a browser
    # would (the proxy's side of it is https).
    signed = client.post(
        "/login", data={"csrf": page_csrf(form.text), "token": web.viewer_token},
        headers={"Cookie": f"am_login={nonce}"},
    )  # fmt: skip
    assert signed.status_code == 303
    cookie = next(h for h in signed.headers.get_list("set-cookie") if h.startswith("am_session="))
    assert "secure" in {part.strip().lower() for part in cookie.split(";")}


def test_forms_without_the_csrf_token_are_refused(web: Web) -> None:
    client = sign_in(web, web.responder_token)
    web.sim.add_event("Delete Table", msg="csrf target")
    alert = wait_until(
        lambda: next(iter(web.viewer.get("/api/v1/alerts").json()["items"]), None), 30, "an open alert"
    )
    for data in ({}, {"csrf": "forged"}):
        refused = client.post(f"/alerts/{alert['id']}/acknowledge", data=data)
        assert refused.status_code == 403 and "CSRF" in refused.text
    assert web.viewer.get(f"/api/v1/alerts/{alert['id']}").json()["status"] == "open"
    # Sign-in itself needs the form's nonce (login CSRF).
    fresh = httpx.Client(base_url=web.base_url, timeout=10)
    assert fresh.post("/login", data={"token": web.responder_token}).status_code == 403
    # A viewer's session cannot triage, even with its token.
    viewer = sign_in(web, web.viewer_token)
    csrf = page_csrf(viewer.get("/alerts").text)
    assert viewer.post(f"/alerts/{alert['id']}/acknowledge", data={"csrf": csrf}).status_code == 403
    ok = client.post(f"/alerts/{alert['id']}/acknowledge", data={"csrf": page_csrf(client.get("/").text)})
    assert ok.status_code == 303
    assert web.viewer.get(f"/api/v1/alerts/{alert['id']}").json()["status"] == "acknowledged"


def test_script_in_every_event_field_is_rendered_as_text(web: Web) -> None:
    event_id = web.sim.add_event(
        "Delete Table" + XSS,
        msg="dropped " + XSS,
        user={"id": 66, "email": "x@evil.io" + XSS},
        workspace={"id": 1, "name": "ws" + XSS},
        branch={"id": 1, "label": "v1" + XSS},
    )
    web.wait_archived(web.archived() + 1)
    wait_until(lambda: web.viewer.get(f"/api/v1/events/sim/{event_id}").status_code == 200, 30, "archived")
    client = sign_in(web, web.viewer_token)
    since = (datetime.now(UTC) - timedelta(days=5)).date().isoformat()
    for path in ("/events", f"/events/sim/{event_id}", f"/?since={since}", "/events?q=dropped"):
        html = client.get(path).text
        assert "<script>window.__xss" not in html and "<img src=x" not in html, path
        assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in html, path


def test_the_default_dashboard_period_shows_whole_minutes_and_a_typed_bound_stays_exact(web: Web) -> None:
    client = sign_in(web, web.viewer_token)

    def form(html: str) -> tuple[str, str]:
        found = dict(re.findall(r'<input id="(since|until)" name="\1" value="([^"]*)">', html))
        return found["since"], found["until"]

    before = datetime.now(UTC)
    since_text, until_text = form(client.get("/").text)
    after = datetime.now(UTC)
    since, until = datetime.fromisoformat(since_text), datetime.fromisoformat(until_text)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:00Z", until_text), until_text
    assert before < until <= after + timedelta(minutes=1)  # the current minute is in the period
    assert until - since == timedelta(days=7)
    typed = "2026-11-20T08:15:30.250000+00:00"
    assert form(client.get("/", params={"since": typed, "until": until_text}).text) == (typed, until_text)


def test_a_dashboard_period_over_400_days_is_refused(web: Web) -> None:
    client = sign_in(web, web.viewer_token)
    response = client.get("/", params={"since": "2000-01-01"})
    assert response.status_code == 400 and "at most 400 days" in response.text


def test_dashboard_figures_match_the_simulators_ground_truth(web: Web) -> None:
    from monitor.events import normalize
    from monitor.report.figures import CRITICAL_TYPES

    entries = [(normalize("sim", e).created_at, str(e["type"])) for e in web.sim.visible_events()]
    until = max(t for t, _ in entries) + timedelta(seconds=1)
    since = until - timedelta(days=2)
    inside = [(t, kind) for t, kind in entries if since <= t < until]
    database = {"Create Table", "Update Table", "Delete Table", "Restore Table", "Add Field", "Update Field",
                "Delete Field", "Create Record", "Update Record", "Delete Record"}  # fmt: skip
    expected = {
        "total": len(inside),
        "critical": sum(1 for _, kind in inside if kind in CRITICAL_TYPES),
        "failed_logins": sum(1 for _, kind in inside if kind == "Login Failed"),
        "database_changes": sum(1 for _, kind in inside if kind in database),
        # The default business hours (the config sets no calendar): mon-fri 08:00-19:00, zone UTC.
        "off_hours": sum(1 for t, _ in inside if t.weekday() >= 5 or not 8 <= t.hour < 19),
    }
    client = sign_in(web, web.viewer_token)
    html = client.get("/", params={"since": format_timestamp(since), "until": format_timestamp(until)}).text
    shown = {name: int(value) for name, value in re.findall(r'data-figure="(\w+)">(\d+)<', html)}
    assert {k: shown[k] for k in expected} == expected

    # Every UTC day the period touches has its row, a day without events too (with 0).
    def touched(start: datetime, end: datetime) -> list[str]:
        last = (end - timedelta(milliseconds=1)).date()
        return [(start.date() + timedelta(days=n)).isoformat() for n in range((last - start.date()).days + 1)]

    per_day = {
        day: str(sum(1 for t, _ in inside if t.date().isoformat() == day)) for day in touched(since, until)
    }
    assert dict(re.findall(r'data-day="([\d-]+)">(\d+)<', html)) == per_day
    quiet = until + timedelta(days=30)  # after every event the simulator serves
    html = client.get(
        "/", params={"since": format_timestamp(quiet), "until": format_timestamp(quiet + timedelta(days=2))}
    ).text
    assert "No events in this period." in html
    assert re.findall(r'data-day="([\d-]+)">(\d+)<', html) == [
        (day, "0") for day in touched(quiet, quiet + timedelta(days=2))
    ]


try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if sync_playwright is None:
        pytest.skip(f"browser tests skipped: the playwright package is missing ({ENABLE})")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"browser tests skipped: {CHROMIUM} is missing ({ENABLE})")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--headless"])
        try:
            yield launched
        finally:
            launched.close()


def test_in_the_browser_sign_in_dashboard_search_acknowledge_sign_out(
    web: Web, browser: Any, tmp_path: Path
) -> None:
    web.sim.add_event("Delete Table", msg="browser target")
    wait_until(lambda: web.viewer.get("/api/v1/alerts").json()["items"], 30, "an open alert")
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.goto(web.base_url + "/")
    assert page.url.startswith(web.base_url + "/login")
    page.fill("#token", web.responder_token)
    page.keyboard.press("Enter")
    page.wait_for_url(web.base_url + "/")
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["am_session"]["httpOnly"] and cookies["am_session"]["sameSite"] == "Strict"

    # The dashboard's numbers are the API's for the same period.
    until = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)  # as by default
    since = until - timedelta(days=7)
    query = f"since={format_timestamp(since)}&until={format_timestamp(until)}".replace("+", "%2B")

    def api_stats() -> Any:
        figures = web.viewer.get(
            "/api/v1/stats", params={"since": format_timestamp(since), "until": format_timestamp(until)}
        ).json()
        figures["open_alerts"] = len(web.viewer.get("/api/v1/alerts", params={"limit": 1000}).json()["items"])
        return figures

    # The simulator keeps serving live events, so the daemon may archive one between the page and the API
    # call: compare only a page rendered while the API's figures stood still.
    for _ in range(10):
        stats = api_stats()
        page.goto(f"{web.base_url}/?{query}")
        if api_stats() == stats:
            break
    else:
        raise AssertionError("the archive never stood still long enough to compare the dashboard")
    assert int(page.text_content('[data-figure="total"]') or "-1") == stats["total"]
    for category, count in stats["totals"].items():
        assert int(page.text_content(f'[data-category="{category}"]') or "-1") == count, category
    assert int(page.text_content('[data-figure="open_alerts"]') or "-1") == stats["open_alerts"]
    # docs/console.png is this view; AUDIT_MONITOR_SCREENSHOTS=1 refreshes it (else the tree stays clean).
    shot = tmp_path / "console.png"
    page.screenshot(path=str(shot), full_page=False)
    assert shot.stat().st_size > 10_000
    if os.environ.get("AUDIT_MONITOR_SCREENSHOTS"):
        shutil.copyfile(shot, REPO / "docs" / "console.png")

    # Search by user, from the events page's form.
    user = next(
        i["user"] for i in web.viewer.get("/api/v1/events", params={"limit": 50}).json()["items"] if i["user"]
    )
    page.goto(web.base_url + "/events")
    page.fill('input[name="user"]', user)
    page.click('button[type="submit"]:has-text("Search")')
    page.wait_for_url(re.compile(r".*/events\?.*user=.*"))
    shown = {cell.strip() for cell in page.locator("td.user").all_text_contents()}
    assert shown == {user}

    # The script planted in every field of an event (test above) stays text in a real browser too.
    for path in ("/events?q=dropped", "/events"):
        page.goto(web.base_url + path)
        assert page.evaluate("window.__xss") is None, path
    dropped = web.viewer.get("/api/v1/events", params={"q": "dropped", "limit": 1}).json()["items"]
    if dropped:
        page.goto(f"{web.base_url}/events/sim/{dropped[0]['id']}")
        assert page.evaluate("window.__xss") is None

    # Acknowledge an open alert with the keyboard-reachable triage form.
    target = web.viewer.get("/api/v1/alerts").json()["items"][0]["id"]
    page.goto(f"{web.base_url}/alerts/{target}")
    page.fill('form[action$="/acknowledge"] input[name="note"]', "from the console")
    page.click('button[data-action="acknowledge"]')
    page.wait_for_url(re.compile(r".*done=acknowledged"))
    detail = web.viewer.get(f"/api/v1/alerts/{target}").json()
    assert detail["status"] == "acknowledged"
    assert detail["history"][-1]["actor"] == RESPONDER and detail["history"][-1]["note"] == "from the console"

    # Usable at 400 px: no sideways scrolling on the main pages.
    page.set_viewport_size({"width": 400, "height": 900})
    for path in ("/", "/events", f"/alerts/{target}", "/silences"):
        page.goto(web.base_url + path)
        scroll, client = page.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert scroll <= client + 1, (path, scroll, client)

    page.click('button:has-text("Sign out")')
    page.wait_for_url(re.compile(r".*/login"))
    page.goto(web.base_url + "/")
    assert "/login" in page.url
    assert not [e for e in errors if "Content Security Policy" in e], errors
    assert page.evaluate("window.__xss") is None
    page.close()

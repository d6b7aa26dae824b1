"""The web console at ``/``: server-rendered pages over the same store queries as the API.

Sign-in exchanges a token of ``server.tokens`` for a session cookie (HttpOnly, SameSite=Strict, Secure when
the request came over https); the token itself is not kept, only its name. Sessions live in memory: a
restart signs everybody out, which is the safe direction. Every form carries a CSRF token bound to the
session (the sign-in form one bound to a short-lived cookie) and a POST without the right one is refused
with 403, before anything is read or changed.

Templates are Jinja with autoescape on and every string through ``safe_text``: event fields are untrusted
(anyone with a Xano account writes them). No inline script or style: the CSP forbids both.
"""

from __future__ import annotations

import bisect
import hmac
import json
import logging
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import anyio
import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from monitor.display import safe_output, safe_text
from monitor.events import format_timestamp
from monitor.report.figures import (
    CATEGORIES,
    CRITICAL_TYPES,
    business_calendar,
    calendar_closed_intervals,
    category_of,
)
from monitor.resources import templates_dir
from monitor.store import Store, lifecycle, search
from monitor.timeutil import format_time, parse_cli_date
from monitor.web.api import (
    ApiError,
    Query,
    alert_summary,
    decode_cursor,
    encode_cursor,
    event_items,
    event_query,
)
from monitor.web.app import WebContext, throttled, wrong_token
from monitor.web.auth import Principal

log = logging.getLogger("monitor.web")

SESSION_COOKIE = "am_session"
LOGIN_COOKIE = "am_login"
SESSION_LIFETIME = timedelta(hours=12)
PAGE_SIZE = 50
DEFAULT_PERIOD = timedelta(days=7)
MAX_PERIOD = timedelta(days=400)
DATABASE_CHANGE_TYPES = (
    "Create Table", "Update Table", "Delete Table", "Restore Table", "Add Field", "Update Field",
    "Delete Field", "Create Record", "Update Record", "Delete Record",
)  # fmt: skip


def period_text(instant: datetime) -> str:
    """A period bound as the dashboard's form and links carry it: to the second when that is exact, else to
    the microsecond (a bound someone typed), so the links keep exactly the period shown."""
    if instant.microsecond:
        return format_timestamp(instant)
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Session:
    name: str
    csrf: str
    expires: float


class Sessions:
    """Session id -> (token name, CSRF token, expiry), in memory."""

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, name: str) -> tuple[str, Session]:
        session_id = secrets.token_urlsafe(32)
        session = Session(
            name, secrets.token_urlsafe(32), time.monotonic() + SESSION_LIFETIME.total_seconds()
        )
        with self._lock:
            now = time.monotonic()
            self._sessions = {k: v for k, v in self._sessions.items() if v.expires > now}
            self._sessions[session_id] = session
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        with self._lock:
            session = self._sessions.get(session_id)
        if session is None or session.expires <= time.monotonic():
            return None
        return session

    def drop(self, session_id: str | None) -> None:
        with self._lock:
            self._sessions.pop(session_id or "", None)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir() / "web"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=safe_output,
    )
    env.filters.update(clean=safe_text)
    return env


def static_dir() -> Path:
    return templates_dir() / "web" / "static"


def console_routes(context: WebContext) -> list[BaseRoute]:
    env = _environment()
    sessions = Sessions()
    context.extra["sessions"] = sessions
    tz = context.config.tz

    def when(iso: str | None) -> str:
        return format_time(datetime.fromisoformat(iso), tz) if iso else "-"

    env.filters["when"] = when
    env.globals["categories"] = CATEGORIES

    def secure(request: Request) -> bool:
        return request.url.scheme == "https"

    def render(request: Request, template: str, code: int = 200, **values: Any) -> Response:
        body = env.get_template(template).render(request_path=request.url.path, **values)
        return HTMLResponse(body, code)

    def signed_in(request: Request) -> tuple[Session, Principal] | None:
        session = sessions.get(request.cookies.get(SESSION_COOKIE))
        if session is None:
            return None
        principal = context.tokens.by_name(session.name)
        return (session, principal) if principal is not None else None

    Page = Callable[[Request, Session, Principal], Awaitable[Response]]

    def page(
        handler: Page, *, form: bool = False, respond: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            who = signed_in(request)
            if who is None:
                if form:
                    return HTMLResponse("Sign in again: your session has ended.", 403)
                return RedirectResponse("/login?" + urlencode({"next": request.url.path}), 303)
            session, principal = who
            if form:
                submitted = (await form_fields(request)).get("csrf", "")
                if not isinstance(submitted, str) or not hmac.compare_digest(submitted, session.csrf):
                    log.warning("console form refused: bad CSRF token", extra={"actor": principal.name})
                    return HTMLResponse("Refused: the form's CSRF token is missing or wrong.", 403)
                if respond and not principal.may_respond:
                    return HTMLResponse("Refused: responders only.", 403)
            try:
                response = await handler(request, session, principal)
            except ApiError as exc:
                response = render(
                    request, "error.html.j2", exc.status, error=exc.error, detail=exc.detail, session=session,
                    principal=principal,
                )  # fmt: skip
            log.info(
                "console request",
                extra={"actor": principal.name, "method": request.method, "path": request.url.path,
                       "status": response.status_code},
            )  # fmt: skip
            return response

        return run

    async def login_form(request: Request) -> Response:
        nonce = secrets.token_urlsafe(32)
        response = render(
            request, "login.html.j2", csrf=nonce, error=None, next=_local(request.query_params.get("next"))
        )
        response.set_cookie(
            LOGIN_COOKIE, nonce, max_age=600, httponly=True, samesite="strict", secure=secure(request)
        )
        return response

    async def login(request: Request) -> Response:
        retry_after = throttled(context, request, "console")
        if retry_after is not None:
            return HTMLResponse(
                f"Too many wrong tokens from this address: try again in {retry_after} seconds.",
                429,
                headers={"retry-after": str(retry_after)},
            )
        form = await form_fields(request)
        nonce = request.cookies.get(LOGIN_COOKIE, "")
        submitted = form.get("csrf", "")
        if not nonce or not isinstance(submitted, str) or not hmac.compare_digest(submitted, nonce):
            return HTMLResponse("Refused: the form's CSRF token is missing or wrong.", 403)
        token = form.get("token", "")
        principal = context.tokens.authenticate(token if isinstance(token, str) else "")
        if principal is None:
            log.info("console sign-in refused", extra={"method": "POST", "path": "/login", "status": 401})
            wrong_token(context, request, "console")
            fresh = secrets.token_urlsafe(32)
            response = render(
                request, "login.html.j2", 401, csrf=fresh, error="That token is not valid.", next="/"
            )
            response.set_cookie(
                LOGIN_COOKIE, fresh, max_age=600, httponly=True, samesite="strict", secure=secure(request)
            )
            return response
        session_id, _ = sessions.create(principal.name)
        log.info("console sign-in", extra={"actor": principal.name})
        next_value = form.get("next")
        response = RedirectResponse(_local(next_value if isinstance(next_value, str) else None), 303)
        response.set_cookie(
            SESSION_COOKIE, session_id, max_age=int(SESSION_LIFETIME.total_seconds()), httponly=True,
            samesite="strict", secure=secure(request), path="/",
        )  # fmt: skip
        response.delete_cookie(LOGIN_COOKIE)
        return response

    async def logout(request: Request, session: Session, principal: Principal) -> Response:
        sessions.drop(request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("/login", 303)
        response.delete_cookie(
            SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=secure(request)
        )
        return response

    def period(request: Request) -> tuple[datetime, datetime]:
        query = Query(request, "dashboard", context, drop_empty=True)
        since, until = query.period()
        # The default period ends at the next whole minute (the current one included), so its form shows
        # plain times, not the clock's microseconds.
        until = until or context.clock().replace(second=0, microsecond=0) + timedelta(minutes=1)
        since = since or until - DEFAULT_PERIOD
        if until <= since:
            raise ApiError(
                400, "bad parameter until", {"parameter": "until", "message": "must be after since"}
            )
        if until - since > MAX_PERIOD:
            # Off-hours walk the business calendar's closed runs: bounded so a typo cannot busy the server.
            message = f"the dashboard shows at most {MAX_PERIOD.days} days (use the API's stats for more)"
            raise ApiError(400, "bad parameter since", {"parameter": "since", "message": message})
        return since, until

    async def dashboard(request: Request, session: Session, principal: Principal) -> Response:
        since, until = period(request)
        now = context.clock()

        figures = await dashboard_figures(context, since, until, now)
        return render(
            request, "dashboard.html.j2", session=session, principal=principal,
            since_text=period_text(since), until_text=period_text(until), **figures,
        )  # fmt: skip

    async def events(request: Request, session: Session, principal: Principal) -> Response:
        query = Query(request, "events", context, drop_empty=True)
        wanted = event_query(query)
        after = decode_cursor(query.text("cursor"), (int, int))
        rows = await context.run_db(
            lambda store: search.search_events(store, wanted, limit=PAGE_SIZE + 1, after=after)  # type: ignore[arg-type]
        )
        page_rows = rows[:PAGE_SIZE]
        filters = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor" and v]
        next_link = None
        if len(rows) > PAGE_SIZE:
            cursor = encode_cursor(page_rows[-1][1], page_rows[-1][0])  # (created_ms, seq)
            next_link = "/events?" + urlencode([*filters, ("cursor", cursor)])
        values = {k: request.query_params.get(k, "") for k in ("since", "until", "source", "type", "user",
                                                                  "workspace", "branch", "q")}  # fmt: skip
        return render(
            request, "events.html.j2", session=session, principal=principal,
            items=event_items(page_rows), next_link=next_link, values=values,
        )  # fmt: skip

    async def event(request: Request, session: Session, principal: Principal) -> Response:
        source, raw_id = request.path_params["source"], request.path_params["event_id"]
        if not raw_id.isdigit():
            raise ApiError(404, "no such event", None)
        found = await context.run_db(lambda store: search.get_event(store, source, int(raw_id)))
        if found is None:
            raise ApiError(404, "no such event", {"source": source, "id": raw_id})
        raw_text = json.dumps(found["raw"], indent=2, ensure_ascii=False)
        return render(request, "event.html.j2", session=session, principal=principal, event=found,
                      category=category_of(found["type"]), raw_text=raw_text)  # fmt: skip

    async def alerts(request: Request, session: Session, principal: Principal) -> Response:
        query = Query(request, "alerts", context, drop_empty=True)
        status = query.text("status", "open")
        since, until = query.period()
        wanted = lifecycle.AlertQuery(
            statuses=() if status == "all" else (str(status),), severities=query.texts("severity"),
            rules=query.texts("rule"), since=since, until=until,
        )  # fmt: skip
        after = decode_cursor(query.text("cursor"), (str, str))
        rows = await context.run_db(
            lambda store: lifecycle.list_alerts(store, wanted, limit=PAGE_SIZE + 1, after=after)  # type: ignore[arg-type]
        )
        page_rows = rows[:PAGE_SIZE]
        next_link = None
        if len(rows) > PAGE_SIZE:
            filters = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor" and v]
            cursor = encode_cursor(page_rows[-1]["event_time"], page_rows[-1]["id"])
            next_link = "/alerts?" + urlencode([*filters, ("cursor", cursor)])
        return render(
            request, "alerts.html.j2", session=session, principal=principal,
            items=[alert_summary(r) for r in page_rows], current=status, next_link=next_link,
            statuses=[*lifecycle.STATUSES, "all"],
        )  # fmt: skip

    async def alert(request: Request, session: Session, principal: Principal) -> Response:
        alert_id = request.path_params["alert_id"]
        found = await context.run_db(lambda store: lifecycle.get_alert(store, alert_id))
        if found is None:
            raise ApiError(404, "no such alert", {"id": alert_id})
        return render(
            request, "alert.html.j2", session=session, principal=principal, alert=found,
            dispositions=lifecycle.DISPOSITIONS, message=request.query_params.get("done"),
        )  # fmt: skip

    def triage(to_status: str) -> Page:
        async def change(request: Request, session: Session, principal: Principal) -> Response:
            form = await form_fields(request)
            alert_id = request.path_params["alert_id"]
            note = str(form.get("note") or "").strip()[:2000] or None
            disposition = str(form.get("disposition") or "") or None
            if disposition is not None and disposition not in lifecycle.DISPOSITIONS:
                raise ApiError(400, "bad parameter disposition", None)
            now = context.clock()
            try:
                await context.run_db(
                    lambda store: lifecycle.transition(
                        store, alert_id, to_status, actor=principal.name, at=now, note=note,
                        disposition=disposition,
                    )
                )  # fmt: skip
            except lifecycle.LifecycleError as exc:
                raise ApiError(404 if exc.kind == "not_found" else 409, str(exc), None) from None
            log.info(f"alert {to_status}", extra={"alert_id": alert_id, "actor": principal.name})
            return RedirectResponse(f"/alerts/{alert_id}?done={to_status}", 303)

        return change

    async def silences(request: Request, session: Session, principal: Principal) -> Response:
        now = context.clock()
        found = await context.run_db(lambda store: lifecycle.list_silences(store))
        return render(request, "silences.html.j2", session=session, principal=principal,
                      items=[s.to_json(now) for s in found])  # fmt: skip

    async def add_silence(request: Request, session: Session, principal: Principal) -> Response:
        form = await form_fields(request)
        rule = str(form.get("rule") or "").strip() or None
        match: dict[str, str] = {}
        for key in ("user", "workspace", "source"):
            value = str(form.get(key) or "").strip()
            if value:
                match[key] = value
        reason = str(form.get("reason") or "").strip()[:2000]
        now = context.clock()
        try:
            until = parse_cli_date(str(form.get("until") or ""), tz)
        except ValueError as exc:
            raise ApiError(400, "bad parameter until", str(exc)) from None
        if until <= now or not reason or (rule is None and not match):
            raise ApiError(400, "a silence needs a rule or a field, a reason and an end in the future", None)
        await context.run_db(
            lambda store: lifecycle.add_silence(store, rule_id=rule, match=match, until=until, reason=reason,
                                                actor=principal.name, at=now)
        )  # fmt: skip
        return RedirectResponse("/silences", 303)

    async def expire(request: Request, session: Session, principal: Principal) -> Response:
        raw_id = request.path_params["silence_id"]
        now = context.clock()
        try:
            await context.run_db(
                lambda store: lifecycle.expire_silence(store, int(raw_id), actor=principal.name, at=now)
            )
        except (lifecycle.LifecycleError, ValueError) as exc:
            raise ApiError(409, str(exc), None) from None
        return RedirectResponse("/silences", 303)

    return [
        Route("/", page(dashboard), methods=["GET"]),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", page(logout, form=True), methods=["POST"]),
        Route("/events", page(events), methods=["GET"]),
        Route("/events/{source}/{event_id}", page(event), methods=["GET"]),
        Route("/alerts", page(alerts), methods=["GET"]),
        Route("/alerts/{alert_id}", page(alert), methods=["GET"]),
        Route(
            "/alerts/{alert_id}/acknowledge",
            page(triage("acknowledged"), form=True, respond=True),
            methods=["POST"],
        ),
        Route(
            "/alerts/{alert_id}/resolve", page(triage("resolved"), form=True, respond=True), methods=["POST"]
        ),
        Route("/silences", page(silences), methods=["GET"]),
        Route("/silences", page(add_silence, form=True, respond=True), methods=["POST"]),
        Route("/silences/{silence_id}/expire", page(expire, form=True, respond=True), methods=["POST"]),
        Mount("/static", StaticFiles(directory=static_dir()), name="static"),
    ]


async def form_fields(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (the console's forms are all urlencoded: no multipart parser needed).
    A field given twice keeps its first value."""
    if "application/x-www-form-urlencoded" not in request.headers.get("content-type", ""):
        return {}
    body = (await request.body()).decode("utf-8", "replace")
    fields: dict[str, str] = {}
    for key, value in parse_qsl(body, keep_blank_values=True, max_num_fields=50):
        fields.setdefault(key, value)
    return fields


def _local(target: str | None) -> str:
    """Only a path of this site after sign-in (``//evil.example`` is another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


async def dashboard_figures(
    context: WebContext, since: datetime, until: datetime, now: datetime
) -> dict[str, Any]:
    """Everything the dashboard shows for [since, until), to the millisecond.

    The event figures are index range counts (per type, per user, per time range), none of which reads a
    row. The three sets of counts are independent reads: they run side by side, each on a worker thread
    with its own connection (SQLite counts without holding the GIL), so the page costs the slowest of them.
    """
    calendar, calendar_origin = business_calendar(context.config, context.extra.get("calendars"))
    closed = calendar_closed_intervals(calendar, since, until)
    results: dict[str, Any] = {}

    async def run(name: str, work: Callable[[Store], Any]) -> None:
        results[name] = await context.run_db(work)

    async with anyio.create_task_group() as group:
        group.start_soon(run, "by_type", lambda store: search.counts_by(store, "type", since, until))
        group.start_soon(run, "by_user", lambda store: search.counts_by(store, "user", since, until))
        group.start_soon(run, "ranges", lambda store: time_counts(store, since, until, closed))
        group.start_soon(run, "state", lambda store: archive_state(store, since, until, now))
    by_type = {str(k): v for k, v in results["by_type"].items()}
    by_user: dict[str | None, int] = results["by_user"]
    per_day, off_hours = results["ranges"]
    total = sum(by_type.values())
    by_category = dict.fromkeys(CATEGORIES, 0)
    for event_type, count in by_type.items():
        by_category[category_of(event_type)] += count
    critical_types = {t.lower() for t in CRITICAL_TYPES}
    critical = sum(n for t, n in by_type.items() if t.lower() in critical_types)
    failed_logins = sum(n for t, n in by_type.items() if t.lower() == "login failed")
    database_changes = sum(n for t, n in by_type.items() if t in DATABASE_CHANGE_TYPES)
    users = sorted(by_user.items(), key=lambda item: (-item[1], item[0] or ""))[:15]
    biggest_day = max(per_day.values(), default=0)
    return {
        "total": total,
        "per_day": [
            (day, count, round(100 * count / biggest_day) if biggest_day else 0)
            for day, count in sorted(per_day.items())
        ],  # fmt: skip
        "by_category": by_category,
        "critical": critical,
        "failed_logins": failed_logins,
        "database_changes": database_changes,
        "off_hours": off_hours,
        "calendar": calendar_origin,
        "users": users,
        **results["state"],
    }


def time_counts(
    store: Store, since: datetime, until: datetime, closed: list[tuple[int, int]]
) -> tuple[dict[str, int], int]:
    """(events per UTC day of the period, in order, a day without events included, and the events in the
    ``closed`` runs) from one set of range counts: the period cut at every day boundary and every closing
    and opening time. A day without events is listed: on a security dashboard a quiet day is a fact to see
    (nobody worked, or nothing was polled), not a row to leave out."""
    start, end = search.epoch_ms(since), search.epoch_ms(until)
    day = start - start % search.DAY_MS + search.DAY_MS
    cuts = {start, end, *range(day, end, search.DAY_MS)}
    cuts.update(edge for run in closed for edge in run if start < edge < end)
    ordered = sorted(cuts)
    closed_starts = [low for low, _high in closed]
    per_day = {
        datetime.fromtimestamp(low // search.DAY_MS * search.DAY_SECONDS, tz=UTC).date().isoformat(): 0
        for low in ordered[:-1]
    }  # every day the period touches (MAX_PERIOD bounds their number)
    off_hours = 0
    for low, count in zip(ordered, search.counts_between(store, ordered), strict=False):
        if not count:
            continue
        name = datetime.fromtimestamp(low // search.DAY_MS * search.DAY_SECONDS, tz=UTC).date().isoformat()
        per_day[name] = per_day.get(name, 0) + count
        inside = bisect.bisect_right(closed_starts, low) - 1  # the last closed run starting at or before
        if inside >= 0 and low < closed[inside][1]:
            off_hours += count
    return per_day, off_hours


def archive_state(store: Store, since: datetime, until: datetime, now: datetime) -> dict[str, Any]:
    """The dashboard's figures that are not event counts: coverage, alerts, gaps, the chain."""
    coverage = []
    for cursor in store.cursors():
        newest = store.newest_event_time(cursor.source)
        coverage.append(
            {
                "source": cursor.source,
                "last_success_at": format_timestamp(cursor.last_success_at)
                if cursor.last_success_at
                else None,
                "lag_seconds": round((now - newest).total_seconds(), 1) if newest else None,
                "last_error_kind": cursor.error_kind,
            }
        )
    open_alerts = lifecycle.list_alerts(store, lifecycle.AlertQuery(("open",)), limit=10)
    alert_counts = lifecycle.alert_counts(store)
    gaps = store.gaps(since, until)
    head_seq, head_hash = store.head()
    last_verify = store.last_verify()
    return {
        "open_alerts": [alert_summary(a) for a in open_alerts],
        "alert_counts": alert_counts,
        "sources": coverage,
        "gaps": gaps,
        "chain_head": {"seq": head_seq, "hash": head_hash},
        "last_verify": last_verify.to_json() if last_verify is not None else None,
    }

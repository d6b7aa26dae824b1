"""The JSON API under /api/v1 (``Authorization: Bearer TOKEN``), documented at /api/v1/openapi.json.

Every parameter is checked here against ``PARAMETERS`` (the same table the OpenAPI document is written
from): an unknown or malformed one is a 400 that names it. Every request that reads or changes data is
logged with the name of the token that made it, never the token.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from monitor.events import format_timestamp
from monitor.report.figures import CATEGORIES, category_of
from monitor.status import status_data
from monitor.store import Store, lifecycle, search
from monitor.timeutil import parse_cli_date
from monitor.web.app import WebContext, json_error, json_response, throttled, wrong_token
from monitor.web.auth import Principal

log = logging.getLogger("monitor.web")

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
MAX_TEXT = 2000  # a note, a reason
DEFAULT_STATS_PERIOD = timedelta(days=7)
# Every bucket of the period is listed, the empty ones too (a chart shows zero, not a line across a gap):
# bounded so that a typo cannot ask for decades of hours. 400 days of hours (9,600) fit.
MAX_STATS_BUCKETS = 10_000


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: Any = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.detail = detail


def bad_parameter(name: str, message: str) -> ApiError:
    return ApiError(400, f"bad parameter {name}", {"parameter": name, "message": message})


@dataclass(frozen=True)
class Param:
    name: str
    description: str
    kind: str = "string"  # string | integer | datetime
    repeat: bool = False
    choices: tuple[str, ...] = ()


_SINCE = Param("since", "From this instant: YYYY-MM-DD (midnight, configured zone) or ISO 8601", "datetime")
_UNTIL = Param("until", "Before this instant (exclusive), same forms as since", "datetime")
_CURSOR = Param("cursor", "next_cursor of the previous page")
_LIMIT = Param("limit", f"Items per page, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT})", "integer")

PARAMETERS: dict[str, tuple[Param, ...]] = {
    "events": (
        _SINCE,
        _UNTIL,
        Param("source", "Only this source (as named in the config)"),
        Param("type", "Event type, exactly (repeat for several)", repeat=True),
        Param("user", "User email, exactly (repeat for several)", repeat=True),
        Param("workspace", "Workspace name, exactly"),
        Param("branch", "Branch label, exactly"),
        Param("q", "Text the message contains (case-insensitive for ASCII letters)"),
        _LIMIT,
        _CURSOR,
    ),
    "alerts": (
        Param("status", "open (default), acknowledged, resolved, silenced or all",
              choices=(*lifecycle.STATUSES, "all")),
        Param("severity", "Only this severity (repeat for several)", repeat=True,
              choices=("info", "low", "medium", "high", "critical")),
        Param("rule", "Only this rule id (repeat for several)", repeat=True),
        _SINCE,
        _UNTIL,
        _LIMIT,
        _CURSOR,
    ),
    "stats": (
        _SINCE,
        _UNTIL,
        Param("bucket", "hour or day (default), in UTC", choices=("hour", "day")),
        Param("group_by", "category (default), type, user or workspace",
              choices=("category", "type", "user", "workspace")),
        Param("source", "Only this source"),
    ),
    "silences": (
        Param("active", "true: only silences in force now (default false)", choices=("true", "false")),
    ),
    "dashboard": (_SINCE, _UNTIL),
    "none": (),
}  # fmt: skip


class Query:
    """A request's query string, checked against its endpoint's parameters."""

    def __init__(
        self, request: Request, endpoint: str, context: WebContext, *, drop_empty: bool = False
    ) -> None:
        self.context = context
        self.params = {p.name: p for p in PARAMETERS[endpoint]}
        self.values: dict[str, list[str]] = {}
        for name, value in request.query_params.multi_items():
            if drop_empty and not value:
                continue  # a console form's empty field: no filter
            param = self.params.get(name)
            if param is None:
                known = ", ".join(self.params) or "none"
                raise bad_parameter(name, f"unknown parameter (this endpoint takes: {known})")
            self.values.setdefault(name, []).append(value)
            if len(self.values[name]) > 1 and not param.repeat:
                raise bad_parameter(name, "given more than once")
            if param.choices and value not in param.choices:
                raise bad_parameter(name, f"must be one of {', '.join(param.choices)}")

    def text(self, name: str, default: str | None = None) -> str | None:
        values = self.values.get(name)
        if not values:
            return default
        if not values[0] or len(values[0]) > MAX_TEXT:
            raise bad_parameter(name, "must not be empty" if not values[0] else "is too long")
        return values[0]

    def texts(self, name: str) -> tuple[str, ...]:
        values = tuple(self.values.get(name, ()))
        if any(not v for v in values):
            raise bad_parameter(name, "must not be empty")
        return values

    def instant(self, name: str) -> datetime | None:
        value = self.text(name)
        if value is None:
            return None
        try:
            return parse_cli_date(value, self.context.config.tz)
        except ValueError as exc:
            raise bad_parameter(name, str(exc)) from None

    def limit(self) -> int:
        value = self.text("limit")
        if value is None:
            return DEFAULT_LIMIT
        if not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
            raise bad_parameter("limit", f"must be a whole number from 1 to {MAX_LIMIT}")
        return int(value)

    def period(self) -> tuple[datetime | None, datetime | None]:
        since, until = self.instant("since"), self.instant("until")
        if since is not None and until is not None and until <= since:
            raise bad_parameter("until", "must be after since")
        return since, until


def encode_cursor(*parts: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(text: str | None, shape: tuple[type, ...]) -> tuple[Any, ...] | None:
    if text is None:
        return None
    try:
        parts = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, binascii.Error):
        raise bad_parameter("cursor", "is not a cursor this API gave out") from None
    if (
        not isinstance(parts, list)
        or len(parts) != len(shape)
        or not all(isinstance(p, t) and not isinstance(p, bool) for p, t in zip(parts, shape, strict=True))
    ):
        raise bad_parameter("cursor", "is not a cursor this API gave out")
    return tuple(parts)


def event_item(row: tuple[Any, ...]) -> dict[str, Any]:
    """An API item from a row of ``search.search_events``."""
    return event_items([row])[0]


def event_items(rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """API items from rows of ``search.search_events``: a page of 1,000 holds a few dozen types, so each
    type's category is worked out once a page, not once a row (the walk of the archive builds millions)."""
    categories: dict[str, str] = {}
    items = []
    for row in rows:
        item = search.event_fields(row)
        category = categories.get(item["type"])
        if category is None:
            category = categories[item["type"]] = category_of(item["type"])
        item["category"] = category
        items.append(item)
    return items


def event_query(query: Query) -> search.EventQuery:
    since, until = query.period()
    return search.EventQuery(
        since=since,
        until=until,
        source=query.text("source"),
        types=query.texts("type"),
        users=query.texts("user"),
        workspace=query.text("workspace"),
        branch=query.text("branch"),
        q=query.text("q"),
    )


def alert_summary(alert: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "rule", "severity", "status", "title", "source", "event_time", "recorded_at", "silence_id")
    return {k: alert[k] for k in keys}


def bucket_starts(since: datetime, until: datetime, bucket: str) -> range:
    """The epoch-ms starts of the UTC buckets that [since, until) touches."""
    bucket_ms = search.HOUR_MS if bucket == "hour" else search.DAY_MS
    first = search.epoch_ms(since) // bucket_ms * bucket_ms
    last = search.epoch_ms(until - timedelta(microseconds=1)) // bucket_ms * bucket_ms
    return range(first, last + 1, bucket_ms)


def stats_body(
    store: Store, events: search.EventQuery, starts: range, bucket: str, group_by: str
) -> dict[str, Any]:
    """Events per bucket and group for charts: {series: [{start, counts}], totals, total}; ``starts`` are
    the buckets to list (``bucket_starts``), an empty one with no counts."""
    bucket_ms = starts.step
    column = "type" if group_by == "category" else group_by
    series: dict[int, dict[str, int]] = {}
    totals: dict[str, int] = dict.fromkeys(CATEGORIES, 0) if group_by == "category" else {}
    for start, value, count in search.event_buckets(store, events, bucket_ms=bucket_ms, group_by=column):
        key = category_of(value or "") if group_by == "category" else (value if value is not None else "")
        slot = series.setdefault(start, {})
        slot[key] = slot.get(key, 0) + count
        totals[key] = totals.get(key, 0) + count
    return {
        "bucket": bucket,
        "group_by": group_by,
        "total": sum(totals.values()),
        "totals": totals,
        "series": [
            {
                "start": format_timestamp(datetime.fromtimestamp(start / 1000, tz=_UTC)),
                "counts": series.get(start, {}),
            }
            for start in starts
        ],
    }


from datetime import UTC as _UTC  # noqa: E402 - kept next to its one use

Handler = Callable[[Request, Principal], Awaitable[Response]]


def api_routes(context: WebContext) -> list[BaseRoute]:
    def endpoint(handler: Handler, *, respond: bool = False) -> Callable[[Request], Awaitable[Response]]:
        """Authenticate, run, turn ApiError into a JSON error, and log who asked."""

        async def run(request: Request) -> Response:
            retry_after = throttled(context, request, "api")
            if retry_after is not None:
                response = json_error(
                    429,
                    "too many wrong tokens from this address",
                    {"retry_after_s": retry_after},
                )
                response.headers["retry-after"] = str(retry_after)
                return response
            principal, presented = authenticate(request)
            if principal is None:
                if presented:
                    wrong_token(context, request, "api")
                response = json_error(
                    401,
                    "unauthorized" if context.tokens.enabled else "the API is off: server.tokens is empty",
                    "send Authorization: Bearer TOKEN (a token of server.tokens)",
                )
                response.headers["www-authenticate"] = 'Bearer realm="audit-monitor"'
                log.info(
                    "api request refused",
                    extra={"method": request.method, "path": request.url.path, "status": 401},
                )
                return response
            try:
                if respond and not principal.may_respond:
                    raise ApiError(403, "forbidden", f"token {principal.name} is a viewer: responders only")
                response = await handler(request, principal)
            except ApiError as exc:
                response = json_error(exc.status, exc.error, exc.detail)
            log.info(
                "api request",
                extra={
                    "actor": principal.name,
                    "method": request.method,
                    "path": request.url.path,
                    "status": response.status_code,
                },
            )
            return response

        return run

    def authenticate(request: Request) -> tuple[Principal | None, bool]:
        """(the token's holder or None, whether a token was presented at all: only that is a guess)."""
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None, False
        return context.tokens.authenticate(token.strip()), True

    async def list_events(request: Request, principal: Principal) -> Response:
        query = Query(request, "events", context)
        events, limit = event_query(query), query.limit()
        after = decode_cursor(query.text("cursor"), (int, int))

        def work(store: Store) -> list[tuple[Any, ...]]:
            # One more than asked: whether a next page exists, without a count.
            return search.search_events(store, events, limit=limit + 1, after=after)  # type: ignore[arg-type]

        rows = await context.run_db(work)
        page = rows[:limit]
        more = len(rows) > limit
        next_cursor = encode_cursor(page[-1][1], page[-1][0]) if more else None  # (created_ms, seq)
        return json_response({"items": event_items(page), "next_cursor": next_cursor})

    async def show_event(request: Request, principal: Principal) -> Response:
        Query(request, "none", context)
        source = request.path_params["source"]
        raw_id = request.path_params["event_id"]
        if not raw_id.lstrip("-").isdigit():
            raise bad_parameter("id", "must be a whole number")
        event = await context.run_db(lambda store: search.get_event(store, source, int(raw_id)))
        if event is None:
            raise ApiError(404, "no such event", {"source": source, "id": int(raw_id)})
        event["category"] = category_of(event["type"])
        return json_response(event)

    async def list_alerts(request: Request, principal: Principal) -> Response:
        query = Query(request, "alerts", context)
        status = query.text("status", "open")
        since, until = query.period()
        wanted = lifecycle.AlertQuery(
            statuses=() if status == "all" else (str(status),),
            severities=query.texts("severity"),
            rules=query.texts("rule"),
            since=since,
            until=until,
        )
        limit = query.limit()
        after = decode_cursor(query.text("cursor"), (str, str))
        rows = await context.run_db(
            lambda store: lifecycle.list_alerts(store, wanted, limit=limit + 1, after=after)  # type: ignore[arg-type]
        )
        page = rows[:limit]
        more = len(rows) > limit
        next_cursor = encode_cursor(page[-1]["event_time"], page[-1]["id"]) if more else None
        return json_response({"items": [alert_summary(r) for r in page], "next_cursor": next_cursor})

    async def show_alert(request: Request, principal: Principal) -> Response:
        Query(request, "none", context)
        alert_id = request.path_params["alert_id"]
        alert = await context.run_db(lambda store: lifecycle.get_alert(store, alert_id))
        if alert is None:
            raise ApiError(404, "no such alert", {"id": alert_id})
        return json_response(alert)

    def change_status(to_status: str) -> Handler:
        async def change(request: Request, principal: Principal) -> Response:
            Query(request, "none", context)
            body = await json_body(request, {"note", "disposition"})
            note = body_text(body, "note", required=False)
            disposition = body.get("disposition")
            if disposition is not None and disposition not in lifecycle.DISPOSITIONS:
                raise bad_parameter("disposition", f"must be one of {', '.join(lifecycle.DISPOSITIONS)}")
            alert_id = request.path_params["alert_id"]
            now = context.clock()

            def work(store: Store) -> dict[str, Any] | None:
                lifecycle.transition(
                    store,
                    alert_id,
                    to_status,
                    actor=principal.name,
                    at=now,
                    note=note,
                    disposition=disposition,
                )
                return lifecycle.get_alert(store, alert_id)

            try:
                alert = await context.run_db(work)
            except lifecycle.LifecycleError as exc:
                status = 404 if exc.kind == "not_found" else 409
                raise ApiError(
                    status, "no such alert" if status == 404 else "invalid transition", str(exc)
                ) from None
            log.info(
                f"alert {to_status}",
                extra={"alert_id": alert_id, "actor": principal.name, "disposition": disposition},
            )
            return json_response(alert)

        return change

    async def list_silences(request: Request, principal: Principal) -> Response:
        query = Query(request, "silences", context)
        now = context.clock()
        active = query.text("active", "false") == "true"
        silences = await context.run_db(
            lambda store: lifecycle.list_silences(store, active_at=now if active else None)
        )
        return json_response({"items": [s.to_json(now) for s in silences]})

    async def create_silence(request: Request, principal: Principal) -> Response:
        Query(request, "none", context)
        body = await json_body(request, {"rule", "match", "until", "reason"})
        rule = body.get("rule")
        if rule is not None and (not isinstance(rule, str) or not rule):
            raise bad_parameter("rule", "must be a rule id or null")
        match = body.get("match", {})
        if not isinstance(match, dict) or not all(
            isinstance(k, str) and k and isinstance(v, str) for k, v in match.items()
        ):
            raise bad_parameter("match", "must be an object of field names to text values")
        if rule is None and not match:
            raise bad_parameter("match", "a silence needs a rule or at least one field to match")
        reason = body_text(body, "reason", required=True)
        until_text = body_text(body, "until", required=True)
        now = context.clock()
        try:
            until = parse_cli_date(str(until_text), context.config.tz)
        except ValueError as exc:
            raise bad_parameter("until", str(exc)) from None
        if until <= now:
            raise bad_parameter("until", "must be in the future")
        silence = await context.run_db(
            lambda store: lifecycle.add_silence(
                store,
                rule_id=rule,
                match=match,
                until=until,
                reason=str(reason),
                actor=principal.name,
                at=now,
            )
        )
        log.info("silence added", extra={"silence_id": silence.id, "actor": principal.name})
        return json_response(silence.to_json(now), 201)

    async def expire_silence(request: Request, principal: Principal) -> Response:
        Query(request, "none", context)
        raw_id = request.path_params["silence_id"]
        if not raw_id.isdigit():
            raise bad_parameter("id", "must be a whole number")
        now = context.clock()
        try:
            silence = await context.run_db(
                lambda store: lifecycle.expire_silence(store, int(raw_id), actor=principal.name, at=now)
            )
        except lifecycle.LifecycleError as exc:
            status = 404 if exc.kind == "not_found" else 409
            raise ApiError(
                status, "no such silence" if status == 404 else "invalid transition", str(exc)
            ) from None
        log.info("silence expired", extra={"silence_id": silence.id, "actor": principal.name})
        return json_response(silence.to_json(now))

    async def stats(request: Request, principal: Principal) -> Response:
        query = Query(request, "stats", context)
        since, until = query.period()
        until = until or context.clock()
        since = since or until - DEFAULT_STATS_PERIOD
        if until <= since:
            raise bad_parameter("until", "must be after since")
        events = search.EventQuery(since=since, until=until, source=query.text("source"))
        bucket, group_by = str(query.text("bucket", "day")), str(query.text("group_by", "category"))
        starts = bucket_starts(since, until, bucket)
        if len(starts) > MAX_STATS_BUCKETS:
            raise bad_parameter(
                "bucket",
                f"the period holds {len(starts)} {'hourly' if bucket == 'hour' else 'daily'} buckets, "
                f"at most {MAX_STATS_BUCKETS}: ask for a shorter period or bucket=day",
            )
        body = await context.run_db(lambda store: stats_body(store, events, starts, bucket, group_by))
        return json_response({"since": format_timestamp(since), "until": format_timestamp(until), **body})

    async def status(request: Request, principal: Principal) -> Response:
        Query(request, "none", context)
        now = context.clock()
        return json_response(await context.run_db(lambda store: status_data(store, context.config, now)))

    async def openapi(request: Request) -> Response:
        from monitor.web.openapi import openapi_document

        return json_response(openapi_document())

    async def unknown(request: Request) -> Response:
        return json_error(404, "not found", {"path": request.url.path})

    return [
        Route("/api/v1/openapi.json", openapi, methods=["GET"]),
        Route("/api/v1/events", endpoint(list_events), methods=["GET"]),
        Route("/api/v1/events/{source}/{event_id}", endpoint(show_event), methods=["GET"]),
        Route("/api/v1/alerts", endpoint(list_alerts), methods=["GET"]),
        Route("/api/v1/alerts/{alert_id}", endpoint(show_alert), methods=["GET"]),
        Route(
            "/api/v1/alerts/{alert_id}/acknowledge",
            endpoint(change_status("acknowledged"), respond=True),
            methods=["POST"],
        ),
        Route(
            "/api/v1/alerts/{alert_id}/resolve",
            endpoint(change_status("resolved"), respond=True),
            methods=["POST"],
        ),
        Route("/api/v1/silences", endpoint(list_silences), methods=["GET"]),
        Route("/api/v1/silences", endpoint(create_silence, respond=True), methods=["POST"]),
        Route("/api/v1/silences/{silence_id}", endpoint(expire_silence, respond=True), methods=["DELETE"]),
        Route("/api/v1/stats", endpoint(stats), methods=["GET"]),
        Route("/api/v1/status", endpoint(status), methods=["GET"]),
    ]


async def json_body(request: Request, allowed: set[str]) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    if "json" not in request.headers.get("content-type", ""):
        raise ApiError(415, "unsupported media type", "send Content-Type: application/json")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "bad body", f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad body", "must be a JSON object")
    for key in body:
        if key not in allowed:
            raise bad_parameter(key, f"unknown field (allowed: {', '.join(sorted(allowed))})")
    return body


def body_text(body: dict[str, Any], name: str, *, required: bool) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise bad_parameter(name, "is required")
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT or (required and not value.strip()):
        raise bad_parameter(name, f"must be text of 1 to {MAX_TEXT} characters")
    return value

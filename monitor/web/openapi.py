"""/api/v1/openapi.json: the API described for Grafana, Retool, WeWeb and code generators.

Query parameters come from ``monitor.web.api.PARAMETERS``, the table requests are checked against, so the
document cannot drift from what the API accepts.
"""

from __future__ import annotations

import functools
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from monitor.store.lifecycle import DISPOSITIONS


def _params(endpoint: str) -> list[dict[str, Any]]:
    from monitor.web.api import PARAMETERS

    out = []
    for p in PARAMETERS[endpoint]:
        schema: dict[str, Any] = {"type": "integer"} if p.kind == "integer" else {"type": "string"}
        if p.choices:
            schema["enum"] = list(p.choices)
        if p.repeat:
            schema = {"type": "array", "items": schema}
        out.append(
            {
                "name": p.name,
                "in": "query",
                "required": False,
                "description": p.description,
                "schema": schema,
                **({"style": "form", "explode": True} if p.repeat else {}),
            }
        )
    return out


def _path(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


def _json(ref: str, description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": ref}}}}


_ERRORS = {
    "400": _json("#/components/schemas/Error", "A bad parameter (named in detail.parameter)"),
    "401": _json("#/components/schemas/Error", "No token, or not a token of server.tokens"),
    "429": _json(
        "#/components/schemas/Error",
        "Too many wrong tokens from this address: try again after Retry-After seconds",
    ),
}
_WRITE_ERRORS = {
    **_ERRORS,
    "403": _json("#/components/schemas/Error", "A viewer's token: responders only"),
    "404": _json("#/components/schemas/Error", "Unknown id"),
    "409": _json("#/components/schemas/Error", "Not possible in the current state"),
}

_EVENT = {
    "type": "object",
    "properties": {
        "source": {"type": "string"},
        "id": {"type": "integer"},
        "created_at": {"type": "string", "format": "date-time"},
        "type": {"type": "string"},
        "msg": {"type": "string"},
        "user": {"type": ["string", "null"]},
        "workspace": {"type": ["string", "null"]},
        "branch": {"type": ["string", "null"]},
        "category": {"type": "string"},
    },
}


@functools.cache
def openapi_document() -> dict[str, Any]:
    try:
        release = version("xano-audit-monitor")
    except PackageNotFoundError:
        release = "0"
    transition_body = {
        "required": False,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "note": {"type": "string", "maxLength": 2000},
                        "disposition": {"type": "string", "enum": list(DISPOSITIONS)},
                    },
                }
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "audit-monitor API",
            "version": release,
            "description": "The Xano audit-log archive, alerts and their triage. Times are ISO 8601 UTC. "
            "Pages: pass next_cursor back as cursor until it is null.",
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/events": {
                "get": {
                    "summary": "Search archived events, newest first",
                    "parameters": _params("events"),
                    "responses": {"200": _json("#/components/schemas/EventPage"), **_ERRORS},
                }
            },
            "/api/v1/events/{source}/{id}": {
                "get": {
                    "summary": "One event with its raw entry and its chain hash",
                    "parameters": [_path("source", "Source name"), _path("id", "Event id")],
                    "responses": {"200": {"description": "The event"}, **_ERRORS},
                }
            },
            "/api/v1/alerts": {
                "get": {
                    "summary": "Alerts, newest first",
                    "parameters": _params("alerts"),
                    "responses": {"200": {"description": "{items, next_cursor}"}, **_ERRORS},
                }
            },
            "/api/v1/alerts/{id}": {
                "get": {
                    "summary": "One alert with its delivery per channel and its history",
                    "parameters": [_path("id", "Alert id")],
                    "responses": {"200": {"description": "The alert"}, **_ERRORS},
                }
            },
            "/api/v1/alerts/{id}/acknowledge": {
                "post": {
                    "summary": "open -> acknowledged (responders)",
                    "parameters": [_path("id", "Alert id")],
                    "requestBody": transition_body,
                    "responses": {"200": {"description": "The alert"}, **_WRITE_ERRORS},
                }
            },
            "/api/v1/alerts/{id}/resolve": {
                "post": {
                    "summary": "open or acknowledged -> resolved (responders)",
                    "parameters": [_path("id", "Alert id")],
                    "requestBody": transition_body,
                    "responses": {"200": {"description": "The alert"}, **_WRITE_ERRORS},
                }
            },
            "/api/v1/silences": {
                "get": {
                    "summary": "Silences, newest first",
                    "parameters": _params("silences"),
                    "responses": {"200": {"description": "{items}"}, **_ERRORS},
                },
                "post": {
                    "summary": "Silence alerts of a rule and/or matching fields until a time (responders)",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["until", "reason"],
                                    "properties": {
                                        "rule": {"type": ["string", "null"]},
                                        "match": {
                                            "type": "object",
                                            "additionalProperties": {"type": "string"},
                                        },
                                        "until": {"type": "string", "format": "date-time"},
                                        "reason": {"type": "string"},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {"201": {"description": "The silence"}, **_WRITE_ERRORS},
                },
            },
            "/api/v1/silences/{id}": {
                "delete": {
                    "summary": "Expire a silence now (responders)",
                    "parameters": [_path("id", "Silence id")],
                    "responses": {"200": {"description": "The silence"}, **_WRITE_ERRORS},
                }
            },
            "/api/v1/stats": {
                "get": {
                    "summary": "Events per hour or day, grouped, for charts (default: the last 7 days)",
                    "parameters": _params("stats"),
                    "responses": {
                        "200": {"description": "{since, until, total, totals, series}, empty buckets too"},
                        **_ERRORS,
                    },
                }
            },
            "/api/v1/status": {
                "get": {
                    "summary": "What `audit-monitor status --json` prints",
                    "responses": {"200": {"description": "Status"}, **_ERRORS},
                }
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}, "detail": {}},
                },
                "Event": _EVENT,
                "EventPage": {
                    "type": "object",
                    "properties": {
                        "items": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
                        "next_cursor": {"type": ["string", "null"]},
                    },
                },
            },
        },
    }

"""Read queries of the JSON API and the console: event search with keyset pages, one event, chart figures.

Pages are keyset pages over (created_ms, seq), newest first. seq is unique and never reused, and a row's
created_ms never changes, so the order is total and stable: walking every page returns each matching event
exactly once, however many events are archived meanwhile (they land before the walk or after its position,
never twice). created_ms is indexed alone and behind user_email and type, and each index ends with the rowid
(seq), so a filtered page is a seek in walk order, not a sort of the matches.

SQL here is portable (named parameters, no SQLite-only functions), so a PostgreSQL backend can share it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from monitor.events import format_timestamp

if TYPE_CHECKING:
    from monitor.store import Store

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
DAY_SECONDS = 86_400


@dataclass(frozen=True)
class EventQuery:
    since: datetime | None = None
    until: datetime | None = None  # exclusive
    source: str | None = None
    types: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    workspace: str | None = None
    branch: str | None = None
    q: str | None = None  # a substring of msg, case-insensitive for ASCII letters


def _in_list(column: str, name: str, values: tuple[str, ...], params: dict[str, Any]) -> str:
    marks = []
    for number, value in enumerate(values):
        params[f"{name}{number}"] = value
        marks.append(f":{name}{number}")
    return f"{column} IN ({', '.join(marks)})"


def _like_pattern(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def epoch_ms(moment: datetime) -> int:
    """Epoch milliseconds, floored (as created_ms is stored), exactly: no float rounding."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _where(query: EventQuery, params: dict[str, Any]) -> list[str]:
    clauses: list[str] = []
    # created_ms (indexed, the millisecond) bounds the range so the database seeks; created_at (text, the
    # microsecond, one fixed-width UTC form) keeps the bounds exact, as in Store.iter_events.
    # A bound on a whole millisecond (a date, an instant to the ms) is exact on created_ms alone, so the
    # query can be answered from an index without reading the rows.
    if query.since is not None:
        params["since_ms"] = epoch_ms(query.since)
        if query.since.microsecond % 1000:
            clauses.append("created_ms >= :since_ms AND created_at >= :since_at")
            params["since_at"] = format_timestamp(query.since)
        else:
            clauses.append("created_ms >= :since_ms")
    if query.until is not None:
        params["until_ms"] = epoch_ms(query.until)
        if query.until.microsecond % 1000:
            clauses.append("created_ms <= :until_ms AND created_at < :until_at")
            params["until_at"] = format_timestamp(query.until)
        else:
            clauses.append("created_ms < :until_ms")
    if query.source is not None:
        clauses.append("source = :source")
        params["source"] = query.source
    if query.types:
        clauses.append(_in_list("type", "type", query.types, params))
    if query.users:
        clauses.append(_in_list("user_email", "user", query.users, params))
    if query.workspace is not None:
        clauses.append("workspace_name = :workspace")
        params["workspace"] = query.workspace
    if query.branch is not None:
        clauses.append("branch_label = :branch")
        params["branch"] = query.branch
    if query.q:
        clauses.append("lower(msg) LIKE :q ESCAPE '\\'")
        params["q"] = _like_pattern(query.q)
    return clauses


_EVENT_COLUMNS = (
    "seq, created_ms, source, event_id, created_at, type, msg, user_email, workspace_name, branch_label"
)


def search_events(
    store: Store, query: EventQuery, *, limit: int, after: tuple[int, int] | None = None
) -> list[tuple[Any, ...]]:
    """Up to ``limit`` matching events, newest first; ``after`` is the (created_ms, seq) a page ended on.

    Rows of (seq, created_ms, source, id, created_at, type, msg, user, workspace, branch): tuples, not
    dicts, since walking the archive through the API builds a million of them.
    """
    params: dict[str, Any] = {"limit": limit}
    clauses = _where(query, params)
    if after is not None:
        # created_ms <= first, so the condition is one range of the index whatever the planner makes of OR.
        clauses.append("created_ms <= :after_ms AND (created_ms < :after_ms OR seq < :after_seq)")
        params["after_ms"], params["after_seq"] = after
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    return store.conn.execute(
        f"SELECT {_EVENT_COLUMNS} FROM events {where} "  # noqa: S608 - fixed clauses; values are parameters
        "ORDER BY created_ms DESC, seq DESC LIMIT :limit",
        params,
    ).fetchall()


def count_events(store: Store, query: EventQuery) -> int:
    params: dict[str, Any] = {}
    clauses = _where(query, params)
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    return int(store.conn.execute(f"SELECT count(*) FROM events {where}", params).fetchone()[0])  # noqa: S608


def get_event(store: Store, source: str, event_id: int) -> dict[str, Any] | None:
    """One archived event with its raw entry, its place in the chain and its hash."""
    row = store.conn.execute(
        f"SELECT {_EVENT_COLUMNS}, raw, archived_at, hash FROM events "  # noqa: S608
        "WHERE source = :source AND event_id = :id",
        {"source": source, "id": event_id},
    ).fetchone()
    if row is None:
        return None
    *columns, raw, archived_at, hash_ = row
    return {
        **event_fields(columns),
        "raw": json.loads(raw),
        "archived_at": archived_at,
        "chain": {"seq": columns[0], "hash": hash_},
    }


def event_fields(row: Sequence[Any]) -> dict[str, Any]:
    """An event's fields as the API and the console name them, from a row of ``_EVENT_COLUMNS`` (what
    ``search_events`` returns)."""
    _seq, _ms, source, event_id, created_at, type_, msg, user, workspace, branch = row
    return {
        "source": source,
        "id": event_id,
        "created_at": created_at,
        "type": type_,
        "msg": msg,
        "user": user,
        "workspace": workspace,
        "branch": branch,
    }


_GROUP_COLUMNS = {"type": "type", "user": "user_email", "workspace": "workspace_name", "source": "source"}


def event_buckets(
    store: Store, query: EventQuery, *, bucket_ms: int, group_by: str
) -> list[tuple[int, str | None, int]]:
    """(bucket start in epoch ms, group value, events) for charts. Buckets are UTC hours or days.

    ``group_by`` is a column name of ``_GROUP_COLUMNS`` (category is derived from type by the caller).
    """
    column = _GROUP_COLUMNS[group_by]
    params: dict[str, Any] = {"bucket": bucket_ms}
    clauses = _where(query, params)
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    rows = store.conn.execute(
        f"SELECT (created_ms / :bucket) * :bucket AS b, {column}, count(*) FROM events {where} "  # noqa: S608
        # The groups of a bucket in one order on both databases (a missing value first, as SQLite sorts it).
        f"GROUP BY b, {column} ORDER BY b, {column} NULLS FIRST",
        params,
    )
    return [(int(b), value, int(count)) for b, value, count in rows]


def event_groups(
    store: Store, query: EventQuery, *, group_by: str, limit: int | None = None
) -> list[tuple[str | None, int]]:
    """(group value, events), most events first (ties by value)."""
    column = _GROUP_COLUMNS[group_by]
    params: dict[str, Any] = {}
    clauses = _where(query, params)
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    sql = (
        f"SELECT {column}, count(*) AS n FROM events {where} "  # noqa: S608
        f"GROUP BY {column} ORDER BY n DESC, {column} NULLS FIRST"
    )
    if limit is not None:
        sql += " LIMIT :limit"
        params["limit"] = limit
    return [(value, int(count)) for value, count in store.conn.execute(sql, params)]


def counts_between(store: Store, cuts: list[int]) -> list[int]:
    """Events created in each [cuts[i], cuts[i + 1]) (epoch ms, ascending): one range count of the
    created_ms index each, none of which reads a row. The dashboard cuts its period at day boundaries and
    at the calendar's closing and opening times, so one pass gives both the days and the off-hours."""
    return [
        int(
            store.conn.execute(
                "SELECT count(*) FROM events WHERE created_ms >= ? AND created_ms < ?", (low, high)
            ).fetchone()[0]
        )
        for low, high in zip(cuts, cuts[1:], strict=False)
    ]


_COUNT_COLUMNS = {"type": "type", "user": "user_email"}


def counts_by(store: Store, group_by: str, since: datetime, until: datetime) -> dict[str | None, int]:
    """Events per type or per user created in [since, until), at millisecond precision.

    Each distinct value is found by a seek of the (value, created_ms) index (a loose index scan) and
    counted as one range of it: a few dozen seeks and range counts instead of a GROUP BY over every row.
    """
    column = _COUNT_COLUMNS[group_by]
    bounds = {"since": epoch_ms(since), "until": epoch_ms(until)}
    values = [
        row[0]
        for row in store.conn.execute(
            f"WITH RECURSIVE v(x) AS (SELECT min({column}) FROM events UNION ALL "  # noqa: S608 - a known column
            f"SELECT (SELECT min({column}) FROM events WHERE {column} > v.x) FROM v WHERE v.x IS NOT NULL) "
            "SELECT x FROM v WHERE x IS NOT NULL"
        )
    ]
    counts: dict[str | None, int] = {}
    for value in values:
        count = store.conn.execute(
            f"SELECT count(*) FROM events WHERE {column} = :value "  # noqa: S608 - a known column
            "AND created_ms >= :since AND created_ms < :until",
            {"value": value, **bounds},
        ).fetchone()[0]
        if count:
            counts[value] = int(count)
    missing = store.conn.execute(
        f"SELECT count(*) FROM events WHERE {column} IS NULL "  # noqa: S608 - a known column
        "AND created_ms >= :since AND created_ms < :until",
        bounds,
    ).fetchone()[0]
    if missing:
        counts[None] = int(missing)
    return counts

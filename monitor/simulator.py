"""A Xano-compatible audit-log API on 127.0.0.1, with realistic traffic and planted incidents.

Used by ``audit-monitor demo``, ``audit-monitor simulate``, the tests and the benchmarks. It speaks real
HTTP (stdlib ``ThreadingHTTPServer`` in a daemon thread) and needs no network beyond the address it is
asked to bind (127.0.0.1 by default).

Endpoints (all under ``/api:meta``, header ``Authorization: Bearer <token>``)::

    GET  /workspace/{id}/audit_log          ?page=1&per_page=50&include_data=true
    POST /workspace/{id}/audit_log/search   {"page", "per_page", "include_data", "sort", "search"}
    GET  /audit_log                         instance-wide
    POST /audit_log/search                  instance-wide

- ``GET`` always answers newest first (id descending). ``POST .../search`` sorts by ``{"id": "asc"|"desc"}``
  or ``{"created_at": "asc"|"desc"}`` (default: id descending). ``search`` filters are accepted and ignored,
  as a client must never rely on them.
- A ``search`` filter on ``created_at`` (``[{"created_at|>=": ms}, {"created_at|<": ms}]``, epoch
  milliseconds; ``>`` and ``<=`` too) is a count query, as the report's reconciliation sends: it is answered
  from the ground truth (``itemsTotal`` of the range, the newest entries of the range by id), counted in
  :attr:`Simulator.count_queries` and never in :attr:`Simulator.request_count`, and never receives an
  injected fault, so it cannot disturb a test's fault queue. ``range_filters=False`` makes the simulator
  ignore such filters like any other (a server that does not apply them).
- ``page`` is 1-based; ``per_page`` (default 50) is capped at ``max_per_page`` and the envelope's ``perPage``
  says the value really used. Without ``include_data`` every entry's ``data`` is null.
- The envelope is Xano's: ``items, itemsReceived, curPage, nextPage (null at the end), prevPage, offset,
  perPage, itemsTotal, pageTotal``; with ``envelope="guide"`` (``simulate --envelope guide``) it is the
  shape Xano's guide shows, ``{"items": [...], "itemsTotal": N}``, without any paging keys.
- A missing or wrong token answers 401 ``{"code": "ERROR_CODE_UNAUTHORIZED", "message": "Invalid token."}``;
  an unknown workspace id answers 404; bad parameters answer 400.

Traffic (deterministic for a seed, a ``history_start`` and a clock): a team of seven people across the
company's two mail domains plus a service account, working in the workspace ``workspace_id``
("shop-backend", with branches); weekday business hours in Europe/Berlin carry most of the work, the
service account runs queries around the clock. All generated traffic is that workspace's, so its endpoints
and the instance-wide ones serve the same events. Workspace ``workspace_id + 1`` ("internal-tools") exists
but holds only events added to it; any other id answers 404. History runs from
``history_start`` (default: 35 days before the clock) to the clock's time at construction; as the clock
advances, the same daily pattern continues (generated lazily as requests arrive), plus
``live_events_per_minute`` extra ordinary events per minute of clock time. An event is visible once the clock
has reached its ``created_at``. ``created_at`` is served in a mix of formats: PostgreSQL text
(``2026-03-04 22:41:09.381204+00``), epoch milliseconds (int), ISO 8601 with ``Z`` and with a ``+01:00``
offset.
Ids increase with gaps, as ids shared by several workspaces do.

With ``incidents=True`` the history holds planted incidents of every kind in :data:`INCIDENT_KINDS`, the
latest in the last few days before the clock; :attr:`Simulator.incidents` lists them with their event ids.

Faults for tests: :meth:`Simulator.inject_status`, :meth:`Simulator.inject_truncated` and
:meth:`Simulator.inject_non_json` queue faults that the next authorised audit-log requests receive, in the
order they were queued.

Control endpoint, for a simulator in another process (loopback clients only, same Bearer token)::

    POST /_sim/control
    {"inject_status": {"status": 503, "count": 3, "retry_after": "2"}}
    {"inject_truncated": 1}            {"inject_non_json": 2}
    {"add_event": {"type": "Delete Table", "user": {"id": 3, "email": "a@corp.io"},
                   "created_at": "2026-03-04T10:00:00Z", "msg": "...", "data": {...}, "hidden": false}}
    {"reveal": 123456}
    {"describe": true}                 also answer the planted incidents

Several keys may be sent in one body; they are applied in the order above. The answer is
``{"ok": true, "event_ids": [...], "request_count": N}`` (plus ``"incidents"`` with ``describe``).
"""

from __future__ import annotations

import bisect
import copy
import heapq
import hmac
import ipaddress
import json
import math
import random
import re
import signal
import socket
import socketserver
import threading
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import accumulate
from time import monotonic
from types import EllipsisType, FrameType
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

from monitor.events import parse_timestamp

__all__ = ["INCIDENT_KINDS", "Incident", "Simulator", "serve_forever"]

BERLIN = ZoneInfo("Europe/Berlin")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = 1_000_000  # the simulator keeps time as integer microseconds since the epoch
_MINUTE = 60 * _SECOND
_HOUR = 60 * _MINUTE
_DAY = 24 * _HOUR
_FIRST_ID = 50_000

INCIDENT_KINDS = (
    "failed_login_burst",
    "ip_spray",
    "bulk_delete",
    "off_hours_delete",
    "workspace_destruction",
    "security_policy",
    "rbac_change",
    "first_admin_action",
    "foreign_user",
    "token_events",
    "live_branch",
    "env_var_change",
    "user_admin",
    "table_delete",
)


@dataclass(frozen=True)
class Incident:
    """A planted incident: what a rule pack should notice, and which events make it up."""

    kind: str
    event_ids: tuple[int, ...]
    description: str
    start: datetime


# --- the simulated company -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Person:
    id: int
    email: str
    office_ip: str
    home_ip: str


_TEAM = (
    _Person(11, "anna.schmidt@northwind.io", "203.0.113.11", "192.0.2.41"),  # team lead, the usual admin
    _Person(12, "jonas.weber@northwind.io", "203.0.113.12", "192.0.2.42"),  # never an admin action in history
    _Person(13, "lea.fischer@northwind.io", "203.0.113.13", "192.0.2.43"),
    _Person(14, "max.bauer@northwind-labs.de", "203.0.113.14", "192.0.2.44"),
    _Person(15, "sofia.klein@northwind-labs.de", "203.0.113.15", "192.0.2.45"),
    _Person(16, "tim.wagner@northwind.io", "203.0.113.16", "192.0.2.46"),
    _Person(17, "mia.hoffmann@northwind-labs.de", "203.0.113.17", "192.0.2.47"),
)
_SERVICE = _Person(18, "api-runner@northwind.io", "198.51.100.10", "198.51.100.10")
_ANNA, _JONAS, _LEA, _MAX, _SOFIA, _TIM, _MIA = _TEAM
# Who does the ordinary work (16 slots, so 4 bits of an event's variant pick one); the lead does less.
_WORKER_SLOTS = (0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 1, 2, 3)

_WORKSPACE_NAMES = ("shop-backend", "internal-tools", "sandbox")
_BRANCHES = (  # per workspace index: (id, label); the first is the live branch
    ((70, "v1"), (71, "dev"), (72, "feature-checkout")),
    ((80, "v1"), (81, "staging")),
    ((90, "v1"),),
)
_TABLES = ((311, "customers"), (312, "orders"), (313, "products"), (314, "invoices"), (315, "inventory"))
_FUNCTIONS = ((401, "calculate_tax"), (402, "send_invoice"), (403, "sync_inventory"), (404, "validate_cart"))
_API_GROUPS = ((501, "public"), (502, "admin"), (503, "webhooks"), (504, "mobile"))
_QUERIES = (
    (601, "GET /orders"),
    (602, "POST /checkout"),
    (603, "GET /products/{id}"),
    (604, "PATCH /customers/{id}"),
    (605, "POST /webhooks/stripe"),
)
_TASKS = ((701, "nightly_export"), (702, "cleanup_sessions"))
_FIELDS = ("status", "discount_code", "vat_id", "shipping_method", "notes")
_AGENTS = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
)

# What people do in business hours (weekdays 08:00-19:00 Berlin), and outside them (nothing destructive).
_BUSINESS_WEIGHTS = {
    "Update Function": 120,
    "Create Function": 8,
    "Update API Group": 50,
    "Create Record": 110,
    "Update Record": 120,
    "Delete Record": 12,
    "Login": 70,
    "Run Query": 110,
    "Update Query": 70,
    "Create Query": 8,
    "Read Workspace": 30,
    "Update Table": 15,
    "Add Field": 15,
    "Update Field": 8,
    "Update Task": 15,
    "Create Task": 3,
    "Create Branch": 2,
    "Merge Branch": 2,
    "Delete Branch": 1,
    "Login Failed": 3,
}
_AFTER_HOURS_WEIGHTS = {
    "Login": 30,
    "Update Function": 25,
    "Run Query": 25,
    "Update Record": 10,
    "Read Workspace": 10,
}


def _lookup_table(weights: dict[str, int], size: int = 1024) -> tuple[str, ...]:
    """Expand weights into a table indexed by ``size`` equally likely values (largest-remainder rounding)."""
    total = sum(weights.values())
    exact = {name: weight * size / total for name, weight in weights.items()}
    counts = {name: max(1, int(value)) for name, value in exact.items()}
    by_remainder = sorted(weights, key=lambda name: exact[name] - int(exact[name]), reverse=True)
    index = 0
    while sum(counts.values()) < size:
        counts[by_remainder[index % len(by_remainder)]] += 1
        index += 1
    while sum(counts.values()) > size:
        largest = max(counts, key=lambda name: counts[name])
        counts[largest] -= 1
    return tuple(name for name in weights for _ in range(counts[name]))


_BUSINESS_TABLE = _lookup_table(_BUSINESS_WEIGHTS)
_AFTER_HOURS_TABLE = _lookup_table(_AFTER_HOURS_WEIGHTS)

# An event's 32-bit variant decides everything not stored elsewhere:
#   bits 0-7 class (below _SERVICE_CLASS: the service account), 8-17 kind, 18-21 person,
#   22-25 created_at format, 26-30 an unknown extra key when zero. Details come from _mix(variant).
_SERVICE_CLASS = 38  # ~15 % of the background is the service account running queries
_FORMAT_PG, _FORMAT_EPOCH, _FORMAT_ISO_Z, _FORMAT_OFFSET = range(4)
_FORMATS = (_FORMAT_PG,) * 9 + (_FORMAT_EPOCH,) * 4 + (_FORMAT_ISO_Z,) * 2 + (_FORMAT_OFFSET,)
# Id gaps: mostly 1, sometimes more (ids are shared with other workspaces and with rolled-back writes).
_GAP_TABLE = bytes(1 if b < 192 else 2 if b < 240 else 3 if b < 252 else 7 for b in range(256))

_LABELS = {
    "Workspace": ["workspace"],
    "Branch": ["branch"],
    "Table": ["database"],
    "Record": ["database"],
    "Field": ["database"],
    "API Group": ["api"],
    "Query": ["api"],
    "Function": ["function"],
    "Task": ["task"],
    "Add-on": ["addon"],
    "Environment Variable": ["config"],
    "User": ["security"],
    "RBAC Permissions": ["security"],
    "Token": ["security"],
    "Security Policy": ["security"],
}


def _label_for(event_type: str) -> list[str]:
    cached = _LABEL_CACHE.get(event_type)
    if cached is None:
        cached = ("auth",) if event_type.startswith("Login") else ()
        for noun, label in _LABELS.items():
            if not cached and event_type.endswith(noun):
                cached = tuple(label)
        if len(_LABEL_CACHE) < 1000:
            _LABEL_CACHE[event_type] = cached
    return list(cached)


_LABEL_CACHE: dict[str, tuple[str, ...]] = {}
_ZONES: dict[int, timezone] = {}


def _obj_type_for(event_type: str) -> str:
    if event_type.startswith("Login"):
        return "user"
    noun = event_type.split(" ", 2)[-1] if event_type.startswith("Set Live") else event_type.partition(" ")[2]
    return (noun or event_type).lower().replace(" ", "_").replace("-", "")


def _mix(value: int) -> int:
    """A 64-bit hash of a variant (splitmix64 finaliser): details without another random draw."""
    z = (value + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return z ^ (z >> 31)


def _to_us(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("the simulator needs aware datetimes (e.g. datetime.now(UTC))")
    delta = moment - _EPOCH
    return (delta.days * 86400 + delta.seconds) * _SECOND + delta.microseconds


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


class _BerlinTime:
    """Local wall time in Europe/Berlin for microsecond instants, with the UTC offset cached per UTC hour.

    DST changes happen on the hour (01:00 UTC), so an offset per UTC hour is exact.
    """

    def __init__(self) -> None:
        self._offsets: dict[int, int] = {}

    def offset(self, us: int) -> int:
        hour = us // _HOUR
        cached = self._offsets.get(hour)
        if cached is None:
            delta = datetime.fromtimestamp(hour * 3600, BERLIN).utcoffset() or timedelta(0)
            cached = self._offsets[hour] = int(delta.total_seconds()) * _SECOND
        return cached

    def is_business(self, us: int) -> bool:
        local = us + self.offset(us)
        weekday = (local // _DAY + 3) % 7  # 1970-01-01 was a Thursday
        hour = (local % _DAY) // _HOUR
        return weekday < 5 and 8 <= hour < 19

    def local_date(self, us: int) -> date:
        return date.fromordinal(date(1970, 1, 1).toordinal() + (us + self.offset(us)) // _DAY)


def _midnight(day: date) -> int:
    return _to_us(datetime(day.year, day.month, day.day, tzinfo=BERLIN))


def _wall(day: date, hours: float) -> int:
    """The instant of a local wall-clock time (hours after midnight) on ``day`` in Berlin."""
    return _to_us(datetime(day.year, day.month, day.day, tzinfo=BERLIN) + timedelta(hours=hours))


# --- compact event records --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Spec:
    """The explicit content of a planted or added event (background events are derived from a variant)."""

    type: str
    msg: str
    label: list[str]
    data: dict[str, Any] | None
    obj: dict[str, Any] | None
    user: dict[str, Any] | None
    workspace: dict[str, Any] | None
    branch: dict[str, Any] | None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class _Added:
    """An event added through :meth:`Simulator.add_event` (kept apart: its time may be anywhere)."""

    id: int
    time: int
    variant: int
    spec: _Spec
    hidden: bool


@dataclass(frozen=True)
class _Fault:
    kind: str  # status | truncated | non_json
    status: int = 200
    retry_after: str | None = None


class _Keys:
    """The sort keys of the committed stream as a sequence, for ``bisect`` (no copy)."""

    def __init__(self, values: array[int], pair_with: array[int] | None, length: int) -> None:
        self._values, self._pair_with, self._length = values, pair_with, length

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> Any:
        if self._pair_with is None:
            return self._values[index]
        return (self._values[index], self._pair_with[index])


# --- the simulator ----------------------------------------------------------------------------------------


# The envelope shapes the simulator can serve: Xano's full one, and the one its guide shows.
ENVELOPES = ("xano", "guide")


class Simulator:
    """A Xano instance's audit log over HTTP. Thread-safe; time comes from ``clock``."""

    def __init__(
        self,
        *,
        seed: int = 7,
        history_start: datetime | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        events_per_day: int = 400,
        live_events_per_minute: float = 0.0,
        token: str = "sim-token",  # noqa: S107 - the simulator's own, public test token
        workspace_id: int = 1,
        max_per_page: int = 5000,
        incidents: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        total_events: int | None = None,
        live_background: bool = True,
        ids_after: int = _FIRST_ID,
        envelope: str = "xano",
        range_filters: bool = True,
    ) -> None:
        """``live_background=False`` stops the daily pattern after construction (only added events and
        ``live_events_per_minute`` arrive then): for tests that count exactly what they add.
        ``ids_after``: every id is above it, so a simulator can continue an archive that already holds
        lower ids (the archive benchmark polls new events on top of a million synthetic ones)."""
        if (
            events_per_day < 0
            or live_events_per_minute < 0
            or (total_events is not None and total_events < 0)
        ):
            raise ValueError("event counts and rates must not be negative")
        if max_per_page < 1:
            raise ValueError("max_per_page must be at least 1")
        if ids_after < 0:
            raise ValueError("ids_after must not be negative")
        if envelope not in ENVELOPES:
            raise ValueError(f"envelope must be one of {', '.join(ENVELOPES)}")
        self.envelope = envelope
        self.seed = seed
        self.token = token
        self.workspace_id = workspace_id
        self.max_per_page = max_per_page
        self.events_per_day = events_per_day
        self.live_events_per_minute = live_events_per_minute
        self.host, self.port = host, port
        self.base_url = ""
        self.incidents: list[Incident] = []
        self._clock = clock
        self._lock = threading.RLock()
        self._berlin = _BerlinTime()
        self._request_count = 0
        self._count_queries = 0
        self.range_filters = range_filters
        self._faults: deque[_Fault] = deque()
        # A plan's rate limit (``rate_limit``): at most this many audit-log requests per window, in real
        # seconds (the client really waits out the Retry-After), counted over the requests served.
        self._rate_limit: tuple[int, float] | None = None
        self._served_at: deque[float] = deque()
        self.rate_limited = 0  # requests answered 429 by the rate limit
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

        self._workspaces = [
            {"id": workspace_id + index, "name": name} for index, name in enumerate(_WORKSPACE_NAMES)
        ]
        # Workspaces the API knows (the sandbox is deleted by a planted incident, so it answers 404).
        self._known_workspaces = {workspace_id, workspace_id + 1}

        # The committed stream: parallel arrays in id order, which is also created_at order.
        self._ids: array[int] = array("q")
        self._times: array[int] = array("q")
        self._variants: array[int] = array("I")
        self._specials: dict[int, _Spec] = {}  # stream index -> explicit content (planted incidents)
        self._added: list[_Added] = []  # in id order
        self._last_id = ids_after
        self._id_rng = random.Random(f"{seed}:ids")
        self._added_rng = random.Random(f"{seed}:added")

        # Live traffic waits in a heap until the clock reaches it.
        self._pending: list[tuple[int, int, int]] = []
        self._pending_seq = 0
        self._live_background = live_background
        self._planned_incidents: list[tuple[str, str, int]] = []  # (kind, description, start)

        start_clock = clock()
        self._t0 = _to_us(start_clock)
        start = history_start if history_start is not None else start_clock - timedelta(days=35)
        self._start = min(_to_us(start), self._t0)
        self._advanced_to = self._t0
        self._build_history(total_events, incidents)
        t0_day = self._berlin.local_date(self._t0)
        self._next_day = t0_day + timedelta(days=1)
        self._live_minute0 = self._t0 // _MINUTE
        self._next_minute = self._live_minute0

    # --- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> str:
        """Bind ``host:port`` and serve in a daemon thread; returns ``base_url``."""
        if self._server is not None:
            return self.base_url
        server = _Server((self.host, self.port), self)
        self._server = server
        port = server.server_address[1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.base_url = f"http://{host}:{port}"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="xano-simulator", daemon=True
        )
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Simulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Simulator(base_url={self.base_url!r}, seed={self.seed}, workspace_id={self.workspace_id})"

    # --- test and demo controls ---------------------------------------------------------------------------

    @property
    def request_count(self) -> int:
        """Audit-log API requests received (any outcome); control requests are not counted."""
        with self._lock:
            return self._request_count

    @property
    def count_queries(self) -> int:
        """Range count queries answered (kept out of ``request_count`` and of the fault queue)."""
        with self._lock:
            return self._count_queries

    def add_event(
        self,
        type: str,
        *,
        user: dict[str, Any] | None | EllipsisType = ...,
        created_at: datetime | None = None,
        msg: str | None = None,
        data: dict[str, Any] | None = None,
        workspace: dict[str, Any] | None | EllipsisType = ...,
        branch: dict[str, Any] | None | EllipsisType = ...,
        hidden: bool = False,
        **extra: Any,
    ) -> int:
        """Add an event now (id above every id so far) and return its id.

        Defaults: ``user`` the team lead, ``workspace`` the primary workspace, ``branch`` its live branch;
        pass None for a null. ``created_at`` defaults to the clock; a future time stays invisible until the
        clock reaches it. ``hidden=True`` keeps it invisible until :meth:`reveal` (a late commit). ``extra``
        keys are added to the entry as served (``obj=...``, ``label=...``, ``request_id=...``).
        """
        if "id" in extra:
            raise ValueError("the simulator assigns ids")
        with self._lock:
            now = _to_us(self._clock())
            self._advance(now)
            event_id = self._next_ids(1)[0]
            primary = self._workspaces[0]
            ws_value = dict(primary) if workspace is ... else workspace
            if isinstance(ws_value, dict) and isinstance(ws_value.get("id"), int):
                self._known_workspaces.add(ws_value["id"])  # type: ignore[arg-type]
            live_id, live_label = _BRANCHES[0][0]
            spec = _Spec(
                type=type,
                msg=msg if msg is not None else type,
                label=_label_for(type),
                data=data,
                obj={"type": _obj_type_for(type), "id": 1 + event_id % 997},
                user={"id": _ANNA.id, "email": _ANNA.email} if user is ... else user,
                workspace=ws_value,
                branch={"id": live_id, "label": live_label} if branch is ... else branch,
                extra=copy.deepcopy(extra),
            )
            when = now if created_at is None else _to_us(created_at)
            self._added.append(_Added(event_id, when, self._added_rng.getrandbits(32), spec, hidden))
            return event_id

    def reveal(self, event_id: int) -> None:
        """Make a hidden event visible: a late commit, its id below newer, already visible ones."""
        with self._lock:
            index = bisect.bisect_left(self._added, event_id, key=lambda added: added.id)
            if index == len(self._added) or self._added[index].id != event_id:
                raise KeyError(f"no added event with id {event_id}")
            self._added[index].hidden = False

    def inject_status(self, status: int, count: int = 1, retry_after: str | None = None) -> None:
        """The next ``count`` audit-log requests answer ``status`` (429 with Xano's rate-limit body).

        ``count=0`` cancels every queued fault with this status.
        """
        if not 100 <= status <= 599:
            raise ValueError(f"not an HTTP status: {status}")
        with self._lock:
            if count <= 0:
                self._cancel(lambda fault: fault.kind == "status" and fault.status == status)
            self._faults.extend(_Fault("status", status, retry_after) for _ in range(max(0, count)))

    def rate_limit(self, requests: int, per_seconds: float) -> None:
        """From now on serve at most ``requests`` audit-log requests in any ``per_seconds`` (a sliding window,
        in real time); one more answers 429 with Xano's body and ``Retry-After``: the whole seconds until the
        oldest served request leaves the window. Xano's Free plan allows 10 requests per 20 s.
        ``requests=0`` lifts the limit.
        """
        if requests < 0 or per_seconds <= 0:
            raise ValueError("a rate limit needs requests >= 0 and a window > 0 s")
        with self._lock:
            self._rate_limit = (requests, per_seconds) if requests else None
            self._served_at.clear()

    def _over_rate_limit(self) -> int | None:
        """Seconds to tell the client to wait when this request exceeds the rate limit, else None (and the
        request counts toward the window)."""
        with self._lock:
            if self._rate_limit is None:
                return None
            limit, window = self._rate_limit
            now = monotonic()
            while self._served_at and self._served_at[0] <= now - window:
                self._served_at.popleft()
            if len(self._served_at) < limit:
                self._served_at.append(now)
                return None
            self.rate_limited += 1
            return max(1, math.ceil(self._served_at[0] + window - now))

    def inject_truncated(self, count: int = 1) -> None:
        """The next ``count`` pages are cut in the middle: valid headers, a body that is not JSON.

        ``count=0`` cancels the queued truncations.
        """
        with self._lock:
            if count <= 0:
                self._cancel(lambda fault: fault.kind == "truncated")
            self._faults.extend(_Fault("truncated") for _ in range(max(0, count)))

    def inject_non_json(self, count: int = 1) -> None:
        """The next ``count`` pages are an HTML error page with status 200. ``count=0`` cancels them."""
        with self._lock:
            if count <= 0:
                self._cancel(lambda fault: fault.kind == "non_json")
            self._faults.extend(_Fault("non_json") for _ in range(max(0, count)))

    def _cancel(self, matches: Callable[[_Fault], bool]) -> None:
        self._faults = deque(fault for fault in self._faults if not matches(fault))

    def visible_events(self, workspace_id: int | None = None) -> list[dict[str, Any]]:
        """Every entry the API would serve now (with data), in ascending id order: instance-wide, or for
        ``workspace_id``. Generated traffic is all the primary workspace's, so both agree unless events
        were added to another workspace."""
        with self._lock:
            self._advance(_to_us(self._clock()))
            total, refs = self._select(workspace_id, "id", False, 0, None)
            return [self._entry(ref, True) for ref in refs]

    def event_count(self) -> int:
        """How many events the instance-wide API serves now."""
        with self._lock:
            self._advance(_to_us(self._clock()))
            return self._select(None, "id", False, 0, 0)[0]

    def describe_incidents(self) -> list[dict[str, Any]]:
        return [
            {
                "kind": incident.kind,
                "event_ids": list(incident.event_ids),
                "description": incident.description,
                "start": incident.start.isoformat(),
            }
            for incident in self.incidents
        ]

    # --- history ------------------------------------------------------------------------------------------

    def _build_history(self, total_events: int | None, with_incidents: bool) -> None:
        planted = self._plan_incidents() if with_incidents else []
        planted_events = sorted(
            ((time, n, variant, spec) for n, (time, variant, spec, _) in enumerate(planted)),
            key=lambda item: (item[0], item[1]),
        )
        if total_events is not None:
            if total_events < len(planted_events):
                planted, planted_events = [], []
            times, variants = self._even_background(total_events - len(planted_events))
            # The day of the clock still gets its remaining daily traffic as live events.
            if self._live_background:
                day = self._berlin.local_date(self._t0)
                self._queue(event for event in self._day_events(day) if event[0] > self._t0)
        else:
            times, variants = self._daily_background()
        # Merge the planted events in, in time order: each insertion lands after the previous one, so the
        # positions already recorded stay valid.
        special_at: dict[int, _Spec] = {}
        position_of: dict[int, int] = {}
        for time, n, variant, spec in planted_events:
            position = bisect.bisect_right(times, time)
            times.insert(position, time)
            variants.insert(position, variant)
            special_at[position] = spec
            position_of[n] = position
        base = self._commit(times, variants, special_at)
        by_incident: dict[int, list[int]] = {}
        for n, (_, _, _, incident_no) in enumerate(planted):
            by_incident.setdefault(incident_no, []).append(self._ids[base + position_of[n]])
        for incident_no, (kind, description, start) in enumerate(self._planned_incidents):
            ids = by_incident.get(incident_no)
            if ids:
                self.incidents.append(Incident(kind, tuple(ids), description, _from_us(start)))
        self.incidents.sort(key=lambda incident: incident.start)

    def _even_background(self, count: int) -> tuple[array[int], array[int]]:
        """``count`` events spread evenly over the history (benchmarks: built in bulk, no per-day loop)."""
        rng = random.Random(f"{self.seed}:even")
        span = self._t0 - self._start
        start = self._start
        times = array("q", (start + (i * span) // count for i in range(count))) if count else array("q")
        variants = array("I")
        variants.frombytes(rng.randbytes(4 * count))
        if variants.itemsize != 4:  # pragma: no cover - 'I' is 4 bytes on every supported platform
            raise RuntimeError("array('I') is not 32 bits here")
        return times, variants

    def _daily_background(self) -> tuple[array[int], array[int]]:
        times, variants = array("q"), array("I")
        if self._start >= self._t0:
            if self._live_background:
                self._queue(event for event in self._day_events(self._berlin.local_date(self._t0)))
            return times, variants
        day = self._berlin.local_date(self._start)
        last = self._berlin.local_date(self._t0)
        while day <= last:
            for event in self._day_events(day):
                if event[0] < self._start:
                    continue
                if event[0] > self._t0:
                    if self._live_background:
                        self._queue([event])
                    continue
                times.append(event[0])
                variants.append(event[1])
            day += timedelta(days=1)
        return times, variants

    def _day_events(self, day: date) -> list[tuple[int, int]]:
        """One day's background as (time, variant), sorted: a pure function of the seed and the day."""
        rng = random.Random(f"{self.seed}:day:{day.isoformat()}")
        per_day = self.events_per_day
        if per_day == 0:
            return []
        weekday = day.weekday() < 5
        start, end = _midnight(day), _midnight(day + timedelta(days=1))
        noon_offset = self._berlin.offset(_wall(day, 12))
        midnight_wall = start + self._berlin.offset(start)  # local midnight as if it were UTC
        jitter = rng.uniform(0.85, 1.15)
        service = round(0.15 * per_day * jitter)
        people = round((1.17 if weekday else 0.05) * per_day * jitter)
        events: list[tuple[int, int]] = []
        for _ in range(service):
            variant = (rng.getrandbits(32) & ~0xFF) | rng.randrange(_SERVICE_CLASS)
            events.append((rng.randrange(start, end), variant))
        for _ in range(people):
            if not weekday:
                hours = rng.uniform(9.0, 22.0)
            elif rng.random() < 0.05:
                hours = rng.uniform(19.0, 22.5) if rng.random() < 0.7 else rng.uniform(6.5, 8.0)
            else:
                hours = rng.triangular(8.0, 19.0, 12.0)
            # Human hours are all after 03:00, so the offset at noon is the day's offset for them.
            time = midnight_wall + int(hours * _HOUR) - noon_offset
            variant = (rng.getrandbits(32) & ~0xFF) | rng.randrange(_SERVICE_CLASS, 256)
            events.append((time, variant))
        events.sort()
        return events

    # --- planted incidents --------------------------------------------------------------------------------

    # (days before the clock in a 35-day history, kind, local hour, minute, needs a weekday)
    _SCHEDULE = (
        (33, "rbac_change", 11, 5, True),
        (31, "failed_login_burst", 9, 40, True),
        (29, "user_admin", 14, 20, True),
        (27, "env_var_change", 16, 10, True),
        (25, "table_delete", 10, 30, True),
        (23, "token_events", 15, 0, True),
        (21, "off_hours_delete", 3, 7, False),
        (19, "live_branch", 17, 45, True),
        (17, "security_policy", 12, 15, True),
        (15, "ip_spray", 13, 2, True),
        (13, "bulk_delete", 15, 33, True),
        (11, "workspace_destruction", 17, 50, True),
        (9, "foreign_user", 10, 48, True),
        (7, "first_admin_action", 16, 40, True),
        (5, "env_var_change", 11, 25, True),
        (4, "failed_login_burst", 11, 20, True),
        (3, "bulk_delete", 14, 5, True),
        (2, "off_hours_delete", 2, 58, False),
        (2, "foreign_user", 9, 35, True),
        (1, "ip_spray", 9, 15, True),
        (1, "token_events", 13, 40, True),
    )

    def _plan_incidents(self) -> list[tuple[int, int, _Spec, int]]:
        """Planted events as (time, variant, spec, incident number); also fills ``_planned_incidents``."""
        rng = random.Random(f"{self.seed}:incidents")
        events: list[tuple[int, int, _Spec, int]] = []
        span_days = (self._t0 - self._start) / _DAY
        scale = min(1.0, span_days / 35.0)
        for days_back, kind, hour, minute, weekday_only in self._SCHEDULE:
            steps, description = getattr(self, f"_incident_{kind}")(rng)
            duration = max(offset for offset, _ in steps)
            anchor = self._place(days_back * scale, hour + minute / 60, weekday_only, duration)
            if anchor is None:
                continue
            number = len(self._planned_incidents)
            self._planned_incidents.append((kind, description, anchor))
            for offset, spec in steps:
                events.append((anchor + offset, rng.getrandbits(32), spec, number))
        return events

    def _place(self, days_back: float, hours: float, weekday_only: bool, duration: int) -> int | None:
        """The latest fitting local time ``hours`` on or before the target day, else the earliest after."""
        target = self._berlin.local_date(self._t0 - int(days_back * _DAY))
        first, last = self._berlin.local_date(self._start), self._berlin.local_date(self._t0)

        def fits(day: date) -> int | None:
            if weekday_only and day.weekday() >= 5:
                return None
            anchor = _wall(day, hours)
            return anchor if self._start <= anchor and anchor + duration <= self._t0 else None

        day = target
        while day >= first:
            if (anchor := fits(day)) is not None:
                return anchor
            day -= timedelta(days=1)
        day = target + timedelta(days=1)
        while day <= last:
            if (anchor := fits(day)) is not None:
                return anchor
            day += timedelta(days=1)
        return None

    def _spec(
        self,
        event_type: str,
        person: _Person | None,
        msg: str,
        data: dict[str, Any] | None,
        obj: dict[str, Any] | None,
        *,
        branch: tuple[int, str] | None = None,
        no_branch: bool = False,
    ) -> _Spec:
        """Planted events all live in the primary workspace's log (a deleted workspace is named in obj)."""
        live = _BRANCHES[0][0]
        chosen = None if no_branch else (branch or live)
        return _Spec(
            type=event_type,
            msg=msg,
            label=_label_for(event_type),
            data=data,
            obj=obj,
            user=None if person is None else {"id": person.id, "email": person.email},
            workspace=dict(self._workspaces[0]),
            branch=None if chosen is None else {"id": chosen[0], "label": chosen[1]},
        )

    def _incident_failed_login_burst(self, rng: random.Random) -> tuple[list[tuple[int, _Spec]], str]:
        victim = rng.choice((_LEA, _MAX, _MIA))
        ip = f"198.51.100.{rng.randrange(60, 90)}"
        offsets = (0, 45, 80, 130, 190, 250, 330)
        steps = [
            (
                seconds * _SECOND,
                self._spec(
                    "Login Failed",
                    victim,
                    "Login failed: invalid password",
                    {"ip": ip, "reason": "invalid_password", "user_agent": "python-requests/2.31.0"},
                    {"type": "user", "id": victim.id},
                    no_branch=True,
                ),
            )
            for seconds in offsets
        ]
        return steps, f"{len(offsets)} failed logins for {victim.email} from {ip} within 6 minutes"

    def _incident_ip_spray(self, rng: random.Random) -> tuple[list[tuple[int, _Spec]], str]:
        ip = f"198.51.100.{rng.randrange(200, 230)}"
        victims = rng.sample(_TEAM, 6)
        offsets = (0, 60, 140, 200, 290, 380)
        steps = [
            (
                seconds * _SECOND,
                self._spec(
                    "Login Failed",
                    person,
                    "Login failed: invalid password",
                    {"ip": ip, "reason": "invalid_password", "user_agent": "curl/8.5.0"},
                    {"type": "user", "id": person.id},
                    no_branch=True,
                ),
            )
            for seconds, person in zip(offsets, victims, strict=True)
        ]
        return steps, f"failed logins for 6 different users from one address, {ip}, within 7 minutes"

    def _incident_bulk_delete(self, rng: random.Random) -> tuple[list[tuple[int, _Spec]], str]:
        person = rng.choice((_MAX, _SOFIA, _TIM))
        table_id, table = _TABLES[0]
        first_record = rng.randrange(2000, 9000)
        steps = []
        for n in range(30):
            record = first_record + n
            steps.append(
                (
                    n * 8 * _SECOND,
                    self._spec(
                        "Delete Record",
                        person,
                        f"Deleted record {record} in {table}",
                        {
                            "table": {"id": table_id, "name": table},
                            "record_id": record,
                            "ip": person.office_ip,
                        },
                        {"type": "record", "id": record},
                    ),
                )
            )
        return steps, f"{person.email} deleted 30 records of table {table} within 4 minutes"

    def _incident_off_hours_delete(self, rng: random.Random) -> tuple[list[tuple[int, _Spec]], str]:
        person = rng.choice((_TIM, _SOFIA))
        table_id, table = rng.choice(((316, "orders_archive"), (317, "payments_2025")))
        spec = self._spec(
            "Delete Table",
            person,
            f"Deleted table {table}",
            {"table": {"id": table_id, "name": table}, "ip": person.home_ip},
            {"type": "table", "id": table_id},
        )
        return [(0, spec)], f"{person.email} deleted table {table} at night (about 03:00 Europe/Berlin)"

    def _incident_workspace_destruction(self, rng: random.Random) -> tuple[list[tuple[int, _Spec]], str]:
        person = _SOFIA
        tools, sandbox = self._workspaces[1], self._workspaces[2]
        reset = self._spec(
            "Reset Workspace",
            person,
            f"Reset workspace {tools['name']}",
            {"workspace": dict(tools), "ip": person.office_ip},
            {"type": "workspace", "id": tools["id"]},
            no_branch=True,
        )
        delete = self._spec(
            "Delete Workspace",
            person,
            f"Deleted workspace {sandbox['name']}",
            {"workspace": dict(sandbox), "ip": person.office_ip},
            {"type": "workspace", "id": sandbox["id"]},
            no_branch=True,
        )
        steps = [(0, reset), (rng.randrange(180, 300) * _SECOND, delete)]
        return (
            steps,
            f"{person.email} reset workspace {tools['name']} and deleted workspace {sandbox['name']}",
        )

    def _incident_security_policy(self, rng: random.Random) -> tuple[list[tuple[int, _Spec]], str]:
        spec = self._spec(
            "Update Security Policy",
            _ANNA,
            "Updated security policy: password",
            {
                "policy": "password",
                "changes": {"min_length": {"from": 12, "to": 8}, "require_mfa": {"from": True, "to": False}},
                "ip": _ANNA.office_ip,
            },
            {"type": "security_policy", "id": 1},
            no_branch=True,
        )
        return [(0, spec)], f"{_ANNA.email} weakened the password policy (MFA off, minimum length 8)"

    def _incident_rbac_change(self, rng: random.Random) -> tuple[list[tuple[int, _Spec]], str]:
        spec = self._spec(
            "Update RBAC Permissions",
            _ANNA,
            "Updated permissions of role developer",
            {
                "role": {"id": 3, "name": "developer"},
                "granted": ["database:delete", "workspace:admin"],
                "ip": _ANNA.office_ip,
            },
            {"type": "role", "id": 3},
            no_branch=True,
        )
        return [(0, spec)], f"{_ANNA.email} granted database:delete and workspace:admin to role developer"

    def _incident_first_admin_action(self, rng: random.Random) -> tuple[list[tuple[int, _Spec]], str]:
        person = _JONAS  # never does an admin action anywhere else in the history
        rbac = self._spec(
            "Update RBAC Permissions",
            person,
            "Updated permissions of role support",
            {"role": {"id": 4, "name": "support"}, "granted": ["database:read"], "ip": person.home_ip},
            {"type": "role", "id": 4},
            no_branch=True,
        )
        token = self._spec(
            "Create Token",
            person,
            "Created API token jonas-local",
            {
                "token": {"id": 9101, "name": "jonas-local"},
                "scopes": ["Workspace Log: Read"],
                "ip": person.home_ip,
            },
            {"type": "token", "id": 9101},
            no_branch=True,
        )
        return [(0, rbac), (300 * _SECOND, token)], f"{person.email} did admin actions for the first time"

    def _incident_foreign_user(self, rng: random.Random) -> tuple[list[tuple[int, _Spec]], str]:
        outsider = rng.choice(
            ("j.doe.contractor@gmail.com", "freelance.dev@outlook.com", "m.kowalski@proton.me")
        )
        user_id = rng.randrange(90, 99)
        spec = self._spec(
            "Create User",
            _ANNA,
            f"Created user {outsider}",
            {"email": outsider, "role": "editor", "ip": _ANNA.office_ip},
            {"type": "user", "id": user_id},
            no_branch=True,
        )
        return [(0, spec)], f"{_ANNA.email} created user {outsider}, outside the company's domains"

    def _incident_token_events(self, rng: random.Random) -> tuple[list[tuple[int, _Spec]], str]:
        token_id = rng.randrange(9000, 9100)
        name = rng.choice(("ci-deploy", "zapier-sync", "reporting"))
        data = {"token": {"id": token_id, "name": name}, "scopes": ["Workspace Log: Read", "Database: Write"]}
        create = self._spec(
            "Create Token",
            _ANNA,
            f"Created API token {name}",
            {**data, "expires_in": "7d", "ip": _ANNA.office_ip},
            {"type": "token", "id": token_id},
            no_branch=True,
        )
        revoke = self._spec(
            "Revoke Token",
            _ANNA,
            f"Revoked API token {name}",
            {**data, "ip": _ANNA.office_ip},
            {"type": "token", "id": token_id},
            no_branch=True,
        )
        return [(0, create), (1500 * _SECOND, revoke)], f"{_ANNA.email} created and revoked API token {name}"

    def _incident_live_branch(self, rng: random.Random) -> tuple[list[tuple[int, _Spec]], str]:
        branch = _BRANCHES[0][2]
        spec = self._spec(
            "Set Live Branch",
            _LEA,
            f"Set branch {branch[1]} live",
            {"previous": {"id": _BRANCHES[0][0][0], "label": _BRANCHES[0][0][1]}, "ip": _LEA.office_ip},
            {"type": "branch", "id": branch[0]},
            branch=branch,
        )
        return [(0, spec)], f"{_LEA.email} set branch {branch[1]} live"

    def _incident_env_var_change(self, rng: random.Random) -> tuple[list[tuple[int, _Spec]], str]:
        person = rng.choice((_TIM, _ANNA))
        name = rng.choice(("STRIPE_SECRET_KEY", "SMTP_PASSWORD", "JWT_SECRET"))
        spec = self._spec(
            "Update Environment Variable",
            person,
            f"Updated environment variable {name}",
            {"name": name, "ip": person.office_ip},
            {"type": "environment_variable", "id": 55},
            no_branch=True,
        )
        return [(0, spec)], f"{person.email} changed environment variable {name}"

    def _incident_user_admin(self, rng: random.Random) -> tuple[list[tuple[int, _Spec]], str]:
        joined, left = "noah.keller@northwind-labs.de", "paul.richter@northwind.io"
        create = self._spec(
            "Create User",
            _ANNA,
            f"Created user {joined}",
            {"email": joined, "role": "developer", "ip": _ANNA.office_ip},
            {"type": "user", "id": 19},
            no_branch=True,
        )
        delete = self._spec(
            "Delete User",
            _ANNA,
            f"Deleted user {left}",
            {"email": left, "ip": _ANNA.office_ip},
            {"type": "user", "id": 10},
            no_branch=True,
        )
        return [
            (0, create),
            (600 * _SECOND, delete),
        ], f"{_ANNA.email} created user {joined} and deleted {left}"

    def _incident_table_delete(self, rng: random.Random) -> tuple[list[tuple[int, _Spec]], str]:
        person = rng.choice((_MAX, _LEA))
        spec = self._spec(
            "Delete Table",
            person,
            "Deleted table tmp_import_2026",
            {"table": {"id": 318, "name": "tmp_import_2026"}, "ip": person.office_ip},
            {"type": "table", "id": 318},
        )
        return [(0, spec)], f"{person.email} deleted table tmp_import_2026 in business hours"

    # --- the committed stream -----------------------------------------------------------------------------

    def _next_ids(self, count: int) -> array[int]:
        gaps = self._id_rng.randbytes(count).translate(_GAP_TABLE)
        ids = array("q", accumulate(gaps, initial=self._last_id))
        del ids[0]
        if count:
            self._last_id = ids[-1]
        return ids

    def _commit(self, times: array[int], variants: array[int], specials: dict[int, _Spec]) -> int:
        """Append events (already in time order, all visible now) with fresh ids; returns the first index."""
        base = len(self._ids)
        self._ids.extend(self._next_ids(len(times)))
        self._times.extend(times)
        self._variants.extend(variants)
        for offset, spec in specials.items():
            self._specials[base + offset] = spec
        return base

    def _queue(self, events: Any) -> None:
        for time, variant in events:
            self._pending_seq += 1
            heapq.heappush(self._pending, (time, self._pending_seq, variant))

    def _advance(self, now: int) -> None:
        """Generate live traffic up to ``now`` and commit what the clock has reached."""
        if now <= self._advanced_to and not (self._pending and self._pending[0][0] <= now):
            return
        if self._live_background:
            while _midnight(self._next_day) <= now:
                self._queue(self._day_events(self._next_day))
                self._next_day += timedelta(days=1)
        rate = self.live_events_per_minute
        if rate > 0:
            last_minute = now // _MINUTE
            while self._next_minute <= last_minute:
                self._queue(self._minute_events(self._next_minute, rate))
                self._next_minute += 1
        times, variants = array("q"), array("I")
        while self._pending and self._pending[0][0] <= now:
            time, _, variant = heapq.heappop(self._pending)
            times.append(time)
            variants.append(variant)
        if times:
            self._commit(times, variants, {})
        self._advanced_to = max(self._advanced_to, now)

    def _minute_events(self, minute: int, rate: float) -> list[tuple[int, int]]:
        n = minute - self._live_minute0
        count = int((n + 1) * rate) - int(n * rate)
        rng = random.Random(f"{self.seed}:live:{minute}")
        events = []
        for _ in range(count):
            time = minute * _MINUTE + rng.randrange(_MINUTE)
            variant = (rng.getrandbits(32) & ~0xFF) | rng.randrange(_SERVICE_CLASS, 256)
            if time > self._t0:
                events.append((time, variant))
        return events

    # --- serving ------------------------------------------------------------------------------------------

    def _select(
        self, workspace_id: int | None, key: str, descending: bool, offset: int, limit: int | None
    ) -> tuple[int, list[tuple[bool, int]]]:
        """The total in scope and the (is_added, index) references of one page, in O(limit + added)."""
        # The generated stream is the primary workspace's; other workspaces hold only added events.
        in_scope = workspace_id is None or workspace_id == self.workspace_id
        n_main = len(self._ids) if in_scope else 0
        now = self._advanced_to
        added = [
            (index, event)
            for index, event in enumerate(self._added)
            if not event.hidden
            and event.time <= now
            and (
                workspace_id is None
                or (isinstance(event.spec.workspace, dict) and event.spec.workspace.get("id") == workspace_id)
            )
        ]
        if key == "id":
            main_keys = _Keys(self._ids, None, n_main)
            added.sort(key=lambda item: item[1].id)
            added_keys: list[Any] = [event.id for _, event in added]
        else:
            main_keys = _Keys(self._times, self._ids, n_main)
            added.sort(key=lambda item: (item[1].time, item[1].id))
            added_keys = [(event.time, event.id) for _, event in added]
        merged_at = [j + bisect.bisect_left(main_keys, k) for j, k in enumerate(added_keys)]
        total = n_main + len(added)
        limit = total if limit is None else limit
        if descending:
            low, high = max(0, total - offset - limit), max(0, total - offset)
        else:
            low, high = min(offset, total), min(offset + limit, total)
        k = bisect.bisect_left(merged_at, low)
        main_index = low - k
        refs: list[tuple[bool, int]] = []
        for position in range(low, high):
            if k < len(merged_at) and merged_at[k] == position:
                refs.append((True, added[k][0]))
                k += 1
            else:
                refs.append((False, main_index))
                main_index += 1
        if descending:
            refs.reverse()
        return total, refs

    def _entry(self, ref: tuple[bool, int], include_data: bool) -> dict[str, Any]:
        is_added, index = ref
        if is_added:
            added = self._added[index]
            return self._assemble(
                added.id, added.time, added.variant, copy.deepcopy(added.spec), include_data
            )
        variant, time = self._variants[index], self._times[index]
        spec = self._specials.get(index)
        if spec is not None:
            spec = copy.deepcopy(spec)
        else:
            spec = self._background(variant, time)
        return self._assemble(self._ids[index], time, variant, spec, include_data)

    def _assemble(
        self, event_id: int, time: int, variant: int, spec: _Spec, include_data: bool
    ) -> dict[str, Any]:
        stamp = self._format_time(time, _FORMATS[(variant >> 22) & 0xF])
        entry: dict[str, Any] = {
            "id": event_id,
            "created_at": stamp,
            "updated_at": stamp,
            "type": spec.type,
            "msg": spec.msg,
            "label": spec.label,
            "data": spec.data if include_data else None,
            "obj": spec.obj,
            "user": spec.user,
            "workspace": spec.workspace,
            "branch": spec.branch,
        }
        if (variant >> 26) & 0x1F == 0:
            entry["request_id"] = f"req_{_mix(variant) & 0xFFFFFFFFFFFF:012x}"
        entry.update(spec.extra)
        if not include_data and "data" in spec.extra:
            entry["data"] = None
        return entry

    def _format_time(self, time: int, form: int) -> str | int:
        if form == _FORMAT_EPOCH:
            return time // 1000
        if form == _FORMAT_PG:  # isoformat's "+00:00" becomes PostgreSQL's "+00"
            return _from_us(time).isoformat(" ", "microseconds")[:-3]
        if form == _FORMAT_ISO_Z:
            return _from_us(time).isoformat("T", "milliseconds")[:-6] + "Z"
        offset = self._berlin.offset(time)
        zone = _ZONES.get(offset)
        if zone is None:
            zone = _ZONES[offset] = timezone(timedelta(microseconds=offset))
        return _from_us(time).astimezone(zone).isoformat("T", "microseconds")

    def _background(self, variant: int, time: int) -> _Spec:
        """The content of an ordinary event, derived from its variant, time and workspace."""
        h = _mix(variant)
        workspace = dict(self._workspaces[0])
        branches = _BRANCHES[0]
        branch_id, branch_label = branches[0] if h & 7 < 5 or len(branches) == 1 else branches[1]
        branch: dict[str, Any] | None = {"id": branch_id, "label": branch_label}
        if variant & 0xFF < _SERVICE_CLASS:
            query_id, query = _QUERIES[(h >> 8) % len(_QUERIES)]
            run = {"query": {"id": query_id, "name": query}, "duration_ms": 5 + (h >> 16) % 400}
            query_obj = {"type": "query", "id": query_id}
            if (h >> 24) % 8 == 0:  # a scheduled task: a system event without a user
                task = _TASKS[(h >> 28) % len(_TASKS)][1]
                return _Spec(
                    "Run Query",
                    f"Ran query {query} (task {task})",
                    ["api"],
                    run,
                    query_obj,
                    None,
                    workspace,
                    branch,
                )
            run["ip"] = _SERVICE.office_ip
            service = {"id": _SERVICE.id, "email": _SERVICE.email}
            return _Spec(
                "Run Query", f"Ran query {query}", ["api"], run, query_obj, service, workspace, branch
            )
        person = _TEAM[_WORKER_SLOTS[(variant >> 18) & 0xF]]
        table = _BUSINESS_TABLE if self._berlin.is_business(time) else _AFTER_HOURS_TABLE
        kind = table[(variant >> 8) & 0x3FF]
        ip = person.office_ip if h & 0x30 else person.home_ip
        user = {"id": person.id, "email": person.email}
        detail = h >> 32
        data: dict[str, Any] = {"ip": ip}
        obj: dict[str, Any]
        if kind.endswith("Record"):
            table_id, table_name = _TABLES[detail % len(_TABLES)]
            record = 1000 + (detail >> 8) % 9000
            verb = {"Create": "Created", "Update": "Updated", "Delete": "Deleted"}[kind.split()[0]]
            msg = f"{verb} record {record} in {table_name}"
            data.update(table={"id": table_id, "name": table_name}, record_id=record)
            obj = {"type": "record", "id": record}
        elif kind.endswith("Function"):
            function_id, name = _FUNCTIONS[detail % len(_FUNCTIONS)]
            msg = f"{kind.split()[0]}d function {name}"
            data["function"] = {"id": function_id, "name": name}
            obj = {"type": "function", "id": function_id}
        elif kind == "Update API Group":
            group_id, name = _API_GROUPS[detail % len(_API_GROUPS)]
            msg = f"Updated API group {name}"
            data["api_group"] = {"id": group_id, "name": name}
            obj = {"type": "api_group", "id": group_id}
        elif kind.endswith("Query"):
            query_id, name = _QUERIES[detail % len(_QUERIES)]
            msg = {"Run": "Ran", "Update": "Updated", "Create": "Created"}[kind.split()[0]] + f" query {name}"
            data["query"] = {"id": query_id, "name": name}
            if kind == "Run Query":
                data["duration_ms"] = 5 + (detail >> 8) % 900
            obj = {"type": "query", "id": query_id}
        elif kind.startswith("Login"):
            failed = kind == "Login Failed"
            msg = "Login failed: invalid password" if failed else "Logged in"
            data["user_agent"] = _AGENTS[detail % len(_AGENTS)]
            if failed:
                data["reason"] = "invalid_password"
            obj = {"type": "user", "id": person.id}
            branch = None
        elif kind == "Read Workspace":
            msg = f"Opened workspace {workspace['name']}"
            obj = {"type": "workspace", "id": workspace["id"]}
        elif kind == "Update Table":
            table_id, table_name = _TABLES[detail % len(_TABLES)]
            msg = f"Updated table {table_name}"
            data["table"] = {"id": table_id, "name": table_name}
            obj = {"type": "table", "id": table_id}
        elif kind.endswith("Field"):
            table_id, table_name = _TABLES[detail % len(_TABLES)]
            name = _FIELDS[(detail >> 8) % len(_FIELDS)]
            msg = ("Added" if kind == "Add Field" else "Updated") + f" field {name} of {table_name}"
            data.update(table={"id": table_id, "name": table_name}, field=name)
            obj = {"type": "field", "id": table_id * 100 + (detail >> 8) % len(_FIELDS)}
        elif kind.endswith("Task"):
            task_id, name = _TASKS[detail % len(_TASKS)]
            msg = f"{kind.split()[0]}d task {name}"
            data["task"] = {"id": task_id, "name": name}
            obj = {"type": "task", "id": task_id}
        else:  # Create / Merge / Delete Branch
            feature_id = 1000 + detail % 500
            label = f"feature-{feature_id}"
            msg = {
                "Create Branch": f"Created branch {label}",
                "Merge Branch": f"Merged branch {label} into {branches[0][1]}",
                "Delete Branch": f"Deleted branch {label}",
            }[kind]
            branch = {"id": feature_id, "label": label}
            obj = {"type": "branch", "id": feature_id}
        return _Spec(kind, msg, _label_for(kind), data, obj, user, workspace, branch)

    def _take_fault(self) -> _Fault | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def _page(
        self,
        workspace_id: int | None,
        page: int,
        per_page: int,
        include_data: bool,
        key: str,
        descending: bool,
    ) -> dict[str, Any]:
        per_page = min(per_page, self.max_per_page)
        offset = (page - 1) * per_page
        with self._lock:
            self._advance(_to_us(self._clock()))
            total, refs = self._select(workspace_id, key, descending, offset, per_page)
            items = [self._entry(ref, include_data) for ref in refs]
        page_total = -(-total // per_page)
        if self.envelope == "guide":
            return {"items": items, "itemsTotal": total}
        return {
            "items": items,
            "itemsReceived": len(items),
            "curPage": page,
            "nextPage": page + 1 if page < page_total else None,
            "prevPage": page - 1 if page > 1 else None,
            "offset": offset,
            "perPage": per_page,
            "itemsTotal": total,
            "pageTotal": page_total,
        }

    def _range_page(
        self, workspace_id: int | None, since_us: int, until_us: int, per_page: int
    ) -> dict[str, Any]:
        """A count query's answer: how many visible entries were created in [since_us, until_us), and the
        newest ``per_page`` of them by id."""
        per_page = min(per_page, self.max_per_page)
        with self._lock:
            self._count_queries += 1
            self._advance(_to_us(self._clock()))
            in_scope = workspace_id is None or workspace_id == self.workspace_id
            times = _Keys(self._times, None, len(self._times) if in_scope else 0)
            low, high = bisect.bisect_left(times, since_us), bisect.bisect_left(times, until_us)
            now = self._advanced_to
            added = [
                index
                for index, event in enumerate(self._added)
                if not event.hidden
                and event.time <= now
                and since_us <= event.time < until_us
                and (
                    workspace_id is None
                    or (
                        isinstance(event.spec.workspace, dict)
                        and event.spec.workspace.get("id") == workspace_id
                    )
                )
            ]
            # The stream's ids grow with its times: its newest entries in the range are its last indexes.
            candidates = [(self._ids[i], (False, i)) for i in range(max(low, high - per_page), high)]
            candidates += [(self._added[i].id, (True, i)) for i in added]
            candidates.sort(reverse=True)
            items = [self._entry(ref, False) for _, ref in candidates[:per_page]]
            total = (high - low) + len(added)
        if self.envelope == "guide":
            return {"items": items, "itemsTotal": total}
        page_total = -(-total // per_page)
        return {
            "items": items,
            "itemsReceived": len(items),
            "curPage": 1,
            "nextPage": 2 if page_total > 1 else None,
            "prevPage": None,
            "offset": 0,
            "perPage": per_page,
            "itemsTotal": total,
            "pageTotal": page_total,
        }

    def _control(self, body: dict[str, Any]) -> dict[str, Any]:
        known = {"inject_status", "inject_truncated", "inject_non_json", "add_event", "reveal", "describe"}
        unknown = sorted(set(body) - known)
        if unknown:
            raise ValueError(f"unknown control key(s): {', '.join(unknown)}")
        answer: dict[str, Any] = {"ok": True, "event_ids": []}
        if "inject_status" in body:
            spec = body["inject_status"]
            self.inject_status(int(spec["status"]), int(spec.get("count", 1)), spec.get("retry_after"))
        if "inject_truncated" in body:
            self.inject_truncated(int(body["inject_truncated"]))
        if "inject_non_json" in body:
            self.inject_non_json(int(body["inject_non_json"]))
        if "add_event" in body:
            spec = dict(body["add_event"])
            event_type = spec.pop("type")
            created_at = spec.pop("created_at", None)
            moment = parse_timestamp(created_at) if created_at is not None else None
            answer["event_ids"].append(self.add_event(str(event_type), created_at=moment, **spec))
        if "reveal" in body:
            self.reveal(int(body["reveal"]))
        if body.get("describe"):
            answer["incidents"] = self.describe_incidents()
        answer["request_count"] = self.request_count
        return answer

    def _count_request(self) -> None:
        with self._lock:
            self._request_count += 1


# --- HTTP -------------------------------------------------------------------------------------------------

_ROUTE = re.compile(r"^/api:meta(?:/workspace/(?P<ws>\d+))?/audit_log(?P<search>/search)?/?$")
_UNAUTHORIZED = {"code": "ERROR_CODE_UNAUTHORIZED", "message": "Invalid token."}
_STATUS_BODIES = {
    400: {"code": "ERROR_CODE_BAD_REQUEST", "message": "Bad request."},
    401: _UNAUTHORIZED,
    403: {
        "code": "ERROR_CODE_ACCESS_DENIED",
        "message": "Access denied: the token lacks the required scope.",
    },
    404: {"code": "ERROR_CODE_NOT_FOUND", "message": "Unable to locate request."},
    429: {"code": "ERROR_CODE_TOO_MANY_REQUESTS", "message": "Too many requests. Please try again later."},
    500: {"code": "ERROR_FATAL", "message": "Internal error."},
    503: {"code": "ERROR_CODE_SERVICE_UNAVAILABLE", "message": "Service temporarily unavailable."},
}
_GATEWAY_PAGE = (
    "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
_MAX_BODY = 1 << 20


class _BadRequest(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "XanoSimulator/1.0"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = 30  # idle keep-alive connections are closed after this
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch("PATCH")

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests and the demo own the output
        return

    def _dispatch(self, method: str) -> None:
        sim = self.server.sim
        try:
            body = self._read_body()
            path = urlsplit(self.path).path
            if path == "/_sim/control":
                self._handle_control(method, body)
                return
            route = _ROUTE.match(path)
            if route is None:
                self._send_json(404, _STATUS_BODIES[404])
                return
            if route.group("search") and method == "POST" and sim.range_filters:
                time_range = _time_range(body)
                if time_range is not None:
                    self._serve_range_count(route.group("ws"), body, *time_range)
                    return
            sim._count_request()
            if bool(route.group("search")) != (method == "POST"):
                self._send_json(404, _STATUS_BODIES[404])
                return
            if not self._authorized():
                self._send_json(401, _UNAUTHORIZED)
                return
            wait = sim._over_rate_limit()
            if wait is not None:
                self._send_json(429, _STATUS_BODIES[429], {"Retry-After": str(wait)})
                return
            fault = sim._take_fault()
            if fault is not None and fault.kind == "status":
                self._send_status_fault(fault)
                return
            workspace = route.group("ws")
            workspace_id = int(workspace) if workspace is not None else None
            if workspace_id is not None and workspace_id not in sim._known_workspaces:
                self._send_json(404, {"code": "ERROR_CODE_NOT_FOUND", "message": "Workspace not found."})
                return
            try:
                page, per_page, include_data, key, descending = self._page_params(method, body)
            except _BadRequest as exc:
                self._send_json(400, {"code": "ERROR_CODE_INPUT_ERROR", "message": str(exc)})
                return
            envelope = sim._page(workspace_id, page, per_page, include_data, key, descending)
            payload = json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()
            if fault is not None and fault.kind == "truncated":
                self._send(200, payload[: max(1, len(payload) // 2)], "application/json; charset=utf-8")
            elif fault is not None and fault.kind == "non_json":
                page_html = _GATEWAY_PAGE.format(status=500, reason="Internal Server Error").encode()
                self._send(200, page_html, "text/html; charset=utf-8")
            else:
                self._send(200, payload, "application/json; charset=utf-8")
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception:  # a bug in the simulator must still answer, as a server would
            try:
                self._send_json(500, _STATUS_BODIES[500])
            except OSError:
                self.close_connection = True

    def _serve_range_count(self, workspace: str | None, body: bytes, since_us: int, until_us: int) -> None:
        """A count query (see the module docstring): authorised like any request, never faulted."""
        sim = self.server.sim
        if not self._authorized():
            self._send_json(401, _UNAUTHORIZED)
            return
        workspace_id = int(workspace) if workspace is not None else None
        if workspace_id is not None and workspace_id not in sim._known_workspaces:
            self._send_json(404, {"code": "ERROR_CODE_NOT_FOUND", "message": "Workspace not found."})
            return
        try:
            _page, per_page, _data, _key, _descending = self._page_params("POST", body)
        except _BadRequest as exc:
            self._send_json(400, {"code": "ERROR_CODE_INPUT_ERROR", "message": str(exc)})
            return
        envelope = sim._range_page(workspace_id, since_us, until_us, per_page)
        self._send(
            200, json.dumps(envelope, separators=(",", ":")).encode(), "application/json; charset=utf-8"
        )

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            self.close_connection = True
            raise ConnectionError("request body too large")
        return self.rfile.read(length) if length > 0 else b""

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        expected = self.server.sim.token
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), expected.encode())

    def _page_params(self, method: str, body: bytes) -> tuple[int, int, bool, str, bool]:
        if method == "GET":
            query = parse_qs(urlsplit(self.path).query)
            values: dict[str, Any] = {name: items[-1] for name, items in query.items()}
            sort: Any = None
        else:
            try:
                values = json.loads(body) if body.strip() else {}
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise _BadRequest("the body is not valid JSON") from exc
            if not isinstance(values, dict):
                raise _BadRequest("the body must be a JSON object")
            sort = values.get("sort")
        page = _positive_int(values.get("page", 1), "page")
        per_page = _positive_int(values.get("per_page", 50), "per_page")
        include_data = _boolean(values.get("include_data", False))
        key, descending = "id", True
        if sort not in (None, {}):
            if not isinstance(sort, dict) or len(sort) != 1:
                raise _BadRequest('sort must look like {"id": "asc"} or {"created_at": "desc"}')
            ((key, direction),) = sort.items()
            if key not in ("id", "created_at") or str(direction).lower() not in ("asc", "desc"):
                raise _BadRequest('sort must look like {"id": "asc"} or {"created_at": "desc"}')
            descending = str(direction).lower() == "desc"
        return page, per_page, include_data, key, descending

    def _handle_control(self, method: str, body: bytes) -> None:
        host = self.client_address[0]
        if not ipaddress.ip_address(host.split("%")[0]).is_loopback:
            self._send_json(403, {"code": "ERROR_CODE_ACCESS_DENIED", "message": "Loopback clients only."})
            return
        if method != "POST":
            self._send_json(404, _STATUS_BODIES[404])
            return
        if not self._authorized():
            self._send_json(401, _UNAUTHORIZED)
            return
        try:
            command = json.loads(body or b"{}")
            if not isinstance(command, dict):
                raise ValueError("the body must be a JSON object")
            answer = self.server.sim._control(command)
        except (ValueError, KeyError, TypeError) as exc:
            self._send_json(400, {"code": "ERROR_CODE_INPUT_ERROR", "message": str(exc)})
            return
        self._send_json(200, answer)

    def _send_status_fault(self, fault: _Fault) -> None:
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
        if fault.status in (502, 504):
            reason = self.responses.get(fault.status, ("Error",))[0]
            page_html = _GATEWAY_PAGE.format(status=fault.status, reason=reason).encode()
            self._send(fault.status, page_html, "text/html; charset=utf-8", headers)
            return
        body = _STATUS_BODIES.get(fault.status, {"code": "ERROR_FATAL", "message": f"HTTP {fault.status}"})
        self._send_json(fault.status, body, headers)

    def _send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(body).encode(), "application/json; charset=utf-8", headers)

    def _send(
        self, status: int, payload: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


_RANGE_OPERATORS = {">=": (0, 0), ">": (0, 1), "<": (1, 0), "<=": (1, 1)}  # (lower/upper bound, +1 µs)
_EPOCH_MS_US = 1000


def _time_range(body: bytes) -> tuple[int, int] | None:
    """The [since, until) range in µs of a search body filtering ``created_at``; None when the body has no
    such filter (or is not readable: the ordinary path answers that)."""
    try:
        values = json.loads(body) if body.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    filters = values.get("search") if isinstance(values, dict) else None
    if not isinstance(filters, list) or not filters:
        return None
    bounds: list[int | None] = [None, None]
    for item in filters:
        if not isinstance(item, dict):
            return None
        for key, value in item.items():
            column, _, operator = str(key).partition("|")
            if column != "created_at" or operator not in _RANGE_OPERATORS:
                return None
            if not isinstance(value, int) or isinstance(value, bool):
                return None
            which, plus_one = _RANGE_OPERATORS[operator]
            bounds[which] = value * _EPOCH_MS_US + plus_one  # times are µs; [since, until)
    since = bounds[0] if bounds[0] is not None else -(2**62)
    until = bounds[1] if bounds[1] is not None else 2**62
    return since, until


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise _BadRequest(f"{name} must be a positive integer")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise _BadRequest(f"{name} must be a positive integer") from None
    if number < 1:
        raise _BadRequest(f"{name} must be a positive integer")
    return number


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], sim: Simulator) -> None:
        self.sim = sim
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host name up (getfqdn); a loopback simulator has no need.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Close kept-alive connections too, so a stopped simulator really stops answering."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def serve_forever(host: str = "127.0.0.1", port: int = 8787, **options: Any) -> None:
    """Run a simulator until SIGINT or SIGTERM (``audit-monitor simulate``). Prints where it listens."""
    stopped = threading.Event()
    simulator = Simulator(host=host, port=port, **options)
    base_url = simulator.start()
    previous: dict[int, Any] = {}

    def stop(signum: int, frame: FrameType | None) -> None:
        stopped.set()

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, stop)
    try:
        latest = max((incident.start for incident in simulator.incidents), default=None)
        print(f"Xano simulator listening on {base_url}", flush=True)
        print(
            f"  workspace endpoints: {base_url}/api:meta/workspace/{simulator.workspace_id}/audit_log; "
            f"instance-wide: {base_url}/api:meta/audit_log",
            flush=True,
        )
        print(
            f"  {simulator.event_count()} events in history, {len(simulator.incidents)} planted incidents"
            + (f" (latest {latest:%Y-%m-%d %H:%M} UTC)" if latest else ""),
            flush=True,
        )
        while not stopped.wait(0.5):
            pass
    finally:
        simulator.stop()
        for number, handler in previous.items():
            signal.signal(number, handler)


class TricklingUpstream(socketserver.ThreadingTCPServer):
    """A slow upstream, for the fault tests and the sources bench: every request is answered 200 with a
    valid audit-log page, one byte of the body every ``gap`` seconds (each read gets a byte well inside any
    read timeout; the whole answer takes minutes)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, gap: float) -> None:
        self.gap = gap
        self.closed = threading.Event()
        self.connections = 0
        page = {"items": [{"id": n, "created_at": 1_700_000_000_000} for n in range(40, 0, -1)]}
        self.body = json.dumps({**page, "curPage": 1, "nextPage": None}).encode()
        upstream = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                upstream.connections += 1
                request = b""
                while b"\r\n\r\n" not in request:  # the headers; the JSON body follows, unread
                    chunk = self.request.recv(65536)
                    if not chunk:
                        return
                    request += chunk
                head = (
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(upstream.body)}\r\n\r\n"
                )
                try:
                    self.request.sendall(head.encode())
                    for byte in upstream.body:
                        if upstream.closed.wait(upstream.gap):
                            return
                        self.request.sendall(bytes([byte]))
                except OSError:
                    return

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        self.closed.set()
        self.shutdown()
        self.server_close()

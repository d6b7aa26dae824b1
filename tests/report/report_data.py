"""A hand-computed fixture month: March 2026 in Europe/Berlin (743 hours: DST starts on Sunday the 29th).

Events sit minutes either side of both month edges, around the DST jump, and either side of the
business-hours edges in winter and in summer time, so a report that used UTC months, a fixed offset or
UTC days would count differently. The expected figures in test_report_figures.py are worked out by hand
from the table below. Fixtures using them are in conftest.py.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from monitor.alerts.model import Alert
from monitor.config import Config
from monitor.events import canonical_json, normalize
from monitor.store import Cursor, Store

BERLIN = "Europe/Berlin"
NOW = datetime(2026, 4, 2, 8, 0, tzinfo=UTC)  # when the fixture's report is made


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# (source, id, created_at UTC, type, user email)   local time (Berlin) / in March? / business hours?
FIXTURE_EVENTS: list[tuple[str, int, str, str, str | None]] = [
    ("prod", 1, "2026-02-28T22:59:00Z", "Delete Table", "ana@corp.io"),  # Feb 28 23:59 CET: before
    ("prod", 2, "2026-02-28T23:00:00Z", "Login", "ana@corp.io"),  # Mar 1 00:00 CET (Sun): in, off
    ("prod", 3, "2026-02-28T23:01:00Z", "Update RBAC Permissions", "ben@corp.io"),  # Mar 1 00:01: in, off
    ("prod", 4, "2026-03-02T10:00:00Z", "Create Table", "ana@corp.io"),  # Mon 11:00 CET: business
    ("prod", 5, "2026-03-02T10:05:00Z", "Update Record", "ana@corp.io"),  # Mon 11:05 CET: business
    ("prod", 16, "2026-03-10T12:00:00Z", "set live branch", "ben@corp.io"),  # Tue 13:00 CET: business
    ("staging", 4, "2026-03-15T12:00:00Z", "Update Workspace", "ana@corp.io"),  # Sun 13:00 CET: off
    ("prod", 6, "2026-03-27T07:30:00Z", "Update Function", "ben@corp.io"),  # Fri 08:30 CET: business
    ("prod", 7, "2026-03-27T18:30:00Z", "Delete Table", "ben@corp.io"),  # Fri 19:30 CET: off
    ("prod", 8, "2026-03-29T00:30:00Z", "Login Failed", "mallory@evil.io"),  # Sun 01:30 CET: off
    ("prod", 9, "2026-03-29T01:30:00Z", "Update Environment Variable", "ana@corp.io"),  # Sun 03:30 CEST
    ("prod", 10, "2026-03-29T22:30:00Z", "Run Query", None),  # Mon Mar 30 00:30 CEST: off
    ("prod", 11, "2026-03-30T06:30:00Z", "Create Branch", "ana@corp.io"),  # Mon 08:30 CEST: business
    ("prod", 12, "2026-03-30T17:30:00Z", "Frobnicate Widget", "ben@corp.io"),  # Mon 19:30 CEST: off
    ("prod", 13, "2026-03-31T21:59:00Z", "Delete User", "ana@corp.io"),  # Tue 23:59 CEST: in, off
    ("prod", 14, "2026-03-31T22:00:00Z", "Login", "ana@corp.io"),  # Apr 1 00:00 CEST: after
    ("prod", 15, "2026-03-31T22:01:00Z", "Delete Workspace", "ben@corp.io"),  # Apr 1 00:01 CEST: after
]
IN_MONTH = 14


def entry(event_id: int, created_at: str, event_type: str, email: str | None) -> dict[str, Any]:
    return {
        "id": event_id,
        "created_at": created_at,
        "type": event_type,
        "msg": f"{event_type} #{event_id} <b>&</b>",
        "user": {"id": 1, "email": email} if email else None,
        "workspace": {"id": 1, "name": "shop"},
        "branch": {"id": 1, "label": "v1"},
    }


def archive(store: Store, source: str, entries: list[dict[str, Any]], archived_at: datetime) -> None:
    with store.transaction():
        prev = store.head_hash()
        for item in entries:
            raw = canonical_json(item)
            prev = store.archive(normalize(source, item), raw, prev, archived_at)


def alert(rule_id: str, severity: str, at: str, suppressed: int, key: str) -> Alert:
    return Alert(
        rule_id=rule_id,
        severity=severity,
        title=f"{rule_id} fired <script>",
        text="",
        source="prod",
        event_time=utc(at),
        event_ids=(),
        group_key=key,
        suppressed_count=suppressed,
    )


FIXTURE_ALERTS = [
    alert("xano.auth.failed-login-burst", "high", "2026-03-05T09:00:00Z", 1, "a"),
    alert("xano.auth.failed-login-burst", "high", "2026-03-29T00:30:00Z", 3, "b"),
    alert("xano.destructive.off-hours", "critical", "2026-03-27T18:30:00Z", 0, "c"),
    alert("monitor.retention_gap", "high", "2026-03-20T00:00:00Z", 0, "d"),
    alert("xano.destructive.off-hours", "critical", "2026-03-31T22:00:00Z", 0, "e"),  # Apr 1 00:00 CEST
    alert("xano.destructive.off-hours", "critical", "2026-02-28T22:59:59Z", 0, "f"),  # Feb 28 23:59:59
]


def fill_fixture(store: Store) -> None:
    first_polls = {"prod": utc("2026-02-01T00:00:00Z"), "staging": utc("2026-03-15T13:00:00Z")}
    for source, archived_at in first_polls.items():
        rows = [entry(i, t, ty, u) for s, i, t, ty, u in FIXTURE_EVENTS if s == source]
        archive(store, source, rows, archived_at)
    with store.transaction():
        for item in FIXTURE_ALERTS:
            store.record_alert(item, [], utc("2026-04-01T00:00:00Z"))
        store.record_gap(
            "prod", "polling", utc("2026-03-10T02:00:00Z"), utc("2026-03-10T05:00:00Z"),
            "no successful poll for 3:00:00", NOW,
        )  # fmt: skip
        store.record_gap(
            "prod", "retention", utc("2026-03-20T00:00:00Z"), utc("2026-03-21T00:00:00Z"),
            "events may have expired upstream", NOW,
        )  # fmt: skip
        for start, end, detail in (
            ("2026-02-10T00:00:00Z", "2026-02-11T00:00:00Z", "before"),
            ("2026-02-28T20:00:00Z", "2026-03-01T02:00:00Z", "across the start"),
        ):
            store.record_gap("prod", "polling", utc(start), utc(end), detail, NOW)
        store.save_cursor(Cursor("prod", last_id=15, last_success_at=utc("2026-04-02T07:58:00Z")))
        store.save_cursor(Cursor("staging", last_id=4, last_success_at=utc("2026-03-15T13:00:00Z")))


def fixture_config(tmp_path: Path, **extra: Any) -> Config:
    data: dict[str, Any] = {
        "timezone": BERLIN,
        "state": {"path": str(tmp_path / "archive.db")},
        "sources": [
            {"name": "prod", "base_url": "http://127.0.0.1:1", "token": "t", "plan_retention": "24h"},
            {"name": "staging", "base_url": "http://127.0.0.1:1", "token": "t", "plan_retention": "7d"},
            {"name": "dev", "base_url": "http://127.0.0.1:1", "token": "t"},
        ],
        "report": {"out_dir": str(tmp_path / "reports")},
        "server": {"listen": ""},
    }
    data.update(extra)
    return Config.model_validate(data)


# --- a real SMTP server on 127.0.0.1 -----------------------------------------------------------------------


@dataclass
class Mailbox:
    host: str
    port: int
    messages: list[Envelope] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    fail_next: int = 0  # answer this many DATA commands with 451 (a transient server failure)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        with self.lock:
            if self.fail_next:
                self.fail_next -= 1
                return "451 4.3.0 mailbox temporarily unavailable"
            self.messages.append(envelope)
        return "250 OK"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mail_config(tmp_path: Path, box: Mailbox, **report: Any) -> Config:
    return fixture_config(
        tmp_path,
        alerts={
            "console": False,
            "email": {
                "smtp": {"host": box.host, "port": box.port, "security": "none", "timeout": "10s"},
                "from": "monitor@corp.io",
                "to": ["security@corp.io"],
            },
        },
        report={
            "out_dir": str(tmp_path / "reports"),
            "to": ["compliance@corp.io", "auditor@corp.io"],
            **report,
        },
    )

"""Small records beside the archive: ``meta`` (key/value), coverage ``gaps``, and the monthly report's
per-period claims (``reports``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from monitor.events import format_timestamp
from monitor.store.chain import VerifyResult, iso, parse_time
from monitor.store.connection import StoreCore

LAST_VERIFY_KEY = "chain_last_verify"


@dataclass(frozen=True)
class VerifyRecord:
    """The outcome of the last scheduled walk of the hash chain, as the console and ``status`` show it."""

    verified_at: datetime
    ok: bool
    rows_checked: int
    seconds: float
    head_seq: int = 0
    bad_seq: int | None = None
    bad_source: str | None = None
    bad_event_id: int | None = None
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "verified_at": format_timestamp(self.verified_at),
            "ok": self.ok,
            "rows_checked": self.rows_checked,
            "seconds": self.seconds,
            "head_seq": self.head_seq,
            "bad_seq": self.bad_seq,
            "bad_source": self.bad_source,
            "bad_event_id": self.bad_event_id,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Claim:
    """A monthly report's claim: who is sending (or sent) the report of ``period``."""

    period: str
    status: str  # sending | sent | failed | written
    claimed_at: datetime
    claimed_by: str
    attempts: int
    sent_at: datetime | None
    message_id: str | None
    error: str | None

    @property
    def done(self) -> bool:
        return self.status in ("sent", "written")


class MetaMixin(StoreCore):
    # meta ---------------------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def set_meta_once(self, key: str, value: str) -> str:
        """Set ``key`` unless it is set; returns its value either way (one transaction)."""
        with self.transaction():
            self.conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT DO NOTHING", (key, value)
            )
            stored = self.get_meta(key)
        assert stored is not None
        return stored

    def delete_meta(self, key: str) -> None:
        self.conn.execute("DELETE FROM meta WHERE key = ?", (key,))

    # the last verify ----------------------------------------------------------------------------------

    def record_verify(self, result: VerifyResult, at: datetime, seconds: float) -> VerifyRecord:
        """Keep ``result`` as the last verify (call inside a transaction, with any alert it raises)."""
        record = VerifyRecord(
            verified_at=at,
            ok=result.ok,
            rows_checked=result.rows_checked,
            seconds=round(seconds, 3),
            head_seq=result.head_seq,
            bad_seq=result.bad_seq,
            bad_source=result.bad_source,
            bad_event_id=result.bad_event_id,
            reason=result.reason,
        )
        self.set_meta(LAST_VERIFY_KEY, json.dumps(record.to_json(), sort_keys=True))
        return record

    def last_verify(self) -> VerifyRecord | None:
        """The last verify the daemon recorded; None before the first (or if the record is unreadable)."""
        text = self.get_meta(LAST_VERIFY_KEY)
        if text is None:
            return None
        try:
            data = json.loads(text)
            verified_at = parse_time(data["verified_at"])
            assert verified_at is not None
            return VerifyRecord(
                verified_at=verified_at,
                ok=bool(data["ok"]),
                rows_checked=int(data["rows_checked"]),
                seconds=float(data.get("seconds", 0.0)),
                head_seq=int(data.get("head_seq", 0)),
                bad_seq=data.get("bad_seq"),
                bad_source=data.get("bad_source"),
                bad_event_id=data.get("bad_event_id"),
                reason=str(data.get("reason", "")),
            )
        except (ValueError, KeyError, TypeError, AssertionError):
            return None

    # gaps ---------------------------------------------------------------------------------------------

    def record_gap(
        self, source: str, kind: str, start: datetime, end: datetime, detail: str, at: datetime
    ) -> None:
        self.conn.execute(
            'INSERT INTO gaps (source, kind, start, "end", detail, recorded_at) VALUES (?, ?, ?, ?, ?, ?)',
            (source, kind, format_timestamp(start), format_timestamp(end), detail, format_timestamp(at)),
        )

    def gaps(self, since: datetime | None = None, until: datetime | None = None) -> list[dict[str, Any]]:
        sql = 'SELECT source, kind, start, "end", detail FROM gaps'  # END is reserved on PostgreSQL
        params: list[str] = []
        if since is not None and until is not None:
            sql += ' WHERE "end" >= ? AND start < ?'
            params = [format_timestamp(since), format_timestamp(until)]
        return [
            {
                "source": s,
                "kind": k,
                "start": datetime.fromisoformat(a),
                "end": datetime.fromisoformat(b),
                "detail": d,
            }
            for s, k, a, b, d in self.conn.execute(sql + " ORDER BY start", params)
        ]

    # monthly report claims (monitor/report/schedule.py) -----------------------------------------------

    def get_claim(self, period: str) -> Claim | None:
        row = self.conn.execute(
            "SELECT period, status, claimed_at, claimed_by, attempts, sent_at, message_id, error "
            "FROM reports WHERE period = ?",
            (period,),
        ).fetchone()
        if row is None:
            return None
        return Claim(
            row[0], row[1], datetime.fromisoformat(row[2]), row[3], row[4], parse_time(row[5]), row[6], row[7]
        )

    def insert_claim(self, period: str, owner: str, now: datetime) -> None:
        """Inside a transaction: the first claim of ``period``, by ``owner``, status sending."""
        self.conn.execute(
            "INSERT INTO reports (period, status, claimed_at, claimed_by, attempts) "
            "VALUES (?, 'sending', ?, ?, 1)",
            (period, format_timestamp(now), owner),
        )

    def take_over_claim(self, current: Claim, owner: str, now: datetime) -> bool:
        """Inside a transaction: claim ``current``'s period for ``owner`` if it is still as read (compare and
        set on status and holder). False if someone else changed it meanwhile."""
        return bool(
            self.conn.execute(
                "UPDATE reports SET status = 'sending', claimed_at = ?, claimed_by = ?, "
                "attempts = attempts + 1 WHERE period = ? AND status = ? AND claimed_by = ?",
                (format_timestamp(now), owner, current.period, current.status, current.claimed_by),
            ).rowcount
        )

    def finish_claim(
        self, period: str, owner: str, now: datetime, status: str, message_id: str | None, error: str | None
    ) -> bool:
        """Record the outcome of ``owner``'s claim; False if the claim is no longer theirs."""
        with self.transaction():
            changed = self.conn.execute(
                "UPDATE reports SET status = ?, sent_at = ?, message_id = ?, error = ? "
                "WHERE period = ? AND claimed_by = ? AND status = 'sending'",
                (
                    status,
                    format_timestamp(now) if status in ("sent", "written") else None,
                    message_id,
                    error,
                    period,
                    owner,
                ),
            ).rowcount
        return bool(changed)

    def record_sent_report(self, period: str, owner: str, now: datetime, message_id: str) -> None:
        """The period's report was mailed outside the schedule: record it as sent."""
        stamp = iso(now)
        with self.transaction():
            self.conn.execute(
                """INSERT INTO reports (period, status, claimed_at, claimed_by, attempts, sent_at, message_id)
                   VALUES (?, 'sent', ?, ?, 1, ?, ?)
                   ON CONFLICT(period) DO UPDATE SET status = 'sent', claimed_at = excluded.claimed_at,
                       claimed_by = excluded.claimed_by, attempts = attempts + 1, sent_at = excluded.sent_at,
                       message_id = excluded.message_id, error = NULL""",
                (period, stamp, owner, stamp, message_id),
            )

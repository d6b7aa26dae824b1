"""What `audit-monitor status` shows: per source cursor, last success/error, lag, archived; outbox per
channel; recent dead letters; archive size and retention anchor. ``status_data`` is also the ``--json`` form.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Any

from monitor.config import Config
from monitor.display import one_line, safe_text
from monitor.events import format_timestamp
from monitor.store import Store
from monitor.timeutil import format_duration, format_time

DEAD_LETTERS_SHOWN = 10


def status_data(store: Store, config: Config, now: datetime) -> dict[str, Any]:
    cursors = {c.source: c for c in store.cursors()}
    configured = {s.name for s in config.sources}
    names = [s.name for s in config.sources] + sorted(set(cursors) - configured)
    sources = []
    for name in names:
        cursor = cursors.get(name)
        newest = store.newest_event_time(name)
        sources.append(
            {
                "source": name,
                "configured": name in configured,
                "cursor_id": cursor.last_id if cursor else None,
                "cursor_created_at": _iso(cursor.last_created_at if cursor else None),
                "last_success_at": _iso(cursor.last_success_at if cursor else None),
                "last_attempt_at": _iso(cursor.last_attempt_at if cursor else None),
                "last_error": cursor.last_error if cursor else None,
                "last_error_kind": cursor.error_kind if cursor else None,
                "last_error_at": _iso(cursor.last_error_at if cursor else None),
                "newest_event_at": _iso(newest),
                "lag_seconds": round((now - newest).total_seconds(), 1) if newest else None,
                "archived": store.event_count(name),
            }
        )
    outbox = store.outbox_counts()
    channels: dict[str, dict[str, int]] = {}
    for (channel, state), count in sorted(store.outbox_depth().items()):
        channels.setdefault(channel, {"pending": 0, "sent": 0, "dead": 0})[state] = count
    dead_letters = [
        {
            "channel": letter.channel,
            "alert_id": letter.alert_id,
            "rule_id": letter.rule_id,
            "at": format_timestamp(letter.failed_at),
            "attempts": letter.attempts,
            "error": letter.last_error.splitlines()[0][:300] if letter.last_error else None,
        }
        for letter in store.dead_letters(limit=DEAD_LETTERS_SHOWN)
    ]
    oldest = store.oldest_event_time()
    last_verify = store.last_verify()
    return {
        "time": format_timestamp(now),
        "sources": sources,
        "outbox": {
            "pending": outbox["pending"],
            "sent": outbox["sent"],
            "dead_letters": outbox["dead"],
            "channels": channels,
        },
        "recent_dead_letters": dead_letters,
        "alerts": store.alert_count(),
        "anchor_notices": store.anchor_notice_count(),
        "archive": {
            "events": store.event_count(),
            "bytes": store.file_size(),
            "path": store.path,
            "oldest_event_at": _iso(oldest),
            "retention_days": config.state.retention_days,
            "pruned_at": store.get_meta("chain_anchor_pruned_at"),
        },
        # The daemon's last walk of the hash chain (daily and at start); None until it has run once.
        "integrity": {"last_verify": last_verify.to_json() if last_verify is not None else None},
    }


def _iso(value: datetime | None) -> str | None:
    return format_timestamp(value) if value else None


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def render_status(store: Store, config: Config, now: datetime) -> str:
    return render_status_data(status_data(store, config, now), config.tz)


def _when(iso: str | None, tz: tzinfo) -> str | None:
    """A ``status_data`` time (ISO 8601, UTC: for scripts) as people read it: the configured zone, seconds."""
    return format_time(datetime.fromisoformat(iso), tz) if iso else None


def render_status_data(data: dict[str, Any], tz: tzinfo) -> str:
    lines: list[str] = []
    rows: list[tuple[str, ...]] = [("SOURCE", "CURSOR", "LAST SUCCESS", "LAG", "ARCHIVED", "LAST ERROR")]
    for s in data["sources"]:
        lag = s["lag_seconds"]
        error = "-"
        if s["last_error"]:
            kind = f"[{s['last_error_kind']}] " if s["last_error_kind"] else ""
            # Upstream text: neutralised (no terminal escape or bidi control), on one line.
            first = one_line(safe_text(s["last_error"]).splitlines()[0])
            error = f"{_when(s['last_error_at'], tz) or ''} {kind}{first}".strip()[:100]
        rows.append(
            (
                one_line(s["source"]) + ("" if s["configured"] else " (not configured)"),
                "-" if s["cursor_id"] is None else str(s["cursor_id"]),
                _when(s["last_success_at"], tz) or "never",
                "-" if lag is None else format_duration(lag),
                str(s["archived"]),
                error,
            )
        )
    if len(rows) == 1:
        lines.append("no source has been polled yet")
    else:
        lines.extend(_table(rows))
    outbox = data["outbox"]
    lines.append("")
    lines.append(
        f"alerts: {data['alerts']} recorded; "
        + (f"chain anchors: {data['anchor_notices']} published; " if data["anchor_notices"] else "")
        + f"outbox: {outbox['pending']} pending, {outbox['sent']} sent, {outbox['dead_letters']} dead letters"
    )
    if outbox["channels"]:
        channel_rows: list[tuple[str, ...]] = [("CHANNEL", "PENDING", "SENT", "DEAD")]
        for name, counts in outbox["channels"].items():
            channel_rows.append((name, str(counts["pending"]), str(counts["sent"]), str(counts["dead"])))
        lines.extend("  " + line for line in _table(channel_rows))
    if data["recent_dead_letters"]:
        lines.append("")
        lines.append(f"recent dead letters (newest first, at most {DEAD_LETTERS_SHOWN}):")
        for dead in data["recent_dead_letters"]:
            lines.append(
                f"  {_when(dead['at'], tz)}  {dead['channel']}  {one_line(dead['rule_id'])}  "
                f"alert {dead['alert_id']}  after {dead['attempts']} attempts: "
                f"{one_line(dead['error'] or '-')}"
            )
    archive = data["archive"]
    lines.append("")
    retention = f"kept {archive['retention_days']} days" if archive["retention_days"] else "kept forever"
    oldest = f", oldest {_when(archive['oldest_event_at'], tz)}" if archive["oldest_event_at"] else ""
    pruned = f", last pruned {_when(archive['pruned_at'], tz)}" if archive["pruned_at"] else ""
    lines.append(
        f"archive: {archive['events']} events, {archive['bytes'] / 1e6:.1f} MB in {archive['path']} "
        f"({retention}{oldest}{pruned})"
    )
    verified = data["integrity"]["last_verify"]
    if verified is None:
        lines.append("integrity: not verified by the daemon yet (`audit-monitor verify` checks it now)")
    elif verified["ok"]:
        lines.append(
            f"integrity: hash chain verified {_when(verified['verified_at'], tz)}, "
            f"{verified['rows_checked']} rows, all good"
        )
    else:
        lines.append(
            f"integrity: hash chain BROKEN at the verify of {_when(verified['verified_at'], tz)}: first bad "
            f"row seq {verified['bad_seq']}: {one_line(verified['reason'])}"
        )
    return "\n".join(lines)

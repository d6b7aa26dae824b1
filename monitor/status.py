"""What `audit-monitor status` shows: per source cursor, last success/error, lag; outbox; archive size."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from monitor.config import Config
from monitor.events import format_timestamp
from monitor.store import Store


def status_data(store: Store, config: Config, now: datetime) -> dict[str, Any]:
    cursors = {c.source: c for c in store.cursors()}
    names = [s.name for s in config.sources] + sorted(set(cursors) - {s.name for s in config.sources})
    sources = []
    for name in names:
        cursor = cursors.get(name)
        newest = store.newest_event_time(name)
        sources.append(
            {
                "source": name,
                "configured": any(s.name == name for s in config.sources),
                "cursor_id": cursor.last_id if cursor else None,
                "cursor_created_at": _iso(cursor.last_created_at if cursor else None),
                "last_success_at": _iso(cursor.last_success_at if cursor else None),
                "last_error": cursor.last_error if cursor else None,
                "last_error_at": _iso(cursor.last_error_at if cursor else None),
                "lag_seconds": round((now - newest).total_seconds(), 1) if newest else None,
                "archived": store.event_count(name),
            }
        )
    outbox = store.outbox_counts()
    return {
        "sources": sources,
        "outbox": {"pending": outbox["pending"], "sent": outbox["sent"], "dead_letters": outbox["dead"]},
        "alerts": store.alert_count(),
        "archive": {"events": store.event_count(), "bytes": store.file_size(), "path": store.path},
    }


def _iso(value: datetime | None) -> str | None:
    return format_timestamp(value) if value else None


def render_status(store: Store, config: Config, now: datetime) -> str:
    data = status_data(store, config, now)
    lines = []
    header = ("SOURCE", "CURSOR", "LAST SUCCESS", "LAG", "ARCHIVED", "LAST ERROR")
    rows = [header]
    for s in data["sources"]:
        lag = s["lag_seconds"]
        rows.append(
            (
                s["source"] + ("" if s["configured"] else " (not configured)"),
                "-" if s["cursor_id"] is None else str(s["cursor_id"]),
                s["last_success_at"] or "never",
                "-" if lag is None else _human(lag),
                str(s["archived"]),
                (s["last_error"] or "-").splitlines()[0][:80],
            )
        )
    if len(rows) == 1:
        lines.append("no source has been polled yet")
    else:
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines.extend("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)
    outbox = data["outbox"]
    lines.append("")
    lines.append(
        f"alerts: {data['alerts']} recorded; outbox: {outbox['pending']} pending, {outbox['sent']} sent, "
        f"{outbox['dead_letters']} dead letters"
    )
    archive = data["archive"]
    lines.append(f"archive: {archive['events']} events, {archive['bytes'] / 1e6:.1f} MB in {archive['path']}")
    return "\n".join(lines)


def _human(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"

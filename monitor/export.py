"""Export archived events as CSV or JSON Lines, streamed (a month of events never sits in memory)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from typing import TextIO
from zoneinfo import ZoneInfo

from monitor.events import AuditEvent

CSV_COLUMNS = [
    "source",
    "id",
    "created_at",
    "type",
    "msg",
    "user.id",
    "user.email",
    "workspace.id",
    "workspace.name",
    "branch.label",
    "obj.type",
    "obj.id",
    "label",
    "data",
]


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    text = str(value)
    # A spreadsheet would run "=cmd(...)" from event text: keep it a literal string.
    if text[:1] in ("=", "+", "-", "@", "\t", "\r") and not _is_number(text):
        return "'" + text
    return text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def csv_row(event: AuditEvent, tz: ZoneInfo) -> list[str]:
    row = []
    for column in CSV_COLUMNS:
        if column == "created_at":
            row.append(event.created_at.astimezone(tz).isoformat())
        else:
            row.append(_cell(event.get(column)))
    return row


def write_csv(events: Iterable[AuditEvent], out: TextIO, tz: ZoneInfo) -> int:
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    count = 0
    for event in events:
        writer.writerow(csv_row(event, tz))
        count += 1
    return count


def write_jsonl(events: Iterable[AuditEvent], out: TextIO, tz: ZoneInfo) -> int:
    count = 0
    for event in events:
        record = event.to_dict()
        record["created_at"] = event.created_at.astimezone(tz).isoformat()
        out.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
        count += 1
    return count

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


_FORMULA_START = frozenset("=+-@\t\r")
# json.dumps with options builds a new encoder per call; one shared encoder, same output.
_encode_json = json.JSONEncoder(ensure_ascii=False, sort_keys=True).encode


def _cell(value: object) -> str:
    if value is None:
        return ""
    if type(value) is str:  # the common case, tested first: this runs ~14 times per exported event
        text = value
    elif isinstance(value, dict | list):
        return _encode_json(value)
    else:
        text = str(value)
    # A spreadsheet would run "=cmd(...)" from event text: keep it a literal string.
    if text and text[0] in _FORMULA_START and not _is_number(text):
        return "'" + text
    return text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# Each column's path into the raw entry, split once (None: a normalised field of AuditEvent). Same values
# as AuditEvent.get, without re-parsing the paths for every event of a million-event export.
_COLUMN_PATHS = [
    (column, None if column in ("source", "id", "created_at", "type", "msg") else tuple(column.split(".")))
    for column in CSV_COLUMNS
]


def csv_row(event: AuditEvent, tz: ZoneInfo) -> list[str]:
    row = []
    for column, path in _COLUMN_PATHS:
        if path is None:
            if column == "created_at":
                row.append(event.created_at.astimezone(tz).isoformat())
                continue
            value: object = getattr(event, column)
        else:
            value = event.raw
            for part in path:
                value = value.get(part) if isinstance(value, dict) else None
                if value is None:
                    break
        row.append(_cell(value))
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

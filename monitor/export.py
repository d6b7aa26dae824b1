"""Export archived events as CSV or JSON Lines, streamed (a month of events never sits in memory).

A CSV cell holds text as it is (one that a spreadsheet would run as a formula behind a quote), a number,
true or false as Python spells them (``True``), and an object or a list in the archive's JSON spelling
(``canonical_json``: sorted keys, no spaces); null or no value is an empty cell.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from monitor.events import AuditEvent, canonical_json, decode_entry
from monitor.store import Store

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


# The cells read from the entry, by path: ``csv_row`` reads them from the decoded entry, ``write_events_csv``
# has SQLite read them (Store.iter_entry_values).
ENTRY_PATHS = tuple(CSV_COLUMNS[5:])
_FORMULA_START = frozenset("=+-@\t\r")


def _cell(value: object) -> str:
    if value is None:
        return ""
    if type(value) is str:  # the common case, tested first: this runs ~14 times per exported event
        text = value
    elif type(value) is int:  # ids: digits, or "-" and digits, which is a number and never quoted
        return str(value)
    elif isinstance(value, dict | list):
        # The archive's spelling, which is what SQLite reads out of the archived entry; an empty list or
        # object without a pass through the encoder (most events have no labels).
        return canonical_json(value) if value else ("[]" if isinstance(value, list) else "{}")
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


_NO_OBJECT: dict[str, object] = {}


def _object(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else _NO_OBJECT


def csv_row(event: AuditEvent, tz: ZoneInfo) -> list[str]:
    """One event as the cells of CSV_COLUMNS, in order: the normalised fields, then paths into the raw
    entry (a path through a missing or non-object value is empty), as ``AuditEvent.get`` reads them.

    Written out column by column rather than looping over the paths: this runs for every event of a
    month-long export or report (a million rows), and the loop's bookkeeping was half its cost."""
    raw = event.raw
    user, workspace = _object(raw.get("user")), _object(raw.get("workspace"))
    branch, obj = _object(raw.get("branch")), _object(raw.get("obj"))
    return [
        _cell(event.source),
        _cell(event.id),
        event.created_at.astimezone(tz).isoformat(),
        _cell(event.type),
        _cell(event.msg),
        _cell(user.get("id")),
        _cell(user.get("email")),
        _cell(workspace.get("id")),
        _cell(workspace.get("name")),
        _cell(branch.get("label")),
        _cell(obj.get("type")),
        _cell(obj.get("id")),
        _cell(raw.get("label")),
        _cell(raw.get("data")),
    ]


def write_csv(events: Iterable[AuditEvent], out: TextIO, tz: ZoneInfo) -> int:
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    count = 0
    for event in events:
        writer.writerow(csv_row(event, tz))
        count += 1
    return count


# What _SpelledCells and _Texts remember: at most this many values, each under REMEMBERED_LENGTH characters
# (~15 MB at most, whatever the archive holds).
REMEMBERED_CELLS = 20_000
REMEMBERED_LENGTH = 256


class _SpelledCells(dict[str | None, str]):
    """The CSV cell of a value given in the archive's JSON spelling (None: no value), as ``_cell`` makes it
    of the decoded value. Remembered, for ids, emails, names and labels repeat from row to row; objects
    and lists (``data``) rarely do, and their spelling is their cell."""

    def __init__(self) -> None:
        super().__init__({None: "", "null": "", "true": "True", "false": "False"})

    def __missing__(self, spelling: str) -> str:
        if spelling[0] in "{[":
            return spelling
        if spelling[0] == '"':
            cell = _cell(json.loads(spelling) if "\\" in spelling else spelling[1:-1])
        else:  # a number: its spelling is Python's (json spells a float with repr)
            cell = spelling
        if len(self) < REMEMBERED_CELLS and len(spelling) < REMEMBERED_LENGTH:
            self[spelling] = cell
        return cell


class _LocalTimes:
    """A stored UTC time (``format_timestamp``'s text) as ISO 8601 in the zone, as
    ``datetime.astimezone(tz).isoformat()`` spells it: the zone's offset is looked up once per UTC hour
    (an hour holding an offset change is converted row by row)."""

    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz
        self.hours: dict[str, tuple[timedelta, str] | None] = {}

    def __call__(self, stored: str) -> str:
        hour = stored[:13]
        try:
            offset = self.hours[hour]
        except KeyError:
            offset = self.hours[hour] = self._offset(hour)
        if offset is None:
            return datetime.fromisoformat(stored).astimezone(self.tz).isoformat()
        delta, suffix = offset
        return (datetime.fromisoformat(stored[:26]) + delta).isoformat() + suffix

    def _offset(self, hour: str) -> tuple[timedelta, str] | None:
        start = datetime.fromisoformat(hour + ":00:00+00:00")
        first = start.astimezone(self.tz).utcoffset()
        last = (start + timedelta(hours=1, microseconds=-1)).astimezone(self.tz).utcoffset()
        if first is None or first != last:
            return None
        # The offset as isoformat writes it ("+01:00", "+00:53:28"), from a time of that fixed offset.
        return first, datetime(2000, 1, 1, tzinfo=timezone(first)).isoformat()[19:]


def write_events_csv(
    store: Store,
    since: datetime | None,
    until: datetime | None,
    out: TextIO,
    tz: ZoneInfo,
    *,
    source: str | None = None,
) -> int:
    """``write_csv`` of ``store.iter_events(since, until, source=source)``, byte for byte; return the number
    of rows. Where the archive can (``Store.iter_entry_values``), SQLite reads the cells out of each
    archived entry instead of Python decoding it: a month-long export or report writes a million rows."""
    rows = store.iter_entry_values(since, until, ENTRY_PATHS, source=source)
    if rows is None:
        return write_csv(store.iter_events(since, until, source=source), out, tz)
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    return _write_rows(writer.writerow, rows, tz)


def write_events_csv_file(db_path: str, since: str, until: str, tz_name: str, out_path: str) -> int:
    """``write_events_csv`` of [since, until) (ISO 8601) into a new file, over a read-only connection of its
    own: what the report's worker processes run (their arguments cross the process boundary as text)."""
    with (
        Store.open(db_path, readonly=True) as store,
        open(out_path, "w", encoding="utf-8", newline="") as handle,
    ):
        return write_events_csv(
            store, datetime.fromisoformat(since), datetime.fromisoformat(until), handle, ZoneInfo(tz_name)
        )


def _write_rows(
    write: Callable[[Iterable[Any]], object], rows: Iterator[tuple[Any, ...]], tz: ZoneInfo
) -> int:
    cells, texts, local = _SpelledCells(), _Texts(), _LocalTimes(tz)
    count = 0
    for row in rows:
        count += 1
        name, event_id, created_at, event_type, msg, raw = row[:6]
        if raw is not None:  # an entry SQLite could not read: decoded here
            event = AuditEvent(
                name, event_id, datetime.fromisoformat(created_at), event_type, msg, decode_entry(raw)
            )
            write(csv_row(event, tz))
            continue
        write(
            (
                texts[name],
                event_id,
                local(created_at),
                texts[event_type],
                msg if msg[:1] not in _FORMULA_START else _cell(msg),
                *map(cells.__getitem__, row[6:]),
            )
        )
    return count


class _Texts(dict[str, str]):
    """``_cell`` of a source name or an event type, remembered: a few dozen of them fill a month (and
    entries with a new type each time, no more than REMEMBERED_CELLS)."""

    def __missing__(self, text: str) -> str:
        cell = _cell(text)
        if len(self) < REMEMBERED_CELLS and len(text) < REMEMBERED_LENGTH:
            self[text] = cell
        return cell


def write_jsonl(events: Iterable[AuditEvent], out: TextIO, tz: ZoneInfo) -> int:
    count = 0
    for event in events:
        record = event.to_dict()
        record["created_at"] = event.created_at.astimezone(tz).isoformat()
        out.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
        count += 1
    return count

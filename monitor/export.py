"""Export archived events as CSV or JSON Lines, streamed (a month of events never sits in memory).

A CSV cell holds text as it is (one that a spreadsheet would run as a formula behind a quote), a number,
true or false as Python spells them (``True``), and an object or a list in the archive's JSON spelling
(``canonical_json``: sorted keys, no spaces); null or no value is an empty cell.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
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
    out.write(_HEADER)
    count = 0
    for event in events:
        out.write(csv_line(csv_row(event, tz)))
        count += 1
    return count


# csv.writer's quoting (the excel dialect, QUOTE_MINIMAL): a field holding the delimiter, the quote or a line
# break is quoted, its quotes doubled; lines end in CRLF. Written out here because a row is mostly cells the
# writer remembers already quoted, and csv.writer, re-examining every cell of every row, was a fifth of a
# month-long CSV's time (tests/test_export.py checks the two agree on any text).
_NEEDS_QUOTES = re.compile(r'[,"\r\n]')


def csv_field(cell: str) -> str:
    """A cell as csv.writer writes it."""
    if _NEEDS_QUOTES.search(cell) is None:
        return cell
    return '"' + cell.replace('"', '""') + '"'


def csv_line(cells: Iterable[str]) -> str:
    """A row of cells as csv.writer writes it, with its line end."""
    return ",".join(map(csv_field, cells)) + "\r\n"


_HEADER = csv_line(CSV_COLUMNS)


# What _SpelledCells and _Texts remember: at most this many values, each under REMEMBERED_LENGTH characters
# (~15 MB at most, whatever the archive holds).
REMEMBERED_CELLS = 20_000
REMEMBERED_LENGTH = 256


class _Remembered(dict[Any, str]):
    """Cells remembered by the value they were made of, within the bounds above."""

    def remember(self, value: str, cell: str) -> str:
        if len(self) < REMEMBERED_CELLS and len(value) < REMEMBERED_LENGTH:
            self[value] = cell
        return cell


class _SpelledCells(_Remembered):
    """The CSV field of a value given in the archive's JSON spelling (None: no value): ``_cell`` of the
    decoded value, quoted as csv.writer would. Remembered, for ids, emails, names and labels repeat from
    row to row; objects and lists (``data``) rarely do, and their spelling is their cell."""

    def __init__(self) -> None:
        super().__init__({None: "", "null": "", "true": "True", "false": "False", "[]": "[]", "{}": "{}"})

    def __missing__(self, spelling: str) -> str:
        if spelling[0] in "{[":
            return csv_field(spelling)
        if spelling[0] == '"':
            return self.remember(
                spelling, csv_field(_cell(json.loads(spelling) if "\\" in spelling else spelling[1:-1]))
            )
        return self.remember(spelling, csv_field(spelling))  # a number: its spelling is Python's (repr)


class _Texts(_Remembered):
    """The CSV field of a source name or an event type (``_cell``, quoted), remembered: a few dozen of them
    fill a month (and entries with a new type each time, no more than REMEMBERED_CELLS)."""

    def __missing__(self, text: str) -> str:
        return self.remember(text, csv_field(_cell(text)))


# The part of a stored time (``format_timestamp``'s fixed-width text) after its minute: ":SS.ffffff+00:00".
_STORED_SECONDS = re.compile(r":[0-5][0-9]\.[0-9]{6}\+00:00")


class _LocalTimes:
    """A stored UTC time (``format_timestamp``'s text) as ISO 8601 in the zone, as
    ``datetime.astimezone(tz).isoformat()`` spells it, by splicing text: the local date, hour and minute and
    the offset are worked out once per UTC minute (an offset of whole minutes leaves the seconds as they
    are). A minute holding an offset change, an offset with seconds (local mean time) or a time in another
    form is converted by datetime, row by row."""

    # Rows come in time order, so a minute once passed does not come back: the memory is emptied when full.
    MINUTES = 4096

    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz
        self.minutes: dict[str, tuple[str, str] | None] = {}

    def __call__(self, stored: str) -> str:
        minute = stored[:16]
        try:
            local = self.minutes[minute]
        except KeyError:
            if len(self.minutes) >= self.MINUTES:
                self.minutes.clear()
            local = self.minutes[minute] = self._minute(minute)
        if local is None or _STORED_SECONDS.fullmatch(stored, 16) is None:
            return datetime.fromisoformat(stored).astimezone(self.tz).isoformat()
        prefix, offset = local
        # isoformat leaves out a fraction of zero microseconds.
        seconds = stored[16:19] if stored[20:26] == "000000" else stored[16:26]
        return prefix + seconds + offset

    def _minute(self, minute: str) -> tuple[str, str] | None:
        """The local "YYYY-MM-DDTHH:MM" of a UTC minute and its offset as isoformat writes it ("+01:00"), or
        None when they are not the same for each of its instants."""
        try:
            start = datetime.fromisoformat(minute + ":00+00:00")
            first = start.astimezone(self.tz)
            last = (start + timedelta(minutes=1, microseconds=-1)).astimezone(self.tz)
        except (ValueError, OverflowError):  # not a stored time, or at the ends of datetime's range
            return None
        offset = first.utcoffset()
        if offset is None or offset != last.utcoffset() or offset % timedelta(minutes=1):
            return None
        return first.isoformat()[:16], first.isoformat()[19:]


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
    out.write(_HEADER)
    try:
        return _write_rows(out, rows, tz)
    finally:
        rows.close()  # its read snapshot ends now, while the archive is open, even when writing failed


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


def _write_rows(out: TextIO, rows: Iterator[tuple[Any, ...]], tz: ZoneInfo) -> int:
    # Bound methods: cheaper to call than the objects themselves, a million times.
    cell, text, local = _SpelledCells().__getitem__, _Texts().__getitem__, _LocalTimes(tz).__call__
    lines: list[str] = []
    count = 0
    for row in rows:
        count += 1
        name, event_id, created_at, event_type, msg, raw = row[:6]
        if raw is not None:  # an entry SQLite could not read: decoded here
            event = AuditEvent(
                name, event_id, datetime.fromisoformat(created_at), event_type, msg, decode_entry(raw)
            )
            lines.append(csv_line(csv_row(event, tz)))
        else:
            data = row[-1]  # (the last path) an object, mostly unlike any other: its spelling is its cell
            try:
                lines.append(
                    f"{text(name)},"
                    f"{event_id if type(event_id) is int else csv_field(str(event_id))},"
                    f"{local(created_at)},"
                    f"{text(event_type)},"
                    f"{csv_field(msg if msg[:1] not in _FORMULA_START else _cell(msg))},"
                    f"{','.join(map(cell, row[6:-1]))},"
                    f"{csv_field(data) if data is not None and data[0] == '{' else cell(data)}\r\n"
                )
            except TypeError:  # a column that is not text (an archive altered by hand): its value as it is
                columns = (name, event_id, created_at, event_type, msg)
                lines.append(csv_line([*map(_cell, columns), *map(cell, row[6:])]))
        if len(lines) == 1000:  # written a thousand lines at a time: one write call a row costs more
            out.write("".join(lines))
            lines.clear()
    out.write("".join(lines))
    return count


def write_jsonl(events: Iterable[AuditEvent], out: TextIO, tz: ZoneInfo) -> int:
    count = 0
    for event in events:
        record = event.to_dict()
        record["created_at"] = event.created_at.astimezone(tz).isoformat()
        out.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
        count += 1
    return count

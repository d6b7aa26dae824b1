"""The CSV export (``audit-monitor export``, the report's evidence): the rows SQLite reads out of the
archived entries (``write_events_csv``) are byte for byte those Python writes from the decoded events."""

from __future__ import annotations

import csv
import io
import itertools
import tempfile
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.events import canonical_json, format_timestamp, normalize
from monitor.export import (
    CSV_COLUMNS,
    ENTRY_PATHS,
    REMEMBERED_CELLS,
    REMEMBERED_LENGTH,
    _LocalTimes,
    _SpelledCells,
    csv_line,
    csv_row,
    write_csv,
    write_events_csv,
)
from monitor.store import Store

BERLIN = ZoneInfo("Europe/Berlin")
T0 = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)  # Berlin's clocks go forward at 01:00 UTC this day


def awkward_entries() -> list[dict[str, Any]]:
    """Values a CSV cell has to spell with care, at times on both sides of a change of offset."""
    values: list[dict[str, Any]] = [
        {  # text a spreadsheet would run, a numeric text, a float, labels, escapes in data
            "user": {"id": "=1+2", "email": "-cmd|' /C calc'!A0"},
            "workspace": {"id": 1, "name": "@SUM(A1)"},
            "branch": {"label": "\tv1"},
            "obj": {"type": "-5", "id": 1.5},
            "label": ["=x", "é"],
            "data": {"b": 1e-07, "a": [True, None], "c": '"quoted" \\ back\u2028slash\n', "d": 1e16},
        },
        {"user": "not an object", "workspace": [1, 2], "branch": None},  # paths through non-objects
        {  # booleans, an integer beyond 64 bits, null
            "user": {"id": True, "email": None},
            "workspace": {"id": False, "name": ""},
            "obj": {"id": 10**30, "type": -(2**63)},
            "branch": {"label": None},
        },
        {"data": {}, "label": []},  # empty ones
        {
            "user": {"email": 'a\\b"c,d'},
            "data": {"ip": "10.0.0.1", "ua": "Mozilla/5.0 (X11; \u00e9\U0001f600)"},
        },
        {"data": {"ratio": float("nan")}},  # SQLite's JSON refuses NaN: this row is decoded in Python
        {"msg": '=HYPERLINK("http://evil")', "type": "+Delete Table"},
        {"msg": "", "type": "", "user": {"id": -1, "email": "\r\nforged,row"}},
    ]
    entries = []
    for index, extra in enumerate(values):
        for step, minutes in enumerate((0, 31, 45)):  # before, at and after 01:00 UTC
            event_id = index * 3 + step + 1
            moment = T0 + timedelta(minutes=minutes + index, microseconds=(event_id % 2) * 250)
            entries.append(
                {
                    "id": event_id,
                    "created_at": moment.isoformat().replace("+00:00", "Z"),
                    "type": "Update Function",
                    "msg": f"event {event_id}",
                    **extra,
                }
            )
    return entries


def archive(store: Store, entries: list[dict[str, Any]], source: str = "prod") -> None:
    with store.transaction():
        prev = store.head_hash()
        for item in entries:
            prev = store.archive(normalize(source, item), canonical_json(item), prev, T0)


def python_csv(entries: list[dict[str, Any]], tz: ZoneInfo, source: str = "prod") -> str:
    """The CSV as Python writes it from the entries themselves, in the archive's order."""
    events = sorted(
        (normalize(source, item) for item in entries),
        key=lambda e: (int(e.created_at.timestamp() * 1000), format_timestamp(e.created_at), e.id),
    )
    out = io.StringIO()
    writer = csv.writer(out)  # the standard library's writer: export.csv_line must write what it does
    writer.writerow(CSV_COLUMNS)
    writer.writerows(csv_row(event, tz) for event in events)
    return out.getvalue()


def store_csv(store: Store, tz: ZoneInfo, **kwargs: Any) -> str:
    out = io.StringIO()
    rows = write_events_csv(store, None, None, out, tz, **kwargs)
    assert rows == len(list(csv.reader(io.StringIO(out.getvalue())))) - 1  # the header
    return out.getvalue()


def test_the_csv_read_by_the_archive_is_the_csv_written_from_the_entries(store_target: str) -> None:
    entries = awkward_entries()
    with Store.open(store_target) as store:
        archive(store, entries)
        spelled = store.iter_entry_values(None, None, ENTRY_PATHS)
        assert (spelled is None) == store.is_postgresql  # SQLite reads the values itself
        for zone in (BERLIN, ZoneInfo("Australia/Lord_Howe"), ZoneInfo("UTC")):
            assert store_csv(store, zone) == python_csv(entries, zone)
        text = store_csv(store, BERLIN)
    rows = {int(row["id"]): row for row in csv.DictReader(io.StringIO(text))}
    first = rows[1]
    assert (first["user.id"], first["user.email"], first["workspace.name"]) == (
        "'=1+2",
        "'-cmd|' /C calc'!A0",
        "'@SUM(A1)",
    )
    assert (first["branch.label"], first["obj.type"], first["obj.id"]) == ("'\tv1", "-5", "1.5")
    assert first["label"] == '["=x","é"]'
    assert first["data"] == '{"a":[true,null],"b":1e-07,"c":"\\"quoted\\" \\\\ back\u2028slash\\n","d":1e+16}'
    assert first["created_at"] == "2026-03-29T01:30:00.000250+01:00"
    assert [rows[2]["created_at"], rows[3]["created_at"]] == [
        "2026-03-29T03:01:00+02:00",
        "2026-03-29T03:15:00.000250+02:00",
    ]
    booleans = rows[7]
    assert (booleans["user.id"], booleans["workspace.id"], booleans["obj.id"]) == (
        "True",
        "False",
        str(10**30),
    )
    assert booleans["user.email"] == booleans["branch.label"] == ""
    assert rows[16]["data"] == '{"ratio":NaN}'
    assert rows[19]["msg"].startswith("'=HYPERLINK") and rows[19]["type"] == "'+Delete Table"
    assert rows[22]["user.email"] == "'\r\nforged,row" and rows[22]["user.id"] == "-1"


def test_an_entry_sqlite_cannot_read_midway_is_read_again_from_where_the_read_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast read fails the whole statement at an entry holding NaN: the rest is read guarded, from the
    row after the last one written, with no row lost or written twice."""
    entries = [
        {"id": i, "created_at": (T0 + timedelta(seconds=i // 2)).isoformat(), "type": "Login", "msg": f"m{i}"}
        for i in range(1, 5001)
    ]
    entries[3000]["data"] = {"ratio": float("nan")}
    offsets: list[Any] = []
    with Store.open(tmp_path / "a.db") as store:
        archive(store, entries)
        archive(store, entries[:10], source="other")  # the same ids and times: ties broken by source
        stream = store.stream

        def spy(sql: str, params: Any, batch: int = 2000) -> Any:
            if "OFFSET" in sql:
                offsets.append(params[-1])
            return stream(sql, params, batch)

        monkeypatch.setattr(store, "stream", spy)
        text = store_csv(store, BERLIN)
    assert offsets and offsets[0] > 0  # taken up again midway, not from the start
    expected = python_csv(entries, BERLIN).splitlines()
    others = python_csv(entries[:10], BERLIN, source="other").splitlines()[1:]
    assert sorted(text.splitlines()) == sorted(expected + others)
    assert len(text.splitlines()) == 1 + 5000 + 10


def test_columns_altered_by_hand_to_another_type_are_written_as_they_are(tmp_path: Path) -> None:
    """A column that is not text (a blob written into the archive by hand) cannot stop the CSV: the row
    shows the stored value, and verify names the row."""
    entries = awkward_entries()[:6]
    with Store.open(tmp_path / "a.db") as store:
        archive(store, entries)
        with store.transaction():
            store.conn.execute("UPDATE events SET msg = CAST(msg AS BLOB) WHERE event_id = 2")
            store.conn.execute("UPDATE events SET created_at = CAST(created_at AS BLOB) WHERE event_id = 4")
        rows = {int(row["id"]): row for row in csv.DictReader(io.StringIO(store_csv(store, BERLIN)))}
        assert store.verify().bad_event_id == 2
    assert rows[2]["msg"] == "b'event 2'"
    assert rows[4]["created_at"].startswith("b'2026-03-29T00:")
    assert rows[3]["msg"] == "event 3" and len(rows) == 6


def test_a_sqlite_that_spells_values_its_own_way_is_read_the_long_way(tmp_path: Path) -> None:
    entries = awkward_entries()
    with Store.open(tmp_path / "a.db") as store:
        archive(store, entries)
        assert store._sqlite_spells_values_as_archived  # this SQLite copies a value's text
        store.__dict__["_sqlite_spells_values_as_archived"] = False  # as a SQLite that spells otherwise
        assert store.iter_entry_values(None, None, ENTRY_PATHS) is None
        assert store_csv(store, BERLIN) == python_csv(entries, BERLIN)


def test_a_range_and_a_source(tmp_path: Path) -> None:
    entries = awkward_entries()
    with Store.open(tmp_path / "a.db") as store:
        archive(store, entries)
        archive(store, [{**item, "id": item["id"] + 1000} for item in entries[:4]], source="staging")
        since, until = T0 + timedelta(minutes=31), T0 + timedelta(minutes=40)
        out = io.StringIO()
        assert write_events_csv(store, since, until, out, BERLIN, source="staging") == 1
        expected = io.StringIO()
        write_csv(store.iter_events(since, until, source="staging"), expected, BERLIN)
        assert out.getvalue() == expected.getvalue() and ",staging,1002," not in out.getvalue()
        assert "staging,1002," in out.getvalue()


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**25), max_value=10**25),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.sampled_from(["=1", "+x", "-2.5", "@a", "\tb", "\rc", "-", "'", '"', "\\", "\u2028", "1e5"]),
)


def _nested(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)


_values = st.recursive(_scalars, _nested, max_leaves=6)
_objects = st.one_of(
    st.dictionaries(st.sampled_from(["id", "email", "name", "label", "type", "x"]), _values), _values
)
_counter = itertools.count(1)


@settings(max_examples=150, deadline=None)
@given(
    user=_objects,
    workspace=_objects,
    branch=_objects,
    obj=_objects,
    label=_values,
    data=_values,
    msg=st.text(max_size=6),
)
def test_any_values_are_spelled_alike(
    user: Any, workspace: Any, branch: Any, obj: Any, label: Any, data: Any, msg: str
) -> None:
    item = {
        "id": 1,
        "created_at": "2026-03-29T01:00:00.000001Z",
        "type": "Login",
        "msg": msg,
        "user": user,
        "workspace": workspace,
        "branch": branch,
        "obj": obj,
        "label": label,
        "data": data,
    }
    source = f"s{next(_counter)}"
    with _shared_store() as store:
        archive(store, [item], source=source)
        assert store_csv(store, BERLIN, source=source) == python_csv([item], BERLIN, source=source)


_STORE_DIR = tempfile.TemporaryDirectory(prefix="export-test-")


class _shared_store:  # noqa: N801 - used as a context manager, like a function
    """One archive for every example of the Hypothesis test (a new file per example would dominate it)."""

    def __enter__(self) -> Store:
        self.store = Store.open(Path(_STORE_DIR.name) / "shared.db")
        return self.store

    def __exit__(self, *exc: object) -> None:
        self.store.close()


@settings(max_examples=300, deadline=None)
@given(
    moment=st.datetimes(
        min_value=datetime(1900, 1, 2), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    zone=st.sampled_from(
        [
            "Europe/Berlin",
            "Australia/Lord_Howe",
            "America/St_Johns",
            "Asia/Kolkata",
            "Pacific/Chatham",
            "Europe/Amsterdam",
            "Africa/Monrovia",
            "UTC",
        ]
    ),
)
def test_local_times_are_the_zones_own(moment: datetime, zone: str) -> None:
    tz = ZoneInfo(zone)
    assert _LocalTimes(tz)(format_timestamp(moment)) == moment.astimezone(tz).isoformat()


def test_local_times_on_both_sides_of_a_change() -> None:
    """Lord Howe Island moves its clocks by 30 minutes at 15:30 UTC: each minute has the offset of its own."""
    tz = ZoneInfo("Australia/Lord_Howe")
    local = _LocalTimes(tz)
    change = datetime(2026, 10, 3, 15, 30, tzinfo=UTC)
    for moment in (
        change - timedelta(minutes=30),
        change - timedelta(microseconds=1),
        change,
        change + timedelta(minutes=29),
    ):
        assert local(format_timestamp(moment)) == moment.astimezone(tz).isoformat()
    assert local.minutes["2026-10-03T15:29"] == ("2026-10-04T01:59", "+10:30")
    assert local.minutes["2026-10-03T15:30"] == ("2026-10-04T02:30", "+11:00")
    assert local(format_timestamp(change + timedelta(hours=1))) == "2026-10-04T03:30:00+11:00"


class _ChangeAtHalfAMinute(tzinfo):
    """UTC until 12:00:30 UTC on 2026-03-01, then +01:00: an offset change inside a minute."""

    change = datetime(2026, 3, 1, 12, 0, 30)

    def utcoffset(self, dt: datetime | None) -> timedelta:
        return (
            timedelta(hours=1) if dt is not None and dt.replace(tzinfo=None) >= self.change else timedelta(0)
        )

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)

    def fromutc(self, dt: datetime) -> datetime:
        return dt + self.utcoffset(dt)


def test_local_times_in_a_minute_holding_a_change_or_of_an_offset_with_seconds() -> None:
    odd = _ChangeAtHalfAMinute()
    local = _LocalTimes(odd)  # type: ignore[arg-type]
    for seconds in (0, 29, 30, 59):
        moment = datetime(2026, 3, 1, 12, 0, seconds, 5, tzinfo=UTC)
        assert local(format_timestamp(moment)) == moment.astimezone(odd).isoformat()
    assert local.minutes["2026-03-01T12:00"] is None  # converted row by row
    # Amsterdam's summer time was 1 hour 19 minutes 32 seconds ahead of UTC until 1937.
    amsterdam = _LocalTimes(ZoneInfo("Europe/Amsterdam"))
    moment = datetime(1930, 6, 1, 8, 15, 59, tzinfo=UTC)
    assert amsterdam(format_timestamp(moment)) == "1930-06-01T09:35:31+01:19:32"
    assert amsterdam.minutes["1930-06-01T08:15"] is None
    # A time in another form than the stored one is read as it is.
    assert _LocalTimes(BERLIN)("2026-03-29T01:30:00+00:00") == "2026-03-29T03:30:00+02:00"
    assert _LocalTimes(BERLIN)("2026-03-29 00:30:00.5+00:00") == "2026-03-29T01:30:00.500000+01:00"


def test_remembered_minutes_are_bounded() -> None:
    local = _LocalTimes(BERLIN)
    for index in range(_LocalTimes.MINUTES * 2 + 3):
        moment = T0 + timedelta(minutes=index, seconds=7)
        assert local(format_timestamp(moment)) == moment.astimezone(BERLIN).isoformat()
    assert len(local.minutes) <= _LocalTimes.MINUTES


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.text(alphabet=st.sampled_from("a,\"\r\n \t'=é"), max_size=5) | st.text(max_size=8), max_size=6
    )
)
def test_lines_are_written_as_the_csv_module_writes_them(cells: list[str]) -> None:
    expected = io.StringIO()
    csv.writer(expected).writerow(["first", *cells])  # (a row of one empty cell is a case of its own)
    assert csv_line(["first", *cells]) == expected.getvalue()


def test_remembered_cells_are_bounded() -> None:
    """Hostile entries (a new long value in every row) cannot make the CSV writer's memory grow."""
    cells = _SpelledCells()
    for index in range(REMEMBERED_CELLS + 5_000):
        assert cells[f'"=v{index}"'] == f"'=v{index}"
    long_value = '"' + "x" * REMEMBERED_LENGTH + '"'
    assert cells[long_value] == "x" * REMEMBERED_LENGTH
    assert len(cells) <= REMEMBERED_CELLS and long_value not in cells

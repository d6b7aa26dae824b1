"""Normalisation of Xano entries: every created_at format DESIGN.md lists parses to the right instant."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.events import (
    AuditEvent,
    NormalizationError,
    StagedEvent,
    archive_json,
    canonical_json,
    decode_entry,
    normalize,
    parse_timestamp,
)

INSTANT = datetime(2026, 3, 4, 22, 41, 9, 381204, tzinfo=UTC)


@pytest.mark.parametrize(
    "value",
    [
        "2026-03-04 22:41:09.381204+00",
        "2026-03-04 22:41:09.381204+0000",
        "2026-03-04 22:41:09.381204+00:00",
        "2026-03-04 22:41:09.381204Z",
        "2026-03-04 22:41:09.381204",  # no zone: UTC
        "2026-03-04T22:41:09.381204Z",
        "2026-03-04T23:41:09.381204+01:00",
        "2026-03-04 17:41:09.381204-05",
        "2026-03-05 04:11:09.381204+0530",
        "2026-03-04T22:41:09.381204123Z",  # nanoseconds are cut to microseconds
    ],
)
def test_text_formats(value: str) -> None:
    assert parse_timestamp(value) == INSTANT


def test_epoch_milliseconds_int_float_and_string() -> None:
    expected = datetime(2026, 3, 4, 22, 40, 5, tzinfo=UTC)
    assert parse_timestamp(1772664005000) == expected
    assert parse_timestamp("1772664005000") == expected
    assert parse_timestamp(1772664005000.0) == expected


def test_epoch_seconds_are_read_as_seconds_not_as_1970() -> None:
    """Below 10^11 an epoch value is seconds: as milliseconds it would fall in 1970-1973."""
    expected = datetime(2026, 3, 4, 22, 40, 5, tzinfo=UTC)
    assert parse_timestamp(1772664005) == expected
    assert parse_timestamp("1772664005") == expected
    assert parse_timestamp(1772664005.25) == expected.replace(microsecond=250000)
    assert parse_timestamp(99_999_999_999) == datetime(5138, 11, 16, 9, 46, 39, tzinfo=UTC)
    assert parse_timestamp(100_000_000_000) == datetime(1973, 3, 3, 9, 46, 40, tzinfo=UTC)  # milliseconds


def test_ids_are_json_integers_or_ascii_digits() -> None:
    assert normalize("prod", {"id": "90", "created_at": 1772664005000}).id == 90
    assert normalize("prod", {"id": 90, "created_at": 1772664005000}).id == 90
    assert normalize("prod", {"id": "0", "created_at": 1772664005000}).id == 0


@pytest.mark.parametrize("depth", [255, 300, 5000])
def test_an_entry_nesting_too_deep_is_rejected_not_a_recursion_error(depth: int) -> None:
    data: object = {}
    for _ in range(depth - 2):
        data = {"a": data}
    entry = {"id": 1, "created_at": 1772664005000, "data": data}  # the entry itself is one more level
    for may_hold_floats in (True, False):
        with pytest.raises(NormalizationError, match="levels deep"):
            archive_json(entry, may_hold_floats=may_hold_floats)
    shallow = {"id": 1, "created_at": 1772664005000, "data": {"a": {"b": 1.5}}}
    assert archive_json(shallow) == canonical_json(shallow)


@pytest.mark.parametrize(
    "value", [None, True, "", "yesterday", "2026-13-45 10:00:00", [], {"a": 1}, "2026-03-04 10:00+25"]
)
def test_bad_timestamps_are_rejected_with_reason(value: object) -> None:
    with pytest.raises(NormalizationError):
        parse_timestamp(value)


def test_sample_page_normalises_and_keeps_unknown_keys() -> None:
    sample = Path(__file__).resolve().parents[2] / "shared" / "samples" / "audit_log_page.json"
    if not sample.exists():  # CI lays shared/ beside the clone; a lone checkout may not have it
        pytest.skip("shared/samples not present")
    items = json.loads(sample.read_text())["items"]
    first, second = (normalize("prod", item) for item in items)
    assert first.created_at == INSTANT and first.user_email == "sam@example.org"
    assert first.get("data.ip") == "198.51.100.23" and first.get("workspace.name") == "shop-backend"
    assert second.created_at == datetime(2026, 3, 4, 22, 40, 5, tzinfo=UTC)
    assert second.user_email is None and second.get("user.email") is None
    assert second.raw["request_id"] == "an unknown key: keep it"
    assert second.branch_label is None


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ([], "not an object"),
        ({"created_at": 1}, "no id"),
        ({"id": "abc", "created_at": 1}, "not an integer"),
        ({"id": 1.5, "created_at": 1}, "not an integer"),
        ({"id": 90.0, "created_at": 1}, "not an integer"),  # a JSON number, but not a JSON integer
        ({"id": "9_0", "created_at": 1}, "not an integer"),  # int() reads 90
        ({"id": "\uff18\uff19", "created_at": 1}, "not an integer"),  # full-width digits: int() reads 89
        ({"id": " 90", "created_at": 1}, "not an integer"),
        ({"id": "+90", "created_at": 1}, "not an integer"),
        ({"id": "090", "created_at": 1}, "not an integer"),
        ({"id": 2**63, "created_at": 1}, "int64"),
        ({"id": 1}, "timestamp is None"),
    ],
)
def test_bad_entries_say_why(entry: object, reason: str) -> None:
    with pytest.raises(NormalizationError, match=reason):
        normalize("prod", entry)


def test_staged_event_decodes_its_raw_entry_only_when_read() -> None:
    entry = {
        "id": 7,
        "created_at": "2026-03-04 22:41:09.381204+00",
        "type": "Delete Table",
        "msg": "m",
        "user": {"email": "ana@corp.io"},
        "data": {"ip": "10.0.0.1"},
    }
    event = normalize("prod", entry)
    raw_json = canonical_json(entry)
    staged = StagedEvent("prod", event.id, event.created_at, event.type, event.msg, raw_json)
    assert staged == StagedEvent("prod", 7, INSTANT, "Delete Table", "m", "{}")  # raw is not compared
    with pytest.raises(AttributeError):
        AuditEvent.__dict__["raw"].__get__(staged, AuditEvent)  # not decoded yet
    assert staged.raw == entry and staged.raw is staged.raw  # decoded once, then kept
    assert staged.get("data.ip") == "10.0.0.1" and staged.user_email == "ana@corp.io"
    assert staged.to_dict() == event.to_dict()
    for copied in (copy.copy(staged), copy.deepcopy(staged), pickle.loads(pickle.dumps(staged))):  # noqa: S301 - our own bytes
        assert type(copied) is AuditEvent and copied == event and copied.raw == entry
    with pytest.raises(dataclasses.FrozenInstanceError):
        staged.id = 8  # type: ignore[misc]


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(_json_values)
def test_archive_json_spells_exactly_the_canonical_json(value: object) -> None:
    # The archive's fast path (orjson) must never change a byte of what the hash chain covers.
    expected = canonical_json(value)
    try:
        text = archive_json(value)
    except NormalizationError:
        with pytest.raises(UnicodeEncodeError):  # only text that cannot be stored at all is refused
            expected.encode("utf-8")
        return
    assert text == expected


@settings(max_examples=400, deadline=None)
@given(_json_values)
def test_decode_entry_reads_what_the_stdlib_reads(value: object) -> None:
    # Every archived row the report walks and exports is read through orjson; the values must be the
    # stdlib's, including what orjson refuses (integers beyond 64 bits, NaN, lone surrogates).
    text = canonical_json(value)
    decoded, expected = decode_entry(text), json.loads(text)
    # NaN is not equal to itself: compare the spellings, which also tell 1 from 1.0 and True.
    assert canonical_json(decoded) == canonical_json(expected)


@pytest.mark.parametrize(
    "text",
    [
        '{"id":18446744073709551616}',
        '{"msg":"\\ud800"}',
        '{"msg":"\ud800"}',
        '{"x":NaN}',
        '{"a":1,"a":2}',
        '{"f":1e400}',
    ],
)
def test_decode_entry_falls_back_to_the_stdlib_where_orjson_refuses(text: str) -> None:
    assert canonical_json(decode_entry(text)) == canonical_json(json.loads(text))

"""The chain's row check (``chain.row_problem``): its short way of showing a row's columns were derived from
its entry never accepts what the full derivation (``entry_fields`` and ``derived_columns``) would not."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from monitor.events import canonical_json, normalize
from monitor.store.chain import GENESIS_HASH, _plainly_derived, chain_hash, derived_columns, row_problem

INSTANT = datetime(2026, 3, 14, 21, 21, 29, 911000, tzinfo=UTC)


def entry(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": 500001,
        "created_at": "2026-03-14T21:21:29.911000Z",
        "type": "Delete Table",
        "msg": "Deleted table customers",
        "user": {"id": 364, "email": "dev02@corp.io"},
        "workspace": {"id": 3, "name": "crm"},
        "branch": {"id": 1, "label": "v1"},
        "data": {"ip": "10.117.222.101"},
    }
    base.update(changes)
    return base


def check(raw: dict[str, Any], columns: tuple[Any, ...], event_id: int = 500001) -> str | None:
    """row_problem for an event of source prod, stored with its entry's true hash after genesis."""
    text = canonical_json(raw)
    stored = chain_hash(GENESIS_HASH, "prod", event_id, text)
    return row_problem(GENESIS_HASH, "prod", event_id, columns, text, stored)


def full_derivation(raw: dict[str, Any], event_id: int, columns: tuple[Any, ...]) -> bool:
    """What the long way says: the entry normalises, to this id and these columns."""
    try:
        event = normalize("prod", raw)
    except ValueError:
        return False
    return event.id == event_id and derived_columns(event) == columns


@pytest.mark.parametrize(
    "created_at",
    [
        "2026-03-14T21:21:29.911000Z",  # the simulator's and the bench's form
        int(INSTANT.timestamp() * 1000),  # epoch milliseconds
    ],
)
def test_the_common_forms_take_the_short_way(created_at: Any) -> None:
    raw = entry(created_at=created_at)
    columns = derived_columns(normalize("prod", raw))
    assert _plainly_derived(raw, 500001, columns)
    assert full_derivation(raw, 500001, columns)


@pytest.mark.parametrize(
    "created_at",
    [
        "2026-03-14 21:21:29.911000+00",  # PostgreSQL's text form
        "2026-03-14T22:21:29.911+01:00",
        "2026-03-14T21:21:29Z",
        str(int(INSTANT.timestamp() * 1000)),  # epoch milliseconds as text
        int(INSTANT.timestamp()),  # epoch seconds
        INSTANT.timestamp() * 1000,  # a float
    ],
)
def test_other_forms_are_derived_in_full_and_still_pass(created_at: Any) -> None:
    raw = entry(created_at=created_at)
    columns = derived_columns(normalize("prod", raw))
    assert not _plainly_derived(raw, 500001, columns)
    assert check(raw, columns) is None


def _tampered(columns: tuple[Any, ...], index: int, value: Any) -> tuple[Any, ...]:
    return (*columns[:index], value, *columns[index + 1 :])


@pytest.mark.parametrize(
    ("index", "value"),
    [
        (0, "2026-03-14T21:21:29.911001+00:00"),  # created_at
        (0, "2026-03-14 21:21:29.911000+00:00"),  # the same instant, not the stored form
        (0, "2026-03-14T21:21:29.911000+01:00"),
        (1, int(INSTANT.timestamp() * 1000) + 1),  # created_ms
        (2, "Run Query"),  # type
        (3, "nothing happened"),  # msg
        (4, "someone@else.io"),  # user_email
        (5, None),  # workspace_name
        (6, "v2"),  # branch_label
    ],
)
def test_a_tampered_column_is_found(index: int, value: Any) -> None:
    raw = entry()
    columns = _tampered(derived_columns(normalize("prod", raw)), index, value)
    assert not _plainly_derived(raw, 500001, columns)
    assert check(raw, columns) == "indexed columns differ from the raw entry"


def test_a_number_beyond_64_bits_is_read_exactly() -> None:
    """orjson reads 10**20 as the float 1e+20; a column tampered to that spelling is still found."""
    raw = entry(user={"email": 10**20})
    columns = derived_columns(normalize("prod", raw))
    assert columns[4] == str(10**20) and check(raw, columns) is None
    assert check(raw, _tampered(columns, 4, "1e+20")) == "indexed columns differ from the raw entry"


def test_an_entry_and_a_stored_time_both_in_another_spelling_are_found() -> None:
    """The entry's text matches the stored time's, but the stored time is not the form the archive writes."""
    raw = entry(created_at="2026-03-14 21:21:29.911000Z")
    columns = _tampered(derived_columns(normalize("prod", raw)), 0, "2026-03-14 21:21:29.911000+00:00")
    assert not _plainly_derived(raw, 500001, columns)
    assert check(raw, columns) == "indexed columns differ from the raw entry"


_times = st.one_of(
    st.datetimes(
        min_value=datetime(1973, 3, 4), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
    ).map(lambda moment: moment.isoformat(timespec="microseconds").replace("+00:00", "Z")),
    st.integers(min_value=-(10**12), max_value=10**16),
    st.text(alphabet="0123456789-:TZ .+W", max_size=30),
    st.just("2026-W11-6T21:21:29.911000Z"),
    st.just("2026-03-14 21:21:29.911000Z"),
    st.none(),
)
_stored_times = st.one_of(
    st.datetimes(timezones=st.just(UTC)).map(lambda moment: moment.isoformat(timespec="microseconds")),
    st.text(alphabet="0123456789-:T .+W", max_size=34),
)
_texts = st.one_of(st.none(), st.integers(), st.text(max_size=5), st.booleans(), st.just(10**20))


_PLAIN_EXAMPLE: dict[str, Any] = {
    "event_id": 1,
    "created_at": "2026-03-14T21:21:29.911000Z",
    "event_type": "x",
    "msg": "y",
    "email": "a@b",
    "shift": None,
    "stored_ms_shift": 0,
    "member": "user",
    "member_shape": "object",
    "stored_member": "derived",
}


def _examples(*changes: dict[str, Any]) -> Callable[[Any], Any]:
    """Hypothesis examples: the plain one with these changes, each always tried."""

    def decorate(test: Any) -> Any:
        for change in changes:
            test = example(**{**_PLAIN_EXAMPLE, **change})(test)
        return test

    return decorate


@settings(max_examples=400, deadline=None)
@given(
    event_id=st.one_of(st.integers(min_value=-(2**63), max_value=2**63 - 1), st.text(max_size=3)),
    created_at=_times,
    event_type=_texts,
    msg=_texts,
    email=_texts,
    shift=st.one_of(st.none(), _stored_times, st.integers(), st.just("mirror")),
    stored_ms_shift=st.integers(min_value=-1, max_value=1),
    member=st.sampled_from(["user", "workspace", "branch"]),
    member_shape=st.sampled_from(["object", "absent", "not an object"]),
    stored_member=st.one_of(st.just("derived"), _texts, st.floats(allow_nan=False)),
)
@_examples(
    # A stored time in another spelling of the same instant.
    {"shift": "2026-03-14 21:21:29.911000+00:00"},
    # A member that is a number, stored as a number: nested_str spells the column "5".
    {"email": 5, "member": "workspace", "stored_member": 5},
    # A member the entry lacks, or holds in no object, beside a stored text.
    {"member": "user", "member_shape": "absent", "stored_member": "a@b"},
    {"member": "branch", "member_shape": "not an object", "stored_member": "a@b"},
)
def test_the_short_way_never_accepts_what_the_full_derivation_refuses(
    event_id: Any,
    created_at: Any,
    event_type: Any,
    msg: Any,
    email: Any,
    shift: Any,
    stored_ms_shift: int,
    member: str,
    member_shape: str,
    stored_member: Any,
) -> None:
    """Columns derived from a related entry (or stored times of any text, stored members of any type) are
    accepted the short way only when the full derivation gives exactly them."""
    inner = {"user": "email", "workspace": "name", "branch": "label"}[member]
    raw = entry(id=event_id, created_at=created_at, type=event_type, msg=msg)
    raw[member] = {"object": {inner: email}, "absent": None, "not an object": [email]}[member_shape]
    if raw[member] is None:
        del raw[member]
    honest = entry(id=7, created_at="2026-03-14T21:21:29.911000Z", type="x", msg="y", user={"email": "a@b"})
    try:
        columns = derived_columns(normalize("prod", raw))
    except ValueError:
        columns = derived_columns(normalize("prod", honest))
    if shift == "mirror" and isinstance(created_at, str):  # the entry's own text as the stored time
        columns = _tampered(columns, 0, created_at[:-1] + "+00:00")
    elif isinstance(shift, str):
        columns = _tampered(columns, 0, shift)
    elif isinstance(shift, int):
        moment = INSTANT + timedelta(microseconds=shift % 10**9)
        columns = _tampered(columns, 0, moment.isoformat(timespec="microseconds"))
    columns = _tampered(columns, 1, columns[1] + stored_ms_shift)
    if stored_member != "derived":
        columns = _tampered(columns, {"user": 4, "workspace": 5, "branch": 6}[member], stored_member)
    for candidate_id in (event_id, 7) if isinstance(event_id, int) else (7,):
        if _plainly_derived(raw, candidate_id, columns):
            assert full_derivation(raw, candidate_id, columns)
        # The whole row check, which reads the archived text with orjson first: the same verdict.
        assert (check(raw, columns, candidate_id) is None) == full_derivation(raw, candidate_id, columns)

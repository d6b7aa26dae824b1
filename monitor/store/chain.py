"""The hash chain: how an archived row and a prune record are linked, and how a row is checked.

Pure functions and records, no SQL: ``archive.py`` writes and walks the chain through them.

Each archived row carries ``hash = sha256(prev_hash + canonical_json(record))`` where record is
``{"source", "id", "entry"}`` and ``entry`` the raw API entry. A prune is itself a link of the chain (a row
of ``prunes``, in the same ``seq`` order as the events): it names the last row it cut and that row's hash,
where the kept chain starts.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import orjson

from monitor.events import (
    EPOCH_SECONDS_BELOW,
    AuditEvent,
    NormalizationError,
    canonical_json,
    decode_entry,
    entry_fields,
    format_timestamp,
    nested_str,
)

GENESIS_HASH = "0" * 64


def iso(value: datetime | None) -> str | None:
    """A stored time: the one fixed-width UTC text form (sorts as time does), or None."""
    return format_timestamp(value) if value is not None else None


def parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@functools.lru_cache(maxsize=256)
def _json_string(text: str) -> str:
    # A source name, encoded once per cycle instead of once per archived event.
    return json.dumps(text, ensure_ascii=False)


def chain_hash(prev_hash: str, source: str, event_id: int, raw_json: str) -> str:
    """The archive's hash link. ``raw_json`` is the entry's canonical JSON."""
    record = f'{{"entry":{raw_json},"id":{event_id},"source":{_json_string(source)}}}'
    return hashlib.sha256((prev_hash + record).encode("utf-8")).hexdigest()


def derived_columns(event: AuditEvent) -> tuple[Any, ...]:
    """The columns an archived row derives from its entry, in table order: created_at, created_ms, type,
    msg, user_email, workspace_name, branch_label. Staging writes them and ``verify`` re-derives them."""
    return _columns(event.created_at, event.type, event.msg, event.raw)


def _columns(created_at: datetime, event_type: str, msg: str, raw: dict[str, Any]) -> tuple[Any, ...]:
    # Read from the raw entry directly rather than through AuditEvent's properties: this runs for every
    # entry a walk reads.
    return (
        format_timestamp(created_at),
        int(created_at.timestamp() * 1000),
        event_type,
        msg,
        nested_str(raw, "user", "email"),
        nested_str(raw, "workspace", "name"),
        nested_str(raw, "branch", "label"),
    )


def staging_row(event: AuditEvent, raw_json: str) -> tuple[Any, ...]:
    """What ``stage`` takes for one event: source and id, the columns the archive derives, its JSON."""
    return (event.source, event.id, *derived_columns(event), raw_json)


def row_problem(
    prev: str, source: str, event_id: int, columns: tuple[Any, ...], raw: str, stored: str
) -> str | None:
    """Why an archived row fails verification (None: it is sound). ``columns`` are the row's
    ``derived_columns`` as stored."""
    if chain_hash(prev, source, event_id, raw) != stored:
        return "hash does not match the row's content or its predecessor"
    try:
        # orjson as is, though it reads an integer beyond 64 bits as a float (decode_entry): the short way
        # takes no number but an int id (and an int time, in range), so it never agrees through a misread,
        # and what it does not show is derived in full from decode_entry's exact reading.
        if _plainly_derived(orjson.loads(raw), event_id, columns):
            return None
    except ValueError:  # what orjson refuses: decode_entry reads it or says why
        pass
    try:
        entry = decode_entry(raw)
        entry_id, created_at, event_type, msg = entry_fields(entry)
    except (ValueError, NormalizationError) as exc:
        return f"raw entry no longer parses: {exc}"
    # What normalize and derived_columns give, without building the event: a walk does this for every row.
    if entry_id != event_id or _columns(created_at, event_type, msg, entry) != columns:
        return "indexed columns differ from the raw entry"
    return None


# The stored form of created_at (format_timestamp's): fixed width, so it reads back as it was written.
_STORED_UTC = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}\+00:00")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_MS = 253402300800000  # 10000-01-01 in epoch milliseconds: later ones are out of datetime's range


def _plainly_derived(entry: Any, event_id: int, columns: tuple[Any, ...]) -> bool:
    """True when the stored columns are what ``entry_fields`` and ``_columns`` derive, shown the short way:
    an integer id, text type and msg, and a time that is either the stored time's own text in the ``Z``
    form or epoch milliseconds. False means "not shown", never "differs": the caller then derives the
    columns in full. A walk does this for every row, and the full derivation (parsing and re-formatting
    the time) was two thirds of a row's check."""
    created_at, created_ms, event_type, msg, email, workspace, branch = columns
    if type(entry) is not dict:
        return False
    entry_id, when = entry.get("id"), entry.get("created_at")
    if not (
        type(entry_id) is int
        and entry_id == event_id
        and entry.get("type") == event_type
        and type(event_type) is str
        and entry.get("msg") == msg
        and type(msg) is str
        and type(created_at) is str
        and _STORED_UTC.fullmatch(created_at)
    ):
        return False
    try:
        moment = datetime.fromisoformat(created_at)
    except ValueError:  # a stored time that is no date (month 13): the full derivation says what it is
        return False
    if type(when) is str:
        # parse_timestamp reads "<stored time>Z" as that same instant (fromisoformat, the UTC zone).
        if when != created_at[:26] + "Z":
            return False
    elif type(when) is int and EPOCH_SECONDS_BELOW <= when < _MAX_MS:  # milliseconds (events.py)
        if moment != _EPOCH + timedelta(milliseconds=when):
            return False
    else:
        return False
    if int(moment.timestamp() * 1000) != created_ms:
        return False
    # nested_str's text, where the member is text or absent: a stored column is text or NULL, and equals
    # no number or other value (which str() would spell, and orjson may have misread).
    user, space, branch_node = entry.get("user"), entry.get("workspace"), entry.get("branch")
    return (
        (user.get("email") if type(user) is dict else None) == email
        and (space.get("name") if type(space) is dict else None) == workspace
        and (branch_node.get("label") if type(branch_node) is dict else None) == branch
        and (email is None or type(email) is str)
        and (workspace is None or type(workspace) is str)
        and (branch is None or type(branch) is str)
    )


def missing(first: int, last: int) -> str:
    return f"row {first} is missing" if first == last else f"rows {first}-{last} are missing"


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    rows_checked: int
    head_hash: str
    bad_seq: int | None = None
    bad_source: str | None = None
    bad_event_id: int | None = None
    reason: str = ""
    prunes: int = 0  # prune records in the verified part of the chain
    head_seq: int = 0
    actions: int = 0  # alert history records in the verified part of the chain
    # Where the walk began: the link it chained from (seq 0 = genesis). ``whole``: the start of the kept
    # chain (genesis, or where the newest prune record says its cut ended); else a later link (``after``).
    start_seq: int = 0
    start_hash: str = GENESIS_HASH
    whole: bool = True

    def then(self, later: VerifyResult) -> VerifyResult:
        """This walk followed by ``later``, which chained on from this walk's last link: one stretch walked
        in two parts at once (the report does). The first failure if either failed, else the whole."""
        if not self.ok:
            return self
        if not later.ok:  # (a failed walk does not say where it began)
            return replace(later, rows_checked=self.rows_checked + later.rows_checked)
        if later.start_seq != self.head_seq:
            raise ValueError(
                f"a walk from seq {later.start_seq} does not continue one ending at {self.head_seq}"
            )
        return replace(
            later,
            rows_checked=self.rows_checked + later.rows_checked,
            prunes=self.prunes + later.prunes,
            actions=self.actions + later.actions,
            start_seq=self.start_seq,
            start_hash=self.start_hash,
            whole=self.whole,
        )


@dataclass(frozen=True)
class PruneRecord:
    """A prune, as a link of the chain: what it cut (rows up to ``through_seq``) and the hash they ended with.

    ``cutoff`` and ``cut`` are None for a prune made by a release before prune records (taken over from
    meta on upgrade).
    """

    label: ClassVar[str] = "prune record"

    seq: int
    at: datetime
    cutoff: datetime | None
    cut: int | None
    through_seq: int
    through_hash: str
    hash: str

    def content(self) -> str:
        """The canonical JSON the hash covers (everything but the hash itself)."""
        return canonical_json(
            {
                "prune": {
                    "seq": self.seq,
                    "at": format_timestamp(self.at),
                    "cutoff": iso(self.cutoff),
                    "cut": self.cut,
                    "through_seq": self.through_seq,
                    "through_hash": self.through_hash,
                }
            }
        )

    def link_hash(self, prev_hash: str) -> str:
        return hashlib.sha256((prev_hash + self.content()).encode("utf-8")).hexdigest()

    def linked(self, prev_hash: str) -> PruneRecord:
        return replace(self, hash=self.link_hash(prev_hash))

    def row(self) -> tuple[Any, ...]:
        return (
            self.seq,
            format_timestamp(self.at),
            iso(self.cutoff),
            self.cut,
            self.through_seq,
            self.through_hash,
            self.hash,
        )

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> PruneRecord:
        seq, at, cutoff, cut, through_seq, through_hash, hash_ = row
        return cls(seq, datetime.fromisoformat(at), parse_time(cutoff), cut, through_seq, through_hash, hash_)


INSERT_PRUNE = (
    "INSERT INTO prunes (seq, at, cutoff, cut, through_seq, through_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
SELECT_PRUNES = "SELECT seq, at, cutoff, cut, through_seq, through_hash, hash FROM prunes"

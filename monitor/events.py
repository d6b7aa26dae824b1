"""AuditEvent: one Xano audit-log entry, normalised.

Xano's docs do not pin down the wire format of ``created_at``; we accept epoch
milliseconds (int or numeric string), ISO 8601, and PostgreSQL's text form.
A value without a zone is UTC. An epoch value below 10^11 is read as seconds: as
milliseconds it would be a moment of 1970-1973, before any Xano audit log, while as seconds
it covers every date up to the year 5138. Unknown keys of the entry are kept in ``raw``.

Ids are taken strictly: a JSON integer or a string of ASCII digits without leading zeros, nothing
Python's ``int()`` would also read (``"9_0"``, full-width digits, ``" 90"``, ``"090"``, ``90.0``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson


class NormalizationError(ValueError):
    """An entry that cannot be archived as an event (no id, unreadable time)."""


class UnreadableEntry:
    """An entry of a page that could not be decoded (the client decoded the page's others): ``text`` is the
    entry as served, ``reason`` why it could not be read. ``normalize`` rejects it with that reason."""

    __slots__ = ("reason", "text")

    def __init__(self, text: str, reason: str) -> None:
        self.text = text
        self.reason = reason

    def __str__(self) -> str:  # what the rejected table keeps (canonical_json spells unknown values as str)
        return self.text

    def __repr__(self) -> str:
        return f"UnreadableEntry({self.reason!r}, {len(self.text)} characters)"


# An entry nesting deeper than this is rejected: orjson (the archive's fast path) encodes at most 254 levels,
# and the stdlib's recursive encoder and decoder fail near Python's recursion limit, so a deeper entry could
# not be written, hashed or verified the same way every time.
MAX_ENTRY_DEPTH = 254
_ID_DIGITS = re.compile(r"0|[1-9][0-9]{0,18}")  # canonical: "007" would shadow 7
# Epoch values below this are seconds (see the module's docstring): 10^11 ms is 1973-03-03.
EPOCH_SECONDS_BELOW = 10**11


_PG_TIMESTAMP = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})[ T](?P<time>\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)"
    r"\s*(?P<zone>Z|z|[+-]\d{2}(?::?\d{2})?)?$"
)
_EPOCH_MS = re.compile(r"-?\d+(\.\d+)?")


def parse_timestamp(value: Any) -> datetime:
    """Parse a Xano timestamp into an aware UTC datetime.

    Accepts epoch milliseconds (int, float or numeric string), ISO 8601 and
    PostgreSQL's ``YYYY-MM-DD HH:MM:SS[.ffffff][+HH|+HHMM|+HH:MM|Z]``.
    """
    if isinstance(value, bool) or value is None:
        raise NormalizationError(f"timestamp is {_short(value)}")
    if isinstance(value, int | float):
        return _from_epoch_ms(value)
    if not isinstance(value, str):
        raise NormalizationError(f"timestamp of type {type(value).__name__}")
    text = value.strip()
    if _EPOCH_MS.fullmatch(text):
        if len(text) > 40:  # no epoch in range has this many digits (and int() refuses 4,300 and more)
            raise NormalizationError(f"epoch milliseconds out of range: {text[:40]}...")
        return _from_epoch_ms(float(text) if "." in text else int(text))
    match = _PG_TIMESTAMP.match(text)
    if match and len(text) <= 32:
        # Fast path: Python's own parser takes every form the pattern admits except nanoseconds.
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            pass  # nanoseconds or an out-of-range offset: the careful path below decides
        else:
            return _to_utc(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC), value)
    if not match:
        raise NormalizationError(f"unreadable timestamp {_short(value)}")
    date, clock, zone = match.group("date"), match.group("time"), match.group("zone")
    if "." in clock:  # fromisoformat takes at most 6 fractional digits
        whole, frac = clock.split(".")
        clock = f"{whole}.{frac[:6].ljust(6, '0')}"
    try:
        parsed = datetime.fromisoformat(f"{date}T{clock}")
    except ValueError as exc:
        raise NormalizationError(f"unreadable timestamp {_short(value)}") from exc
    return _to_utc(parsed.replace(tzinfo=_zone(zone)), value)


def _short(value: Any) -> str:
    """A value for a rejection reason: an entry may hold megabytes, a log line should not."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:80]}... ({len(text)} characters)"


def _to_utc(moment: datetime, value: Any) -> datetime:
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01 00:00+01 is before year 1 in UTC
        raise NormalizationError(f"timestamp {_short(value)} is out of range in UTC") from None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _from_epoch_ms(ms: float) -> datetime:
    if -EPOCH_SECONDS_BELOW < ms < EPOCH_SECONDS_BELOW:
        ms = ms * 1000  # epoch seconds
    try:
        return _EPOCH + timedelta(milliseconds=ms)
    except (OverflowError, ValueError) as exc:  # ValueError: NaN
        raise NormalizationError(f"epoch milliseconds out of range: {ms!r}") from exc


def _zone(zone: str | None) -> timezone:
    if zone is None or zone in ("Z", "z"):
        return UTC
    sign = -1 if zone[0] == "-" else 1
    digits = zone[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
    if hours > 23 or minutes > 59:
        raise NormalizationError(f"bad zone offset {zone!r}")
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def format_timestamp(value: datetime) -> str:
    """ISO 8601 in UTC with microseconds: sorts as text, round-trips exactly."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


# json.dumps with these arguments builds a new encoder on every call; one shared encoder spells the same
# text (JSONEncoder keeps no state between calls) at a fraction of the cost on a backfill's every entry.
_CANONICAL_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def canonical_json(value: Any) -> str:
    """The one JSON spelling used for hashing and raw storage."""
    return _CANONICAL_ENCODER.encode(value)


def archive_json(entry: Any, *, may_hold_floats: bool = True) -> str:
    """The entry's canonical JSON for the archive, or NormalizationError when SQLite cannot store it.

    The same text as ``canonical_json``. orjson spells it ~9x faster, which counts on a backfill's every
    entry; it spells exactly what the stdlib does for the strings, integers, booleans, nulls, lists and
    objects an entry holds, but not every float (``1e-07`` vs ``1e-7``, NaN as null), so an entry holding
    a float, or a value orjson refuses (an integer beyond 64 bits, a lone surrogate), takes the stdlib path.
    ``may_hold_floats=False`` skips looking for floats: the poller passes it for an entry of a page whose
    JSON the decoder saw hold none (monitor.xano.Page.holds_floats).

    JSON may spell a lone surrogate (``"\\ud800"``); Python parses it, but it is not valid Unicode, so
    it cannot be encoded as UTF-8 for SQLite or the hash chain.
    """
    if not may_hold_floats:
        try:
            return orjson.dumps(entry, option=orjson.OPT_SORT_KEYS).decode()
        except orjson.JSONEncodeError:
            pass  # the stdlib decides: a big integer is fine; a lone surrogate, deep nesting are not
    depth, holds_float = _shape(entry)
    if depth > MAX_ENTRY_DEPTH:
        raise NormalizationError(f"entry nests {depth} levels deep, more than {MAX_ENTRY_DEPTH}")
    if not holds_float:
        try:
            return orjson.dumps(entry, option=orjson.OPT_SORT_KEYS).decode()
        except orjson.JSONEncodeError:
            pass
    text = canonical_json(entry)
    if not text.isascii():  # the common case costs one scan; only non-ASCII entries are encoded
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise NormalizationError(
                "entry holds text that is not valid Unicode (a lone surrogate)"
            ) from None
    return text


def decode_entry(text: str) -> Any:
    """An archived entry's JSON (``archive_json``'s text), decoded.

    orjson reads it ~3x faster than the stdlib, which counts where every archived row of a month is read
    (the report's chain walk and CSV, export). It gives the stdlib's values except for an integer outside
    64 bits, which it reads as a float: text with a run of 19 digits or more (any such integer, and some
    strings) is left to the stdlib, as is what orjson refuses (a lone surrogate escape, NaN, 1e400).
    """
    encoded = text.encode("utf-8", "surrogatepass")
    # Digits turned into zeros, then one substring search: a regex for the run costs twice orjson's read.
    if _NINETEEN_ZEROS not in encoded.translate(_DIGITS_TO_ZERO):
        try:
            return orjson.loads(encoded)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_NINETEEN_ZEROS = b"0" * 19


def _shape(value: Any) -> tuple[int, bool]:
    """How deep ``value`` nests, and whether it holds a float or anything but JSON's plain types.

    Iterative rather than recursive, so that an entry nesting thousands of levels is measured, not a
    RecursionError.
    """
    deepest = 0
    holds_float = False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        kind = type(node)
        if kind is dict:
            deepest = max(deepest, depth)
            stack.extend((item, depth + 1) for item in node.values())
        elif kind is list:
            deepest = max(deepest, depth)
            stack.extend((item, depth + 1) for item in node)
        elif not (kind is str or kind is int or kind is bool or node is None):
            holds_float = True
    return deepest, holds_float


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """A normalised audit event. ``raw`` is the entry exactly as the API served it."""

    source: str
    id: int
    created_at: datetime
    type: str
    msg: str
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def user_email(self) -> str | None:
        return nested_str(self.raw, "user", "email")

    @property
    def workspace_name(self) -> str | None:
        return nested_str(self.raw, "workspace", "name")

    @property
    def branch_label(self) -> str | None:
        return nested_str(self.raw, "branch", "label")

    def get(self, path: str) -> Any:
        """Value at a dotted field path (``user.email``, ``data.ip``); None when missing.

        ``id``, ``source``, ``created_at`` (aware datetime), ``type`` and ``msg`` come from the
        normalised fields; everything else is looked up in the raw entry.
        """
        if path in _TOP_LEVEL:
            return getattr(self, path)
        node: Any = self.raw
        for part in path.split("."):
            if isinstance(node, dict):
                node = node.get(part)
            else:
                return None
            if node is None:
                return None
        return node

    def to_dict(self) -> dict[str, Any]:
        """The raw entry plus ``source``, with created_at normalised: for templates and export."""
        out = dict(self.raw)
        out["source"] = self.source
        out["created_at"] = format_timestamp(self.created_at)
        return out


_TOP_LEVEL = frozenset({"id", "source", "created_at", "type", "msg"})

# The slot that holds AuditEvent.raw; StagedEvent fills it on first use.
_RAW_SLOT = AuditEvent.__dict__["raw"]


class StagedEvent(AuditEvent):
    """An event the poll cycle rebuilds from its staged row: ``raw`` is decoded from JSON on first use.

    The staged row already holds the normalised fields, and most events of a backfill match no rule
    and are never looked into, so decoding each one's JSON up front would be most of the commit's work.
    A copy or pickle of it is a plain AuditEvent.
    """

    __slots__ = ("_raw_json",)
    _raw_json: str

    def __init__(  # noqa: A002 - the same field names as AuditEvent
        self, source: str, id: int, created_at: datetime, type: str, msg: str, raw_json: str
    ) -> None:
        set_slot = object.__setattr__  # AuditEvent is frozen
        set_slot(self, "source", source)
        set_slot(self, "id", id)
        set_slot(self, "created_at", created_at)
        set_slot(self, "type", type)
        set_slot(self, "msg", msg)
        set_slot(self, "_raw_json", raw_json)

    @property  # type: ignore[override]
    def raw(self) -> dict[str, Any]:
        try:
            return _RAW_SLOT.__get__(self, AuditEvent)  # type: ignore[no-any-return]
        except AttributeError:  # not decoded yet
            decoded = decode_entry(self._raw_json)
            _RAW_SLOT.__set__(self, decoded)
            return decoded  # type: ignore[no-any-return]

    def __reduce__(self) -> tuple[type[AuditEvent], tuple[Any, ...]]:
        return AuditEvent, (self.source, self.id, self.created_at, self.type, self.msg, self.raw)


def nested_str(raw: dict[str, Any], outer: str, inner: str) -> str | None:
    """``raw[outer][inner]`` as text (user.email, workspace.name, branch.label); None when missing."""
    node = raw.get(outer)
    if isinstance(node, dict):
        value = node.get(inner)
        if value is not None:
            return str(value)
    return None


def normalize(source: str, entry: Any) -> AuditEvent:
    """Turn one API entry into an AuditEvent, or raise NormalizationError saying why."""
    event_id, created_at, event_type, msg = entry_fields(entry)
    return AuditEvent(source=source, id=event_id, created_at=created_at, type=event_type, msg=msg, raw=entry)


def entry_fields(entry: Any) -> tuple[int, datetime, str, str]:
    """An API entry's normalised fields (id, created_at, type, msg), or NormalizationError saying why.

    ``normalize`` without building the event: ``verify`` re-derives every archived row's columns so."""
    if isinstance(entry, UnreadableEntry):
        raise NormalizationError(entry.reason)
    if not isinstance(entry, dict):
        raise NormalizationError(f"entry is a {type(entry).__name__}, not an object")
    raw_id = entry.get("id")
    if isinstance(raw_id, bool) or raw_id is None:
        raise NormalizationError("entry has no id")
    if isinstance(raw_id, int):
        event_id = raw_id
    elif isinstance(raw_id, str) and _ID_DIGITS.fullmatch(raw_id):
        event_id = int(raw_id)
    else:
        # int() would also read "9_0", full-width digits, padded text and 90.0: each of those could shadow
        # the real event with that id, so only a JSON integer or plain ASCII digits are an id.
        raise NormalizationError(f"id {_short(raw_id)} is not an integer (a JSON integer or ASCII digits)")
    if not -(2**63) <= event_id < 2**63:
        raise NormalizationError(f"id {_short(raw_id)} is outside int64")
    created_at = parse_timestamp(entry.get("created_at"))
    event_type = entry.get("type")
    msg = entry.get("msg")
    return (
        event_id,
        created_at,
        "" if event_type is None else str(event_type),
        "" if msg is None else str(msg),
    )

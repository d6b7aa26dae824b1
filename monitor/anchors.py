"""Chain anchors: the archive's head written down somewhere else, checked later by ``verify --anchor``.

The hash chain shows an edited or deleted row, but not rows cut from the end, nor a chain rewritten from
some row on with recomputed hashes: the file alone cannot tell those from an archive that never held the
rows. An anchor (the head's seq and hash at a moment) kept off the machine can: the archive must still hold
that link with that hash.

Publishing (``anchors: {every: 1d, to: [email, webhook NAME]}``): the daemon takes the head every ``every``
and hands it to the outbox as a notice of the rule ``monitor.chain_anchor``, addressed to the configured
channels only. The outbox delivers it at least once; its id is derived from the anchored seq and hash, so
the same head is never queued twice and a re-send after a crash carries the same id (the email's Message-ID,
the webhook's ``webhook-id``). The email channel sends it as a message with the anchor attached as JSON, the
webhook channel as a signed delivery of type ``chain.anchor`` whose ``data`` is the anchor. The report leaves
these notices out of its alert figures: they are not alerts.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from monitor.alerts.model import ANCHOR_RULE, Alert
from monitor.config import Config
from monitor.events import format_timestamp
from monitor.store import GENESIS_HASH, Store

_HASH = re.compile(r"[0-9a-f]{64}")


class AnchorFileError(ValueError):
    """An anchor file that cannot be read or is not an anchor; the message names the file and the key."""


@dataclass(frozen=True)
class ChainAnchor:
    seq: int
    hash: str
    at: datetime
    events: int  # events in the archive when the anchor was taken

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash, "at": format_timestamp(self.at), "events": self.events}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> ChainAnchor:
        try:
            data: Any = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise AnchorFileError(f"{path}: cannot read the anchor: {exc.strerror}") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise AnchorFileError(f"{path}: not a chain anchor: not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise AnchorFileError(f"{path}: not a chain anchor: expected a JSON object")
        for key in ("seq", "hash", "at", "events"):
            if key not in data:
                raise AnchorFileError(f"{path}: not a chain anchor: missing key '{key}'")
        seq, hash_, at, events = data["seq"], data["hash"], data["at"], data["events"]
        if type(seq) is not int or seq < 0:
            raise AnchorFileError(f"{path}: key 'seq': expected a whole number >= 0")
        if not isinstance(hash_, str) or not _HASH.fullmatch(hash_):
            raise AnchorFileError(f"{path}: key 'hash': expected 64 lowercase hex digits")
        if type(events) is not int or events < 0:
            raise AnchorFileError(f"{path}: key 'events': expected a whole number >= 0")
        try:
            when = datetime.fromisoformat(at) if isinstance(at, str) else None
        except ValueError:
            when = None
        if when is None or when.tzinfo is None:
            raise AnchorFileError(f"{path}: key 'at': expected an ISO 8601 time with its zone")
        return cls(seq, hash_, when, events)


def take_anchor(store: Store, at: datetime) -> ChainAnchor:
    """The chain's head now: its newest link (an event or a prune record)."""
    seq, hash_ = store.head()
    return ChainAnchor(seq, hash_, at, store.event_count())


@dataclass(frozen=True)
class AnchorCheck:
    anchor: ChainAnchor
    ok: bool
    detail: str


def check_anchor(store: Store, anchor: ChainAnchor) -> AnchorCheck:
    """Is the anchored link still in the archive with the anchored hash? ``verify`` checks the links around
    it; this says whether the chain still passes through the anchor."""
    link = store.chain_link(anchor.seq)
    if link == anchor.hash or (anchor.seq == 0 and anchor.hash == GENESIS_HASH):
        return AnchorCheck(anchor, True, "present with the anchored hash")
    if link is not None:
        return AnchorCheck(
            anchor,
            False,
            f"row {anchor.seq} now has hash {link}, the anchor says {anchor.hash}: the chain was rewritten",
        )
    cut_by = [p for p in store.prunes() if p.through_seq >= anchor.seq]
    if cut_by:
        prune = min(cut_by, key=lambda p: p.seq)
        when = f"the prune at seq {prune.seq} ({format_timestamp(prune.at)})"
        if prune.through_seq == anchor.seq:
            if prune.through_hash == anchor.hash:
                return AnchorCheck(anchor, True, f"cut by {when}, whose record holds the anchored hash")
            return AnchorCheck(
                anchor,
                False,
                f"cut by {when}, whose record says its hash was {prune.through_hash}, "
                f"the anchor says {anchor.hash}",
            )
        # Retention removed the row after the anchor was taken; the prune record is a verified link, but
        # what the row held can no longer be compared. Keep anchors newer than the retention period.
        return AnchorCheck(anchor, True, f"cut by {when}: no longer checkable, keep a newer anchor")
    head_seq = store.head()[0]
    if anchor.seq > head_seq:
        return AnchorCheck(
            anchor,
            False,
            f"row {anchor.seq} is missing: the archive ends at seq {head_seq} (rows cut from the end)",
        )
    return AnchorCheck(anchor, False, f"row {anchor.seq} is missing")


# --- publishing --------------------------------------------------------------------------------------------

PUBLISHED_KEY = "anchor_published_at"


def anchor_notice(anchor: ChainAnchor) -> Alert:
    """The anchor as an outbox notice: its id depends on the head only (seq and hash)."""
    return Alert(
        rule_id=ANCHOR_RULE,
        severity="info",
        title=f"Chain anchor: row {anchor.seq} of the audit archive",
        text=anchor.to_json(),
        source="",
        event_time=anchor.at,
        event_ids=(),
        group_key=f"{anchor.seq}:{anchor.hash}",
        context={"anchor": anchor.to_dict()},
    )


def notice_anchor(alert: Alert) -> ChainAnchor | None:
    """The anchor a ``monitor.chain_anchor`` notice carries; None for any other alert."""
    if alert.rule_id != ANCHOR_RULE:
        return None
    data = alert.context.get("anchor") or {}
    return ChainAnchor(
        int(data["seq"]), str(data["hash"]), datetime.fromisoformat(data["at"]), int(data["events"])
    )


def publish_anchor_if_due(store: Store, config: Config, now: datetime) -> ChainAnchor | None:
    """Queue the current head for the configured channels when ``anchors.every`` has passed since the last
    one (in one transaction with the time it was queued). Returns the anchor queued, or None."""
    settings = config.anchors
    if settings is None:
        return None
    with store.transaction():
        last = store.get_meta(PUBLISHED_KEY)
        if last is not None and now - datetime.fromisoformat(last) < settings.every:
            return None
        anchor = take_anchor(store, now)
        if anchor.seq == 0:
            return None  # an empty archive: nothing to vouch for yet (the first poll's head will be)
        # The same head as last time is not queued again (record_alert ignores a known id): the anchor
        # already out there still stands for it.
        store.record_alert(anchor_notice(anchor), settings.channels(), now)
        store.set_meta(PUBLISHED_KEY, format_timestamp(now))
    return anchor

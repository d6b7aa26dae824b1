"""Time for people: dates on the command line (``YYYY-MM-DD`` is midnight in the configured zone, else an
ISO 8601 instant), and the one way every text a person reads shows a time (``format_time``) and a duration
(``format_duration``). Machine formats (the archive, ``--json``, JSON logs) keep ISO 8601 in UTC."""

from __future__ import annotations

import email.utils
import math
from datetime import UTC, date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def iana_zone(name: str) -> ZoneInfo:
    """The IANA time zone of that name; ValueError for anything else.

    ZoneInfo raises three kinds of error for a bad name: not found, malformed (ValueError) and, for a
    tzdata folder such as ``America`` or a name too long for the file system, OSError.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"{name!r} is not an IANA time zone such as Europe/Berlin") from None


def parse_cli_date(text: str, tz: ZoneInfo) -> datetime:
    """Parse ``--since`` / ``--until`` into an aware datetime; raise ValueError saying what is expected."""
    value = text.strip()
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), datetime.min.time(), tz)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not a date YYYY-MM-DD or an ISO 8601 instant") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=tz)


def format_time(moment: datetime, tz: tzinfo) -> str:
    """``2026-03-04 10:30:00 CET``: in the configured zone, to the second, with the zone's abbreviation."""
    return f"{moment.astimezone(tz):%Y-%m-%d %H:%M:%S %Z}"


_UNITS = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))


def format_duration(value: timedelta | float) -> str:
    """``47 s``, ``3 min 47 s``, ``2 h 5 min``, ``7 d``: the two largest units, whole numbers, rounded to the
    second (``value`` in seconds when it is a number). Never ``0:00:47.345672``."""
    seconds = round(value.total_seconds() if isinstance(value, timedelta) else value)
    sign = "-" if seconds < 0 else ""
    rest = abs(seconds)
    amounts = []
    for unit, size in _UNITS:
        amount, rest = divmod(rest, size)
        amounts.append((amount, unit))
    first = next((i for i, (amount, _) in enumerate(amounts) if amount), len(amounts) - 1)
    shown = [f"{amount} {unit}" for amount, unit in amounts[first : first + 2] if amount]
    return sign + (" ".join(shown) or "0 s")


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """An HTTP ``Retry-After`` (delta-seconds or an HTTP-date, RFC 9110) as seconds from ``now``, at least 0.

    None when absent or unusable (garbage, NaN, infinite): the caller falls back to its own backoff and
    applies its own cap (the Xano client's, the outbox's).
    """
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = (moment - now).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)

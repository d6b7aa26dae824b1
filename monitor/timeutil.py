"""Dates on the command line: ``YYYY-MM-DD`` is midnight in the configured zone, else an ISO 8601 instant."""

from __future__ import annotations

from datetime import date, datetime
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

"""Logging: one JSON object per line when stdout is not a terminal, readable lines on a terminal.

Call sites log an event name plus structured ``extra`` fields; they never pass secrets. As a second
line of defence every formatted line goes through ``Redactor`` before it is written: the values of
the config's secrets (tokens, webhook URLs, passwords), any field whose name says it holds a
credential, and anything shaped like ``Authorization: Bearer ...`` are replaced by ``[redacted]``.
That covers third-party loggers (slack-sdk, httpx at debug level) and exception texts too.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import urllib.parse
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TextIO

from pydantic import BaseModel, SecretStr

REDACTED = "[redacted]"

# Attributes every LogRecord has; everything else on a record came from ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}

# A field with such a name is a credential whatever its value.
_SECRET_KEY = re.compile(r"(authorization|token|password|passwd|secret|api[_-]?key|cookie|webhook)", re.I)
# Credentials inside free text: key=value pairs (first, so "Authorization: Bearer x" loses the whole
# credential), HTTP auth schemes, Slack tokens and webhook URLs.
_SECRET_TEXT = [
    re.compile(
        r"(?i)\b(authorization|token|password|secret|api[_-]?key)([\"']?\s*[:=]\s*[\"']?)"
        r"(?:(?:bearer|basic)\s+)?[^\s\"',}&]{4,}"
    ),
    # A credential quoted in a repr runs on through escapes ("Bearer PART1\\nPART2"): all of it goes.
    re.compile(r"(?i)\b(bearer|basic)\s+(?!\[redacted\])(?:[A-Za-z0-9._~+/=-]|\\+[A-Za-z0-9]){4,}"),
    re.compile(r"\bxox[abposre]-[A-Za-z0-9-]{6,}"),
    re.compile(r"https://hooks\.slack\.com/services/[A-Za-z0-9/_-]+"),
]
# Shorter "secrets" would redact ordinary words; no real token, password or URL is this short.
_MIN_SECRET_LENGTH = 4
# Control characters and whitespace: a secret holding one is quoted escaped, or shows up in pieces.
_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\s]+")

# Whether setup_logging chose JSON lines: the console alert channel follows it, so that stdout stays
# one format a log shipper can parse.
_json_lines_active = False


def json_lines_active() -> bool:
    return _json_lines_active


def config_secrets(model: BaseModel) -> list[str]:
    """Every ``SecretStr`` value in a (nested) config model: new secret fields are covered automatically."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    walk(model)
    return found


def secret_forms(secret: str) -> list[str]:
    """The shapes ``secret`` takes in text that quotes it, longest first.

    As is; escaped as a repr, JSON or a bytes repr escapes it (h11's "Illegal header value b'Bearer ...'"
    quotes the header that way); URL-encoded; and, when it holds control characters or whitespace, each
    piece between them (a token wrapped over two lines reaches a message as two halves).
    """
    shapes = {
        secret,
        repr(secret)[1:-1],
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        secret.encode("unicode_escape").decode("ascii"),
        repr(secret.encode("utf-8"))[2:-1],
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
    }
    shapes |= set(_BREAKS.split(secret))
    return sorted((shape for shape in shapes if len(shape) >= _MIN_SECRET_LENGTH), key=len, reverse=True)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every form of each of ``secrets`` (see ``secret_forms``) replaced by ``[redacted]``."""
    forms = sorted(
        {form for secret in secrets if secret for form in secret_forms(secret)}, key=len, reverse=True
    )
    for form in forms:  # longest first: a form containing another is replaced whole
        if form in text:
            text = text.replace(form, REDACTED)
    return text


class Redactor:
    """Replaces known secret values and credential-looking text.

    It works on values before they are serialised, so a JSON line stays valid JSON.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._literals: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        for secret in secrets:
            for form in secret_forms(secret) if secret else ():
                if form not in self._literals:
                    self._literals.append(form)
        self._literals.sort(key=len, reverse=True)  # a secret containing another is replaced whole

    def __call__(self, text: str) -> str:
        for literal in self._literals:
            if literal in text:
                text = text.replace(literal, REDACTED)
        for pattern in _SECRET_TEXT:
            text = pattern.sub(_keep_label, text)
        return text

    def value(self, value: object, key: str = "") -> object:
        """A log field's value, redacted: credential-named keys wholesale, strings by content, recursively."""
        if value is None or isinstance(value, bool | int | float):
            return value
        if key and _SECRET_KEY.search(key):
            return REDACTED
        if isinstance(value, dict):
            return {str(k): self.value(v, str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.value(v) for v in value]
        return self(value if isinstance(value, str) else str(value))


def _keep_label(match: re.Match[str]) -> str:
    # "Bearer abc" -> "Bearer [redacted]", "token=abc" -> "token=[redacted]": the reader sees what it was.
    if match.lastindex and match.lastindex >= 2:
        return f"{match.group(1)}{match.group(2)}{REDACTED}"
    if match.lastindex == 1:
        return f"{match.group(1)} {REDACTED}"
    return REDACTED


class _RedactingFormatter(logging.Formatter):
    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or Redactor()

    def fields(self, record: logging.LogRecord) -> dict[str, object]:
        """The ``extra`` fields, redacted."""
        return {k: self.redactor.value(v, k) for k, v in vars(record).items() if k not in _STANDARD}

    def message(self, record: logging.LogRecord) -> str:
        return self.redactor(record.getMessage())

    def exception(self, record: logging.LogRecord) -> str | None:
        return self.redactor(self.formatException(record.exc_info)) if record.exc_info else None


class JsonFormatter(_RedactingFormatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": self.message(record),
        }
        for key, value in self.fields(record).items():
            payload.setdefault(key, value)  # an extra field can never overwrite ts/level/event
        exception = self.exception(record)
        if exception:
            payload["exception"] = exception
        # One physical line per record, whatever the message holds: json.dumps escapes newlines.
        return json.dumps(payload, ensure_ascii=False)


class ConsoleFormatter(_RedactingFormatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        pairs = " ".join(f"{k}={v}" for k, v in self.fields(record).items())
        line = f"{stamp} {record.levelname.lower():7} {self.message(record)}"
        if pairs:
            line += f"  {pairs}"
        exception = self.exception(record)
        if exception:
            line += "\n" + exception
        return line


def setup_logging(
    level: str = "info",
    stream: TextIO | None = None,
    json_lines: bool | None = None,
    secrets: Iterable[str] = (),
) -> None:
    """Route every logger to ``stream`` (stdout): JSON lines unless it is a terminal; never ``secrets``."""
    stream = stream or sys.stdout
    global _json_lines_active
    if json_lines is None:
        json_lines = not stream.isatty()
    _json_lines_active = json_lines
    redactor = Redactor(secrets)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(redactor) if json_lines else ConsoleFormatter(redactor))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # httpx logs every request URL at INFO; ours are enough.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    # Uncaught exceptions in worker threads go through the same (redacting, one-line) handler.
    logging.captureWarnings(True)

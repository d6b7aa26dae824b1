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
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TextIO

from pydantic import BaseModel, SecretStr

REDACTED = "[redacted]"

# Attributes every LogRecord has; everything else on a record came from ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}

# A field with such a name is a credential whatever its value.
_SECRET_KEY = re.compile(r"(authorization|token|password|passwd|secret|api[_-]?key|cookie|webhook)", re.I)
# Credentials inside free text: HTTP auth headers, Slack tokens, key=value pairs.
_SECRET_TEXT = [
    re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{4,}"),
    re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{6,}"),
    re.compile(r"https://hooks\.slack\.com/services/[A-Za-z0-9/_-]+"),
    re.compile(
        r"(?i)\b(authorization|token|password|secret|api[_-]?key)([\"']?\s*[:=]\s*[\"']?)[^\s\"',}&]{4,}"
    ),
]
# Shorter "secrets" would redact ordinary words; no real token, password or URL is this short.
_MIN_SECRET_LENGTH = 4


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


class Redactor:
    """Replaces known secret values and credential-looking text in a formatted line."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._literals: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        for secret in secrets:
            if not secret or len(secret) < _MIN_SECRET_LENGTH:
                continue
            # The raw value and its JSON-escaped forms (a secret with a quote or backslash in a JSON line).
            for form in {secret, json.dumps(secret, ensure_ascii=False)[1:-1], json.dumps(secret)[1:-1]}:
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


def _keep_label(match: re.Match[str]) -> str:
    # "Bearer abc" -> "Bearer [redacted]", "token=abc" -> "token=[redacted]": the reader sees what it was.
    if match.lastindex and match.lastindex >= 2:
        return f"{match.group(1)}{match.group(2)}{REDACTED}"
    if match.lastindex == 1:
        return f"{match.group(1)} {REDACTED}"
    return REDACTED


def _fields(record: logging.LogRecord) -> dict[str, object]:
    return {
        k: (REDACTED if _SECRET_KEY.search(k) and v is not None else v)
        for k, v in vars(record).items()
        if k not in _STANDARD
    }


class _RedactingFormatter(logging.Formatter):
    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        return self.redactor(self.render(record))

    def render(self, record: logging.LogRecord) -> str:
        raise NotImplementedError


class JsonFormatter(_RedactingFormatter):
    def render(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in _fields(record).items():
            payload.setdefault(key, value)  # an extra field can never overwrite ts/level/event
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        # One physical line per record, whatever the message holds: json.dumps escapes newlines.
        return json.dumps(payload, default=str, ensure_ascii=False)


class ConsoleFormatter(_RedactingFormatter):
    def render(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        pairs = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{stamp} {record.levelname.lower():7} {record.getMessage()}" + (f"  {pairs}" if pairs else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(
    level: str = "info",
    stream: TextIO | None = None,
    json_lines: bool | None = None,
    secrets: Iterable[str] = (),
) -> None:
    """Route every logger to ``stream`` (stdout): JSON lines unless it is a terminal; never ``secrets``."""
    stream = stream or sys.stdout
    if json_lines is None:
        json_lines = not stream.isatty()
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

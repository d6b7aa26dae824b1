"""Logging: one JSON object per line when stdout is not a terminal, readable lines on a terminal, or ECS.

Call sites log an event name plus structured ``extra`` fields; they never pass secrets, and the paths
that turn errors into text scrub their own credential first (``scrub``). As a second line of defence
every formatted line goes through ``Redactor`` before it is written: a field whose whole value is one of
the config's secrets (tokens, webhook URLs, passwords) or whose name says it holds a credential, a
secret that cannot be ordinary text wherever it appears, and anything shaped like
``Authorization: Bearer ...`` are replaced by ``[redacted]``. That covers third-party loggers
(slack-sdk, httpx at debug level) and exception texts too.

``log_format`` (the config key): ``auto`` (JSON lines off a terminal, readable lines on one), ``json``,
``console``, or ``ecs``: Elastic Common Schema through ecs-logging, where our fields sit under
``audit_monitor.*`` because ECS gives ``event``, ``source``, ``host`` and ``user`` another meaning.
Uncaught exceptions, in the main thread or any other, become one record like any other line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import urllib.parse
from collections.abc import Iterable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, TextIO

import ecs_logging
from pydantic import BaseModel

from monitor.config import UnsetSecret, secret_fields
from monitor.display import json_escape_unsafe, one_line, safe_text

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
# Inside free text a secret is replaced only where a match cannot be ordinary text: replacing a password
# "poll" in every "poll cycle" line would spell it out to whoever reads "[redacted] cycle". Such a secret is
# redacted where it is a whole value (a field holding exactly it, "password=poll"), never inside text.
_MIN_TEXT_SECRET = 8  # ... and not letters alone, or else
_MIN_WORDLIKE_SECRET = 16
# Control characters and whitespace: a secret holding one is quoted escaped, or shows up in pieces.
_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\s]+")

# Whether setup_logging chose JSON lines: the console alert channel follows it, so that stdout stays
# one format a log shipper can parse.
_json_lines_active = False


def json_lines_active() -> bool:
    return _json_lines_active


def config_secrets(model: BaseModel) -> list[str]:
    """Every ``SecretStr`` value in a (nested) config model: new secret fields are covered automatically.

    A secret whose variable is unset has no value to redact (the commands that need it refuse to start).
    """
    return [s.get_secret_value() for s in secret_fields(model) if not isinstance(s, UnsetSecret)]


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
    return sorted((shape for shape in shapes if _distinctive(shape)), key=len, reverse=True)


def _distinctive(text: str) -> bool:
    """Whether ``text`` is no ordinary word or phrase, so that finding it in a line means the secret."""
    return len(text) >= _MIN_WORDLIKE_SECRET or (len(text) >= _MIN_TEXT_SECRET and not text.isalpha())


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every form of each of ``secrets`` (see ``secret_forms``) replaced by ``[redacted]``.

    For the paths that turn an error into text (the poll failure, the Xano client): what they write is
    already clean, whatever the log line, ``status`` or ``/healthz`` then do with it.
    """
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
        self._whole: set[str] = set()  # a field value equal to one of these is a secret, however short
        self._literals: list[str] = []  # forms found inside text (see secret_forms)
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        for secret in secrets:
            if not secret:
                continue
            self._whole.add(secret)
            for form in secret_forms(secret):
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
        text = value if isinstance(value, str) else str(value)
        if text.strip() in self._whole:
            return REDACTED
        return self(text)


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
        # One physical line per record, whatever the message holds: json.dumps escapes newlines and C0
        # controls; the C1 and bidi controls it leaves raw are escaped too (the parsed value is unchanged).
        return json_escape_unsafe(json.dumps(payload, ensure_ascii=False))


class ConsoleFormatter(_RedactingFormatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        # A terminal reads these: upstream text in a message or field must not act as an escape sequence.
        pairs = " ".join(f"{k}={one_line(v)}" for k, v in self.fields(record).items())
        line = f"{stamp} {record.levelname.lower():7} {one_line(self.message(record))}"
        if pairs:
            line += f"  {pairs}"
        exception = self.exception(record)
        if exception:
            line += "\n" + safe_text(exception)
        return line


class EcsFormatter(ecs_logging.StdlibFormatter):
    """Elastic Common Schema lines (ecs-logging), redacted like every other format.

    ECS defines ``event``, ``source``, ``host`` and ``user`` as objects, and ``error`` as one: our flat
    fields of those names would clash with the index mapping. So every ``extra`` field goes under
    ``audit_monitor.*`` (ECS's advice for custom fields), except an ``error`` text, which is ECS's
    ``error.message`` when no exception already fills ``error.*``.
    """

    def __init__(self, redactor: Redactor | None = None) -> None:
        # log.original repeats the message.
        super().__init__(exclude_fields=["log.original"], ensure_ascii=False)
        self.redactor = redactor or Redactor()

    def format_to_ecs(self, record: logging.LogRecord) -> dict[str, Any]:
        fields = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        # The library would merge extras into the top level; it gets the record without them.
        bare = logging.makeLogRecord({k: v for k, v in vars(record).items() if k not in fields})
        result = super().format_to_ecs(bare)
        result["message"] = self.redactor(str(result.get("message", "")))
        error = result.get("error")
        if isinstance(error, dict):
            for key in ("message", "stack_trace"):
                if isinstance(error.get(key), str):
                    error[key] = self.redactor(error[key])
        ours = {k: self.redactor.value(v, k) for k, v in fields.items()}
        if isinstance(ours.get("error"), str) and "error" not in result:
            result["error"] = {"message": ours.pop("error")}
        if ours:
            result["audit_monitor"] = ours
        return result


LogFormat = Literal["auto", "json", "console", "ecs"]
LOG_FORMATS: tuple[LogFormat, ...] = ("auto", "json", "console", "ecs")


class _ExpectedSchedulerSkips(logging.Filter):
    """Drops APScheduler's "skipped: maximum number of running instances reached".

    All jobs share one worker with max_instances=1 on purpose (daemon.py), so while a cycle retries
    through an outage every other due job is skipped every few seconds: by design, and no news. The
    failed cycle logs its own line.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in str(record.msg)


def _log_uncaught(exc_type: type[BaseException], exc: BaseException, traceback: TracebackType | None) -> None:
    logging.getLogger("monitor").critical("uncaught exception", exc_info=(exc_type, exc, traceback))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if issubclass(args.exc_type, SystemExit):  # the stdlib hook is silent about it too
        return
    logging.getLogger("monitor").error(
        "uncaught exception in thread",
        exc_info=(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback),
        extra={"thread_name": args.thread.name if args.thread is not None else None},
    )


def setup_logging(
    level: str = "info",
    stream: TextIO | None = None,
    *,
    log_format: LogFormat = "auto",
    secrets: Iterable[str] = (),
) -> None:
    """Route every logger to ``stream`` (stdout) in ``log_format`` (``auto``: JSON lines unless it is a
    terminal); never ``secrets``; uncaught exceptions (any thread) as records too."""
    stream = stream or sys.stdout
    global _json_lines_active
    if log_format == "auto":
        log_format = "console" if stream.isatty() else "json"
    # The console alert channel prints records, not text blocks, whenever stdout is machine-read.
    _json_lines_active = log_format != "console"
    redactor = Redactor(secrets)
    formatter: logging.Formatter
    if log_format == "ecs":
        formatter = EcsFormatter(redactor)
    elif log_format == "json":
        formatter = JsonFormatter(redactor)
    else:
        formatter = ConsoleFormatter(redactor)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # httpx logs every request URL at INFO; ours are enough.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    scheduler = logging.getLogger("apscheduler.scheduler")
    if not any(isinstance(f, _ExpectedSchedulerSkips) for f in scheduler.filters):
        scheduler.addFilter(_ExpectedSchedulerSkips())
    # Python's warnings, and exceptions nothing caught, go through the same (redacting, one-line) handler
    # instead of a raw traceback on stderr.
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread

"""Configuration: YAML + ``${VAR}`` expansion -> typed, validated settings.

Every error names the file, the line when known, and the key path
(``audit-monitor.yaml:7: sources[0].per_pgae: unknown key``). Secret values are held
as ``SecretStr`` so that no repr, log line or error message can show them.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
import unicodedata
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from email.headerregistry import Address
from email.utils import getaddresses
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from monitor.resources import bundled_rules_dir
from monitor.timeutil import iana_zone

DEFAULT_CONFIG_PATH = "audit-monitor.yaml"
CONFIG_ENV = "AUDIT_MONITOR_CONFIG"
LISTEN_ENV = "AUDIT_MONITOR_LISTEN"  # server.listen when the file does not set it (the image: 0.0.0.0:9108)
# A viewer token named "api" when the file sets no server.tokens (also as TOKEN_ENV_FILE): the image listens
# on 0.0.0.0, which needs a token to start, and a container is configured through its environment.
TOKEN_ENV = "AUDIT_MONITOR_API_TOKEN"  # noqa: S105 - the variable's name
TOKEN_ENV_NAME = "api"  # noqa: S105 - the token's name in logs

Severity = Literal["info", "low", "medium", "high", "critical"]


class ConfigError(Exception):
    """A configuration problem; the message names the file, line and key path."""


class UnsetVariable(ConfigError):
    """``${VAR}`` with neither VAR nor VAR_FILE set (and no default)."""


class _Unset:
    """Where an unset ``${VAR}`` stood in the YAML: a secret key may defer it (see ``UnsetSecret``)."""

    def __init__(self, message: str) -> None:
        self.message = message


class UnsetSecret(SecretStr):
    """A secret whose ``${VAR}`` is not set. Loading succeeds so that commands which never use it
    (status, verify, export, report) run without it; using it raises the ConfigError naming key and
    variable, and the commands that do use secrets check first with ``require_secrets``.
    """

    def __init__(self, message: str) -> None:
        super().__init__("")
        self.message = message

    def get_secret_value(self) -> str:
        raise ConfigError(self.message)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UnsetSecret) and other.message == self.message

    def __hash__(self) -> int:
        return hash(self.message)

    def __repr__(self) -> str:
        return "UnsetSecret()"


def _defer_unset(value: Any) -> Any:
    return UnsetSecret(value.message) if isinstance(value, _Unset) else value


def _one_line_secret(value: SecretStr) -> SecretStr:
    if isinstance(value, UnsetSecret):
        return value  # no value yet: checked when the variable is set and the secret is used
    # A line break or another control character cannot be sent in an HTTP header or an SMTP command:
    # the libraries refuse it and quote the value in their error (h11 quotes the header's repr). A token
    # file wrapped over two lines would fail at every poll with the token in the message; refuse it here,
    # naming the key, never the value. A *_FILE's trailing line break was already stripped (_expand).
    if any(unicodedata.category(char) == "Cc" for char in value.get_secret_value()):
        raise ValueError(
            "contains a control character (a line break or a tab?); a secret must be one line "
            "(the value is not shown)"
        )
    return value


# Every credential in the config: never shown in a repr or an error, always one line, and an unset
# ${VAR} deferred until a command uses it.
Secret = Annotated[SecretStr, BeforeValidator(_defer_unset), AfterValidator(_one_line_secret)]


def secret_fields(model: BaseModel | None) -> list[SecretStr]:
    """Every ``SecretStr`` in a (nested) config model: a new secret field is covered automatically."""
    found: list[SecretStr] = []

    def walk(value: Any) -> None:
        if isinstance(value, SecretStr):
            found.append(value)
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


def missing_secrets(model: BaseModel | None) -> list[str]:
    """The errors of every secret in ``model`` (a config or one of its sections) whose variable is unset."""
    return [secret.message for secret in secret_fields(model) if isinstance(secret, UnsetSecret)]


def require_secrets(model: BaseModel | None) -> None:
    """Raise ConfigError naming every secret of ``model`` whose variable is unset (before any is used)."""
    missing = missing_secrets(model)
    if missing:
        raise ConfigError("\n".join(missing))


_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d|w)\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> timedelta:
    """``30s``, ``10m``, ``1h``, ``7d`` (also ``ms`` and ``w``) -> timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"a duration like 30s, 10m, 1h or 7d is expected, not {type(value).__name__}")
    if isinstance(value, int):
        raise ValueError(f"a duration needs a unit: {value}s, {value}m, {value}h or {value}d")
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a duration like 30s, 10m, 1h or 7d")
    try:
        return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    except OverflowError:  # timedelta stops at 999999999 days
        raise ValueError(f"{value.strip()!r} is too long (at most 999999999d)") from None


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def _retention(value: Any) -> timedelta | None:
    """A plan's retention: a duration, or ``unlimited`` (Enterprise/Custom plans keep the log for ever)."""
    if value == "unlimited":
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"{exc}, or unlimited") from None


Retention = Annotated[timedelta | None, BeforeValidator(_retention)]


def require_secure_url(value: str) -> str:
    """``value`` if it is an https URL, or an http URL to a loopback host; else ValueError naming https.

    Every URL a secret travels to (a Metadata API token, a Slack token or webhook, a channel's signing
    key) goes through this: cleartext HTTP is allowed only where it never leaves the machine (the
    simulator, a local stub, a sidecar). The value itself is never repeated: a webhook URL is a secret.
    """
    loopback = "http:// is accepted only to a loopback host such as 127.0.0.1 or localhost"
    problem = f"must be an https:// URL ({loopback})"
    if not isinstance(value, str) or any(c.isspace() for c in value):
        raise ValueError(problem)
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port that is no number
    except ValueError:
        raise ValueError(problem) from None
    if not host:
        raise ValueError(problem)
    scheme = parts.scheme.lower()
    if scheme == "https":
        return value
    if scheme == "http" and _is_loopback(host):
        return value
    if scheme == "http":
        raise ValueError(
            f"must be an https:// URL: http:// to a remote host sends the secret in cleartext ({loopback})"
        )
    raise ValueError(problem)


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SourceConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=64)
    base_url: str
    token: Secret
    workspace_id: int | None = None
    poll_interval: Duration = timedelta(minutes=5)
    per_page: int = Field(default=500, ge=1, le=10000)
    overlap: Duration = timedelta(minutes=15)
    plan_retention: Retention = timedelta(hours=24)  # None: unlimited (Enterprise/Custom)
    backfill: str = "all"
    timeout: Duration = timedelta(seconds=30)
    ca_file: str | None = None

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return require_secure_url(value).rstrip("/")

    @field_validator("backfill")
    @classmethod
    def _backfill(cls, value: str) -> str:
        if value in ("all", "none"):
            return value
        try:
            date.fromisoformat(value)
        except ValueError:
            raise ValueError("must be all, none or a date YYYY-MM-DD") from None
        return value

    @field_validator("poll_interval", "overlap", "plan_retention", "timeout")
    @classmethod
    def _positive(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            raise ValueError("must be longer than zero")
        return value


class StateConfig(_Strict):
    """Where the archive lives: ``path`` (an SQLite file, the default) or ``url`` (PostgreSQL)."""

    path: str = "./data/audit-monitor.db"
    # postgresql://USER@HOST:PORT/DB, a password from ${VAR} in it or from libpq's PG* environment
    # (PGPASSWORD, PGPASSFILE, PGSSLMODE...); query options such as sslmode pass through to libpq. Held as
    # a secret: it may carry the password.
    url: Secret | None = None
    retention_days: int = Field(default=0, ge=0)

    @field_validator("url")
    @classmethod
    def _postgresql_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or isinstance(value, UnsetSecret):
            return value
        text = value.get_secret_value()
        if not text.startswith(("postgresql://", "postgres://")):
            # The message must not quote the value: it may hold the password.
            raise ValueError("must be a PostgreSQL URL: postgresql://USER@HOST:PORT/DB")
        parts = urlsplit(text)
        try:
            parts.port  # noqa: B018 - parsing it is the check
        except ValueError:
            raise ValueError("the port is not a number (postgresql://USER@HOST:PORT/DB)") from None
        if not parts.path.strip("/"):
            raise ValueError("names no database: postgresql://USER@HOST:PORT/DB")
        return value

    @model_validator(mode="after")
    def _one_backend(self) -> StateConfig:
        if self.url is not None and "path" in self.model_fields_set:
            raise ValueError(
                "path and url are both set: the archive is either an SQLite file (path) or a PostgreSQL "
                "database (url); remove one"
            )
        return self

    @property
    def is_postgresql(self) -> bool:
        return self.url is not None

    def target(self) -> str:
        """What ``Store.open`` takes: the URL (with its password; never log it) or the file.

        Raises ConfigError naming the variable when the URL's ``${VAR}`` is not set."""
        return self.url.get_secret_value() if self.url is not None else self.path

    def label(self) -> str:
        """The archive as messages and logs name it: the file, or the URL without its password."""
        if self.url is None:
            return self.path
        if isinstance(self.url, UnsetSecret):
            return "state.url"
        from monitor.store.pg import redact

        return redact(self.url.get_secret_value())

    @field_validator("path")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            # SQLite takes "" as a private temporary database: the archive, the cursor and the sent
            # alerts would vanish at exit, and every run would re-archive and re-alert everything.
            raise ValueError("must not be empty: give the archive a file, e.g. ./data/audit-monitor.db")
        return value


class RulesConfig(_Strict):
    paths: list[str] = Field(default_factory=lambda: [str(bundled_rules_dir())])
    lists: dict[str, list[Any]] = Field(default_factory=dict)
    calendars: dict[str, dict[str, Any]] = Field(default_factory=dict)
    disable: list[str] = Field(default_factory=list)
    # "FILE:LINE: rules.disable[i]" of each entry, set by parse_config, for errors found once rules load.
    _disable_where: tuple[str, ...] = PrivateAttr(default=())

    def unknown_disabled(self, known_ids: Iterable[str]) -> list[str]:
        """An error line for every ``disable`` entry that names no loaded rule (a typo disables nothing)."""
        known = set(known_ids)
        return [
            f"{self._where_disabled(index)}: no rule has the id {rule_id!r} (rules check lists the ids)"
            for index, rule_id in enumerate(self.disable)
            if rule_id not in known
        ]

    def _where_disabled(self, index: int) -> str:
        if index < len(self._disable_where):
            return self._disable_where[index]
        return f"rules.disable[{index}]"


class SlackConfig(_Strict):
    token: Secret | None = None
    webhook_url: Secret | None = None
    channel: str | None = None
    routes: dict[Severity, str] = Field(default_factory=dict)
    min_severity: Severity = "medium"
    base_url: str = "https://slack.com/api/"
    timeout: Duration = timedelta(seconds=30)

    @field_validator("base_url")
    @classmethod
    def _secure_base_url(cls, value: str) -> str:
        return require_secure_url(value)

    @field_validator("webhook_url")
    @classmethod
    def _secure_webhook(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not isinstance(value, UnsetSecret):
            require_secure_url(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _one_transport(self) -> SlackConfig:
        if (self.token is None) == (self.webhook_url is None):
            raise ValueError("set either token (with channel) or webhook_url")
        if self.token is not None and not self.channel:
            raise ValueError("channel is required with token")
        if self.webhook_url is not None and self.routes:
            # An incoming webhook posts to the one channel it was created for; routing needs the Web API.
            raise ValueError("routes need token (an incoming webhook always posts to its own channel)")
        return self


class SmtpConfig(_Strict):
    host: str
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "ssl", "none"] = "starttls"
    username: str | None = None
    password: Secret | None = None
    timeout: Duration = timedelta(seconds=30)
    ca_file: str | None = None


def parse_mailbox(text: str) -> Address:
    """One email address, bare (``a@example.com``) or with a display name (``Zoë <a@example.com>``).

    The address itself must be ASCII: a relay that does not offer SMTPUTF8 refuses anything else in the
    envelope. The display name may use any letters; mail headers carry it RFC 2047 encoded.
    """
    example = "an email address such as security@example.com or Name <security@example.com>"
    if any(ch in text for ch in "\r\n\0"):
        raise ValueError(f"not {example}: a line break or NUL in an address")
    pairs = getaddresses([text])
    if len(pairs) != 1:
        raise ValueError(f"{text!r}: one address per entry, {example}")
    name, spec = pairs[0]
    local, at, domain = spec.rpartition("@")
    if not (local and at and re.fullmatch(r"[^@\s.]+(\.[^@\s.]+)*", domain)):
        raise ValueError(f"{text!r} is not {example}")
    if not spec.isascii():
        raise ValueError(
            f"{spec!r}: the address itself must be ASCII (SMTP servers without SMTPUTF8 refuse it); "
            "only the name before <...> may use other letters"
        )
    try:
        return Address(display_name=name, addr_spec=spec)
    except (ValueError, IndexError):
        raise ValueError(f"{text!r} is not {example}") from None


def _mailbox(value: str) -> str:
    parse_mailbox(value)  # its ValueError says what is expected
    return value


Mailbox = Annotated[str, AfterValidator(_mailbox)]


class EmailConfig(_Strict):
    smtp: SmtpConfig
    from_: Mailbox = Field(alias="from")
    to: list[Mailbox] = Field(min_length=1)
    min_severity: Severity = "high"

    @property
    def envelope_from(self) -> str:
        """The bare sender address for SMTP's MAIL FROM (the header keeps the display name)."""
        return parse_mailbox(self.from_).addr_spec

    @property
    def envelope_to(self) -> list[str]:
        """The bare recipient addresses for SMTP's RCPT TO."""
        return [parse_mailbox(item).addr_spec for item in self.to]


def _whsec_key(secret: str) -> bytes:
    """A Standard Webhooks secret (``whsec_`` + base64) as the HMAC key; ValueError names what is wrong."""
    encoded = secret.removeprefix("whsec_")
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) < 16:  # the value itself is never repeated: it is the secret
        raise ValueError("is not a Standard Webhooks secret (whsec_ followed by base64 of 16 to 64 bytes)")
    return key


WEBHOOK_NAME = r"^[A-Za-z0-9_.-]+$"
# Headers a webhook request gets from the product (monitor/alerts/webhook.py and http.py) or from HTTP
# itself, in lower case: a static ``headers`` entry may not name one of them.
RESERVED_WEBHOOK_HEADERS = frozenset(
    {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "x-hub-signature-256",
        "content-type",
        "content-length",
        "content-encoding",
        "transfer-encoding",
        "connection",
        "host",
        "user-agent",
    }
)


class WebhookConfig(_Strict):
    name: str = Field(pattern=WEBHOOK_NAME, max_length=64)
    url: Secret  # a URL may carry a token in its path or query (Zapier, Make): held as a secret
    # Before the secrets: their validator reads it to know what a valid secret looks like.
    signature: Literal["standard", "github", "none"] = "standard"
    secret: Secret | None = None
    previous_secret: Secret | None = None  # also signs while receivers move to the new secret
    headers: dict[str, Secret] = Field(default_factory=dict)
    min_severity: Severity = "medium"
    timeout: Duration = timedelta(seconds=10)

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr) -> SecretStr:
        if not isinstance(value, UnsetSecret):
            require_secure_url(value.get_secret_value())
        return value

    @field_validator("secret", "previous_secret")
    @classmethod
    def _secret_shape(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is None or isinstance(value, UnsetSecret):
            return value  # an unset ${VAR}: checked when a command uses it
        if not value.get_secret_value():
            raise ValueError("is empty (is its environment variable set to an empty value?)")
        if info.data.get("signature") == "standard":  # absent: an invalid mode, reported already
            _whsec_key(value.get_secret_value())
        return value

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name):
                raise ValueError(f"{name!r} is not an HTTP header name")
            # Header names are case-insensitive: "webhook-ID" beside our "webhook-id" would be sent as a
            # second header, and a receiver might read the wrong one.
            if name.lower() in RESERVED_WEBHOOK_HEADERS:
                raise ValueError(
                    f"{name!r} is set by audit-monitor itself (the signature, the message id and the "
                    "HTTP framing are not configurable); remove it from headers"
                )
        return value

    @model_validator(mode="after")
    def _signing(self) -> WebhookConfig:
        if self.signature == "none":
            if self.secret is not None or self.previous_secret is not None:
                raise ValueError("secret is set but signature is none (choose standard or github)")
            return self
        if self.secret is None:
            raise ValueError(f"signature {self.signature} needs secret")
        if self.previous_secret is not None and self.signature != "standard":
            raise ValueError("previous_secret needs signature standard (github mode carries one signature)")
        return self

    @property
    def channel(self) -> str:
        """The outbox channel name: each webhook is a channel of its own (retries, dead letters, metrics)."""
        return f"webhook:{self.name}"


class TeamsConfig(_Strict):
    webhook_url: Secret  # a Workflows URL carries its own signature (sig=...): a secret
    min_severity: Severity = "high"
    timeout: Duration = timedelta(seconds=10)

    @field_validator("webhook_url")
    @classmethod
    def _url(cls, value: SecretStr) -> SecretStr:
        if not isinstance(value, UnsetSecret):
            require_secure_url(value.get_secret_value())
        return value


class PagerDutyConfig(_Strict):
    routing_key: Secret
    min_severity: Severity = "critical"
    base_url: str = "https://events.pagerduty.com"
    timeout: Duration = timedelta(seconds=10)

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return require_secure_url(value).rstrip("/")


class AlertsConfig(_Strict):
    min_severity: Severity = "low"
    digest_after: int = Field(default=10, ge=1)
    console: bool | None = None  # None: on when no other channel is configured
    slack: SlackConfig | None = None
    email: EmailConfig | None = None
    webhooks: list[WebhookConfig] = Field(default_factory=list)
    teams: TeamsConfig | None = None
    pagerduty: PagerDutyConfig | None = None

    @model_validator(mode="after")
    def _unique_webhooks(self) -> AlertsConfig:
        seen: set[str] = set()
        for hook in self.webhooks:
            if hook.name in seen:
                raise ValueError(f"webhook name {hook.name!r} is used twice")
            seen.add(hook.name)
        return self


class ReportConfig(_Strict):
    schedule: str = "0 8 1 * *"  # cron in the configured timezone; the report covers the month before
    to: list[Mailbox] = Field(default_factory=list)  # empty: the report is written to out_dir, not emailed
    out_dir: str = "./data/reports"
    pdf: bool = False  # also write compliance-report-YYYY-MM.pdf (WeasyPrint and its system libraries)
    csv_bom: bool = False  # start the CSV with a UTF-8 byte-order mark: Excel then reads it as UTF-8

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        from apscheduler.triggers.cron import CronTrigger  # the daemon's own parser: what passes here runs

        try:
            trigger = CronTrigger.from_crontab(value, timezone=UTC)
        except ValueError as exc:
            raise ValueError(f'{value!r} is not a cron schedule like "0 8 1 * *" ({exc})') from None
        if trigger.get_next_fire_time(None, datetime.now(UTC)) is None:
            # e.g. "0 8 31 2 *": valid fields, but no calendar day matches, so no report would ever go out.
            raise ValueError(f"{value!r} never fires (no date matches it)")
        return value


class AnchorsConfig(_Strict):
    """``anchors``: publish the chain head off the machine every ``every`` through the outbox."""

    every: Duration = timedelta(days=1)
    # "email" (the alert email's recipients) or "webhook NAME" (a webhook of alerts.webhooks)
    to: list[str] = Field(min_length=1)

    @field_validator("every")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value < timedelta(minutes=1):
            raise ValueError("must be at least 1m")
        return value

    @field_validator("to")
    @classmethod
    def _targets(cls, value: list[str]) -> list[str]:
        for index, target in enumerate(value):
            kind, _, name = target.strip().partition(" ")
            if not (kind == "email" and not name) and not (kind == "webhook" and name.strip()):
                raise ValueError(f"[{index}]: {target!r} is not email or webhook NAME")
        return [" ".join(target.split()) for target in value]

    def channels(self) -> list[str]:
        """The outbox channel of each target: email, webhook:NAME."""
        return [t if t == "email" else "webhook:" + t.partition(" ")[2] for t in self.to]


class ApiToken(_Strict):
    """One bearer token of the console and the API: its name is what the logs and the alert history show."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.@-]+$", max_length=64)
    token: Secret
    role: Literal["viewer", "responder"] = "viewer"  # responder: may also acknowledge, resolve, silence

    @field_validator("token")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        # A short token can be guessed over the network; the value itself is never repeated.
        if not isinstance(value, UnsetSecret) and len(value.get_secret_value()) < 16:
            raise ValueError("is shorter than 16 characters (e.g. `openssl rand -hex 24`; not shown)")
        return value


class ServerConfig(_Strict):
    listen: str = "127.0.0.1:9108"  # "" = no HTTP endpoint; the image sets AUDIT_MONITOR_LISTEN=0.0.0.0:9108
    # /healthz fails when a source's last success is older than this; default max(3 x poll_interval, 30s).
    stale_after: Duration | None = None
    # Who may use the console and the JSON API (/healthz and /metrics stay open). None: both are off.
    tokens: list[ApiToken] = Field(default_factory=list)
    # Browser origins allowed to call the API (a WeWeb or Retool app); default none.
    cors_origins: list[str] = Field(default_factory=list)

    @field_validator("tokens")
    @classmethod
    def _distinct_tokens(cls, value: list[ApiToken]) -> list[ApiToken]:
        names = [t.name for t in value]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"token names must be distinct: {', '.join(duplicated)} appears twice")
        secrets = [t.token.get_secret_value() for t in value if not isinstance(t.token, UnsetSecret)]
        if len(set(secrets)) != len(secrets):
            raise ValueError("two tokens have the same value (each name must have its own token)")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if not re.match(r"^https?://[^/\s]+$", origin):
                raise ValueError(
                    f"{origin!r} is not an origin (scheme://host[:port], no path, e.g. https://my-app.weweb.io)"
                )
        return value

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        if value and not re.match(r"^(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):\d{1,5}$", value.strip()):
            raise ValueError(f"{value!r} is not host:port (e.g. 127.0.0.1:9108, 0.0.0.0:9108) or empty (off)")
        return value.strip()

    @field_validator("stale_after")
    @classmethod
    def _positive_stale(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            raise ValueError("must be longer than zero")
        return value


class Config(_Strict):
    timezone: str = "UTC"
    # auto: JSON lines off a terminal, readable lines on one; ecs: Elastic Common Schema (monitor.logs).
    log_format: Literal["auto", "json", "console", "ecs"] = "auto"
    state: StateConfig = Field(default_factory=StateConfig)
    sources: list[SourceConfig] = Field(default_factory=list)
    rules: RulesConfig = Field(default_factory=RulesConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    anchors: AnchorsConfig | None = None
    server: ServerConfig = Field(default_factory=ServerConfig)

    @field_validator("timezone")
    @classmethod
    def _iana(cls, value: str) -> str:
        iana_zone(value)  # its ValueError says what is expected
        return value

    @model_validator(mode="after")
    def _unique_sources(self) -> Config:
        seen: set[str] = set()
        for source in self.sources:
            if source.name in seen:
                raise ValueError(f"source name {source.name!r} is used twice")
            seen.add(source.name)
        return self

    @model_validator(mode="after")
    def _report_mail(self) -> Config:
        if self.report.to and self.alerts.email is None:
            raise ValueError("report.to needs alerts.email (smtp and from) to send the monthly report")
        return self

    @model_validator(mode="after")
    def _anchor_targets(self) -> Config:
        if self.anchors is None:
            return self
        hooks = {hook.name for hook in self.alerts.webhooks}
        for index, target in enumerate(self.anchors.to):
            if target == "email" and self.alerts.email is None:
                raise ValueError(f"anchors.to[{index}]: email needs alerts.email (smtp, from and to)")
            name = target.partition(" ")[2]
            if target != "email" and name not in hooks:
                known = ", ".join(sorted(hooks)) or "none configured"
                raise ValueError(
                    f"anchors.to[{index}]: no webhook named {name!r} in alerts.webhooks ({known})"
                )
        return self

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def source(self, name: str) -> SourceConfig:
        for source in self.sources:
            if source.name == name:
                return source
        raise KeyError(name)


# --- loading ---------------------------------------------------------------------------------------------

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(text: str, where: str, env: dict[str, str], seen: dict[str, str] | None = None) -> str:
    """Expand ``${VAR}`` / ``${VAR:-default}``; ``VAR_FILE`` names a file holding the value.

    ``seen`` collects each value taken from the environment or a file, with its variable's name.
    """

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if env.get(name):
            if seen is not None:
                seen[env[name]] = name
            return env[name]
        file_path = env.get(f"{name}_FILE")
        if file_path:
            try:
                # Surrounding whitespace is not part of a secret: `echo token > file` adds a line break.
                value = Path(file_path).read_text(encoding="utf-8").strip()
                if seen is not None:
                    seen[value] = name
                return value
            except OSError as exc:
                raise ConfigError(f"{where}: cannot read {name}_FILE ({file_path}): {exc.strerror}") from None
        if default is not None:
            return default
        raise UnsetVariable(f"{where}: environment variable {name} is not set (nor {name}_FILE)")

    return _VAR.sub(substitute, text)


def _path_text(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or "(top level)"


_MAX_NODES = 100_000  # aliases may share a node many times over: a "billion laughs" file stops here


class _Document:
    """The YAML tree as plain Python values, with the line of every key kept for error messages."""

    def __init__(self, file_label: str, env: dict[str, str]) -> None:
        self.file_label = file_label
        self.env = env
        self.lines: dict[tuple[str | int, ...], int] = {}
        # Values taken from the environment or *_FILE, by variable name: a secret in the wrong key must not
        # be echoed by a validation message ("timezone: 'xoxb-...' is not an IANA time zone").
        self.from_env: dict[str, str] = {}
        self._open: set[int] = set()  # collections being converted: an alias back into one is a cycle
        self.unset: dict[tuple[str | int, ...], str] = {}  # unset ${VAR}s, by key path
        self._count = 0

    def convert(self, node: yaml.Node, path: tuple[str | int, ...]) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        self._count += 1
        if self._count > _MAX_NODES:
            raise ConfigError(
                f"{self.where(path)}: the file expands to more than {_MAX_NODES} values (aliases?)"
            )
        if id(node) in self._open:
            raise ConfigError(f"{self.where(path)}: an alias refers to a node that contains it")
        if isinstance(node, yaml.MappingNode):
            self._open.add(id(node))
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = str(key_node.value)
                child = (*path, key)
                self.lines[child] = key_node.start_mark.line + 1
                if not isinstance(key_node, yaml.ScalarNode):
                    line = key_node.start_mark.line + 1
                    raise ConfigError(
                        f"{self.file_label}:{line}: {_path_text(path)}: a key must be a plain string"
                    )
                if key in out:
                    raise ConfigError(f"{self.where(child)}: key given twice")
                out[key] = self.convert(value_node, child)
            self._open.discard(id(node))
            return out
        if isinstance(node, yaml.SequenceNode):
            self._open.add(id(node))
            items = [self.convert(item, (*path, i)) for i, item in enumerate(node.value)]
            self._open.discard(id(node))
            return items
        assert isinstance(node, yaml.ScalarNode)
        try:
            value = yaml.SafeLoader(  # resolve the scalar's tag exactly as safe_load would
                ""
            ).construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError) as exc:  # an unknown !tag; a date-shaped value that is no date
            # The value itself is not repeated: it may be a secret (token: !vault abc).
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigError(f"{self.where(path)}: unreadable value: {problem}") from None
        if isinstance(value, str) and "${" in value:
            try:
                expanded = _expand(value, self.where(path), self.env, self.from_env)
            except UnsetVariable as exc:
                # A secret key takes this marker as an UnsetSecret (an error only when it is used);
                # anywhere else it is an error at load (parse_config checks every marker was taken).
                self.unset[path] = str(exc)
                return _Unset(str(exc))
            # An expanded value keeps YAML's scalar typing (a port from ${SMTP_PORT} is an int).
            if node.style is None:
                try:
                    loaded = yaml.safe_load(expanded)
                except yaml.YAMLError:
                    loaded = expanded
                return loaded if isinstance(loaded, int | float | bool) else expanded
            return expanded
        if isinstance(value, date) and not isinstance(value, str):
            return value.isoformat()  # "backfill: 2026-10-01" stays a string for the schema
        return value

    def where(self, path: tuple[str | int, ...]) -> str:
        line = None
        probe = path
        while probe and line is None:
            line = self.lines.get(probe)
            probe = probe[:-1]
        loc = f"{self.file_label}:{line}" if line else self.file_label
        return f"{loc}: {_path_text(path)}"


def load_config(path: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None) -> Config:
    """Load the config from ``path``, ``$AUDIT_MONITOR_CONFIG`` or ``./audit-monitor.yaml``.

    Without any file, every default holds (bundled rules, no sources). An explicitly
    named file that does not exist is an error.
    """
    env = dict(os.environ) if env is None else env
    explicit = path is not None or bool(env.get(CONFIG_ENV))
    file_path = Path(path if path is not None else env.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)
    if not file_path.exists():
        if explicit:
            raise ConfigError(f"{file_path}: config file not found")
        return Config()
    try:
        text = file_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file_path}: cannot read config: {exc}") from None
    return parse_config(text, str(file_path), env)


def _token_from_env(data: dict[str, Any], file_label: str, env: dict[str, str], document: _Document) -> None:
    """``AUDIT_MONITOR_API_TOKEN`` (or ``_FILE``) as the viewer token "api", when the file sets no tokens."""
    server = data.get("server")
    if server is not None and (not isinstance(server, dict) or "tokens" in server):
        return  # the file's own server.tokens (even an empty list) wins; a bad section is reported later
    token = _expand("${" + TOKEN_ENV + ":-}", f"{file_label}: {TOKEN_ENV}", env, document.from_env)
    if not token:
        return
    if len(token) < 16:
        raise ConfigError(
            f"{file_label}: {TOKEN_ENV}: is shorter than 16 characters "
            "(e.g. `openssl rand -hex 24`; not shown)"
        )
    viewer = {"name": TOKEN_ENV_NAME, "token": token, "role": "viewer"}
    data["server"] = {**(server or {}), "tokens": [viewer]}


_MAX_DEPTH = 64  # far beyond any real config; PyYAML's composer recurses and would hit RecursionError


def _check_depth(text: str, file_label: str) -> None:
    """Refuse a document nested deeper than ``_MAX_DEPTH``, before the (recursive) composer sees it.

    The event stream is flat, so counting its start and end events needs no recursion.
    """
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > _MAX_DEPTH:
                line = event.start_mark.line + 1 if event.start_mark else 1
                raise ConfigError(
                    f"{file_label}:{line}: the config is nested more than {_MAX_DEPTH} levels deep"
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def parse_config(text: str, file_label: str, env: dict[str, str]) -> Config:
    document = _Document(file_label, env)
    try:
        _check_depth(text, file_label)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file_label}:{mark.line + 1}" if mark else file_label
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
    data = {} if node is None else document.convert(node, ())
    if not isinstance(data, dict):
        raise ConfigError(f"{file_label}:1: the config must be a mapping of keys (timezone, sources, ...)")
    server = data.get("server")
    listen_unset = server is None or (isinstance(server, dict) and "listen" not in server)
    if env.get(LISTEN_ENV) is not None and listen_unset:
        # An image-level default: the file's own server.listen, when present, wins.
        data["server"] = {**(server or {}), "listen": env[LISTEN_ENV]}
    _token_from_env(data, file_label, env, document)
    config_dir = Path(file_label).parent
    rules = data.get("rules")
    if isinstance(rules, dict) and isinstance(rules.get("paths"), list):
        # Relative rule paths are relative to the config file, not to the working directory.
        rules["paths"] = [
            str(config_dir / p) if isinstance(p, str) and not Path(p).is_absolute() else p
            for p in rules["paths"]
        ]
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_hide_env_values(_describe(exc, document), document.from_env)) from None
    # An unset ${VAR} is deferred only where a secret key took it; anywhere else (a path, a list
    # entry typed Any) it is the load error it always was.
    deferred = set(missing_secrets(config))
    unresolved = [message for message in document.unset.values() if message not in deferred]
    if unresolved:
        raise ConfigError("\n".join(unresolved))
    config.rules._disable_where = tuple(
        document.where(("rules", "disable", index)) for index in range(len(config.rules.disable))
    )
    return config


def _describe(exc: ValidationError, document: _Document) -> str:
    messages = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = tuple(part for part in error["loc"] if not _is_union_tag(part))
        loc = tuple("from" if part == "from_" else part for part in loc)
        if loc in document.unset:
            messages.append(document.unset[loc])  # "environment variable X is not set", not a type error
            continue
        if error["type"] == "extra_forbidden":
            text = "unknown key"
        elif error["type"] == "missing":
            text = "required key is missing"
        else:
            text = str(error["msg"]).removeprefix("Value error, ")
        messages.append(f"{document.where(loc)}: {text}")
    return "\n".join(messages)


def _hide_env_values(message: str, from_env: dict[str, str]) -> str:
    """Show ``${VAR}`` where a message quotes a value that came from the environment (it may be a secret)."""
    for value in sorted(from_env, key=len, reverse=True):
        if len(value) >= 4:  # shorter values would replace ordinary words; no secret is this short
            reference = f"${{{from_env[value]}}}"
            message = message.replace(value, reference).replace(repr(value)[1:-1], reference)
    return message


def _is_union_tag(part: str | int) -> bool:
    # pydantic adds the chosen union member's type name to a location; a user never typed it.
    return isinstance(part, str) and part in {"str", "int", "SecretStr", "function-after[_positive(), ...]"}


def effective_console(config: Config) -> bool:
    """The console sink is the default when no other channel is configured."""
    if config.alerts.console is not None:
        return config.alerts.console
    alerts = config.alerts
    return (
        alerts.slack is None
        and alerts.email is None
        and not alerts.webhooks
        and alerts.teams is None
        and alerts.pagerduty is None
    )


def configured_channels(config: Config) -> list[str]:
    """The names of the delivery channels this config sets up (as the outbox names them)."""
    alerts = config.alerts
    names = ["console"] if effective_console(config) else []
    if alerts.slack is not None:
        names.append("slack")
    if alerts.email is not None:
        names.append("email")
    names.extend(hook.channel for hook in alerts.webhooks)
    if alerts.teams is not None:
        names.append("teams")
    if alerts.pagerduty is not None:
        names.append("pagerduty")
    return names

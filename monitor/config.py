"""Configuration: YAML + ``${VAR}`` expansion -> typed, validated settings.

Every error names the file, the line when known, and the key path
(``audit-monitor.yaml:7: sources[0].per_pgae: unknown key``). Secret values are held
as ``SecretStr`` so that no repr, log line or error message can show them.
"""

from __future__ import annotations

import os
import re
import unicodedata
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from monitor.resources import bundled_rules_dir
from monitor.timeutil import iana_zone

DEFAULT_CONFIG_PATH = "audit-monitor.yaml"
CONFIG_ENV = "AUDIT_MONITOR_CONFIG"
LISTEN_ENV = "AUDIT_MONITOR_LISTEN"  # server.listen when the file does not set it (the image: 0.0.0.0:9108)

SEVERITIES = ("info", "low", "medium", "high", "critical")
Severity = Literal["info", "low", "medium", "high", "critical"]


class ConfigError(Exception):
    """A configuration problem; the message names the file, line and key path."""


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
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def _one_line_secret(value: SecretStr) -> SecretStr:
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


# Every credential in the config: never shown in a repr or an error, and always one line.
Secret = Annotated[SecretStr, AfterValidator(_one_line_secret)]


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
    plan_retention: Duration = timedelta(hours=24)
    backfill: str = "all"
    timeout: Duration = timedelta(seconds=30)
    ca_file: str | None = None

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http(s) URL such as https://x8ki-letl-twmt.n7.xano.io")
        return value.rstrip("/")

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
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be longer than zero")
        return value


class StateConfig(_Strict):
    path: str = "./data/audit-monitor.db"
    retention_days: int = Field(default=0, ge=0)


class RulesConfig(_Strict):
    paths: list[str] = Field(default_factory=lambda: [str(bundled_rules_dir())])
    lists: dict[str, list[Any]] = Field(default_factory=dict)
    calendars: dict[str, dict[str, Any]] = Field(default_factory=dict)
    disable: list[str] = Field(default_factory=list)


class SlackConfig(_Strict):
    token: Secret | None = None
    webhook_url: Secret | None = None
    channel: str | None = None
    routes: dict[Severity, str] = Field(default_factory=dict)
    min_severity: Severity = "medium"
    base_url: str = "https://slack.com/api/"
    timeout: Duration = timedelta(seconds=30)

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


class EmailConfig(_Strict):
    smtp: SmtpConfig
    from_: str = Field(alias="from")
    to: list[str] = Field(min_length=1)
    min_severity: Severity = "high"


class AlertsConfig(_Strict):
    min_severity: Severity = "low"
    digest_after: int = Field(default=10, ge=1)
    console: bool | None = None  # None: on when no other channel is configured
    slack: SlackConfig | None = None
    email: EmailConfig | None = None


class ReportConfig(_Strict):
    schedule: str = "0 8 1 * *"  # cron in the configured timezone; the report covers the month before
    to: list[str] = Field(default_factory=list)  # empty: the report is written to out_dir, not emailed
    out_dir: str = "./data/reports"

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        from apscheduler.triggers.cron import CronTrigger  # the daemon's own parser: what passes here runs

        try:
            CronTrigger.from_crontab(value)
        except ValueError as exc:
            raise ValueError(f'{value!r} is not a cron schedule like "0 8 1 * *" ({exc})') from None
        return value


class ServerConfig(_Strict):
    listen: str = "127.0.0.1:9108"  # "" = no HTTP endpoint; the image sets AUDIT_MONITOR_LISTEN=0.0.0.0:9108
    # /healthz fails when a source's last success is older than this; default max(3 x poll_interval, 30s).
    stale_after: Duration | None = None

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
        raise ConfigError(f"{where}: environment variable {name} is not set (nor {name}_FILE)")

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
            expanded = _expand(value, self.where(path), self.env, self.from_env)
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


def parse_config(text: str, file_label: str, env: dict[str, str]) -> Config:
    document = _Document(file_label, env)
    try:
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
    config_dir = Path(file_label).parent
    rules = data.get("rules")
    if isinstance(rules, dict) and isinstance(rules.get("paths"), list):
        # Relative rule paths are relative to the config file, not to the working directory.
        rules["paths"] = [
            str(config_dir / p) if isinstance(p, str) and not Path(p).is_absolute() else p
            for p in rules["paths"]
        ]
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_hide_env_values(_describe(exc, document), document.from_env)) from None


def _describe(exc: ValidationError, document: _Document) -> str:
    messages = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = tuple(part for part in error["loc"] if not _is_union_tag(part))
        loc = tuple("from" if part == "from_" else part for part in loc)
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
    return config.alerts.slack is None and config.alerts.email is None

"""What every command module of the CLI shares: exit codes, the config context, and `fail`.

Kept apart from cli.py so that command groups in their own modules (cli_rules.py) use the same
pieces without importing the main group (which imports them).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import datetime
from typing import NoReturn

import click
from pydantic import BaseModel

from monitor.config import Config, ConfigError, load_config, require_secrets
from monitor.display import safe_text
from monitor.timeutil import parse_cli_date

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


@dataclass
class CliContext:
    config_path: str | None = None
    _config: Config | None = field(default=None, repr=False)

    def config(self) -> Config:
        """The loaded config; a config error prints its message and exits 2."""
        if self._config is None:
            try:
                self._config = load_config(self.config_path)
            except ConfigError as exc:
                fail(f"configuration error: {exc}", EXIT_USAGE)
        return self._config

    def require_secrets(self, section: BaseModel | None) -> None:
        """Exit 2 naming each secret of ``section`` whose variable is unset: call it before using them.

        Secrets are resolved only by the commands that use them, so that `status`, `verify`, `export`
        and `report` run where the Xano token or a channel secret is not available.
        """
        try:
            require_secrets(section)
        except ConfigError as exc:
            fail(f"configuration error: {exc}", EXIT_USAGE)


def _set_config_path(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(CliContext).config_path = value


class ConfigGroup(click.Group):
    """A group whose every command also takes ``--config FILE`` (``audit-monitor status --config x.yaml``)."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        if not isinstance(cmd, click.Group) and not any(p.name == "config_path" for p in cmd.params):
            cmd.params.append(
                click.Option(
                    ["--config", "config_path"],
                    metavar="FILE",
                    expose_value=False,
                    is_eager=True,  # before the other options' callbacks, which may read the config
                    callback=_set_config_path,
                    help="Config file (also accepted before the command).",
                )
            )
        super().add_command(cmd, name)


def date_range(config: Config, since: str, until: str) -> tuple[datetime, datetime]:
    """``--since`` / ``--until`` as aware datetimes; exit 2 when one is unreadable or the range is empty."""
    try:
        start, end = parse_cli_date(since, config.tz), parse_cli_date(until, config.tz)
    except ValueError as exc:
        fail(f"usage error: {exc}", EXIT_USAGE)
    if end <= start:
        fail(f"usage error: --since {since} is not before --until {until} (--until is exclusive)", EXIT_USAGE)
    return start, end


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    # Messages may quote upstream or file text: no terminal escape or bidi control reaches the terminal.
    click.echo(safe_text(message), err=True)
    sys.exit(code)

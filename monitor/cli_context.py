"""What every command module of the CLI shares: exit codes, the config context, and `fail`.

Kept apart from cli.py so that command groups in their own modules (cli_rules.py) use the same
pieces without importing the main group (which imports them).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import NoReturn

import click
from pydantic import BaseModel

from monitor.config import Config, ConfigError, load_config, require_secrets

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


@dataclass
class CliContext:
    config_path: str | None
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


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(code)

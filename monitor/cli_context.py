"""What every command module of the CLI shares: exit codes, the config context, and `fail`.

Kept apart from cli.py so that command groups in their own modules (cli_rules.py) use the same
pieces without importing the main group (which imports them).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import NoReturn

import click

from monitor.config import Config, ConfigError, load_config
from monitor.display import safe_text

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


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    # Messages may quote upstream or file text: no terminal escape or bidi control reaches the terminal.
    click.echo(safe_text(message), err=True)
    sys.exit(code)

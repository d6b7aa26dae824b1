"""The ``audit-monitor`` command line. Click commands only: parse, call one function, print, exit.

Exit codes: 0 ok, 1 a check failed, 2 usage or configuration error.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import NoReturn

import click

from monitor.config import Config, ConfigError, load_config

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
    click.echo(message, err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option(
    "--config",
    "config_path",
    metavar="FILE",
    envvar="AUDIT_MONITOR_CONFIG",
    help="Config file (default ./audit-monitor.yaml; env AUDIT_MONITOR_CONFIG).",
)
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """Compliance monitor for Xano workspaces.

    Archives the Xano audit log in a tamper-evident SQLite file, evaluates YAML rules over
    new events, alerts on Slack, email or the console, and emails a monthly compliance report.
    """
    ctx.obj = CliContext(config_path)


def main() -> None:
    cli(prog_name="audit-monitor")


if __name__ == "__main__":
    main()

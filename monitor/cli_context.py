"""What every command module of the CLI shares: exit codes, the config context, and `fail`.

Kept apart from cli.py so that command groups in their own modules (cli_rules.py) use the same
pieces without importing the main group (which imports them).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import NoReturn

import click
from pydantic import BaseModel

from monitor.config import CONFIG_ENV, DEFAULT_CONFIG_PATH, Config, ConfigError, load_config, require_secrets
from monitor.display import safe_text
from monitor.store import ArchiveMissing, Store, StoreError, StoreUnavailable
from monitor.store.files import ArchiveLocked, WriterLock, acquire_writer_lock, tighten_modes
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

    def config_file(self) -> tuple[str, bool]:
        """The config file this command reads (or would read) and whether it exists."""
        path = self.config_path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH
        return path, Path(path).is_file()

    def open_archive(self, *, write: bool = False) -> Store:
        """The configured archive for a command that reads it (``write``: that also changes it in one
        transaction, like ``dead-letters requeue``). Never creates one: a missing archive exits 2 naming the
        file and the config it came from, so a cron `verify` run from the wrong folder cannot pass."""
        config = self.config()
        target = self.state_target()
        try:
            if write and config.state.is_postgresql:
                Store.open(target, readonly=True).close()  # raises ArchiveMissing: a write never creates
            elif write and not Path(target).is_file():
                raise ArchiveMissing(target)
            return Store.open(target, readonly=not write)
        except ArchiveMissing as exc:
            fail(self._missing_archive(exc.path), EXIT_USAGE)
        except StoreUnavailable as exc:
            fail(self.unavailable_archive(exc), EXIT_USAGE)
        except StoreError as exc:
            fail(str(exc), EXIT_FAILED)

    def unavailable_archive(self, exc: StoreUnavailable) -> str:
        """The message for a PostgreSQL archive that cannot be reached at start: a configuration error
        naming the config file, the key and the host (the URL without its password)."""
        config_file, _exists = self.config_file()
        return f"configuration error: {config_file}: state.url: {exc}"

    def state_target(self) -> str:
        """``state.url`` or ``state.path``: exit 2 naming the variable when the URL's ``${VAR}`` is unset."""
        try:
            return self.config().state.target()
        except ConfigError as exc:
            fail(f"configuration error: {exc}", EXIT_USAGE)

    def _missing_archive(self, archive: str) -> str:
        config_file, exists = self.config_file()
        if self.config().state.is_postgresql:
            return (
                f"configuration error: {config_file}: state.url: {archive}: no archive in this database "
                "(nothing was created; `audit-monitor run` creates it)"
            )
        if exists:
            return (
                f"configuration error: {config_file}: state.path: {archive}: no archive at this path "
                "(nothing was created; `audit-monitor run` creates it)"
            )
        return (
            f"configuration error: no config file {config_file} (looked for it in {Path.cwd()}) and no "
            f"archive at {archive}: run this in the folder of your config, or pass --config FILE "
            f"(or set {CONFIG_ENV}); nothing was created"
        )

    def writer_lock(self) -> WriterLock:
        """Take the archive's writer lock for the life of this process, then tighten the files' modes.

        Exit 2 naming the pid of the process that holds it (a second `run` on the same archive).

        On PostgreSQL there is no file to lock: writers take turns per transaction (an advisory lock), and
        the lock returned holds nothing."""
        state = self.config().state
        if state.is_postgresql:
            return WriterLock(state.label(), "", None)
        path = state.path
        try:
            lock = acquire_writer_lock(path)
        except ArchiveLocked as exc:
            fail(f"configuration error: {exc}", EXIT_USAGE)
        except OSError as exc:
            fail(f"{path}: cannot create the archive's lock file: {exc.strerror}", EXIT_FAILED)
        tighten_modes(path)
        return lock

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

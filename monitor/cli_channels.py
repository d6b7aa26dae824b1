"""``audit-monitor channels ...``: list the configured alert channels, send a test alert through them.

Click commands only: parse, call monitor.alerts.probe, print, choose the exit code.
"""

from __future__ import annotations

from datetime import UTC, datetime

import click

from monitor.alerts.probe import channel_infos, channel_test_alert, probe
from monitor.cli_context import EXIT_FAILED, EXIT_USAGE, CliContext, ConfigGroup, fail
from monitor.daemon import build_channels


@click.group("channels", cls=ConfigGroup)
def channels() -> None:
    """The alert channels of the config: console, slack, email, webhook:NAME, teams, pagerduty."""


@channels.command("list")
@click.pass_obj
def channels_list(ctx: CliContext) -> None:
    """Each channel with the lowest severity it receives (alerts.min_severity and its own) and its routes."""
    infos = channel_infos(ctx.config())
    width = max((len(i.name) for i in infos), default=7)
    click.echo(f"{'CHANNEL'.ljust(width)}  {'MIN SEVERITY'.ljust(12)}  ROUTES")
    for info in infos:
        click.echo(f"{info.name.ljust(width)}  {info.min_severity.ljust(12)}  {info.routes}")


@channels.command("test")
@click.argument("name", required=False)
@click.pass_obj
def channels_test(ctx: CliContext, name: str | None) -> None:
    """Send one test alert (severity info, marked TEST) through every channel, or only NAME.

    Prints per channel `delivered` or the error and whether it is transient. Exit 1 if any failed.
    NAME is a channel as `channels list` shows it; a webhook may be named without `webhook:`.
    """
    config = ctx.config()
    ctx.require_secrets(config.alerts)  # an unset ${VAR} of a channel: exit 2 naming it, before any send
    built = build_channels(config)
    if name is not None:
        wanted = name if name in built else f"webhook:{name}"
        if wanted not in built:
            fail(f"usage error: no channel {name!r}; configured: {', '.join(built) or 'none'}", EXIT_USAGE)
        built = {wanted: built[wanted]}
    results = probe(built, channel_test_alert(datetime.now(UTC)))
    for result in results:
        click.echo(result.line)
    if any(r.error is not None for r in results):
        raise SystemExit(EXIT_FAILED)

"""``audit-monitor alerts ...`` and ``audit-monitor silences ...``: triage from a shell.

Click commands only: parse, call monitor.store.lifecycle, print, choose the exit code. The actor recorded in
the alert history is ``cli:<login name>`` (the API records the token's name instead).
"""

from __future__ import annotations

import getpass
import json
from datetime import UTC, datetime

import click

from monitor.cli_context import EXIT_FAILED, EXIT_USAGE, CliContext, ConfigGroup, fail
from monitor.display import json_escape_unsafe, one_line
from monitor.store import Store, StoreError, lifecycle
from monitor.timeutil import format_time, parse_cli_date


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # a uid with no passwd entry (a container's arbitrary user)
        return "cli:unknown"


def _alert_id(store: Store, given: str) -> str:
    full = lifecycle.resolve_alert_id(store, given)
    if full is None:
        fail(f"usage error: {given!r} is not the id (or a unique prefix) of an alert", EXIT_USAGE)
    return full


@click.group("alerts", cls=ConfigGroup)
def alerts() -> None:
    """Recorded alerts and their lifecycle: open -> acknowledged -> resolved (or open -> resolved)."""


@alerts.command("list")
@click.option(
    "--status",
    type=click.Choice([*lifecycle.STATUSES, "all"]),
    default="open",
    show_default=True,
    help="Which alerts.",
)
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_obj
def alerts_list(ctx: CliContext, status: str, limit: int, as_json: bool) -> None:
    """Alerts newest first: id (12 characters), event time, severity, status, rule, title."""
    config = ctx.config()
    with ctx.open_archive() as store:
        query = lifecycle.AlertQuery(statuses=() if status == "all" else (status,))
        rows = lifecycle.list_alerts(store, query, limit=limit)
    for row in rows:
        if as_json:
            click.echo(json_escape_unsafe(json.dumps(row, ensure_ascii=False)))
            continue
        when = format_time(datetime.fromisoformat(row["event_time"]), config.tz)
        click.echo(
            f"{row['id'][:12]}  {when}  {row['severity']:<8}  {row['status']:<12}  {row['rule']}  "
            f"{one_line(row['title'])[:100]}"
        )


@alerts.command("show")
@click.argument("alert_id")
@click.pass_obj
def alerts_show(ctx: CliContext, alert_id: str) -> None:
    """One alert as JSON: its fields, delivery per channel and history. ALERT_ID may be a unique prefix."""
    with ctx.open_archive() as store:
        alert = lifecycle.get_alert(store, _alert_id(store, alert_id))
    click.echo(json_escape_unsafe(json.dumps(alert, indent=2, ensure_ascii=False)))


def _transition(
    ctx: CliContext, alert_id: str, to_status: str, note: str | None, disposition: str | None
) -> None:
    with ctx.open_archive(write=True) as store:
        full = _alert_id(store, alert_id)
        try:
            lifecycle.transition(
                store,
                full,
                to_status,
                actor=_actor(),
                at=datetime.now(UTC),
                note=note,
                disposition=disposition,
            )
        except lifecycle.LifecycleError as exc:
            fail(f"error: {exc}", EXIT_FAILED)
        except StoreError as exc:
            fail(str(exc), EXIT_FAILED)
    click.echo(f"{full} {to_status}")


_NOTE = click.option("--note", help="Why (kept in the alert's history).")
_DISPOSITION = click.option("--disposition", type=click.Choice(lifecycle.DISPOSITIONS))


@alerts.command("ack")
@click.argument("alert_id")
@_NOTE
@_DISPOSITION
@click.pass_obj
def alerts_ack(ctx: CliContext, alert_id: str, note: str | None, disposition: str | None) -> None:
    """Acknowledge an open alert. Exit 1 when it is not open."""
    _transition(ctx, alert_id, "acknowledged", note, disposition)


@alerts.command("resolve")
@click.argument("alert_id")
@_NOTE
@_DISPOSITION
@click.pass_obj
def alerts_resolve(ctx: CliContext, alert_id: str, note: str | None, disposition: str | None) -> None:
    """Resolve an open or acknowledged alert. Exit 1 when it is resolved already."""
    _transition(ctx, alert_id, "resolved", note, disposition)


@click.group("silences", cls=ConfigGroup)
def silences() -> None:
    """Silences: alerts matching an active silence are recorded as silenced and sent nowhere."""


@silences.command("add")
@click.option("--rule", help="Only alerts of this rule id (default: any rule but the monitor's own).")
@click.option(
    "--match",
    "pairs",
    multiple=True,
    metavar="FIELD=VALUE",
    help="Only alerts whose FIELD is VALUE (repeatable): source, severity, user, workspace, user.email...",
)
@click.option("--until", required=True, metavar="D", help="End: YYYY-MM-DD (configured zone) or ISO 8601.")
@click.option("--reason", required=True, help="Why (kept in the history).")
@click.pass_obj
def silences_add(ctx: CliContext, rule: str | None, pairs: tuple[str, ...], until: str, reason: str) -> None:
    """Silence matching alerts from now until --until; prints the silence's id."""
    config = ctx.config()
    match: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"usage error: --match {pair!r} is not FIELD=VALUE", EXIT_USAGE)
        match[key] = value
    if rule is None and not match:
        fail("usage error: give --rule or at least one --match", EXIT_USAGE)
    try:
        end = parse_cli_date(until, config.tz)
    except ValueError as exc:
        fail(f"usage error: --until: {exc}", EXIT_USAGE)
    now = datetime.now(UTC)
    if end <= now:
        fail("usage error: --until must be in the future", EXIT_USAGE)
    with ctx.open_archive(write=True) as store:
        silence = lifecycle.add_silence(
            store, rule_id=rule, match=match, until=end, reason=reason, actor=_actor(), at=now
        )
    click.echo(f"silence {silence.id} until {format_time(silence.until, config.tz)}")


@silences.command("list")
@click.option("--all", "show_all", is_flag=True, help="Also expired silences.")
@click.pass_obj
def silences_list(ctx: CliContext, show_all: bool) -> None:
    """Active silences (with --all, every one): id, until, rule, match, by whom, reason."""
    config = ctx.config()
    now = datetime.now(UTC)
    with ctx.open_archive() as store:
        found = lifecycle.list_silences(store, active_at=None if show_all else now)
    for s in found:
        state = "active" if s.active_at(now) else "ended"
        match = ",".join(f"{k}={v}" for k, v in s.match.items()) or "-"
        click.echo(
            f"{s.id:>4}  {state:<6}  {format_time(s.until, config.tz)}  {s.rule_id or '*'}  {match}  "
            f"{s.created_by}  {one_line(s.reason)[:80]}"
        )


@silences.command("expire")
@click.argument("silence_id", type=int)
@click.pass_obj
def silences_expire(ctx: CliContext, silence_id: int) -> None:
    """End a silence now. Exit 1 when it is unknown or already ended."""
    with ctx.open_archive(write=True) as store:
        try:
            lifecycle.expire_silence(store, silence_id, actor=_actor(), at=datetime.now(UTC))
        except lifecycle.LifecycleError as exc:
            fail(f"error: {exc}", EXIT_FAILED)
    click.echo(f"silence {silence_id} expired")

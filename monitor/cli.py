"""The ``audit-monitor`` command line. Click commands only: parse, call one function, print, exit.

Exit codes: 0 ok, 1 a check failed, 2 usage or configuration error.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn, TextIO

import click

from monitor.alerts.outbox import (
    AmbiguousAlertId,
    UnknownAlertId,
    dead_letter_record,
    list_dead_letters,
    render_dead_letters,
    requeue_dead_letters,
)
from monitor.anchors import AnchorFileError, ChainAnchor, check_anchor, take_anchor
from monitor.cli_context import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliContext, ConfigGroup, date_range, fail
from monitor.config import Config, configured_channels
from monitor.daemon import Monitor, NotLeading, config_rules_loader, run_daemon, run_once_until_stopped
from monitor.display import one_line
from monitor.engine import RuleLoadError, ruleset_from_config
from monitor.engine.calendars import Calendar
from monitor.events import format_timestamp
from monitor.export import write_events_csv, write_jsonl
from monitor.logs import config_secrets, setup_logging
from monitor.report import Period, ReportError, ReportSendError, produce_report
from monitor.status import render_status_data, status_data
from monitor.store import DatabaseError, Store, StoreError, StoreUnavailable, copy
from monitor.store.files import ArchiveLocked
from monitor.store.pg import is_url as is_postgresql_url
from monitor.web import ServerError, listen_problem


@click.group(
    cls=ConfigGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110}
)
@click.version_option(
    package_name="xano-audit-monitor", prog_name="audit-monitor", message="%(prog)s %(version)s"
)
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
    new events, alerts on Slack, email, webhooks, Teams, PagerDuty or the console, and emails a monthly
    compliance report.
    """
    ctx.obj = CliContext(config_path)


def _check_channel(channel: str | None, config: Config, store: Store) -> None:
    """A --channel that is neither configured nor holds dead letters is a typo: exit 2, not "none found"."""
    if channel is None:
        return
    known = dict.fromkeys([*configured_channels(config), *(d.channel for d in list_dead_letters(store))])
    if channel not in known:
        fail(
            f"usage error: --channel: {channel!r} is not a channel here (known: {', '.join(known)})",
            EXIT_USAGE,
        )


@cli.command()
@click.option(
    "--once",
    is_flag=True,
    help="One cycle of every source, deliver what is due, then exit (1 if anything failed).",
)
@click.option(
    "--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"])
)
@click.pass_obj
def run(ctx: CliContext, once: bool, log_level: str) -> None:
    """Run the daemon: poll every source on its interval, deliver alerts, send the monthly report.

    SIGTERM or SIGINT stops within seconds and exits 0 (with --once: 1): a cycle in flight stops at
    its next page and commits nothing, and work that does not end within 5 s is abandoned (as safe as
    kill -9: it is repeated at the next start).

    On PostgreSQL (state.url) any number of `run` processes may share the database: one leads (polls,
    delivers, reports), the others stand by and take over within 30 s when it goes. `run --once` exits 2
    while another process leads. On SQLite a second `run` on the same file exits 2 naming the first.
    """
    config = ctx.config()
    if not config.sources:
        where = ctx.config_path or "./audit-monitor.yaml"
        fail(
            f"configuration error: {where}: sources: no source is configured. Add at least one, e.g.\n"
            "sources:\n  - name: prod\n"
            "    base_url: https://YOUR-INSTANCE.xano.io\n"
            "    token: ${XANO_META_TOKEN}",
            EXIT_USAGE,
        )
    ctx.require_secrets(config)
    problem = None if once else listen_problem(config)  # before the archive is opened: nothing is created
    if problem is not None:
        fail(f"configuration error: {ctx.config_path or './audit-monitor.yaml'}: {problem}", EXIT_USAGE)
    setup_logging(log_level, log_format=config.log_format, secrets=config_secrets(config))
    # Held until the process exits (also through sys.exit below): one writer per archive.
    writer_lock = ctx.writer_lock()
    monitor = _build_monitor(config, ctx)
    if once:
        try:
            finished = run_once_until_stopped(monitor)
        except NotLeading as exc:
            monitor.close()
            fail(f"configuration error: {exc}", EXIT_USAGE)
        except BaseException:
            monitor.close()
            raise
        if finished.outcome is None:
            click.echo("stopped: work still in flight was abandoned; nothing of it is committed", err=True)
            _exit_now(EXIT_FAILED)
        monitor.close()
        outcome = finished.outcome
        if finished.stopped:
            click.echo("stopped before the cycle completed; the next run repeats what was cut off", err=True)
        # Errors quote upstream answers: one line each, control and bidi characters neutralised.
        for poll in outcome.polls:
            if not poll.ok:
                click.echo(f"source {poll.source}: {one_line(poll.error)}", err=True)
        for error in outcome.delivery.errors:
            click.echo(f"delivery: {one_line(error)}", err=True)
        for report_run in outcome.reports:
            if report_run.failed:
                click.echo(f"monthly report {report_run.period}: {one_line(report_run.detail)}", err=True)
        sys.exit(EXIT_OK if outcome.ok and not finished.stopped else EXIT_FAILED)
    try:
        clean = run_daemon(monitor, rules_loader=config_rules_loader(ctx.config_path, config))
    except ServerError as exc:
        writer_lock.release()
        monitor.close()
        fail(f"configuration error: {ctx.config_path or './audit-monitor.yaml'}: {exc}", EXIT_USAGE)
    except BaseException:
        writer_lock.release()
        raise
    if not clean:
        # A stop that was asked for; what was cut off is repeated at the next start. Threads still in
        # flight may yet write: the writer lock goes with the process, after them.
        _exit_now(EXIT_OK)
    writer_lock.release()


def _exit_now(code: int) -> NoReturn:
    """Exit without waiting for threads still in flight (a socket that sends nothing, a channel that does
    not answer): as safe as kill -9, with the logs flushed first."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _build_monitor(config: Config, ctx: CliContext) -> Monitor:
    try:
        return Monitor(config)
    except StoreUnavailable as exc:
        fail(ctx.unavailable_archive(exc), EXIT_USAGE)
    except StoreError as exc:
        fail(str(exc), EXIT_FAILED)
    except RuleLoadError as exc:
        fail("rule errors:\n" + "\n".join(exc.errors), EXIT_USAGE)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (for scripts), not the table.")
@click.pass_obj
def status(ctx: CliContext, as_json: bool) -> None:
    """Per source: cursor, last success, last error, lag, archived; outbox, dead letters, archive size."""
    config = ctx.config()
    with ctx.open_archive() as store:
        data = status_data(store, config, datetime.now(UTC))
    click.echo(json.dumps(data, indent=2) if as_json else render_status_data(data, config.tz))


@cli.command()
@click.option(
    "--since", required=True, metavar="D", help="YYYY-MM-DD (midnight, configured zone) or ISO 8601."
)
@click.option("--until", required=True, metavar="D", help="Exclusive end, same forms as --since.")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, writable=True), help="Output file (default stdout).")
@click.option("--source", help="Only this source.")
@click.pass_obj
def export(ctx: CliContext, since: str, until: str, fmt: str, out: str | None, source: str | None) -> None:
    """Export archived events with since <= created_at < until as CSV or JSON Lines."""
    config = ctx.config()
    start, end = date_range(config, since, until)
    with ctx.open_archive() as store:
        if source is not None:
            # Sources of the config, and any the archive still holds from an earlier config.
            known = dict.fromkeys([*(s.name for s in config.sources), *(c.source for c in store.cursors())])
            if source not in known:
                fail(f"usage error: --source: no source {source!r} (known: {', '.join(known)})", EXIT_USAGE)

        def write(handle: TextIO) -> int:
            if fmt == "csv":
                return write_events_csv(store, start, end, handle, config.tz, source=source)
            return write_jsonl(store.iter_events(start, end, source=source), handle, config.tz)

        if out:
            try:
                descriptor = os.open(out, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
            except OSError as exc:
                fail(f"usage error: --out: cannot write {out}: {exc.strerror}", EXIT_USAGE)
            # 0600 like the archive and the reports (an export names users and IPs), also for a file that
            # existed before: os.open's mode applies only to a file it creates.
            os.fchmod(descriptor, 0o600)
            with open(descriptor, "w", encoding="utf-8", newline="") as handle:
                count = write(handle)
            click.echo(f"{count} events written to {out}", err=True)
        else:
            write(sys.stdout)


@cli.command()
@click.option("--month", required=True, metavar="YYYY-MM", help="Calendar month in the configured timezone.")
@click.option("--out", type=click.Path(file_okay=False), help="Output folder (default report.out_dir).")
@click.option(
    "--send",
    is_flag=True,
    help="Also email it (HTML + text, CSV attached) to report.to; the scheduler then counts it as sent.",
)
@click.pass_obj
def report(ctx: CliContext, month: str, out: str | None, send: bool) -> None:
    """Build the monthly compliance report: compliance-report-YYYY-MM.html, .txt and .csv.

    Figures for the calendar month in the configured timezone (daylight-saving changes respected):
    events by category, security-critical events, activity per user with off-hours counts, alerts,
    coverage gaps and a daily chart. The CSV holds every event of the month.
    """
    config = ctx.config()
    try:
        period = Period.parse(month, config.tz)
    except ValueError as exc:
        fail(f"usage error: --month: {exc}", EXIT_USAGE)
    now = datetime.now(UTC)
    if period.start > now:
        fail(f"usage error: --month: {period.key} has not started yet ({config.timezone})", EXIT_USAGE)
    if send and not config.report.to:
        fail("configuration error: report.to: no recipients to send the report to", EXIT_USAGE)
    if send:
        ctx.require_secrets(config.alerts.email)
    # Only --send writes (one row: the month recorded as sent, a claim made for two processes at once).
    with ctx.open_archive(write=send) as store:
        try:
            result = produce_report(
                store,
                config,
                period,
                out or config.report.out_dir,
                now=now,
                send=send,
                calendars=_report_calendars(config),
            )
        except (ReportError, ReportSendError) as exc:
            fail(f"report {period.key}: {exc}", EXIT_FAILED)
    files = result.files
    assert files is not None
    click.echo(f"{files.rows} events in {period.label} ({config.timezone}):")
    for path in (files.html, files.text, files.csv):
        click.echo(f"  {path}")
    if result.outcome == "sent":
        click.echo(f"sent to {', '.join(config.report.to)} (Message-ID {result.detail})")


def _report_calendars(config: Config) -> dict[str, Calendar] | None:
    """The rule set's calendars (business_hours for off-hours), as the daemon's report uses them."""
    try:
        return ruleset_from_config(config).calendars
    except RuleLoadError as exc:
        click.echo(
            f"warning: the rules do not load ({len(exc.errors)} errors); off-hours are judged by "
            "rules.calendars.business_hours or Mon-Fri 08:00-19:00",
            err=True,
        )
        return None


@cli.command()
@click.option(
    "--anchor",
    "anchor_files",
    multiple=True,
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="A chain head written by `anchor` (repeatable): fail unless the archive still holds it.",
)
@click.pass_obj
def verify(ctx: CliContext, anchor_files: tuple[str, ...]) -> None:
    """Check the archive's hash chain and prune records; exit 1 naming the first bad row.

    Rows cut from the end, or a chain rewritten with recomputed hashes, are found only against a chain
    head kept elsewhere: pass the files `anchor` wrote with --anchor.
    """
    try:
        anchors = [(path, ChainAnchor.load(path)) for path in anchor_files]
    except AnchorFileError as exc:
        fail(f"usage error: --anchor: {exc}", EXIT_USAGE)
    with ctx.open_archive() as store:
        result = store.verify()
        checks = [(path, check_anchor(store, anchor)) for path, anchor in anchors]
    for path, check in checks:
        click.echo(
            f"anchor {path} (seq {check.anchor.seq}, {format_timestamp(check.anchor.at)}): "
            f"{'OK' if check.ok else 'FAILED'}: {check.detail}",
            err=not check.ok,
        )
    if not result.ok:
        where = (
            f"row {result.bad_seq} (source {result.bad_source}, event id {result.bad_event_id})"
            if result.bad_event_id is not None
            else f"row {result.bad_seq}"
            if result.bad_seq is not None
            else f"source {result.bad_source}"
        )
        fail(
            f"FAILED at {where}: {result.reason}; "
            f"{max(result.rows_checked - 1, 0)} rows before it are intact",
            EXIT_FAILED,
        )
    pruned = f", {result.prunes} prune record{'s' if result.prunes != 1 else ''}" if result.prunes else ""
    click.echo(f"OK: {result.rows_checked} events{pruned}, chain head {result.head_hash}")
    if not all(check.ok for _, check in checks):
        sys.exit(EXIT_FAILED)


@cli.command()
@click.option(
    "--to",
    "url",
    required=True,
    metavar="URL",
    help="postgresql://USER@HOST:PORT/DB of an empty database. Give the password through PGPASSWORD or "
    "PGPASSFILE rather than in the URL (a command line is visible to other users); ?sslmode=... passes "
    "through.",
)
@click.pass_obj
def migrate(ctx: CliContext, url: str) -> None:
    """Copy the SQLite archive (state.path) into an empty PostgreSQL database, then verify it there.

    Every row moves: events with their seq and hashes, prune records and alert history, cursors and staged
    pages, rule state, alerts, outbox and dead letters, silences, gaps, meta, poll outcomes, report claims.
    Stop the daemon first (migrate takes the archive's writer lock); afterwards set state.url to the same
    database and start it: it continues without archiving, alerting or sending anything again.
    Exit 2 for a non-empty or unreachable target, 1 if the copy does not verify.
    """
    config = ctx.config()
    if config.state.is_postgresql:
        fail(
            f"usage error: migrate copies the SQLite archive of state.path; this config's archive is already "
            f"state.url ({config.state.label()})",
            EXIT_USAGE,
        )
    if not is_postgresql_url(url):
        fail("usage error: --to: a PostgreSQL URL is expected: postgresql://USER@HOST:PORT/DB", EXIT_USAGE)
    writer_lock = ctx.writer_lock()  # exit 2 naming the pid when a daemon writes the archive
    try:
        with ctx.open_archive() as source:
            try:
                problem = copy.target_problem(url)
            except DatabaseError as exc:
                fail(f"usage error: --to: {exc}", EXIT_USAGE)
            if problem is not None:
                fail(f"usage error: --to: {problem}", EXIT_USAGE)
            try:
                target = Store.open(url)
            except StoreError as exc:
                fail(f"usage error: --to: {exc}", EXIT_USAGE)
            with target:
                try:
                    copied = copy.copy_archive(source, target)
                except copy.TargetNotEmpty as exc:
                    fail(f"usage error: --to: {exc}", EXIT_USAGE)
                except (StoreError, *DatabaseError) as exc:
                    fail(f"{target.path}: the copy failed, nothing was committed: {exc}", EXIT_FAILED)
                source_counts, target_counts = copy.table_counts(source), copy.table_counts(target)
                result = target.verify()
    finally:
        writer_lock.release()
    for table, count in copied.counts.items():
        click.echo(f"{table}: {count} rows")
    differ = [t for t in source_counts if source_counts[t] != target_counts.get(t)]
    if differ:
        fail(
            f"{target.path}: the copy's row counts differ from the archive's in {', '.join(differ)}",
            EXIT_FAILED,
        )
    if not result.ok:
        fail(
            f"{target.path}: verify FAILED on the copy at row {result.bad_seq}: {result.reason}", EXIT_FAILED
        )
    click.echo(f"verify OK on {target.path}: {result.rows_checked} events, chain head {result.head_hash}")
    click.echo(f"now set state: {{url: {target.path}}} (the password from ${{VAR}} or PGPASSWORD) and start")


@cli.command()
@click.option(
    "--out", type=click.Path(dir_okay=False), metavar="FILE", help="Write it to FILE (default stdout)."
)
@click.pass_obj
def anchor(ctx: CliContext, out: str | None) -> None:
    """Write the chain head as JSON: {"seq", "hash", "at", "events"}, after checking the chain.

    Keep it off this machine (a ticket, a mail, another host): `verify --anchor FILE` later fails if the
    archive no longer holds that row with that hash. Exit 1, writing nothing, if the chain fails `verify`.
    """
    with ctx.open_archive() as store:
        result = store.verify()
        if not result.ok:
            fail(f"not anchoring: verify fails at row {result.bad_seq}: {result.reason}", EXIT_FAILED)
        head = take_anchor(store, datetime.now(UTC))
    if out is None:
        click.echo(head.to_json())
        return
    try:
        Path(out).write_text(head.to_json() + "\n", encoding="utf-8")
    except OSError as exc:
        fail(f"usage error: --out: {out}: {exc.strerror}", EXIT_USAGE)
    click.echo(f"chain head seq {head.seq} ({head.hash}) written to {out}", err=True)


@cli.group("dead-letters", cls=ConfigGroup)
def dead_letters() -> None:
    """Alerts a channel gave up on (a permanent error, or 24 h of failures): list them, re-send them.

    Fix the cause first (the error column says what failed), then requeue: the alerts are due at once,
    with a fresh 24 h of retries, and the running daemon (or the next `run --once`) sends them.
    """


@dead_letters.command("list")
@click.option("--channel", help="Only this channel (console, slack, email, webhook:NAME, teams, pagerduty).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (for scripts).")
@click.pass_obj
def dead_letters_list(ctx: CliContext, channel: str | None, as_json: bool) -> None:
    """Dead letters, oldest first: alert id, channel, severity, rule, when given up, attempts, last error."""
    config = ctx.config()
    with ctx.open_archive() as store:
        _check_channel(channel, config, store)
        letters = list_dead_letters(store, channel)
    if as_json:
        for letter in letters:
            click.echo(json.dumps(dead_letter_record(letter), ensure_ascii=False))
        return
    click.echo(render_dead_letters(letters, config.tz))


@dead_letters.command("requeue")
@click.argument("alert_ids", nargs=-1, metavar="[ALERT_ID]...")
@click.option("--channel", help="Only dead letters of this channel (with no ALERT_ID: all of them).")
@click.option("--all", "all_", is_flag=True, help="Every dead letter (of --channel, when given).")
@click.pass_obj
def dead_letters_requeue(
    ctx: CliContext, alert_ids: tuple[str, ...], channel: str | None, all_: bool
) -> None:
    """Make dead letters pending again, due now. ALERT_ID may be a unique prefix, as `list` shows it."""
    if not alert_ids and not channel and not all_:
        fail("usage error: name one or more ALERT_IDs, or use --channel CHANNEL or --all", EXIT_USAGE)
    if alert_ids and all_:
        fail("usage error: --all re-queues every dead letter; do not name ALERT_IDs with it", EXIT_USAGE)
    config = ctx.config()
    # One transaction that the daemon's own serialise with: it runs beside a running daemon, without the
    # writer lock (the documented workflow: fix the cause, requeue, the running daemon sends them).
    with ctx.open_archive(write=True) as store:
        _check_channel(channel, config, store)
        try:
            count = requeue_dead_letters(store, datetime.now(UTC), alert_ids=alert_ids, channel=channel)
        except (AmbiguousAlertId, UnknownAlertId) as exc:
            fail(f"usage error: {exc}; nothing was re-queued", EXIT_USAGE)
    click.echo(f"{count} dead letter{'s' if count != 1 else ''} re-queued")


@cli.command()
@click.option("--port", default=8787, show_default=True, type=int, help="Port (0 picks a free one).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--seed", default=7, show_default=True, type=int, help="Seed of the simulated traffic.")
@click.option(
    "--token", default="sim-token", show_default=True, help="The Bearer token the simulator accepts."
)
@click.option(
    "--live-per-minute", default=6.0, show_default=True, type=float, help="Extra live events per minute."
)
@click.option(
    "--envelope",
    type=click.Choice(["xano", "guide"]),
    default="xano",
    show_default=True,
    help='Page shape: Xano\'s full envelope, or the guide\'s {"items", "itemsTotal"} without nextPage.',
)
def simulate(port: int, host: str, seed: int, token: str, live_per_minute: float, envelope: str) -> None:
    """Run the simulator alone: a Xano-compatible audit-log API, realistic traffic, planted incidents."""
    from monitor.simulator import serve_forever

    serve_forever(
        host, port, seed=seed, token=token, live_events_per_minute=live_per_minute, envelope=envelope
    )


@cli.command()
@click.option(
    "--out", default="./demo-out", show_default=True, type=click.Path(file_okay=False), help="Output folder."
)
@click.option(
    "--seconds", default=30, show_default=True, type=int, help="How long to keep polling live traffic."
)
@click.pass_obj
def demo(ctx: CliContext, out: str, seconds: int) -> None:
    """The whole monitor against the embedded simulator: no credentials, no network.

    With --config, the demo also delivers through that file's `alerts` section (Slack, email, webhooks...),
    so a new setup's channels can be tried on simulated incidents; everything else is the demo's own.
    """
    from monitor.demo import run_demo

    alerts = ctx.config().alerts if ctx.config_path else None
    if alerts is not None:
        ctx.require_secrets(alerts)
    try:
        code = run_demo(Path(out), seconds=seconds, alerts=alerts)
    except ArchiveLocked as exc:
        fail(f"usage error: --out {out}: {exc}", EXIT_USAGE)
    sys.exit(code)


from monitor.cli_rules import rules as _rules  # noqa: E402 - the `rules` group lives in its own module

cli.add_command(_rules)

from monitor.cli_channels import channels as _channels  # noqa: E402 - the `channels` group, its own module

cli.add_command(_channels)

from monitor.cli_alerts import alerts as _alerts  # noqa: E402 - alert triage, its own module
from monitor.cli_alerts import silences as _silences  # noqa: E402

cli.add_command(_alerts)
cli.add_command(_silences)


def main() -> None:
    cli(prog_name="audit-monitor")


if __name__ == "__main__":
    main()

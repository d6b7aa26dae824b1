"""``audit-monitor rules ...``: check, test, explain and backtest detection rules.

Click commands only: parse, call the engine, print, choose the exit code (0 ok, 1 a check failed,
2 usage or configuration error).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from monitor.cli_context import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliContext, ConfigGroup, date_range, fail
from monitor.display import one_line, safe_text
from monitor.engine import (
    MemoryStateStore,
    RuleLoadError,
    RuleSet,
    explain,
    load_ruleset,
    ruleset_from_config,
    run_rule_tests,
)
from monitor.events import NormalizationError, normalize
from monitor.timeutil import format_time

if TYPE_CHECKING:
    from monitor.config import Config


def _config(obj: Any) -> Config:
    # The group is normally under the main `audit-monitor` group; run alone it reads the default config.
    context = obj if isinstance(obj, CliContext) else CliContext(None)
    return context.config()


# explain and backtest read the config's rules unless told other files.
_rule_paths_option = click.option(
    "--rules",
    "rule_paths",
    multiple=True,
    type=click.Path(),
    metavar="PATH",
    help="Rule files or folders instead of the config's rules.paths (repeatable).",
)


def _load(config: Config, paths: Sequence[str]) -> RuleSet:
    """The config's rules (or PATHs) with the config's lists, calendars and disabled ids; errors exit 1.

    Without PATHs these are the rules the daemon runs, loaded the way it loads them: a ``rules.disable``
    id that names no rule is an error, as at start and reload. With PATHs (a subset, or rules being
    written) such an id may well live in a file not named, so it stays a warning.
    """
    try:
        if paths:
            ruleset = load_ruleset(
                list(paths),
                lists=config.rules.lists,
                calendars=config.rules.calendars,
                disable=config.rules.disable,
                default_timezone=config.timezone,
            )
        else:
            ruleset = ruleset_from_config(config)
    except RuleLoadError as exc:
        for line in exc.errors:
            click.echo(line)
        click.echo(f"{len(exc.errors)} error{'s' if len(exc.errors) != 1 else ''}", err=True)
        sys.exit(EXIT_FAILED)
    for warning in ruleset.warnings:
        click.echo(f"warning: {warning}", err=True)
    return ruleset


@click.group(cls=ConfigGroup)
def rules() -> None:
    """Check, test, explain and backtest detection rules.

    Without PATH arguments the commands use the config's rules.paths (default: the bundled pack);
    the config's rules.lists, rules.calendars, rules.disable and timezone always apply.
    """


@rules.command()
@click.argument("paths", nargs=-1, type=click.Path(), metavar="[PATH]...")
@click.pass_obj
def check(obj: Any, paths: tuple[str, ...]) -> None:
    """Validate rule files and folders; print each error as FILE:LINE: RULE_ID: message (exit 1)."""
    ruleset = _load(_config(obj), paths)
    count = len(ruleset.all_rules)
    click.echo(
        f"OK: {count} rule{'s' if count != 1 else ''} in {len(ruleset.files)} "
        f"file{'s' if len(ruleset.files) != 1 else ''}"
    )
    if ruleset.disabled or len(ruleset.rules) < count:
        off = sorted(rule.id for rule in ruleset.all_rules if rule not in ruleset.rules)
        click.echo(f"disabled: {', '.join(off)}")
    idle = [rule.id for rule in ruleset.rules if rule.idle]
    if idle:
        click.echo(f"idle until their lists are set: {', '.join(idle)}")


@rules.command(name="test")
@click.argument("paths", nargs=-1, type=click.Path(), metavar="[PATH]...")
@click.option("-v", "--verbose", is_flag=True, help="List passing tests too.")
@click.pass_obj
def test_command(obj: Any, paths: tuple[str, ...], verbose: bool) -> None:
    """Run the tests embedded in the rules; print failures and "N passed, M failed" (exit 1 on a failure)."""
    ruleset = _load(_config(obj), paths)
    results = run_rule_tests(ruleset)
    failed = [result for result in results if not result.passed]
    for result in results:
        if not result.passed:
            click.echo(safe_text(f"FAIL {result.rule_id}: {result.name}: {result.message}"))
        elif verbose:
            click.echo(f"ok   {result.rule_id}: {result.name}")
    click.echo(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    sys.exit(EXIT_FAILED if failed else EXIT_OK)


@rules.command(name="explain")
@click.argument("rule_id", metavar="RULE_ID")
@click.argument("event_file", metavar="EVENT.json", type=click.Path(dir_okay=False))
@_rule_paths_option
@click.pass_obj
def explain_command(obj: Any, rule_id: str, event_file: str, rule_paths: tuple[str, ...]) -> None:
    """Show which selections of RULE_ID match the Xano audit entry in EVENT.json, and why it fires or not.

    EVENT.json holds one entry as the Metadata API serves it (a page with "items" explains each item).
    Thresholds and new_value rules are explained for this event alone, with no history.
    """
    ruleset = _load(_config(obj), rule_paths)
    try:
        ruleset.rule(rule_id)
    except KeyError:
        fail(f"usage error: no rule {rule_id!r} (see `audit-monitor rules check`)", EXIT_USAGE)
    try:
        data = json.loads(Path(event_file).read_text(encoding="utf-8"))
    except OSError as exc:
        fail(f"usage error: {event_file}: {exc.strerror}", EXIT_USAGE)
    except (ValueError, UnicodeDecodeError) as exc:
        fail(f"usage error: {event_file}: not JSON: {exc}", EXIT_USAGE)
    entries = data["items"] if isinstance(data, dict) and isinstance(data.get("items"), list) else [data]
    outputs = []
    for index, entry in enumerate(entries):
        try:
            event = normalize("explain", entry)
        except NormalizationError as exc:
            where = f"{event_file}" + (f" item {index + 1}" if len(entries) > 1 else "")
            fail(f"usage error: {where}: not a Xano audit entry: {exc}", EXIT_USAGE)
        outputs.append(str(explain(ruleset, rule_id, event)))
    # The event's text (often a page saved from the API) reaches a terminal: neutralised.
    click.echo(safe_text("\n\n".join(outputs)))


@rules.command()
@click.option("--rule", "rule_ids", multiple=True, metavar="ID", help="Only this rule (repeatable).")
@click.option(
    "--since", required=True, metavar="D", help="YYYY-MM-DD (midnight, configured zone) or ISO 8601."
)
@click.option("--until", required=True, metavar="D", help="Exclusive end, same forms as --since.")
@_rule_paths_option
@click.pass_obj
def backtest(
    obj: Any, rule_ids: tuple[str, ...], since: str, until: str, rule_paths: tuple[str, ...]
) -> None:
    """Run rules over the archived events with since <= created_at < until; print what would have fired.

    Rule state starts empty (thresholds, first-seen values, throttles) and nothing is sent or recorded.
    """
    from monitor.store import StoreError

    config = _config(obj)
    start, end = date_range(config, since, until)
    ruleset = _load(config, rule_paths)
    if rule_ids:
        try:
            chosen = [ruleset.rule(rule_id) for rule_id in rule_ids]
        except KeyError as exc:
            fail(f"usage error: no rule {exc.args[0]!r} (see `audit-monitor rules check`)", EXIT_USAGE)
        ruleset = RuleSet(chosen, files=ruleset.files, timezone=ruleset.timezone)
    state = MemoryStateStore()
    per_rule: Counter[str] = Counter()
    events = 0
    context = obj if isinstance(obj, CliContext) else CliContext(None)
    try:
        with context.open_archive() as store:
            for event in store.iter_events(start, end):
                events += 1
                for alert in ruleset.evaluate(event, state):
                    per_rule[alert.rule_id] += 1
                    suppressed = f" (+{alert.suppressed_count} throttled)" if alert.suppressed_count else ""
                    # Titles quote event text: one line, control and bidi characters neutralised.
                    click.echo(
                        f"{format_time(alert.event_time, config.tz)}  {alert.rule_id}  {alert.severity}  "
                        f"{one_line(alert.title)}{suppressed}"
                    )
    except StoreError as exc:
        fail(str(exc), EXIT_FAILED)
    total = sum(per_rule.values())
    click.echo(
        f"{events} events from {format_time(start, config.tz)} to {format_time(end, config.tz)}: "
        f"{total} alert{'s' if total != 1 else ''} would have fired (nothing was sent)"
    )
    for rule_id, count in sorted(per_rule.items(), key=lambda item: (-item[1], item[0])):
        click.echo(f"  {count:6d}  {rule_id}")

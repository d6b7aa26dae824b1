"""`audit-monitor report --month YYYY-MM [--out DIR] [--send]` through click, on a real archive file."""

from __future__ import annotations

import csv
from pathlib import Path

from click.testing import CliRunner
from report_data import IN_MONTH, Mailbox, fill_fixture, free_port, utc

from monitor.cli import cli
from monitor.config import load_config
from monitor.report.schedule import ReportScheduler, get_claim
from monitor.store import Store


def write_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "audit-monitor.yaml"
    report = "" if "report:" in extra else f"report: {{out_dir: {tmp_path / 'default-out'}}}\n"
    path.write_text(
        "timezone: Europe/Berlin\n"
        f"state: {{path: {tmp_path / 'archive.db'}}}\n"
        "server: {listen: ''}\n" + report + extra,
        encoding="utf-8",
    )
    with Store.open(tmp_path / "archive.db") as store:
        fill_fixture(store)
    return path


def mail_section(port: int, tmp_path: Path) -> str:
    return (
        "alerts:\n  console: false\n  email:\n"
        f"    smtp: {{host: 127.0.0.1, port: {port}, security: none, timeout: 5s}}\n"
        "    from: monitor@corp.io\n    to: [security@corp.io]\n"
        f"report: {{out_dir: {tmp_path / 'default-out'}, to: [compliance@corp.io]}}\n"
    )


def test_report_writes_three_files(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, ["--config", str(config), "report", "--month", "2026-03", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert f"{IN_MONTH} events in March 2026 (Europe/Berlin):" in result.output
    for suffix in ("html", "txt", "csv"):
        assert str(out / f"compliance-report-2026-03.{suffix}") in result.output
    with open(out / "compliance-report-2026-03.csv", encoding="utf-8", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == IN_MONTH
    text = (out / "compliance-report-2026-03.txt").read_text(encoding="utf-8")
    assert "outside Mon-Fri 08:00-19:00 Europe/Berlin (business_hours calendar of the rule set)" in text


def test_report_defaults_to_report_out_dir(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = CliRunner().invoke(cli, ["--config", str(config), "report", "--month", "2026-05"])
    assert result.exit_code == 0, result.output
    assert "0 events in May 2026" in result.output
    assert (
        "No events were archived for May 2026"
        in (tmp_path / "default-out" / "compliance-report-2026-05.txt").read_text()
    )


def test_a_bad_month_is_a_usage_error(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = CliRunner().invoke(cli, ["--config", str(config), "report", "--month", "2026-13"])
    assert result.exit_code == 2
    assert "--month: '2026-13' is not a month YYYY-MM" in result.output


def test_send_without_recipients_is_a_configuration_error(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = CliRunner().invoke(cli, ["--config", str(config), "report", "--month", "2026-03", "--send"])
    assert result.exit_code == 2 and "report.to" in result.output


def test_send_emails_the_report_and_the_scheduler_then_leaves_it(tmp_path: Path, mailbox: Mailbox) -> None:
    config = write_config(tmp_path, mail_section(mailbox.port, tmp_path))
    result = CliRunner().invoke(cli, ["--config", str(config), "report", "--month", "2026-03", "--send"])
    assert result.exit_code == 0, result.output
    assert "sent to compliance@corp.io (Message-ID <compliance-report.2026-03." in result.output
    assert len(mailbox.messages) == 1 and mailbox.messages[0].rcpt_tos == ["compliance@corp.io"]
    loaded = load_config(config)
    with Store.open(loaded.state.path) as store:
        claim = get_claim(store, "2026-03")
        assert claim is not None and claim.status == "sent"
        # The daemon's scheduler, running after the Apr 1 fire, does not mail March again.
        store.set_meta("report_schedule_since", "2026-03-20T00:00:00.000000+00:00")
        scheduler = ReportScheduler(store, loaded, clock=lambda: utc("2026-04-01T07:00:00Z"))
        assert scheduler.run_due() == []
    assert len(mailbox.messages) == 1


def test_a_failed_send_exits_1_and_says_why(tmp_path: Path) -> None:
    config = write_config(tmp_path, mail_section(free_port(), tmp_path))  # nothing listens there
    result = CliRunner().invoke(cli, ["--config", str(config), "report", "--month", "2026-03", "--send"])
    assert result.exit_code == 1
    assert "report 2026-03:" in result.output and "Connection" in result.output
    assert (tmp_path / "default-out" / "compliance-report-2026-03.html").exists()  # the files are still there

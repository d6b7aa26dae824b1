"""The report email through a real SMTP server (aiosmtpd on 127.0.0.1): structure, parts, attachment."""

from __future__ import annotations

import csv
import gzip
import io
from datetime import datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller
from report_data import IN_MONTH, Mailbox, fill_fixture, fixture_config, free_port, mail_config, utc

from monitor.alerts.email import message_id_for
from monitor.report import Period, build_report, build_report_email, produce_report
from monitor.report.mail import report_message_id, send_report_email
from monitor.report.schedule import ReportScheduler, get_claim
from monitor.store import Store


class Clock:
    def __init__(self, now: str) -> None:
        self.now = utc(now)

    def __call__(self) -> datetime:
        return self.now


def parse(raw: bytes) -> EmailMessage:
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_scheduled_report_arrives_with_html_text_and_the_csv(tmp_path: Path, mailbox: Mailbox) -> None:
    config = mail_config(tmp_path, mailbox)
    clock = Clock("2026-03-20T10:00:00Z")
    with Store.open(config.state.path) as store:
        fill_fixture(store)
        scheduler = ReportScheduler(store, config, clock=clock)
        assert scheduler.run_due() == []  # first start: nothing due yet
        clock.now = utc("2026-04-01T06:00:05Z")  # the cron fired at 08:00 CEST
        [run] = scheduler.run_due()
        assert run.outcome == "sent" and run.period == "2026-03"
        claim = get_claim(store, "2026-03")
        assert claim is not None and claim.status == "sent" and claim.message_id == run.detail

    assert len(mailbox.messages) == 1
    envelope = mailbox.messages[0]
    assert envelope.mail_from == "monitor@corp.io"
    assert envelope.rcpt_tos == ["compliance@corp.io", "auditor@corp.io"]
    message = parse(envelope.original_content)
    assert message["Subject"] == (
        "Xano compliance report March 2026: 14 events, 5 security-critical, 4 alerts, 4 coverage gaps"
    )
    assert message["To"] == "compliance@corp.io, auditor@corp.io" and message["From"] == "monitor@corp.io"
    assert message["Message-ID"] == report_message_id(config, "2026-03") == run.detail
    assert message["Auto-Submitted"] == "auto-generated"
    assert message.get_content_type() == "multipart/mixed"
    body, attachment, *pack = message.iter_parts()
    assert [(p.get_filename(), p.get_content_type()) for p in pack] == [
        ("compliance-report-2026-03.json", "application/json"),
        ("compliance-report-2026-03.anchor.json", "application/json"),
        ("compliance-report-2026-03.sha256", "text/plain"),
    ]
    assert body.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in body.iter_parts()] == ["text/plain", "text/html"]
    text = body.get_body(preferencelist=("plain",)).get_content()
    html = body.get_body(preferencelist=("html",)).get_content()
    assert "SECURITY-CRITICAL EVENTS (5)" in text and "in the attached CSV" in text
    assert "Activity per day" in html and "in the attached CSV" in html
    assert attachment.get_content_type() == "text/csv"
    # Without the charset a mail client guesses (often Windows-1252) and garbles every non-ASCII name.
    assert attachment.get_content_charset() == "utf-8"
    assert attachment.get_filename() == "compliance-report-2026-03.csv"
    # The bytes are the file's own (CRLF rows and all), not re-encoded line by line.
    assert (
        attachment.get_payload(decode=True)
        == (Path(config.report.out_dir) / "compliance-report-2026-03.csv").read_bytes()
    )
    rows = list(csv.reader(io.StringIO(attachment.get_payload(decode=True).decode("utf-8"))))
    assert len(rows) == IN_MONTH + 1 and rows[0][:3] == ["source", "id", "created_at"]
    assert (Path(config.report.out_dir) / "compliance-report-2026-03.html").exists()


def test_a_csv_too_big_to_attach_is_compressed_or_left_on_the_host(tmp_path: Path, mailbox: Mailbox) -> None:
    config = mail_config(tmp_path, mailbox)
    now = utc("2026-04-02T00:00:00Z")
    with Store.open(config.state.path) as store:
        fill_fixture(store)
        files = build_report(store, config, Period.parse("2026-03", config.tz), tmp_path / "out", now=now)
    size = files.csv.stat().st_size

    compressed = build_report_email(files, config, now=now, limit=size - 1)
    [_, attachment, *_] = compressed.iter_parts()
    assert attachment.get_content_type() == "application/gzip"
    assert attachment.get_filename() == "compliance-report-2026-03.csv.gz"
    assert gzip.decompress(attachment.get_payload(decode=True)) == files.csv.read_bytes()
    assert "gzip-compressed" in compressed.get_body(preferencelist=("plain",)).get_content()

    too_big = build_report_email(files, config, now=now, limit=10)
    assert too_big.get_content_type() == "multipart/alternative"  # nothing attached
    text = too_big.get_body(preferencelist=("plain",)).get_content()
    assert "too large to attach" in text and str(files.csv) in text
    assert not files.csv.with_name(files.csv.name + ".gz").exists()


def test_message_id_is_stable_per_period(tmp_path: Path, mailbox: Mailbox) -> None:
    config = mail_config(tmp_path, mailbox)
    assert report_message_id(config, "2026-03") == report_message_id(config, "2026-03")
    assert report_message_id(config, "2026-03") != report_message_id(config, "2026-04")
    assert report_message_id(config, "2026-03").endswith("@corp.io>")


def test_non_ascii_names_in_report_to_reach_a_server_without_smtputf8(tmp_path: Path) -> None:
    box = Mailbox("127.0.0.1", free_port())
    # aiosmtpd's Controller offers SMTPUTF8 by default; many relays do not.
    controller = Controller(box, hostname="127.0.0.1", port=box.port, enable_SMTPUTF8=False)
    controller.start()
    try:
        config = fixture_config(
            tmp_path,
            alerts={
                "console": False,
                "email": {
                    "smtp": {"host": box.host, "port": box.port, "security": "none", "timeout": "10s"},
                    "from": "Prüfstelle Überwachung <monitor@corp.io>",
                    "to": ["security@corp.io"],
                },
            },
            report={"out_dir": str(tmp_path / "reports"), "to": ["Åsa Ångström <compliance@corp.io>"]},
        )
        now = utc("2026-04-02T00:00:00Z")
        with Store.open(config.state.path) as store:
            fill_fixture(store)
            files = build_report(store, config, Period.parse("2026-03", config.tz), tmp_path / "out", now=now)
        sent_id = send_report_email(files, config, now=now)
    finally:
        controller.stop()
    [envelope] = box.messages
    assert envelope.mail_from == "monitor@corp.io" and envelope.rcpt_tos == ["compliance@corp.io"]
    raw = envelope.original_content
    assert isinstance(raw, bytes)
    assert "=?utf-8?" in raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    message = parse(raw)
    assert message["To"].addresses[0].display_name == "Åsa Ångström"
    assert message["From"].addresses[0].display_name == "Prüfstelle Überwachung"
    # The same Message-ID and Date forms as the alert mail: <id@sender-domain>, UTC as +0000.
    assert message["Message-ID"] == sent_id == report_message_id(config, "2026-03")
    assert sent_id.endswith("@corp.io>") and message_id_for("x", "monitor@corp.io") == "<x@corp.io>"
    assert message["Date"] == "Thu, 02 Apr 2026 00:00:00 +0000"


def test_the_message_parses_under_the_strict_policy_with_every_file_checkable(
    tmp_path: Path, mailbox: Mailbox
) -> None:
    """Through the real SMTP server, parsed with raise_on_defect: charsets, filenames, Message-ID; and the
    attached files match the manifest's sha256 lines (what `sha256sum -c --ignore-missing` checks)."""
    import hashlib

    config = mail_config(tmp_path, mailbox)
    clock = Clock("2026-04-02T08:00:00Z")
    with Store.open(config.state.path) as store:
        fill_fixture(store)
        run = produce_report(store, config, Period.parse("2026-03", config.tz), tmp_path / "out",
                             now=clock.now, send=True)  # fmt: skip
    assert run.outcome == "sent"
    [envelope] = mailbox.messages
    message = message_from_bytes(envelope.original_content, policy=policy.strict)
    assert isinstance(message, EmailMessage)
    assert message["Message-ID"] == report_message_id(config, "2026-03")
    body = message.get_body(preferencelist=("html",))
    assert body is not None and body.get_content_charset() == "utf-8"
    files = {part.get_filename(): part.get_payload(decode=True) for part in message.iter_attachments()}
    assert set(files) == {
        "compliance-report-2026-03.csv",
        "compliance-report-2026-03.json",
        "compliance-report-2026-03.anchor.json",
        "compliance-report-2026-03.sha256",
    }
    manifest = dict(
        reversed(line.split("  ", 1))
        for line in files.pop("compliance-report-2026-03.sha256").decode().splitlines()
    )
    for name, data in files.items():
        assert hashlib.sha256(data).hexdigest() == manifest[name], name
    html = body.get_content()
    assert "in the attached CSV" in html and "sha256sum -c compliance-report-2026-03.sha256" in html

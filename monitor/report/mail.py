"""Emailing the monthly report: HTML + text alternatives with the CSV evidence attached, and the JSON, the
chain anchor and the sha256 manifest beside it (``sha256sum -c --ignore-missing`` checks what was attached).

SMTP itself is the alert email channel's (``monitor.alerts.email.EmailChannel``): the same verifying TLS,
timeouts, login and error classification, with ``alerts.email.smtp`` and ``alerts.email.from``; only the
recipients differ (``report.to``). A CSV too big for mail servers is sent gzip-compressed, and when even
that is too big the message says where the file is instead of bouncing.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from zoneinfo import ZoneInfo

from monitor.alerts.email import EmailChannel, message_id, set_headers
from monitor.config import Config, EmailConfig
from monitor.report.render import ReportFiles, render

# Most mail servers refuse messages above 10-25 MB, and base64 adds a third: attach at most this much.
ATTACHMENT_LIMIT = 10 * 1024 * 1024


class ReportSendError(Exception):
    """The report could not be emailed; the message is safe to log (no secrets)."""


# (email config, recipients, message) -> Message-ID. The default speaks SMTP; tests may pass another.
Deliver = Callable[[EmailConfig, Sequence[str], EmailMessage], str]


def smtp_deliver(email: EmailConfig, recipients: Sequence[str], message: EmailMessage) -> str:
    # The email channel's SMTP path (TLS, login, error classification) serves the report too, so the two
    # cannot drift apart.
    channel = EmailChannel(email.model_copy(update={"to": list(recipients)}), ZoneInfo("UTC"))
    return channel.send_message(message)


def report_message_id(config: Config, period_key: str) -> str:
    """Stable per period and recipients: a re-send after a crash is recognisable (and collapsible)."""
    email = config.alerts.email
    sender = email.from_ if email else ""
    digest = hashlib.sha256("\x1f".join([period_key, sender, *config.report.to]).encode()).hexdigest()[:20]
    return message_id(f"compliance-report.{period_key}.{digest}", sender)


@dataclass(frozen=True)
class Attachment:
    path: Path
    filename: str
    maintype: str
    subtype: str


def choose_attachment(csv_path: Path, limit: int = ATTACHMENT_LIMIT) -> tuple[Attachment | None, str]:
    """The CSV as is, else gzip-compressed (written beside it), else nothing; plus the sentence saying so."""
    size = csv_path.stat().st_size
    if size <= limit:
        return Attachment(csv_path, csv_path.name, "text", "csv"), "in the attached CSV"
    gz_path = csv_path.with_name(csv_path.name + ".gz")
    with open(csv_path, "rb") as source, gzip.open(gz_path, "wb", compresslevel=6) as target:
        shutil.copyfileobj(source, target, 1024 * 1024)
    if gz_path.stat().st_size <= limit:
        return (
            Attachment(gz_path, gz_path.name, "application", "gzip"),
            f"in the attached {gz_path.name} (the CSV, gzip-compressed: {size / 1e6:.0f} MB uncompressed)",
        )
    gz_path.unlink()
    return None, (
        f"in the CSV on the monitor's host, {csv_path} ({size / 1e6:.0f} MB, too large to attach to an email)"
    )


# The rest of the evidence pack, after the CSV: (ReportFiles attribute, MIME type).
PACK_ATTACHMENTS = (
    ("json", "application", "json"),
    ("anchor", "application", "json"),
    ("manifest", "text", "plain"),
    ("pdf", "application", "pdf"),  # with report.pdf
)


def pack_attachments(files: ReportFiles, limit: int = ATTACHMENT_LIMIT) -> list[Attachment]:
    """The JSON, the anchor and the manifest that exist and fit under ``limit`` (the JSON's lists are
    capped, so it stays far below a mail server's limit; the manifest and anchor are a few hundred bytes)."""
    out = []
    for name, maintype, subtype in PACK_ATTACHMENTS:
        path: Path | None = getattr(files, name)
        if path is not None and path.exists() and path.stat().st_size <= limit:
            out.append(Attachment(path, path.name, maintype, subtype))
    return out


def build_report_email(
    files: ReportFiles, config: Config, *, now: datetime, limit: int = ATTACHMENT_LIMIT
) -> EmailMessage:
    email = config.alerts.email
    if email is None:
        raise ReportSendError("report.to is set but alerts.email (smtp, from) is not configured")
    attachment, where = choose_attachment(files.csv, limit)
    rendered = render(files.figures, files.evidence_at(where))
    message = EmailMessage()
    # The alert mail's headers, Message-ID and Date form: one place for both.
    set_headers(
        message,
        subject=rendered.subject,
        sender=email.from_,
        recipients=config.report.to,
        message_id=report_message_id(config, files.period.key),
        date=now,
    )
    message["X-Audit-Monitor-Report"] = files.period.key
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    attached = [attachment] if attachment is not None else []
    for item in attached + pack_attachments(files, limit):
        # Each file goes as its own bytes (base64), so the CSV's CRLF rows survive; a text file's charset
        # tells mail clients how to show it (without one many guess Windows-1252 and garble non-ASCII names).
        params = {"charset": "utf-8"} if item.maintype == "text" else None
        message.add_attachment(
            item.path.read_bytes(),
            maintype=item.maintype,
            subtype=item.subtype,
            filename=item.filename,
            params=params,
        )
    return message


def send_report_email(
    files: ReportFiles, config: Config, *, now: datetime, deliver: Deliver = smtp_deliver
) -> str:
    """Email the report to ``report.to``; return the Message-ID. Raises ReportSendError."""
    email = config.alerts.email
    if not config.report.to:
        raise ReportSendError("report.to lists no recipients")
    if email is None:
        raise ReportSendError("report.to is set but alerts.email (smtp, from) is not configured")
    message = build_report_email(files, config, now=now)
    try:
        return deliver(email, config.report.to, message)
    except (
        Exception
    ) as exc:  # DeliveryError and anything a deliver function raises: keep the text, no traceback
        raise ReportSendError(f"{type(exc).__name__}: {exc}") from None

"""The email channel: multipart text + HTML alerts over SMTP (STARTTLS, implicit TLS, or plain).

TLS always verifies (``ssl.create_default_context``, optionally trusting ``ca_file``); every connection
has an explicit timeout. The Message-ID is derived from the alert id (``<alert-id@sender-domain>``), so a
re-send after a crash carries the same id and mail clients can thread or collapse it. The envelope carries
bare addresses and the headers RFC 2047 encoded names, so a relay without SMTPUTF8 takes a sender such as
``Zoë <monitor@example.com>``. A resolve notice is a reply to the alert's message (``In-Reply-To`` and
``References`` = the Message-ID the alert, or the digest that carried it, went out with), so mail clients
file it in the alert's conversation; its own Message-ID is derived from the alert id too.
``classify_smtp_error`` is the table-driven
decision between retrying and dead-lettering.
"""

from __future__ import annotations

import hashlib
import logging
import smtplib
import socket
import ssl
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any
from zoneinfo import ZoneInfo

from monitor.alerts.model import Alert, Receipt, Resolution
from monitor.alerts.outbox import DeliveryError
from monitor.alerts.render import (
    alert_view,
    cut,
    digest_view,
    html_environment,
    one_line,
    render,
    resolution_view,
    text_environment,
)
from monitor.anchors import ChainAnchor, notice_anchor
from monitor.config import parse_mailbox

log = logging.getLogger("monitor.email")

SUBJECT_MAX = 200
DIGEST_LIST_MAX = 200  # alerts listed in a digest email; the rest are counted
MESSAGE_ID_FALLBACK_DOMAIN = "audit-monitor"  # only when a sender has no domain part (never, once validated)


def message_id(local_part: str, sender: str) -> str:
    """``<local_part@sender-domain>``: the form of every Message-ID the monitor sends (alerts, digests, the
    report). The sender's own domain keeps the id globally unique and recognisable as ours."""
    try:
        domain = parse_mailbox(sender).domain
    except ValueError:
        domain = ""
    return f"<{local_part}@{domain or MESSAGE_ID_FALLBACK_DOMAIN}>"


def message_id_for(alert_id: str, sender: str) -> str:
    return message_id(alert_id, sender)


def digest_message_id(alert_ids: Sequence[str], sender: str) -> str:
    digest = hashlib.sha256(",".join(sorted(alert_ids)).encode()).hexdigest()[:32]
    return message_id(f"digest-{digest}", sender)


def mail_date(moment: datetime) -> str:
    """The Date header of every message the monitor sends: RFC 5322 in UTC, written ``+0000``."""
    return format_datetime(moment.astimezone(UTC))


def _subject(text: str) -> str:
    # One line, no control characters: a header can never be split or injected by event text.
    return cut(one_line(text), SUBJECT_MAX)


def set_headers(
    msg: EmailMessage,
    *,
    subject: str,
    sender: str,
    recipients: Sequence[str],
    message_id: str,
    date: datetime,
) -> None:
    """The headers every message shares. Addresses go in as parsed ``Address`` objects, so a display name
    (``Zoë <monitor@example.com>``) is quoted and RFC 2047 encoded on the wire: a relay without SMTPUTF8
    takes it."""
    msg["Subject"] = _subject(subject)
    msg["From"] = parse_mailbox(sender)
    msg["To"] = [parse_mailbox(item) for item in recipients]
    msg["Date"] = mail_date(date)
    msg["Message-ID"] = message_id
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no out-of-office replies to a robot


def _message(
    sender: str,
    recipients: Sequence[str],
    subject: str,
    text: str,
    html: str,
    message_id: str,
    headers: dict[str, str],
    date: datetime,
) -> EmailMessage:
    msg = EmailMessage()
    set_headers(msg, subject=subject, sender=sender, recipients=recipients, message_id=message_id, date=date)
    for name, value in headers.items():
        msg[name] = one_line(value)
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    return msg


def build_alert_email(
    alert: Alert, sender: str, recipients: Sequence[str], tz: ZoneInfo, *, now: datetime
) -> EmailMessage:
    view = alert_view(alert, tz)
    return _message(
        sender,
        recipients,
        render(text_environment(), "alert_email_subject.txt.j2", a=view),
        render(text_environment(), "alert_email.txt.j2", a=view),
        render(html_environment(), "alert_email.html.j2", a=view),
        message_id_for(alert.id, sender),
        {
            "X-Audit-Monitor-Alert-Id": alert.id,
            "X-Audit-Monitor-Rule": alert.rule_id,
            "X-Audit-Monitor-Severity": alert.severity,
        },
        now,
    )


def build_resolved_email(
    alert: Alert,
    resolution: Resolution,
    sender: str,
    recipients: Sequence[str],
    tz: ZoneInfo,
    *,
    replying_to: str | None,
    now: datetime,
) -> EmailMessage:
    view = alert_view(alert, tz)
    resolved = resolution_view(resolution, tz)
    headers = {"X-Audit-Monitor-Alert-Id": alert.id, "X-Audit-Monitor-Status": "resolved"}
    if replying_to:
        headers["In-Reply-To"] = replying_to
        headers["References"] = replying_to
    return _message(
        sender,
        recipients,
        render(text_environment(), "resolved_email_subject.txt.j2", a=view),
        render(text_environment(), "resolved_email.txt.j2", a=view, r=resolved),
        render(html_environment(), "resolved_email.html.j2", a=view, r=resolved),
        message_id(f"{alert.id}.resolved", sender),
        headers,
        now,
    )


def build_anchor_email(
    alert: Alert, anchor: ChainAnchor, sender: str, recipients: Sequence[str], *, now: datetime
) -> EmailMessage:
    """The chain head, kept in the recipients' mailboxes: the anchor JSON in the body and attached, ready
    for ``audit-monitor verify --anchor``. The Message-ID comes from the notice id: a re-send is the same
    message."""
    document = anchor.to_json()
    name = f"audit-monitor-anchor-{anchor.seq}.json"
    text = (
        f"The audit archive's hash chain ended at row {anchor.seq} at {format_datetime(anchor.at)} "
        f"({anchor.events} events in the archive).\n\n{document}\n\n"
        "Keep this message: the attached anchor lets anyone check later that the archive still holds this "
        f"row with this hash (rows cut from the end or a rewritten chain fail):\n\n"
        f"    audit-monitor verify --anchor {name}\n"
    )
    msg = EmailMessage()
    set_headers(
        msg,
        subject=alert.title,
        sender=sender,
        recipients=recipients,
        message_id=message_id_for(alert.id, sender),
        date=now,
    )
    msg["X-Audit-Monitor-Alert-Id"] = alert.id
    msg["X-Audit-Monitor-Rule"] = alert.rule_id
    msg.set_content(text)
    msg.add_attachment(
        (document + "\n").encode("utf-8"), maintype="application", subtype="json", filename=name
    )
    return msg


def build_digest_email(
    alerts: Sequence[Alert], sender: str, recipients: Sequence[str], tz: ZoneInfo, *, now: datetime
) -> EmailMessage:
    view = digest_view(alerts, tz, DIGEST_LIST_MAX)
    return _message(
        sender,
        recipients,
        render(text_environment(), "digest_email_subject.txt.j2", d=view),
        render(text_environment(), "digest_email.txt.j2", d=view),
        render(html_environment(), "digest_email.html.j2", d=view),
        digest_message_id([a.id for a in alerts], sender),
        {"X-Audit-Monitor-Digest": str(len(alerts))},
        now,
    )


# --- failure classification -----------------------------------------------------------------------------

# (exception type, permanent?) checked in order, most specific first. SMTP reply codes decide where there is
# one (``_by_code``): 4xx is "try again later", 5xx "this will never work".
SMTP_ERROR_TABLE: list[tuple[type[BaseException], bool | None]] = [
    (smtplib.SMTPAuthenticationError, True),  # 535: wrong username/password; retrying will not fix it
    (smtplib.SMTPNotSupportedError, True),  # e.g. STARTTLS or AUTH not offered: a configuration problem
    (smtplib.SMTPRecipientsRefused, None),  # by the recipients' codes, see below
    (smtplib.SMTPServerDisconnected, False),
    (smtplib.SMTPResponseException, None),  # sender refused, data refused, HELO, connect: by the code
    (ssl.SSLCertVerificationError, True),  # an untrusted certificate stays untrusted: fix ca_file
    (ssl.SSLError, False),  # e.g. a handshake cut short by the network
    (socket.timeout, False),
    (TimeoutError, False),
    (ConnectionRefusedError, False),
    (ConnectionError, False),
    (socket.gaierror, False),  # DNS failures are usually passing; a typo still dead-letters after 24 h
    (smtplib.SMTPException, False),
    (OSError, False),
]


def _by_code(code: int) -> bool:
    return code >= 500


def classify_smtp_error(exc: BaseException) -> DeliveryError:
    for kind, permanent in SMTP_ERROR_TABLE:
        if not isinstance(exc, kind):
            continue
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            codes = {addr: int(reply[0]) for addr, reply in exc.recipients.items()}
            # Refused recipients are permanent, unless every refusal is a 4xx (greylisting, a full mailbox):
            # those are the server's own "try again later".
            permanent = any(code >= 500 for code in codes.values()) or not codes
            detail = ", ".join(f"{addr} ({code})" for addr, code in sorted(codes.items()))
            return DeliveryError(f"SMTP server refused the recipients: {detail}", permanent=permanent)
        if isinstance(exc, smtplib.SMTPResponseException):
            code = int(exc.smtp_code)
            reply = (
                exc.smtp_error.decode("utf-8", "replace")
                if isinstance(exc.smtp_error, bytes)
                else str(exc.smtp_error)
            )
            what = type(exc).__name__.removeprefix("SMTP")
            decided = _by_code(code) if permanent is None else permanent
            return DeliveryError(f"SMTP {what}: {code} {cut(one_line(reply), 200)}", permanent=decided)
        if isinstance(exc, ssl.SSLCertVerificationError):
            return DeliveryError(
                f"SMTP server's TLS certificate is not trusted: {exc.verify_message} "
                "(set alerts.email.smtp.ca_file for a private CA)",
                permanent=True,
            )
        detail = getattr(exc, "strerror", None) or (
            str(exc) if isinstance(exc, smtplib.SMTPException) else ""
        )
        return DeliveryError(
            f"SMTP {type(exc).__name__}{': ' + cut(one_line(detail), 200) if detail else ''}",
            permanent=bool(permanent),
        )
    return DeliveryError(f"SMTP unexpected {type(exc).__name__}", permanent=False)


# --- the channel ----------------------------------------------------------------------------------------


class EmailChannel:
    """``send``/``send_digest`` deliver one message to every recipient and return its Message-ID."""

    name = "email"

    def __init__(
        self, config: Any, tz: ZoneInfo, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        # ``config`` is a monitor.config.EmailConfig.
        self.tz = tz
        self.clock = clock  # the Date header
        self.sender: str = config.from_  # as configured, display name included: for the headers
        self.recipients: list[str] = list(config.to)
        # SMTP's envelope takes the bare addresses: with a display name in it (or any non-ASCII), smtplib
        # needs SMTPUTF8, which many relays do not offer.
        self.envelope_from: str = config.envelope_from
        self.envelope_to: list[str] = list(config.envelope_to)
        smtp = config.smtp
        self.host: str = smtp.host
        self.port: int = smtp.port
        self.security: str = smtp.security
        self.username: str | None = smtp.username
        self._password = smtp.password  # SecretStr: read only at login
        self.timeout: float = smtp.timeout.total_seconds()
        self.ca_file: str | None = smtp.ca_file

    def __repr__(self) -> str:
        return f"EmailChannel({self.host}:{self.port}, {self.security}, to={len(self.recipients)} recipients)"

    def destination(self, alert: Alert) -> str:
        if notice_anchor(alert) is not None:
            return f"anchor:{alert.id}"  # never folded into a digest: it travels as its own message
        return ",".join(self.envelope_to)

    def send(self, alert: Alert) -> str | None:
        anchor = notice_anchor(alert)
        if anchor is not None:
            return self.send_message(
                build_anchor_email(alert, anchor, self.sender, self.recipients, now=self.clock())
            )
        return self.send_message(
            build_alert_email(alert, self.sender, self.recipients, self.tz, now=self.clock())
        )

    def send_digest(self, alerts: Sequence[Alert]) -> str | None:
        return self.send_message(
            build_digest_email(alerts, self.sender, self.recipients, self.tz, now=self.clock())
        )

    def send_resolved(self, alert: Alert, resolution: Resolution, trigger: Receipt) -> str | None:
        return self.send_message(
            build_resolved_email(
                alert,
                resolution,
                self.sender,
                self.recipients,
                self.tz,
                replying_to=trigger.remote_id,
                now=self.clock(),
            )
        )

    def _context(self) -> ssl.SSLContext:
        # Verifying (CERT_REQUIRED + hostname check) whatever ca_file says: ca_file adds a private CA,
        # it never turns verification off.
        return ssl.create_default_context(cafile=self.ca_file)

    def _connect(self) -> smtplib.SMTP:
        if self.security == "ssl":
            return smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=self._context())
        client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            if self.security == "starttls":
                client.ehlo()
                client.starttls(context=self._context())  # raises SMTPNotSupportedError if not offered
                client.ehlo()
        except BaseException:
            client.close()
            raise
        return client

    def send_message(self, msg: EmailMessage) -> str:
        """Send one built message over SMTP (TLS as configured); return its Message-ID. Raises the
        classified channel errors. The one SMTP path of the project: alerts, digests and the report."""
        try:
            client = self._connect()
        except (smtplib.SMTPException, OSError) as exc:
            raise classify_smtp_error(exc) from None
        try:
            if self.username:
                password = self._password.get_secret_value() if self._password is not None else ""
                client.login(self.username, password)
            refused = client.send_message(msg, from_addr=self.envelope_from, to_addrs=self.envelope_to)
        except (smtplib.SMTPException, OSError) as exc:
            raise classify_smtp_error(exc) from None
        finally:
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                client.close()
        if refused:
            # Some recipients took it: re-sending would duplicate it for them, so this counts as delivered.
            log.warning(
                "some recipients refused", extra={"refused": sorted(refused), "message_id": msg["Message-ID"]}
            )
        return str(msg["Message-ID"])

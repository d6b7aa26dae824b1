"""Email delivery through smtplib against aiosmtpd on 127.0.0.1: plain, STARTTLS and implicit TLS with a
trustme CA, login, multipart structure, Message-ID, escaping, and the SMTP classification table."""

from __future__ import annotations

import smtplib
import socket
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from alerts_support import (
    SMTP_PASSWORD,
    Clock,
    SmtpServer,
    TlsFiles,
    email_config,
    free_port,
    make_alert,
    make_config,
    outbox_rows,
    record,
    start_smtp,
)

from monitor.alerts.email import SMTP_ERROR_TABLE, EmailChannel, classify_smtp_error, message_id_for
from monitor.alerts.outbox import DeliveryError, OutboxWorker
from monitor.config import ConfigError, parse_config
from monitor.store import Store

NOW = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)
HOSTILE = "<!channel> <http://x|y> <b>bold</b> & <script>alert(1)</script>"


def channel(server: SmtpServer, **kwargs: Any) -> EmailChannel:
    config = make_config(email=email_config(server, **kwargs))
    assert config.alerts.email is not None
    return EmailChannel(config.alerts.email, config.tz)


def test_alert_email_multipart_message_id_and_facts(smtp: SmtpServer, store: Store) -> None:
    alert = make_alert(event_ids=(7, 8, 9), suppressed_count=2)
    record(store, [alert], ["email"], NOW)
    report = OutboxWorker(store, {"email": channel(smtp)}, clock=lambda: NOW).deliver_due()
    assert report.sent == 1 and not report.failed

    (message,) = smtp.recorder.messages
    (envelope,) = smtp.recorder.envelopes
    assert envelope.mail_from == "monitor@example.com"
    assert envelope.rcpt_tos == ["security@example.com", "oncall@example.com"]
    # The sender's domain names the Message-ID, as in the report: <id@sender-domain>.
    assert (
        message["Message-ID"]
        == f"<{alert.id}@example.com>"
        == message_id_for(alert.id, "monitor@example.com")
    )
    assert str(message["Date"]).endswith(" +0000")  # UTC, written as in the report mail
    assert message["Subject"] == "[HIGH] Table users deleted (prod)"
    assert message.get_content_type() == "multipart/alternative"
    parts = [part.get_content_type() for part in message.iter_parts()]
    assert parts == ["text/plain", "text/html"]
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    for body in (text, html):
        for fact in (
            "Table users deleted",
            "xano.db.table-deleted",
            "2026-03-04 10:30:00 CET",
            "2026-03-04 09:30:00 UTC",
            "dana@corp.io",
            "Main",
            "v1",
            "Deleted table users",
            "7, 8, 9",
            "2 similar matches were throttled",
        ):
            assert fact in body, fact
    (row,) = outbox_rows(store)
    assert row["status"] == "sent" and row["remote_id"] == f"<{alert.id}@example.com>"


def test_hostile_text_is_escaped_in_html_and_cannot_inject_headers(smtp: SmtpServer, store: Store) -> None:
    alert = make_alert(
        title=f"{HOSTILE}\r\nBcc: victim@example.com",
        text=HOSTILE,
        context={"user": HOSTILE, "workspace": HOSTILE, "branch": HOSTILE, "msg": HOSTILE},
        fields={"obj.name": HOSTILE},
    )
    record(store, [alert], ["email"], NOW)
    assert OutboxWorker(store, {"email": channel(smtp)}, clock=lambda: NOW).deliver_due().sent == 1
    (message,) = smtp.recorder.messages
    html = message.get_body(("html",)).get_content()
    assert "<b>bold</b>" not in html and "<script>" not in html and "<!channel>" not in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html and "&lt;script&gt;" in html and "&amp;" in html
    assert message["Bcc"] is None
    assert smtp.recorder.envelopes[0].rcpt_tos == ["security@example.com", "oncall@example.com"]
    assert "\n" not in message["Subject"]
    # The text part is plain text: shown verbatim, which is what a reader of text mail expects.
    assert HOSTILE in message.get_body(("plain",)).get_content()


def test_starttls_with_the_test_ca_and_login(tls: TlsFiles, store: Store) -> None:
    server = start_smtp(tls_context=tls.server_context, require_auth=True)
    try:
        email = channel(
            server, security="starttls", ca_file=tls.ca_file, username="monitor", password=SMTP_PASSWORD
        )
        assert SMTP_PASSWORD not in repr(email)
        record(store, [make_alert()], ["email"], NOW)
        report = OutboxWorker(store, {"email": email}, clock=lambda: NOW).deliver_due()
        assert report.sent == 1, report.errors
        assert server.recorder.tls_sessions == [True]
    finally:
        server.controller.stop()


def test_implicit_tls(tls: TlsFiles) -> None:
    server = start_smtp(tls_context=tls.server_context, implicit_tls=True)
    try:
        alert = make_alert()
        sent = channel(server, security="ssl", ca_file=tls.ca_file).send(alert)
        assert sent == message_id_for(alert.id, "monitor@example.com")
        assert len(server.recorder.messages) == 1 and server.recorder.tls_sessions == [True]
    finally:
        server.controller.stop()


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_untrusted_certificate_is_a_permanent_error_not_a_silent_send(
    tls: TlsFiles, store: Store, security: str
) -> None:
    # Without ca_file the system trust store does not know the test CA: verification must fail, and
    # retrying cannot fix that, so it is permanent (dead letter + delivery_failing) rather than silent.
    server = start_smtp(tls_context=tls.server_context, implicit_tls=security == "ssl")
    try:
        record(store, [make_alert()], ["email"], NOW)
        report = OutboxWorker(
            store, {"email": channel(server, security=security)}, clock=lambda: NOW
        ).deliver_due()
        assert report.dead == 1 and report.sent == 0
        assert server.recorder.messages == []
        (row,) = [r for r in outbox_rows(store) if r["channel"] == "email"]
        assert row["status"] == "dead" and "certificate is not trusted" in row["last_error"]
    finally:
        server.controller.stop()


def test_wrong_password_is_permanent(tls: TlsFiles) -> None:
    server = start_smtp(tls_context=tls.server_context, require_auth=True)
    try:
        email = channel(
            server, security="starttls", ca_file=tls.ca_file, username="monitor", password="wrong"
        )
        with pytest.raises(DeliveryError) as caught:
            email.send(make_alert())
        assert caught.value.permanent and "535" in str(caught.value)
        assert "wrong" not in str(caught.value)
    finally:
        server.controller.stop()


# --- SMTP outcomes over the wire -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rcpt", "data", "permanent", "needle"),
    [
        (["550 5.1.1 no such user", "550 5.1.1 no such user"], [], True, "refused the recipients"),
        (["450 4.2.0 greylisted", "450 4.2.0 greylisted"], [], False, "refused the recipients"),
        ([], ["451 4.3.0 try again later"], False, "451"),
        ([], ["554 5.7.1 message rejected as spam"], True, "554"),
    ],
)
def test_smtp_replies(
    smtp: SmtpServer, rcpt: list[str], data: list[str], permanent: bool, needle: str
) -> None:
    smtp.recorder.rcpt_replies.extend(rcpt)
    smtp.recorder.data_replies.extend(data)
    with pytest.raises(DeliveryError) as caught:
        channel(smtp).send(make_alert())
    assert caught.value.permanent is permanent
    assert needle in str(caught.value)


def channel_to_port(port: int, timeout: str) -> EmailChannel:
    """A channel to whatever listens (or not) on a loopback port, without TLS."""
    config = make_config(
        email={
            "smtp": {"host": "127.0.0.1", "port": port, "security": "none", "timeout": timeout},
            "from": "m@example.com",
            "to": ["s@example.com"],
        }
    )
    assert config.alerts.email is not None
    return EmailChannel(config.alerts.email, config.tz)


def test_connection_refused_is_transient() -> None:
    with pytest.raises(DeliveryError) as caught:
        channel_to_port(free_port(), "2s").send(make_alert())
    assert caught.value.permanent is False


@pytest.fixture
def silent_server() -> Iterator[tuple[int, threading.Event]]:
    """Accepts connections and never says hello: the client's timeout must fire."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(5)
    done = threading.Event()
    held: list[socket.socket] = []

    def accept() -> None:
        sock.settimeout(0.05)
        while not done.is_set():
            try:
                conn, _ = sock.accept()
                held.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield sock.getsockname()[1], done
    done.set()
    thread.join(2)
    for conn in held:
        conn.close()
    sock.close()


def test_timeout_is_transient(silent_server: tuple[int, threading.Event]) -> None:
    port, _ = silent_server
    with pytest.raises(DeliveryError) as caught:
        channel_to_port(port, "1s").send(make_alert())
    assert caught.value.permanent is False
    assert "Timeout" in str(caught.value) or "timed out" in str(caught.value)


def test_server_disconnect_is_transient(smtp: SmtpServer) -> None:
    smtp.recorder.data_replies.append("421 4.3.2 closing connection")
    with pytest.raises(DeliveryError) as caught:
        channel(smtp).send(make_alert())
    assert caught.value.permanent is False


# --- the classification table, every row -----------------------------------------------------------------


def _example(kind: type[BaseException], permanent: bool | None) -> list[tuple[BaseException, bool]]:
    if kind is smtplib.SMTPAuthenticationError:
        return [(smtplib.SMTPAuthenticationError(535, b"5.7.8 bad credentials"), True)]
    if kind is smtplib.SMTPNotSupportedError:
        return [(smtplib.SMTPNotSupportedError("STARTTLS extension not supported by server."), True)]
    if kind is smtplib.SMTPRecipientsRefused:
        return [
            (smtplib.SMTPRecipientsRefused({"a@x.io": (550, b"no such user")}), True),
            (
                smtplib.SMTPRecipientsRefused({"a@x.io": (450, b"greylisted"), "b@x.io": (451, b"later")}),
                False,
            ),
            (smtplib.SMTPRecipientsRefused({"a@x.io": (450, b"greylisted"), "b@x.io": (550, b"no")}), True),
        ]
    if kind is smtplib.SMTPServerDisconnected:
        return [(smtplib.SMTPServerDisconnected("Connection unexpectedly closed"), False)]
    if kind is smtplib.SMTPResponseException:
        return [
            (smtplib.SMTPSenderRefused(451, b"try later", "m@x.io"), False),
            (smtplib.SMTPSenderRefused(553, b"not allowed", "m@x.io"), True),
            (smtplib.SMTPDataError(452, b"insufficient storage"), False),
            (smtplib.SMTPDataError(554, b"rejected"), True),
            (smtplib.SMTPConnectError(421, b"too busy"), False),
            (smtplib.SMTPHeloError(501, b"bad helo"), True),
        ]
    if kind is ssl.SSLCertVerificationError:
        error = ssl.SSLCertVerificationError(1, "certificate verify failed")
        error.verify_message = "unable to get local issuer certificate"
        return [(error, True)]
    if kind is ssl.SSLError:
        return [(ssl.SSLError(1, "unexpected eof"), False)]
    if kind is socket.timeout:
        return [(TimeoutError("timed out"), False)]
    if kind is TimeoutError:
        return [(TimeoutError("timed out"), False)]
    if kind is ConnectionRefusedError:
        return [(ConnectionRefusedError(111, "Connection refused"), False)]
    if kind is ConnectionError:
        return [(ConnectionResetError(104, "Connection reset by peer"), False)]
    if kind is socket.gaierror:
        return [(socket.gaierror(-2, "Name or service not known"), False)]
    if kind is smtplib.SMTPException:
        return [(smtplib.SMTPException("No suitable authentication method found."), False)]
    if kind is OSError:
        return [(OSError(101, "Network is unreachable"), False)]
    raise AssertionError(f"no example for table row {kind.__name__}: add one")


@pytest.mark.parametrize(
    ("kind", "permanent"), SMTP_ERROR_TABLE, ids=lambda v: getattr(v, "__name__", str(v))
)
def test_every_smtp_table_row(kind: type[BaseException], permanent: bool | None) -> None:
    for exc, expected in _example(kind, permanent):
        decided = classify_smtp_error(exc)
        assert decided.permanent is expected, (exc, str(decided))
        if permanent is not None:
            assert expected is permanent


@pytest.fixture
def ascii_smtp() -> Iterator[SmtpServer]:
    server = start_smtp(smtputf8=False)
    yield server
    server.controller.stop()


def test_non_ascii_display_names_reach_a_server_without_smtputf8(
    ascii_smtp: SmtpServer, store: Store, clock: Clock
) -> None:
    # A relay that does not offer SMTPUTF8: the envelope must carry the bare addresses and the headers must
    # be RFC 2047 encoded, or smtplib refuses to send at all.
    smtp = ascii_smtp
    config = email_config(smtp)
    config.update(
        {"from": "Zoë Überwachung <monitor@example.com>", "to": ["Jörg Ödegaard <security@example.com>"]}
    )
    settings = make_config(email=config)
    assert settings.alerts.email is not None
    alert = make_alert()
    record(store, [alert], ["email"], clock())
    worker = OutboxWorker(store, {"email": EmailChannel(settings.alerts.email, settings.tz)}, clock=clock)
    assert worker.deliver_due().sent == 1
    (envelope,) = smtp.recorder.envelopes
    assert envelope.mail_from == "monitor@example.com"
    assert envelope.rcpt_tos == ["security@example.com"]
    assert "SMTPUTF8" not in [option.upper() for option in envelope.mail_options]
    raw = envelope.original_content or envelope.content
    assert isinstance(raw, bytes)
    headers = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")  # every header byte is ASCII
    assert "=?utf-8?" in headers
    (message,) = smtp.recorder.messages
    [sender] = message["From"].addresses
    [recipient] = message["To"].addresses
    assert (sender.display_name, sender.addr_spec) == ("Zoë Überwachung", "monitor@example.com")
    assert (recipient.display_name, recipient.addr_spec) == ("Jörg Ödegaard", "security@example.com")
    assert message["Message-ID"] == f"<{alert.id}@example.com>"


@pytest.mark.parametrize(
    ("key", "line", "yaml_value"),
    [
        ("alerts.email.from", 5, '"monitor at example.com"'),
        ("alerts.email.from", 5, '"Monitor <monitor@>"'),
        ("alerts.email.from", 5, '"a@example.com, b@example.com"'),
        ("alerts.email.to[1]", 7, '"Jörg <jörg@example.com>"'),
        ("alerts.email.to[1]", 7, '"<script>"'),
        ("report.to[0]", 10, '"compliance"'),
    ],
)
def test_email_addresses_are_validated_in_the_config(key: str, line: int, yaml_value: str) -> None:
    values = {
        "alerts.email.from": '"Zoë <monitor@example.com>"',
        "alerts.email.to[1]": "b@example.com",
        "report.to[0]": "Compliance <compliance@example.com>",
    }
    values[key] = yaml_value
    text = (
        "alerts:\n"
        "  email:\n"
        "    smtp: {host: 127.0.0.1}\n"
        "    min_severity: high\n"
        f"    from: {values['alerts.email.from']}\n"
        "    to:\n"
        f"      - {values['alerts.email.to[1]']}\n"
        "report:\n"
        "  to:\n"
        f"    - {values['report.to[0]']}\n"
    )
    text = text.replace("    to:\n", "    to:\n      - a@example.com\n", 1)
    line += 1 if key != "alerts.email.from" else 0
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "monitor.yaml", {})
    message = str(caught.value)
    assert message.startswith(f"monitor.yaml:{line}: {key}: "), message
    assert "\n" not in message and "address" in message


def test_valid_addresses_with_names_are_accepted() -> None:
    text = (
        "alerts:\n"
        "  email:\n"
        "    smtp: {host: 127.0.0.1}\n"
        '    from: "Zoë Überwachung <monitor@example.com>"\n'
        '    to: ["security@example.com", "\\"Doe, Jane\\" <jane@example.com>"]\n'
        "report: {to: [Compliance Team <compliance@example.com>]}\n"
    )
    config = parse_config(text, "monitor.yaml", {})
    assert config.alerts.email is not None
    assert config.alerts.email.envelope_from == "monitor@example.com"
    assert config.alerts.email.envelope_to == ["security@example.com", "jane@example.com"]

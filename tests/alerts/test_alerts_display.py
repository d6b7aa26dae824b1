"""Display spoofing: bidi overrides, terminal escapes and Unicode line separators in event text never reach a
reader through Slack, email (text, HTML, subject) or the console, single alerts and digests alike."""

from __future__ import annotations

import io

from alerts_support import (
    Clock,
    SlackStub,
    SmtpServer,
    all_strings,
    email_config,
    make_alert,
    make_config,
    record,
    slack_config,
)

from monitor.alerts.console import ConsoleChannel
from monitor.alerts.email import EmailChannel
from monitor.alerts.model import Alert
from monitor.alerts.outbox import Channel, OutboxWorker
from monitor.alerts.slack import SlackChannel
from monitor.store import Store

# A right-to-left override that shows "exe.png" as "gnp.exe", a screen clear, an OSC 8 hyperlink, a
# Unicode line separator that fakes a second line, an 8-bit CSI, and a bidi isolate pair.
HOSTILE = (
    "report \u202egnp.exe\u202c \x1b[2J\x1b]8;;http://evil.example\x07click\x1b]8;;\x07"
    "\u2028[CRITICAL] all clear \x9b31m \u2066iso\u2069 \u200fend"
)
FORBIDDEN = ("\u202e", "\u202c", "\x1b", "\x07", "\u2028", "\x9b", "\u2066", "\u2069", "\u200f")


def hostile_alert(n: int = 0) -> Alert:
    return make_alert(
        title=f"Table deleted: {HOSTILE} {n}",
        text=f"Someone said: {HOSTILE}",
        context={"user": f"{HOSTILE}@corp.io", "workspace": HOSTILE, "branch": HOSTILE, "msg": HOSTILE},
        fields={"detail": HOSTILE},
    )


def channels(slack: SlackStub, smtp: SmtpServer, out: io.StringIO) -> dict[str, Channel]:
    config = make_config(slack=slack_config(slack), email=email_config(smtp), console=True)
    assert config.alerts.slack is not None and config.alerts.email is not None
    return {
        "slack": SlackChannel(config.alerts.slack, config.tz),
        "email": EmailChannel(config.alerts.email, config.tz),
        "console": ConsoleChannel(config.tz, out),
    }


def shown(slack: SlackStub, smtp: SmtpServer, out: io.StringIO) -> list[str]:
    texts = [out.getvalue()]
    for post in slack.posts():
        texts.extend(all_strings(post.body))
    for message in smtp.recorder.messages:
        texts.append(str(message["Subject"]))
        texts.append(message.get_body(("plain",)).get_content())
        texts.append(message.get_body(("html",)).get_content())
    return texts


def assert_neutralised(texts: list[str]) -> None:
    assert texts
    for text in texts:
        found = [hex(ord(ch)) for ch in FORBIDDEN if ch in text]
        assert not found, (found, text[:300])
    # The words stay readable: only the control characters are neutralised.
    assert any("gnp.exe" in text and "all clear" in text for text in texts)


def test_control_and_bidi_characters_never_reach_slack_email_or_the_console(
    slack: SlackStub, smtp: SmtpServer, store: Store, clock: Clock
) -> None:
    out = io.StringIO()
    record(store, [hostile_alert()], ["slack", "email", "console"], clock())
    report = OutboxWorker(store, channels(slack, smtp, out), clock=clock).deliver_due()
    assert report.sent == 3 and not report.failed
    assert len(slack.posts()) == 1 and len(smtp.recorder.messages) == 1
    assert_neutralised(shown(slack, smtp, out))


def test_digests_neutralise_them_too(slack: SlackStub, smtp: SmtpServer, store: Store, clock: Clock) -> None:
    out = io.StringIO()
    record(store, [hostile_alert(i) for i in range(3)], ["slack", "email"], clock())
    worker = OutboxWorker(store, channels(slack, smtp, out), clock=clock, digest_after=2)
    assert worker.deliver_due().digests == 2
    assert_neutralised(shown(slack, smtp, out))

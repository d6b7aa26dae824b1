"""The Slack channel: Block Kit messages through chat.postMessage (bot token) or an incoming webhook.

Safety: every value interpolated into the Slack templates passes through ``slack_escape`` (``&``, ``<``,
``>`` become entities) by the Jinja environment's ``finalize`` hook, so no event text can mention
``<!channel>``/``<!here>``/``<@U…>`` or forge a ``<http://x|y>`` link, and no template can forget to escape.
The rendered JSON is then cut to Block Kit's limits.

Failures are classified by the tables ``SLACK_API_ERRORS`` and ``webhook_status_is_permanent``: the outbox
retries what is transient (honouring Retry-After) and dead-letters what is not.

Resolve notices: through the bot token, a reply in the alert's thread (``thread_ts`` = the ts stored with
the delivery, in the channel id chat.postMessage answered with, so a changed route still finds the thread;
under a digest, the digest's thread); through an incoming webhook (no ts), a message of its own that names
the alert in full.

Redirects are never followed (the rule for every HTTP channel): urllib would repeat a 302'd POST as a GET to
whatever host the answer names, bot token in ``Authorization`` included, and that host's 200 would mark the
alert sent. A 3xx is a failed delivery, permanent: the configured URL is wrong or someone is in between.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import socket
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from jinja2.sandbox import SandboxedEnvironment
from slack_sdk.errors import SlackApiError, SlackClientError, SlackRequestError
from slack_sdk.web import WebClient
from slack_sdk.webhook import WebhookClient, WebhookResponse

from monitor.alerts.model import Alert, Receipt, Resolution
from monitor.alerts.outbox import DeliveryError
from monitor.alerts.render import alert_view, digest_view, make_environment, resolution_view
from monitor.display import safe_text
from monitor.timeutil import retry_after_seconds

# Block Kit limits (https://docs.slack.dev/reference/block-kit/blocks)
MAX_BLOCKS = 50
HEADER_TEXT_MAX = 150
SECTION_TEXT_MAX = 3000
SECTION_FIELD_MAX = 2000
SECTION_FIELDS_MAX = 10
CONTEXT_ELEMENTS_MAX = 10
CONTEXT_TEXT_MAX = 2000
FALLBACK_TEXT_MAX = 3000  # the notification text; Slack's hard limit is far higher, readers' is not
DIGEST_LIST_MAX = 40
# A 429 asking for at most this long is waited out inside the delivery pass (a few times per message);
# longer ones go back to the outbox's persisted backoff.
RATE_LIMIT_WAIT_MAX = 30.0
RATE_LIMIT_RETRIES = 5  # alerts listed by name in a digest; the rest are counted

SEVERITY_EMOJI = {
    "critical": ":rotating_light:",
    "high": ":red_circle:",
    "medium": ":large_orange_circle:",
    "low": ":large_yellow_circle:",
    "info": ":information_source:",
}

# --- escaping and limits ---------------------------------------------------------------------------------


def slack_escape(text: str) -> str:
    """Slack's three control characters as entities: ``<!channel>`` arrives as inert text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _finalize(value: Any) -> str:
    """Every ``{{ }}`` in a Slack template: control and bidi characters neutralised, Slack-escaped, then
    escaped for a JSON string literal."""
    return json.dumps(slack_escape(safe_text(value)), ensure_ascii=False)[1:-1]


_PARTIAL_ENTITY = re.compile(r"&[a-z]{0,4}$")


def cut_escaped(text: str, limit: int) -> str:
    """Cut already-escaped text without leaving half an entity (``&am``) at the end."""
    if len(text) <= limit:
        return text
    head = _PARTIAL_ENTITY.sub("", text[: max(0, limit - 1)]).rstrip()
    return head + "…"


def fit_blocks(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Enforce Block Kit's limits on rendered blocks (templates cut sensibly; this guarantees it)."""
    fitted: list[dict[str, Any]] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "header":
            block["text"]["text"] = cut_escaped(block["text"]["text"], HEADER_TEXT_MAX)
        elif kind == "section":
            if "text" in block:
                if not block["text"]["text"].strip():
                    if not block.get("fields"):
                        continue  # an empty section is an invalid_blocks error
                    del block["text"]
                else:
                    block["text"]["text"] = cut_escaped(block["text"]["text"], SECTION_TEXT_MAX)
            if "fields" in block:
                fields = [f for f in block["fields"] if f["text"].strip()][:SECTION_FIELDS_MAX]
                for item in fields:
                    item["text"] = cut_escaped(item["text"], SECTION_FIELD_MAX)
                if fields:
                    block["fields"] = fields
                else:
                    del block["fields"]
                    if "text" not in block:
                        continue
        elif kind == "context":
            elements = [e for e in block["elements"] if e.get("text", "x").strip()][:CONTEXT_ELEMENTS_MAX]
            if not elements:
                continue
            for element in elements:
                if "text" in element:
                    element["text"] = cut_escaped(element["text"], CONTEXT_TEXT_MAX)
            block["elements"] = elements
        fitted.append(block)
    if len(fitted) > MAX_BLOCKS:
        dropped = len(fitted) - (MAX_BLOCKS - 1)
        fitted = fitted[: MAX_BLOCKS - 1]
        fitted.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"({dropped} more blocks cut)"}]}
        )
    return fitted


# --- messages -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlackMessage:
    text: str  # the plain fallback for notifications and clients without Block Kit
    blocks: list[dict[str, Any]]


_env: SandboxedEnvironment | None = None


def _environment() -> SandboxedEnvironment:
    global _env
    if _env is None:
        _env = make_environment(finalize=_finalize)
    return _env


def _render(name: str, **context: Any) -> SlackMessage:
    rendered = _environment().get_template(name).render(**context)
    try:
        payload = json.loads(rendered)
    except json.JSONDecodeError as exc:  # a template bug, never event data: values are JSON-escaped
        raise RuntimeError(f"templates/{name} does not render valid JSON: {exc}") from None
    return SlackMessage(
        text=cut_escaped(" ".join(payload["text"].split()), FALLBACK_TEXT_MAX),
        blocks=verbatim_mrkdwn(fit_blocks(payload["blocks"])),
    )


def verbatim_mrkdwn(node: Any) -> Any:
    """Mark every mrkdwn text object ``verbatim``: Slack then renders the formatting we wrote but does not
    turn bare URLs, ``#channel`` names or ``@name`` words into links and mentions. Event text is in
    plain_text objects anyway; this keeps the labels, rule ids and source names beside it inert too."""
    if isinstance(node, dict):
        if node.get("type") == "mrkdwn" and isinstance(node.get("text"), str):
            node["verbatim"] = True
        for value in node.values():
            verbatim_mrkdwn(value)
    elif isinstance(node, list):
        for item in node:
            verbatim_mrkdwn(item)
    return node


def build_alert_message(alert: Alert, tz: ZoneInfo) -> SlackMessage:
    return _render(
        "slack_alert.json.j2", a=alert_view(alert, tz), emoji=SEVERITY_EMOJI.get(alert.severity, "")
    )


def build_resolved_message(alert: Alert, resolution: Resolution, tz: ZoneInfo) -> SlackMessage:
    return _render("slack_resolved.json.j2", a=alert_view(alert, tz), r=resolution_view(resolution, tz))


def build_digest_message(alerts: Sequence[Alert], tz: ZoneInfo) -> SlackMessage:
    return _render("slack_digest.json.j2", d=digest_view(alerts, tz, DIGEST_LIST_MAX), emoji=SEVERITY_EMOJI)


# --- failure classification -----------------------------------------------------------------------------

# Slack Web API ``error`` codes -> permanent? (True: dead-letter now; False: retry with backoff.)
# Codes not listed are treated as permanent unless the HTTP status is 5xx: Slack documents every
# transient condition below, and an unknown code is most likely a request Slack will never accept, which
# the operator should hear about now (delivery_failing) rather than after 24 h of silent retries.
SLACK_API_ERRORS: dict[str, bool] = {
    "ratelimited": False,
    "rate_limited": False,
    "internal_error": False,
    "fatal_error": False,
    "service_unavailable": False,
    "request_timeout": False,
    "invalid_auth": True,
    "not_authed": True,
    "account_inactive": True,
    "token_revoked": True,
    "token_expired": True,
    "no_permission": True,
    "missing_scope": True,
    "not_allowed_token_type": True,
    "access_denied": True,
    "channel_not_found": True,
    "not_in_channel": True,
    "is_archived": True,
    "restricted_action": True,
    "msg_too_long": True,
    "no_text": True,
    "invalid_blocks": True,
    "invalid_blocks_format": True,
    "invalid_arguments": True,
    "invalid_charset": True,
    "too_many_attachments": True,
}

# Incoming-webhook answers: the body is a short code (``no_service``, ``invalid_payload`` ...), the HTTP
# status carries the class: 408/429/5xx come back, any other 4xx is a request or configuration problem.
WEBHOOK_TRANSIENT_STATUSES = frozenset({408, 425, 429})


def webhook_status_is_permanent(status: int) -> bool:
    return not (status in WEBHOOK_TRANSIENT_STATUSES or status >= 500)


def _retry_after(headers: Any) -> float | None:
    if not headers:
        return None
    for key in ("Retry-After", "retry-after"):
        value = headers.get(key)
        if isinstance(value, list):
            value = value[0] if value else None
        if value is None:
            continue
        return retry_after_seconds(str(value), datetime.now(UTC))  # seconds or an HTTP-date
    return None


def classify_api_error(error: str, status: int, headers: Any = None) -> DeliveryError:
    """A Slack Web API failure (``ok: false`` or an HTTP error) as a DeliveryError."""
    retry_after = _retry_after(headers)
    if status == 429 or error in ("ratelimited", "rate_limited"):
        wait = f"retry after {retry_after:g} s" if retry_after is not None else "no Retry-After given"
        error_ = DeliveryError(
            f"Slack API error {error or 'ratelimited'} (HTTP {status}): rate limited, {wait}",
            permanent=False,
            retry_after=retry_after,
        )
        error_.rate_limited = True
        return error_
    # A 5xx is Slack's side whatever the body says; otherwise the table decides, unknown codes are permanent.
    permanent = False if status >= 500 else SLACK_API_ERRORS.get(error, True)
    hint = _HINTS.get(error, "")
    return DeliveryError(
        f"Slack API error {error or 'unknown'} (HTTP {status}){hint}",
        permanent=permanent,
        retry_after=retry_after,
    )


_HINTS = {
    "invalid_auth": ": the bot token is not valid",
    "token_revoked": ": the bot token was revoked",
    "account_inactive": ": the bot's account is deactivated",
    "not_in_channel": ": invite the app to the channel (/invite @app)",
    "channel_not_found": ": check alerts.slack.channel / routes (and that the app can see the channel)",
    "missing_scope": ": the app needs the chat:write scope",
}


def classify_transport_error(exc: BaseException) -> DeliveryError:
    """Connection-level failures: transient, except a certificate the system does not trust."""
    reason: BaseException | str | None = exc
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        reason = exc.reason
    if isinstance(reason, ssl.SSLCertVerificationError):
        # Retrying cannot make an untrusted certificate trusted: tell the operator now.
        return DeliveryError(f"Slack TLS certificate not trusted: {reason.verify_message}", permanent=True)
    kind = type(reason).__name__ if isinstance(reason, BaseException) else str(reason)
    detail = getattr(reason, "strerror", None) or ""
    return DeliveryError(f"Slack unreachable: {kind}{': ' + detail if detail else ''}", permanent=False)


# The SDK logs failed requests itself, at ERROR and (DEBUG) with the request URL, which for a webhook is
# the secret. The outbox logs every failure, classified, so the SDK's own logger is silenced.
_SDK_LOG = logging.getLogger("monitor.alerts.slack.sdk")
_SDK_LOG.setLevel(logging.CRITICAL)

_TRANSPORT_ERRORS = (urllib.error.URLError, OSError, http.client.HTTPException, socket.timeout, TimeoutError)


# --- no redirects ---------------------------------------------------------------------------------------


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """Answer every 3xx with the HTTPError it is instead of a new request (urllib's default follows it)."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        return None


def _opener(context: ssl.SSLContext | None, proxy: str | None) -> urllib.request.OpenerDirector:
    # What slack-sdk builds for urlopen (TLS context, optional proxy), with redirects refused.
    handlers: list[urllib.request.BaseHandler] = [
        _RefuseRedirects(),
        urllib.request.HTTPSHandler(context=context),
    ]
    if proxy:
        handlers.insert(0, urllib.request.ProxyHandler({"http": proxy, "https": proxy}))
    return urllib.request.build_opener(*handlers)


def _checked_url(url: str) -> None:
    if not url.lower().startswith(("http://", "https://")):  # never file:// or ftp://
        raise SlackRequestError("Invalid URL: only http(s) is allowed")


class _WebClient(WebClient):
    """slack-sdk's WebClient with the one request function replaced by a redirect-refusing opener."""

    def _perform_urllib_http_request_internal(self, url: str, req: urllib.request.Request) -> dict[str, Any]:
        _checked_url(url)
        with _opener(self.ssl, self.proxy).open(req, timeout=self.timeout) as resp:
            charset = resp.headers.get_content_charset() or "utf-8"
            return {"status": resp.status, "headers": resp.headers, "body": resp.read().decode(charset)}


class _WebhookClient(WebhookClient):
    """slack-sdk's WebhookClient, redirects refused the same way."""

    def _perform_http_request_internal(self, url: str, req: urllib.request.Request) -> WebhookResponse:
        _checked_url(url)
        with _opener(self.ssl, self.proxy).open(req, timeout=self.timeout) as resp:
            charset = resp.headers.get_content_charset() or "utf-8"
            return WebhookResponse(
                url=url, status_code=resp.status, body=resp.read().decode(charset), headers=resp.headers
            )


# The two subclasses replace one private function each. Should a slack-sdk release rename it, the override
# would silently stop applying and redirects would be followed again: refuse to start instead.
for _client, _method in (
    (WebClient, "_perform_urllib_http_request_internal"),
    (WebhookClient, "_perform_http_request_internal"),
):
    if not callable(getattr(_client, _method, None)):
        raise ImportError(
            f"slack-sdk's {_client.__name__}.{_method} is gone: this version cannot refuse redirects; "
            "install a slack-sdk version this release supports"
        )


def _is_redirect(status: int) -> bool:
    return 300 <= status < 400


# --- the channel ----------------------------------------------------------------------------------------


class SlackChannel:
    """``send``/``send_digest`` post one message and return its ``ts`` with the channel id (a Receipt; None
    through a webhook); ``send_resolved`` replies in that thread."""

    name = "slack"

    def __init__(self, config: Any, tz: ZoneInfo) -> None:
        # ``config`` is a monitor.config.SlackConfig; typed loosely to keep this module free of the loader.
        self.tz = tz
        self.stop = threading.Event()  # the daemon's stop event: set, it ends a rate-limit wait
        self.channel: str | None = config.channel
        self.routes: dict[str, str] = dict(config.routes)
        timeout = max(1, int(config.timeout.total_seconds()))
        self._web: WebClient | None = None
        self._webhook: WebhookClient | None = None
        if config.token is not None:
            base_url = config.base_url if config.base_url.endswith("/") else config.base_url + "/"
            # retry_handlers=[]: the outbox owns retrying, with persisted backoff; a hidden retry inside
            # the SDK would hold the worker thread and double-count attempts.
            self._web = _WebClient(
                token=config.token.get_secret_value(),
                base_url=base_url,
                timeout=timeout,
                retry_handlers=[],
                logger=_SDK_LOG,
            )
        else:
            self._webhook = _WebhookClient(
                url=config.webhook_url.get_secret_value(), timeout=timeout, retry_handlers=[], logger=_SDK_LOG
            )

    def __repr__(self) -> str:  # never the token or the webhook URL (which is itself a secret)
        transport = "web-api" if self._web is not None else "webhook"
        return f"SlackChannel({transport}, channel={self.channel!r})"

    def destination(self, alert: Alert) -> str:
        """Where the alert goes: ``routes[severity]``, else ``channel`` (a webhook has one fixed place)."""
        if self._web is None:
            return "webhook"
        return self.routes.get(alert.severity) or self.channel or ""

    def send(self, alert: Alert) -> Receipt | None:
        return self._post(self.destination(alert), build_alert_message(alert, self.tz))

    def send_digest(self, alerts: Sequence[Alert]) -> Receipt | None:
        return self._post(self.destination(alerts[0]), build_digest_message(alerts, self.tz))

    def send_resolved(self, alert: Alert, resolution: Resolution, trigger: Receipt) -> str | None:
        message = build_resolved_message(alert, resolution, self.tz)
        if self._web is not None and trigger.remote_id and trigger.reply_to:
            receipt = self._post(trigger.reply_to, message, thread_ts=trigger.remote_id)
        else:  # a webhook; or the alert went out through one, or before channel ids were kept (0009)
            receipt = self._post(self.destination(alert), message)
        return receipt.remote_id if receipt is not None else None

    def _post(self, channel: str, message: SlackMessage, thread_ts: str | None = None) -> Receipt | None:
        """Post, waiting out short rate limits here: Slack answers 429 with ``Retry-After: 1`` as soon as
        a burst exceeds about one message per second, and the outbox's backoff (5 s or more, the channel's
        other alerts deferred with it) would turn every burst into a failed delivery."""
        waits = 0
        while True:
            try:
                if self._web is not None:
                    return self._post_api(channel, message, thread_ts)
                return self._post_webhook(message)
            except DeliveryError as exc:
                wait = exc.retry_after if exc.rate_limited else None
                if wait is None or wait > RATE_LIMIT_WAIT_MAX or waits >= RATE_LIMIT_RETRIES:
                    raise
                waits += 1
                # An event, not sleep: SIGTERM ends the wait at once and the outbox keeps the alert.
                if self.stop.wait(max(wait, 0.05)):
                    raise

    def _post_api(self, channel: str, message: SlackMessage, thread_ts: str | None) -> Receipt | None:
        assert self._web is not None
        # A reply stays in the thread (reply_broadcast off): the channel saw the alert; the thread its end.
        threading_args: dict[str, Any] = {"thread_ts": thread_ts} if thread_ts else {}
        try:
            response = self._web.chat_postMessage(
                channel=channel,
                **threading_args,
                text=message.text,
                blocks=message.blocks,
                # The fallback text (notifications) holds event text: Slack-escaped, and not read as mrkdwn.
                mrkdwn=False,
                unfurl_links=False,  # a URL in event text must not pull a preview card into the channel
                unfurl_media=False,
            )
        except SlackApiError as exc:
            if _is_redirect(exc.response.status_code):
                raise DeliveryError(
                    f"Slack API answered HTTP {exc.response.status_code}, a redirect, never followed: "
                    "check alerts.slack.base_url (and any proxy in between)",
                    permanent=True,
                ) from None
            data = exc.response.data if isinstance(exc.response.data, dict) else {}
            # Slack's codes are short snake_case words; anything else (the SDK's note about an HTML error
            # page, say) is reduced to nothing rather than copied into logs and the outbox.
            code = one_word(str(data.get("error", "")))
            raise classify_api_error(code, exc.response.status_code, exc.response.headers) from None
        except SlackClientError as exc:
            raise DeliveryError(f"Slack client error: {type(exc).__name__}", permanent=True) from None
        except _TRANSPORT_ERRORS as exc:
            raise classify_transport_error(exc) from None
        ts = response.get("ts")
        if ts is None:
            return None
        # The channel's id, not the configured name: replies address the thread by it.
        answered = response.get("channel")
        return Receipt(str(ts), str(answered) if answered else channel)

    def _post_webhook(self, message: SlackMessage) -> Receipt | None:
        assert self._webhook is not None
        try:
            # send() has no ``mrkdwn`` argument; the body is the same one it would build, plus that.
            response = self._webhook.send_dict(
                {
                    "text": message.text,
                    "blocks": message.blocks,
                    "mrkdwn": False,
                    "unfurl_links": False,
                    "unfurl_media": False,
                }
            )
        except _TRANSPORT_ERRORS as exc:
            raise classify_transport_error(exc) from None
        if response.status_code == 200:
            return None
        if _is_redirect(response.status_code):
            raise DeliveryError(
                f"Slack webhook answered HTTP {response.status_code}, a redirect, which is never followed: "
                "check alerts.slack.webhook_url",
                permanent=True,
            )
        body = one_word(response.body)
        error = DeliveryError(
            f"Slack webhook answered HTTP {response.status_code} {body}".rstrip(),
            permanent=webhook_status_is_permanent(response.status_code),
            retry_after=_retry_after(response.headers),
        )
        error.rate_limited = response.status_code == 429
        raise error


def one_word(body: str | None) -> str:
    """A webhook error body is a code such as ``no_service``; never echo anything longer or stranger."""
    text = (body or "").strip()
    return text if re.fullmatch(r"[a-z_]{1,64}", text) else ""

"""One JSON POST to an alert receiver (webhooks, Teams, PagerDuty), and what its answer means for the outbox.

- Redirects are never followed: a receiver that moved must be reconfigured, and following a 3xx would
  send the signed alert (and any API-key header) to wherever the redirect points.
- ``HTTP_OUTCOMES`` is the one table from status to outcome; the channels add their own special cases
  (a webhook's 410 Gone disables it) on top.
- Messages name the channel and the status only: never the URL (it may carry a token) nor the headers.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import httpx

from monitor.alerts.outbox import DeliveryError
from monitor.timeutil import retry_after_seconds

# Status -> transient? Every status not listed: 2xx delivered, 3xx and other 4xx permanent, 5xx transient.
TRANSIENT_STATUSES = frozenset({408, 425, 429})
RETRY_AFTER_MAX = 3600.0  # the outbox caps its backoff anyway; a silly header must not read as "forever"


def status_is_transient(status: int) -> bool:
    return status in TRANSIENT_STATUSES or status >= 500


def status_error(label: str, response: httpx.Response) -> DeliveryError | None:
    """None for a 2xx; otherwise the classified failure (Retry-After honoured on a transient one)."""
    status = response.status_code
    if 200 <= status < 300:
        return None
    if 300 <= status < 400:
        return DeliveryError(
            f"{label} answered HTTP {status} (a redirect, not followed: configure the final URL)",
            permanent=True,
        )
    transient = status_is_transient(status)
    return DeliveryError(
        f"{label} answered HTTP {status}{_reason(response)}",
        permanent=not transient,
        retry_after=_retry_after(response) if transient else None,
    )


def _retry_after(response: httpx.Response) -> float | None:
    seconds = retry_after_seconds(response.headers.get("Retry-After"), datetime.now(UTC))
    return None if seconds is None else min(seconds, RETRY_AFTER_MAX)


def _reason(response: httpx.Response) -> str:
    """The status's standard phrase only: a receiver's body may echo our request (and its secrets)."""
    phrase = response.reason_phrase.strip()
    return f" {phrase}" if phrase.isascii() and len(phrase) <= 40 else ""


def transport_error(label: str, exc: httpx.TransportError) -> DeliveryError:
    """A failure below HTTP: transient, except a certificate this machine does not trust."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            message = f"{label}: TLS certificate not trusted: {cause.verify_message}"
            return DeliveryError(message, permanent=True)
        cause = cause.__cause__ or cause.__context__
    return DeliveryError(f"{label} unreachable: {type(exc).__name__}", permanent=False)


class JsonPoster:
    """A small httpx client for one receiver: explicit timeout, no redirects, no cookies kept."""

    def __init__(self, label: str, timeout: timedelta) -> None:
        self.label = label
        seconds = max(1.0, timeout.total_seconds())
        self._client = httpx.Client(timeout=httpx.Timeout(seconds), follow_redirects=False)

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> httpx.Response:
        """POST ``body``; raises DeliveryError for a transport failure, returns any HTTP answer."""
        try:
            response = self._client.post(
                url, content=body, headers={"Content-Type": "application/json", **headers}
            )
        except httpx.TransportError as exc:
            raise transport_error(self.label, exc) from None
        self._client.cookies.clear()
        return response

    def close(self) -> None:
        self._client.close()

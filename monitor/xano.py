"""The Xano Metadata API client: audit-log paging, retries, Retry-After, typed errors.

One :class:`XanoClient` serves one source for one poll cycle. :meth:`XanoClient.iter_pages` walks
``POST .../audit_log/search`` page by page (one page in memory at a time) and yields the entries exactly as
served. Transient trouble (429, 502, 503, 504, transport errors, and bodies that are truncated, not JSON or
not Xano's envelope) is retried with exponential backoff and full jitter, honouring Retry-After, within a
per-request attempt limit and a per-client sleep budget. 401/403 raise :class:`XanoAuthError` at once.

The token lives only in the HTTP client's headers: it is never part of a repr, an exception message or a
log record.
"""

from __future__ import annotations

import email.utils
import importlib.metadata
import json
import logging
import random
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from monitor.logs import scrub

__all__ = [
    "ClientStats",
    "Page",
    "RetryPolicy",
    "XanoAuthError",
    "XanoClient",
    "XanoError",
    "XanoProtocolError",
    "XanoUnavailableError",
]

log = logging.getLogger("monitor.xano")


def _user_agent() -> str:
    try:
        version = importlib.metadata.version("xano-audit-monitor")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        version = "dev"
    return f"xano-audit-monitor/{version} (audit-log archiver; python-httpx/{httpx.__version__})"


USER_AGENT = _user_agent()
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
AUTH_STATUSES = frozenset({401, 403})
# Without a pageTotal to go by, no audit log needs more pages than this: a server that keeps
# announcing a next page past it is broken, and we stop rather than walk forever.
MAX_PAGES_WITHOUT_TOTAL = 1_000_000


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8  # per request, the first attempt included
    base_delay: float = 1.0  # backoff n (0-based) sleeps random.uniform(0, min(max_delay, base_delay * 2**n))
    max_delay: float = 60.0
    retry_after_cap: float = 120.0  # Retry-After (delta-seconds or HTTP-date) is honoured up to this
    budget: float = 600.0  # total sleep per client (one poll cycle); past it, give up

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if min(self.base_delay, self.max_delay, self.retry_after_cap, self.budget) < 0:
            raise ValueError("delays and the budget must not be negative")


@dataclass(frozen=True)
class Page:
    number: int
    items: list[Any]  # raw entries, exactly as served (unknown keys kept)
    next_page: int | None
    items_total: int | None
    # False when the page's JSON held no number with a fraction or exponent (nor NaN/Infinity): its
    # entries then take the archive's fast canonical-JSON path (monitor.events.archive_json).
    holds_floats: bool = True


@dataclass
class ClientStats:
    """What one client did: for log lines and metrics."""

    requests: int = 0
    retries: int = 0
    slept: float = 0.0  # seconds
    pages: int = 0


class XanoError(Exception):
    """Base of every client error. Messages name the source and the path, never the token."""


class XanoAuthError(XanoError):
    """401/403: the token is expired, revoked or lacks the scope. Never retried."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class XanoUnavailableError(XanoError):
    """The API could not be read: retries exhausted, budget spent, or a status that is not retried."""


class XanoProtocolError(XanoError):
    """The API answered, but not with the documented envelope even after retries, or paged inconsistently."""


class _BadBody(Exception):
    """A 2xx answer whose body is not a usable envelope (retried like a transient error)."""


class XanoClient:
    """Reads one source's audit log. Use as a context manager, or call :meth:`close`."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        source_name: str,
        workspace_id: int | None = None,
        per_page: int = 500,
        timeout: float = 30.0,
        retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen, so sharing the default is safe
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        verify: bool | str = True,
        transport: httpx.BaseTransport | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if verify is False:
            raise ValueError(
                "TLS certificate verification cannot be turned off; pass the path of a CA bundle instead"
            )
        if per_page < 1:
            raise ValueError("per_page must be at least 1")
        self.source_name = source_name
        self.workspace_id = workspace_id
        self.per_page = per_page
        self.retry = retry
        self.stats = ClientStats()
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._now = now
        self._token = _Redacted(token)
        url = httpx.URL(base_url.rstrip("/"))
        # Shown in messages: scheme, host and port, never user info.
        self._origin = str(url.copy_with(username=None, password=None, path="/", query=None, fragment=None))
        self._origin = self._origin.rstrip("/")
        ssl_context: ssl.SSLContext | bool = True
        if isinstance(verify, str):
            ssl_context = ssl.create_default_context(cafile=verify)
        self._http = httpx.Client(
            base_url=str(url),
            headers={
                "Authorization": f"Bearer {token}",
                "User-Agent": USER_AGENT,
                "Accept": "application/json",
            },
            timeout=httpx.Timeout(connect=timeout, read=timeout, write=timeout, pool=timeout),
            verify=ssl_context,
            transport=transport,
            follow_redirects=False,
        )

    # --- public -------------------------------------------------------------------------------------------

    @property
    def search_path(self) -> str:
        if self.workspace_id is not None:
            return f"/api:meta/workspace/{self.workspace_id}/audit_log/search"
        return "/api:meta/audit_log/search"

    def iter_pages(self, *, newest_first: bool = True, include_data: bool = True) -> Iterator[Page]:
        """Every page of the audit log, from page 1 until ``nextPage`` is null; lazily, one page at a time.

        Raises :class:`XanoProtocolError` when the server's paging does not advance one page at a time
        (a loop or a skip would lose or repeat events) or runs past its own ``pageTotal``.
        """
        number = 1
        page_limit: int | None = None
        while True:
            body = {
                "page": number,
                "per_page": self.per_page,
                "include_data": include_data,
                "sort": {"id": "desc" if newest_first else "asc"},
                "search": [],
            }
            envelope, holds_floats = self._request(self.search_path, body, number)
            next_page = envelope["nextPage"]
            items_total = envelope.get("itemsTotal")
            page_total = envelope.get("pageTotal")
            self.stats.pages += 1
            yield Page(
                number=number,
                items=envelope["items"],
                next_page=next_page,
                items_total=items_total,
                holds_floats=holds_floats,
            )
            if next_page is None:
                return
            if next_page != number + 1:
                raise XanoProtocolError(
                    f"{self._where()}: page {number} names page {next_page} as the next one; "
                    "refusing to loop or skip pages"
                )
            if not envelope["items"]:
                raise XanoProtocolError(
                    f"{self._where()}: page {number} is empty but announces page {next_page}"
                )
            if isinstance(page_total, int):
                # The log may grow during a walk, pushing entries onto later pages: allow some slack.
                grown = page_total + max(10, page_total // 10)
                page_limit = grown if page_limit is None else max(page_limit, grown)
            limit = page_limit if page_limit is not None else MAX_PAGES_WITHOUT_TOTAL
            if next_page > limit:
                raise XanoProtocolError(
                    f"{self._where()}: the server announces page {next_page}, past its page total "
                    f"({page_total}); stopping"
                )
            number = next_page

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> XanoClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"XanoClient(source={self.source_name!r}, base_url={self._origin!r}, "
            f"workspace_id={self.workspace_id!r}, per_page={self.per_page})"
        )

    # --- one request, with retries ------------------------------------------------------------------------

    def _request(self, path: str, body: dict[str, Any], page: int) -> tuple[dict[str, Any], bool]:
        policy = self.retry
        attempt = 0
        while True:
            attempt += 1
            self.stats.requests += 1
            retry_after: float | None = None
            status: int | None = None
            body_problem = False
            try:
                response = self._http.post(path, json=body)
            except httpx.TransportError as exc:
                if _permanent_transport_error(exc):
                    raise XanoUnavailableError(
                        self._scrub(f"{self._where(path)}: {_describe_transport(exc)}")
                    ) from None
                last_seen = _describe_transport(exc)
            else:
                status = response.status_code
                if status in AUTH_STATUSES:
                    raise XanoAuthError(self._auth_message(status, path), status)
                if status in RETRYABLE_STATUSES:
                    last_seen = f"HTTP {status}"
                    retry_after = self._retry_after(response.headers.get("Retry-After"))
                elif not 200 <= status < 300:
                    detail = _error_detail(response, self._scrub)
                    raise XanoUnavailableError(
                        self._scrub(f"{self._where(path)}: the API answered HTTP {status}{detail}")
                    )
                else:
                    try:
                        return _envelope(response, page)
                    except _BadBody as exc:
                        body_problem = True
                        last_seen = f"HTTP {status} with {exc}"
            if attempt >= policy.max_attempts:
                message = self._scrub(
                    f"{self._where(path)}: giving up after {attempt} attempts; last: {last_seen}"
                )
                if body_problem:
                    raise XanoProtocolError(message)
                raise XanoUnavailableError(message)
            delay = retry_after if retry_after is not None else self._backoff(attempt - 1)
            if self.stats.slept + delay > policy.budget:
                raise XanoUnavailableError(
                    self._scrub(
                        f"{self._where(path)}: retry budget of {policy.budget:g} s spent "
                        f"({self.stats.slept:.1f} s slept) after {attempt} attempts; last: {last_seen}"
                    )
                )
            # Debug only: an outage would log every retry of every cycle; the failed cycle logs one line.
            log.debug(
                "retrying Xano request",
                extra={
                    "source": self.source_name,
                    "path": path,
                    "page": page,
                    "status": status,
                    "error": self._scrub(last_seen),
                    "attempt": attempt,
                    "delay": round(delay, 3),
                    "retry_after": retry_after is not None,
                },
            )
            self.stats.retries += 1
            self.stats.slept += delay
            self._sleep(delay)

    def _backoff(self, retry_number: int) -> float:
        policy = self.retry
        ceiling = min(policy.max_delay, policy.base_delay * 2 ** min(retry_number, 62))
        return self._rng.uniform(0, ceiling)

    def _retry_after(self, value: str | None) -> float | None:
        """Seconds to wait per a Retry-After header (delta-seconds or HTTP-date), capped; None if unusable."""
        if value is None:
            return None
        text = value.strip()
        seconds: float | None = None
        try:
            seconds = float(text)
        except ValueError:
            try:
                moment = email.utils.parsedate_to_datetime(text)
            except (TypeError, ValueError, IndexError):
                return None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            seconds = (moment - self._now()).total_seconds()
        if seconds != seconds or seconds in (float("inf"), float("-inf")):  # NaN or infinite
            return None
        return min(max(seconds, 0.0), self.retry.retry_after_cap)

    # --- messages -----------------------------------------------------------------------------------------

    def _where(self, path: str | None = None) -> str:
        return f"source {self.source_name!r} (POST {self._origin}{path or self.search_path})"

    def _auth_message(self, status: int, path: str) -> str:
        return self._scrub(
            f"{self._where(path)}: Xano rejected the metadata API token (HTTP {status}). The token may have "
            "expired (metadata API tokens expire after 7 days by default) or lacks the "
            '"Workspace Log: Read" scope. Create a new token in the Xano dashboard and update this '
            "source's token."
        )

    def _scrub(self, text: str) -> str:
        return self._token.scrub(text)


class _Redacted:
    """Holds the token only to remove it from text that may have echoed it back (a server's message)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def scrub(self, text: str) -> str:
        """``text`` without the token in any form (escaped, URL-encoded, in pieces)."""
        return scrub(text, [self._value])

    def __repr__(self) -> str:
        return "[redacted]"


def _envelope(response: httpx.Response, page: int) -> tuple[dict[str, Any], bool]:
    """The documented envelope from a 2xx answer and whether its JSON held a float, or _BadBody saying
    what is wrong with it."""
    floats: list[str] = []  # the decoder's hooks run only for floats and NaN/Infinity: free otherwise

    def keep_float(text: str) -> float:
        floats.append(text)
        return float(text)

    try:
        envelope = json.loads(response.content, parse_float=keep_float, parse_constant=keep_float)
    except (UnicodeDecodeError, json.JSONDecodeError):
        kind = response.headers.get("Content-Type", "no content type").split(";")[0]
        raise _BadBody(f"a body that is not JSON ({kind}, {len(response.content)} bytes)") from None
    if not isinstance(envelope, dict):
        raise _BadBody(f"a JSON {type(envelope).__name__} instead of the envelope object")
    if not isinstance(envelope.get("items"), list):
        raise _BadBody("an envelope without an items list")
    if "nextPage" not in envelope:
        raise _BadBody("an envelope without nextPage")
    next_page = envelope["nextPage"]
    if next_page is not None and (isinstance(next_page, bool) or not isinstance(next_page, int)):
        raise _BadBody(f"nextPage {next_page!r} is not a page number")
    current = envelope.get("curPage")
    if current is not None and (isinstance(current, bool) or current != page):
        raise _BadBody(f"curPage {current!r} for a request of page {page}")
    for key in ("itemsTotal", "pageTotal"):
        value = envelope.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            envelope[key] = None  # informative only: an odd value is not worth failing for
    return envelope, bool(floats)


def _error_detail(response: httpx.Response, scrub_text: Callable[[str], str]) -> str:
    """``: CODE: message`` from a Xano JSON error body, when there is one (short, for messages).

    Scrubbed before it is cut: a cut first could leave most of an echoed token that no longer matches.
    """
    try:
        body = json.loads(response.content)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return ""
    if not isinstance(body, dict):
        return ""
    parts = [scrub_text(str(body[key]))[:200] for key in ("code", "message") if body.get(key)]
    return f": {': '.join(parts)}" if parts else ""


def _describe_transport(exc: httpx.TransportError) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _permanent_transport_error(exc: httpx.TransportError) -> bool:
    """Errors no retry can fix: a bad URL scheme, a request that cannot be sent as built (a header value
    with a line break: h11 refuses it before anything reaches the network), a certificate that does not
    verify."""
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError):
        return True
    cause: BaseException | None = exc
    for _ in range(10):  # exception chains are short; the bound only guards against a cycle
        if cause is None:
            break
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        cause = cause.__cause__ or cause.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)

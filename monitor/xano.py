"""The Xano Metadata API client: audit-log paging, retries, Retry-After, typed errors.

One :class:`XanoClient` serves one source for one poll cycle. :meth:`XanoClient.iter_pages` walks
``POST .../audit_log/search`` page by page (one page in memory at a time) and yields the entries exactly as
served. Transient trouble (429, 502, 503, 504, transport errors, and bodies that are truncated, not JSON or
not Xano's envelope) is retried with exponential backoff and full jitter, honouring Retry-After, within a
per-request attempt limit and a per-client sleep budget. 401/403 raise :class:`XanoAuthError` at once.

Every request has an overall deadline (``timeout`` bounds the whole request, from connect to the last byte of
the body, not only each read), and a client may be given a deadline for everything it does (``deadline``), so
a trickling server cannot hold a poll cycle. One answer may hold at most ``max_response_bytes`` and at most
``per_page`` entries. A name that does not resolve, and never did in this process, is a configuration error
at once rather than minutes of retries. Pages that repeat an earlier page of the walk end it with an error.

The token lives only in the HTTP client's headers: it is never part of a repr, an exception message or a
log record.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import random
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from monitor.events import UnreadableEntry
from monitor.logs import scrub
from monitor.timeutil import retry_after_seconds

__all__ = [
    "ClientStats",
    "Page",
    "RangeCount",
    "RetryPolicy",
    "XanoAuthError",
    "XanoClient",
    "XanoConfigError",
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
# The largest answer read for one page. Memory is a few times the body (decoded entries), so this keeps a
# cycle well under 200 MB even when entries are large; a bigger page is refused (lower per_page instead).
MAX_RESPONSE_BYTES = 32 * 1024 * 1024


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


@dataclass(frozen=True)
class RangeCount:
    """What the search answered for a time range: its ``itemsTotal`` (None when the envelope has none) and
    the one entry it served (the newest in the range, by id), to check that the filter was applied."""

    items_total: int | None
    newest: Any | None
    query: str  # the exact request (method, URL, body); never the token


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


class XanoConfigError(XanoError):
    """The source's settings cannot work as they are (a host name that does not resolve, a token that is not
    ASCII): reported on the first attempt of a cycle, not retried within it."""


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
        deadline: float | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        check_stop: Callable[[], None] | None = None,
    ) -> None:
        """``timeout`` bounds each request as a whole; ``deadline`` (a ``time.monotonic()`` value) bounds
        everything this client does: no request or retry runs past it. ``check_stop`` is called before
        each attempt and after each chunk of an answer; the daemon passes one that raises when it is
        stopping, so a trickling answer does not hold SIGTERM."""
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
        self.timeout = timeout
        self.deadline = deadline
        self._check_stop = check_stop or (lambda: None)
        self.max_response_bytes = max_response_bytes
        url = httpx.URL(base_url.rstrip("/"))
        self._host = url.host
        # Shown in messages: scheme, host and port, never user info.
        self._origin = str(url.copy_with(username=None, password=None, path="/", query=None, fragment=None))
        self._origin = self._origin.rstrip("/")
        if not _HEADER_SAFE.fullmatch(token):
            # httpx would fail on the first request with a UnicodeEncodeError (or send a broken header).
            raise XanoConfigError(
                f"{self._where()}: the token holds characters that cannot be sent in an HTTP header "
                "(only printable ASCII); check the source's token"
            )
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
        return audit_search_path(self.workspace_id)

    def iter_pages(
        self, *, newest_first: bool = True, include_data: bool = True, start_page: int = 1
    ) -> Iterator[Page]:
        """Every page of the audit log, from ``start_page`` to the end; lazily, one page at a time.

        The end is ``nextPage: null``; an envelope without ``nextPage`` (as Xano's guide shows them:
        ``{"items": [...], "itemsTotal": N}``) ends at its ``pageTotal``, else its ``itemsTotal``, else at a
        page shorter than ``per_page``. Raises :class:`XanoProtocolError` when the server's paging does not
        advance one page at a time (a loop or a skip would lose or repeat events), runs past its own
        ``pageTotal``, serves a page again that it already served in this walk, or sends more entries than
        ``per_page``.
        """
        if start_page < 1:
            raise ValueError("start_page must be at least 1")
        number = start_page
        page_limit: int | None = None
        seen_pages: dict[bytes, int] = {}  # a digest of each page's entry ids -> its page number
        while True:
            body = {
                "page": number,
                "per_page": self.per_page,
                "include_data": include_data,
                "sort": {"id": "desc" if newest_first else "asc"},
                "search": [],
            }
            envelope, holds_floats = self._request(self.search_path, body, number)
            items = envelope["items"]
            if len(items) > self.per_page:
                raise XanoProtocolError(
                    f"{self._where()}: page {number} holds {len(items)} entries for per_page "
                    f"{self.per_page}; refusing a server that ignores the page size"
                )
            items_total = envelope.get("itemsTotal")
            page_total = envelope.get("pageTotal")
            next_page = self._next_page(envelope, number)
            digest = _page_digest(items)
            if digest is not None:
                earlier = seen_pages.get(digest)
                if earlier is not None:
                    raise XanoProtocolError(
                        f"{self._where()}: page {number} repeats page {earlier} entry for entry; the server "
                        "does not advance through the log, stopping"
                    )
                seen_pages[digest] = number
            self.stats.pages += 1
            yield Page(
                number=number,
                items=items,
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
            if not items:
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

    def count_range(self, since: datetime, until: datetime) -> RangeCount:
        """How many entries the server says were created in [since, until). The filter syntax is not
        documented: the caller must check ``newest`` lies in the range before trusting the total."""
        body = range_search_body(since, until)
        envelope, _ = self._request(self.search_path, body, 1)
        total = envelope.get("itemsTotal")
        items = envelope.get("items") or []
        return RangeCount(
            items_total=total if isinstance(total, int) and not isinstance(total, bool) else None,
            newest=items[0] if items else None,
            query=describe_search(self._origin, self.workspace_id, body),
        )

    def _next_page(self, envelope: dict[str, Any], number: int) -> int | None:
        """The page after ``number``: the envelope's ``nextPage``, or without one (the guide's shape) what its
        ``pageTotal``, ``itemsTotal`` or a short page say."""
        if "nextPage" in envelope:
            return envelope["nextPage"]  # type: ignore[no-any-return]
        items = envelope["items"]
        if not items:
            return None
        page_total = envelope.get("pageTotal")
        if isinstance(page_total, int):
            return number + 1 if number < page_total else None
        items_total = envelope.get("itemsTotal")
        size = envelope.get("perPage")
        size = size if isinstance(size, int) and not isinstance(size, bool) and 0 < size else self.per_page
        if isinstance(items_total, int):
            return number + 1 if number * size < items_total else None
        return number + 1 if len(items) >= size else None

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
            self._check_stop()
            self._check_deadline(path, attempt)
            self.stats.requests += 1
            retry_after: float | None = None
            status: int | None = None
            body_problem = False
            try:
                status, content, headers = self._post(path, body, page)
            except httpx.TransportError as exc:
                if _permanent_transport_error(exc):
                    raise XanoUnavailableError(
                        self._scrub(f"{self._where(path)}: {_describe_transport(exc)}")
                    ) from None
                if self._unresolvable(exc):
                    raise XanoConfigError(
                        self._scrub(
                            f"{self._where(path)}: the host name {self._host!r} does not resolve "
                            f"({_describe_transport(exc)}); check the source's base_url"
                        )
                    ) from None
                last_seen = _describe_transport(exc)
            except _TooSlow as exc:
                last_seen = str(exc)
            else:
                if status in AUTH_STATUSES:
                    raise XanoAuthError(self._auth_message(status, path), status)
                if status in RETRYABLE_STATUSES:
                    last_seen = f"HTTP {status}"
                    retry_after = self._retry_after(headers.get("Retry-After"))
                elif not 200 <= status < 300:
                    detail = _error_detail(content, self._scrub)
                    raise XanoUnavailableError(
                        self._scrub(f"{self._where(path)}: the API answered HTTP {status}{detail}")
                    )
                else:
                    try:
                        return _envelope(content, headers.get("Content-Type"), page)
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
            if self.deadline is not None and time.monotonic() + delay > self.deadline:
                raise XanoUnavailableError(
                    self._scrub(
                        f"{self._where(path)}: the cycle's deadline leaves no time to retry after "
                        f"{attempt} attempts; last: {last_seen}"
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

    def _post(self, path: str, body: dict[str, Any], page: int) -> tuple[int, bytes, httpx.Headers]:
        """One POST, its body read whole within the request's deadline and the size limit.

        httpx's timeouts bound each network operation, so a server trickling a byte every few seconds could
        hold a request indefinitely; the body is read in chunks against a deadline for the whole request.
        """
        deadline = time.monotonic() + self.timeout
        if self.deadline is not None:
            deadline = min(deadline, self.deadline)
        with self._http.stream("POST", path, json=body) as response:
            limit = self.max_response_bytes
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > limit:
                raise self._too_large(path, page, f"{int(declared):,} bytes announced")
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > limit:
                    raise self._too_large(path, page, f"more than {limit:,} bytes")
                chunks.append(chunk)
                self._check_stop()
                if time.monotonic() > deadline:
                    raise _TooSlow(
                        f"the answer was still arriving at the request deadline ({self.timeout:g} s for "
                        "the whole request, or the cycle's deadline if sooner)"
                    )
            self._resolved()
            return response.status_code, b"".join(chunks), response.headers

    def _too_large(self, path: str, page: int, what: str) -> XanoProtocolError:
        return XanoProtocolError(
            f"{self._where(path)}: the answer for page {page} is too large ({what}; at most "
            f"{self.max_response_bytes:,} bytes are read for one page): lower the source's per_page"
        )

    def _check_deadline(self, path: str, attempt: int) -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise XanoUnavailableError(
                f"{self._where(path)}: the cycle's deadline passed before attempt {attempt}; stopping "
                "(a long walk goes on from its last staged page in the next cycle)"
            )

    def _resolved(self) -> None:
        with _RESOLVED_LOCK:
            _RESOLVED_HOSTS.add(self._host)

    def _unresolvable(self, exc: httpx.TransportError) -> bool:
        """A name lookup failure for a host that has never resolved in this process: a configuration error.

        Once a host has answered, a failed lookup is more likely a resolver outage and is retried."""
        with _RESOLVED_LOCK:
            if self._host in _RESOLVED_HOSTS:
                return False
        cause: BaseException | None = exc
        for _ in range(10):  # exception chains are short; the bound only guards against a cycle
            if cause is None:
                return False
            if isinstance(cause, socket.gaierror):
                return cause.errno in _NAME_ERRORS
            cause = cause.__cause__ or cause.__context__
        return False

    def _backoff(self, retry_number: int) -> float:
        policy = self.retry
        ceiling = min(policy.max_delay, policy.base_delay * 2 ** min(retry_number, 62))
        return self._rng.uniform(0, ceiling)

    def _retry_after(self, value: str | None) -> float | None:
        """Seconds to wait per a Retry-After header (delta-seconds or HTTP-date), capped; None if unusable."""
        seconds = retry_after_seconds(value, self._now())
        return None if seconds is None else min(seconds, self.retry.retry_after_cap)

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


def audit_search_path(workspace_id: int | None) -> str:
    """The audit-log search endpoint: one workspace's, or the instance-wide one."""
    if workspace_id is not None:
        return f"/api:meta/workspace/{workspace_id}/audit_log/search"
    return "/api:meta/audit_log/search"


def range_search_body(since: datetime, until: datetime) -> dict[str, Any]:
    """The search body that counts the entries created in [since, until): the poller's search with a
    ``created_at`` range in epoch milliseconds (Xano's ``field|operator`` filter form) and one entry per
    page, of which only the envelope's ``itemsTotal`` (and the entry, to check the filter held) matter."""
    return {
        "page": 1,
        "per_page": 1,
        "include_data": False,
        "sort": {"id": "desc"},
        "search": [{"created_at|>=": _epoch_ms(since)}, {"created_at|<": _epoch_ms(until)}],
    }


def describe_search(base_url: str, workspace_id: int | None, body: dict[str, Any]) -> str:
    """``POST <origin><path> <body>``: the request as a reader can repeat it (no token, no user info)."""
    url = httpx.URL(base_url.rstrip("/"))
    origin = str(url.copy_with(username=None, password=None, path="/", query=None, fragment=None)).rstrip("/")
    return f"POST {origin}{audit_search_path(workspace_id)} {json.dumps(body, separators=(',', ':'))}"


def _epoch_ms(instant: datetime) -> int:
    return (instant - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


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


def _envelope(content: bytes, content_type: str | None, page: int) -> tuple[dict[str, Any], bool]:
    """The documented envelope from a 2xx answer and whether its JSON held a float, or _BadBody saying
    what is wrong with it."""
    floats: list[str] = []  # the decoder's hooks run only for floats and NaN/Infinity: free otherwise

    def keep_float(text: str) -> float:
        floats.append(text)
        return float(text)

    try:
        envelope = json.loads(content, parse_float=keep_float, parse_constant=keep_float)
    except (UnicodeDecodeError, json.JSONDecodeError):
        kind = (content_type or "no content type").split(";")[0]
        raise _BadBody(f"a body that is not JSON ({kind}, {len(content)} bytes)") from None
    except RecursionError:
        # One entry nests deeper than the decoder can follow: decode the entries one by one, so that only
        # that entry is lost (the poller rejects it) and the page's others are archived.
        envelope = _envelope_entry_by_entry(content)
        floats.append("unknown")  # the slow, exact path for the archive's JSON
    if not isinstance(envelope, dict):
        raise _BadBody(f"a JSON {type(envelope).__name__} instead of the envelope object")
    if not isinstance(envelope.get("items"), list):
        raise _BadBody("an envelope without an items list")
    next_page = envelope.get("nextPage")
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


# Strings (with their escapes) and the structural characters of JSON: enough to find the entries' bounds.
_JSON_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},:]')


def _envelope_entry_by_entry(content: bytes) -> Any:
    """The envelope of a page that the decoder could not read whole, its entries decoded one at a time.

    An entry that still cannot be decoded becomes an :class:`UnreadableEntry`. Raises _BadBody when the
    page has no ``items`` array at the top level to split.
    """
    depth = 0
    items_open = items_close = -1
    starts: list[int] = []
    ends: list[int] = []
    previous = last_key = b""
    for match in _JSON_TOKEN.finditer(content):
        token = match.group()
        if token in (b"[", b"{"):
            at_items = depth == 1 and previous == b":" and last_key == b'"items"'
            if token == b"[" and at_items and items_open < 0:
                items_open = match.start()
                starts.append(match.end())
            depth += 1
        elif token in (b"]", b"}"):
            depth -= 1
            if depth == 1 and items_open >= 0 and items_close < 0:
                items_close = match.start()
                ends.append(match.start())
        elif token == b"," and depth == 2 and items_open >= 0 and items_close < 0:
            ends.append(match.start())
            starts.append(match.end())
        elif token.startswith(b'"') and depth == 1 and previous in (b"{", b","):
            last_key = token  # a key of the envelope
        previous = token
    if items_open < 0 or items_close < 0:
        raise _BadBody("a body the decoder cannot read (nested too deeply) without an items array to split")
    items: list[Any] = []
    for start, end in zip(starts, ends, strict=True):
        text = content[start:end]
        if not text.strip():
            continue  # an empty array
        try:
            items.append(json.loads(text))
        except RecursionError:
            items.append(UnreadableEntry(text.decode("utf-8", "replace"), "entry nests too deeply to decode"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise _BadBody("a body that is not JSON") from None
    try:
        envelope = json.loads(content[:items_open] + b"[]" + content[items_close + 1 :])
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise _BadBody("a body the decoder cannot read (nested too deeply)") from None
    if isinstance(envelope, dict):
        envelope["items"] = items
    return envelope


def _page_digest(items: list[Any]) -> bytes | None:
    """A digest of the ids of a page's entries, in order: two pages with the same digest served the same
    events. None for a page without an entry that has a plain id (nothing to compare it by)."""
    ids = [str(item["id"]) for item in items if isinstance(item, dict) and type(item.get("id")) in (int, str)]
    if not ids:
        return None
    return hashlib.blake2b("\x00".join(ids).encode("utf-8", "backslashreplace"), digest_size=16).digest()


# Header values are sent as ASCII; a token holding anything else cannot be sent (nor CR/LF, for safety).
_HEADER_SAFE = re.compile(r"[\x21-\x7e]*")
_NAME_ERRORS = {
    errno
    for errno in (
        getattr(socket, "EAI_NONAME", None),
        getattr(socket, "EAI_NODATA", None),
        getattr(socket, "EAI_FAIL", None),
    )
    if errno is not None
}
# Hosts that answered at least once in this process: a later lookup failure for them is retried as transient.
_RESOLVED_HOSTS: set[str] = set()
_RESOLVED_LOCK = threading.Lock()


class _TooSlow(Exception):
    """The answer did not arrive whole within the request's deadline (retried like a read timeout)."""


def _error_detail(content: bytes, scrub_text: Callable[[str], str]) -> str:
    """``: CODE: message`` from a Xano JSON error body, when there is one (short, for messages).

    Scrubbed before it is cut: a cut first could leave most of an echoed token that no longer matches.
    """
    try:
        body = json.loads(content)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
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

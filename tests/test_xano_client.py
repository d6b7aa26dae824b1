"""The Metadata API client over real HTTP on 127.0.0.1: against the simulator, and against small scripted
servers for misbehaviour the simulator does not offer. Sleep is injected, so retries never really wait."""

from __future__ import annotations

import json
import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trustme

from monitor.events import archive_json, canonical_json, normalize
from monitor.simulator import Simulator
from monitor.xano import (
    Page,
    RetryPolicy,
    XanoAuthError,
    XanoClient,
    XanoConfigError,
    XanoError,
    XanoProtocolError,
    XanoUnavailableError,
)
from tests.conftest import FakeClock

FAST = RetryPolicy(base_delay=0.5, max_delay=4.0)


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[Simulator]:
    start = clock.now - timedelta(days=2)
    with Simulator(
        seed=5, clock=clock, history_start=start, events_per_day=250, live_background=False
    ) as simulator:
        yield simulator


class Harness:
    def __init__(self, sim: Simulator, clock: FakeClock) -> None:
        self.sim, self.clock = sim, clock
        self.sleeps: list[float] = []

    def client(self, token: str | None = None, **options: Any) -> XanoClient:
        settings: dict[str, Any] = {
            "source_name": "prod",
            "workspace_id": 1,
            "per_page": 100,
            "timeout": 5.0,
            "retry": FAST,
            "sleep": self.sleeps.append,
            "rng": random.Random(1),
            "now": self.clock,
        }
        settings.update(options)
        base_url = settings.pop("base_url", self.sim.base_url)
        return XanoClient(base_url, token or self.sim.token, **settings)

    def ids(self, **options: Any) -> list[int]:
        newest_first = options.pop("newest_first", True)
        with self.client(**options) as client:
            return [
                entry["id"] for page in client.iter_pages(newest_first=newest_first) for entry in page.items
            ]


@pytest.fixture
def harness(sim: Simulator, clock: FakeClock) -> Harness:
    return Harness(sim, clock)


def visible_ids(sim: Simulator, workspace_id: int | None = None) -> list[int]:
    return [entry["id"] for entry in sim.visible_events(workspace_id)]


# --- walking the log --------------------------------------------------------------------------------------


@pytest.mark.parametrize("newest_first", [True, False])
def test_a_full_walk_collects_every_visible_event_exactly_once(harness: Harness, newest_first: bool) -> None:
    expected = visible_ids(harness.sim)
    assert len(expected) > 400
    with harness.client(per_page=37) as client:
        pages = list(client.iter_pages(newest_first=newest_first))
        assert client.stats.pages == len(pages) == client.stats.requests == -(-len(expected) // 37)
    ids = [entry["id"] for page in pages for entry in page.items]
    assert ids == (expected[::-1] if newest_first else expected)
    assert [page.number for page in pages] == list(range(1, len(pages) + 1))
    assert [page.next_page for page in pages] == [*range(2, len(pages) + 1), None]
    assert all(page.items_total == len(expected) for page in pages)
    assert harness.sleeps == []


def test_entries_are_kept_exactly_as_served(harness: Harness) -> None:
    event_id = harness.sim.add_event("Create Token", request_id="an unknown key", data={"nested": [1, 2]})
    with harness.client() as client:
        first: Page = next(client.iter_pages())
    assert first.items[0] == {entry["id"]: entry for entry in harness.sim.visible_events()}[event_id]
    assert first.items[0]["request_id"] == "an unknown key" and first.items[0]["data"] == {"nested": [1, 2]}
    with harness.client() as client:
        without = next(client.iter_pages(include_data=False))
    assert without.items[0]["data"] is None


def test_pages_are_fetched_lazily(harness: Harness) -> None:
    before = harness.sim.request_count
    with harness.client() as client:
        pages = client.iter_pages()
        next(pages)
        assert harness.sim.request_count == before + 1
        next(pages)
        assert harness.sim.request_count == before + 2


def test_instance_wide_and_workspace_paths(harness: Harness) -> None:
    elsewhere = harness.sim.add_event("Delete Table", workspace={"id": 2, "name": "internal-tools"})
    instance = harness.ids(workspace_id=None)
    workspace = harness.ids(workspace_id=1)
    assert elsewhere in instance and elsewhere not in workspace
    assert sorted(instance) == visible_ids(harness.sim) and sorted(workspace) == visible_ids(harness.sim, 1)
    assert harness.ids(workspace_id=2) == [elsewhere]
    with pytest.raises(XanoUnavailableError) as raised, harness.client(workspace_id=77) as client:
        list(client.iter_pages())
    assert "/api:meta/workspace/77/audit_log/search" in str(raised.value) and "404" in str(raised.value)
    assert harness.sleeps == []  # a 404 is not retried


# --- retries ----------------------------------------------------------------------------------------------


def test_429_with_retry_after_seconds_is_honoured_and_capped(harness: Harness) -> None:
    harness.sim.inject_status(429, count=2, retry_after="7")
    harness.sim.inject_status(429, count=1, retry_after="900")
    assert sorted(harness.ids(retry=RetryPolicy(retry_after_cap=120))) == visible_ids(harness.sim)
    assert harness.sleeps == [7.0, 7.0, 120.0]


def test_429_with_an_http_date_is_honoured_and_capped(harness: Harness, clock: FakeClock) -> None:
    harness.sim.inject_status(
        429, retry_after=format_datetime(clock.now + timedelta(seconds=30), usegmt=True)
    )
    harness.sim.inject_status(429, retry_after=format_datetime(clock.now + timedelta(hours=2), usegmt=True))
    harness.sim.inject_status(429, retry_after=format_datetime(clock.now - timedelta(minutes=5), usegmt=True))
    assert sorted(harness.ids(retry=RetryPolicy(retry_after_cap=60))) == visible_ids(harness.sim)
    assert harness.sleeps == [30.0, 60.0, 0.0]


def test_429_without_retry_after_backs_off_exponentially_with_full_jitter(harness: Harness) -> None:
    harness.sim.inject_status(429, count=5)
    policy = RetryPolicy(base_delay=1.0, max_delay=6.0)
    assert sorted(harness.ids(retry=policy, rng=random.Random(99))) == visible_ids(harness.sim)
    reference = random.Random(99)
    assert harness.sleeps == [reference.uniform(0, ceiling) for ceiling in (1.0, 2.0, 4.0, 6.0, 6.0)]


def test_unusable_retry_after_falls_back_to_backoff(harness: Harness) -> None:
    harness.sim.inject_status(503, retry_after="soon-ish")
    harness.ids(retry=RetryPolicy(base_delay=1.0), rng=random.Random(3))
    assert harness.sleeps == [random.Random(3).uniform(0, 1.0)]


@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_errors_then_success(harness: Harness, status: int) -> None:
    harness.sim.inject_status(status, count=3)
    with harness.client() as client:
        ids = [entry["id"] for page in client.iter_pages() for entry in page.items]
        assert client.stats.retries == 3 and client.stats.slept == pytest.approx(sum(harness.sleeps))
    assert sorted(ids) == visible_ids(harness.sim) and len(ids) == len(set(ids))
    assert len(harness.sleeps) == 3


def test_truncated_and_non_json_pages_then_success(harness: Harness) -> None:
    with harness.client() as client:
        pages = client.iter_pages()
        first = next(pages)
        harness.sim.inject_truncated(count=2)
        harness.sim.inject_non_json(count=1)
        rest = list(pages)
        assert client.stats.retries == 3
    ids = [entry["id"] for page in [first, *rest] for entry in page.items]
    assert sorted(ids) == visible_ids(harness.sim) and len(ids) == len(set(ids))


def test_a_body_that_stays_broken_is_a_protocol_error(harness: Harness) -> None:
    harness.sim.inject_truncated(count=10)
    with pytest.raises(XanoProtocolError) as raised:
        harness.ids(retry=RetryPolicy(max_attempts=3, base_delay=0.1))
    assert "3 attempts" in str(raised.value) and "not JSON" in str(raised.value)
    assert len(harness.sleeps) == 2


def test_spent_budget_gives_up_naming_what_it_saw(harness: Harness) -> None:
    harness.sim.inject_status(503, count=50, retry_after="10")
    with pytest.raises(XanoUnavailableError) as raised:
        harness.ids(retry=RetryPolicy(budget=25))
    assert harness.sleeps == [10.0, 10.0]  # a third wait would pass 25 s
    message = str(raised.value)
    assert "budget" in message and "503" in message and "prod" in message


def test_exhausted_attempts_give_up_naming_the_status(harness: Harness) -> None:
    harness.sim.inject_status(502, count=50)
    before = harness.sim.request_count
    with pytest.raises(XanoUnavailableError) as raised:
        harness.ids(retry=RetryPolicy(max_attempts=4, base_delay=0.1))
    assert harness.sim.request_count - before == 4 and len(harness.sleeps) == 3
    assert "4 attempts" in str(raised.value) and "HTTP 502" in str(raised.value)


def test_connection_refused_is_retried_then_unavailable(harness: Harness) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago and has no listener now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = harness.client(base_url=f"http://127.0.0.1:{port}", retry=RetryPolicy(max_attempts=4))
    with pytest.raises(XanoUnavailableError) as raised, client:
        list(client.iter_pages())
    assert client.stats.requests == 4 and len(harness.sleeps) == 3
    assert "ConnectError" in str(raised.value) and f"127.0.0.1:{port}" in str(raised.value)


def test_a_read_timeout_is_retried(harness: Harness) -> None:
    with socket.socket() as silent:  # accepts connections (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        client = harness.client(
            base_url=f"http://127.0.0.1:{port}", timeout=0.2, retry=RetryPolicy(max_attempts=2)
        )
        with pytest.raises(XanoUnavailableError) as raised, client:
            list(client.iter_pages())
    assert "ReadTimeout" in str(raised.value) and len(harness.sleeps) == 1


def test_a_status_that_is_not_retried(harness: Harness) -> None:
    harness.sim.inject_status(500)
    before = harness.sim.request_count
    with pytest.raises(XanoUnavailableError) as raised:
        harness.ids()
    assert harness.sim.request_count - before == 1 and harness.sleeps == []
    assert "HTTP 500" in str(raised.value) and "ERROR_FATAL" in str(raised.value)


# --- authentication ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
def test_auth_errors_raise_at_once_with_a_plain_message(harness: Harness, status: int) -> None:
    token = "wrong-token-abc123" if status == 401 else harness.sim.token
    if status == 403:
        harness.sim.inject_status(403)
    before = harness.sim.request_count
    with pytest.raises(XanoAuthError) as raised, harness.client(token=token) as client:
        list(client.iter_pages())
    assert harness.sim.request_count - before == 1 and client.stats.requests == 1 and harness.sleeps == []
    error = raised.value
    assert error.status == status and isinstance(error, XanoError)
    message = str(error)
    assert "expired" in message and "7 days" in message and '"Workspace Log: Read"' in message
    assert "'prod'" in message and "/api:meta/workspace/1/audit_log/search" in message
    assert token not in message and token not in repr(error)


# --- timestamps -------------------------------------------------------------------------------------------


def test_every_timestamp_format_served_normalises_to_the_right_instant(clock: FakeClock) -> None:
    winter = datetime(2026, 3, 1, 23, 30, 0, 123456, tzinfo=UTC)  # Berlin: 2026-03-02 00:30 (+01:00)
    summer = datetime(2026, 7, 1, 12, 0, 0, 500000, tzinfo=UTC)  # Berlin: 14:00 (+02:00)
    clock.now = datetime(2026, 7, 2, tzinfo=UTC)
    quiet = {"events_per_day": 0, "incidents": False, "live_background": False}
    with Simulator(seed=1, clock=clock, history_start=clock.now - timedelta(hours=1), **quiet) as sim:  # type: ignore[arg-type]
        for _ in range(64):
            sim.add_event("Update Function", created_at=winter)
            sim.add_event("Update Function", created_at=summer)
        with XanoClient(sim.base_url, sim.token, source_name="prod", per_page=50) as client:
            entries = [entry for page in client.iter_pages() for entry in page.items]
    seen: dict[Any, datetime] = {}
    for entry in entries:
        seen[entry["created_at"]] = normalize("prod", entry).created_at
    assert seen == {
        "2026-03-01 23:30:00.123456+00": winter,
        1772407800123: winter.replace(microsecond=123000),
        "2026-03-01T23:30:00.123Z": winter.replace(microsecond=123000),
        "2026-03-02T00:30:00.123456+01:00": winter,
        "2026-07-01 12:00:00.500000+00": summer,
        1782907200500: summer,
        "2026-07-01T12:00:00.500Z": summer,
        "2026-07-01T14:00:00.500000+02:00": summer,
    }


def test_the_whole_generated_log_normalises(harness: Harness) -> None:
    with harness.client(workspace_id=None, per_page=500) as client:
        entries = [entry for page in client.iter_pages() for entry in page.items]
    forms = {type(entry["created_at"]).__name__ for entry in entries}
    assert forms == {"int", "str"}
    times = [normalize("prod", entry).created_at for entry in entries]
    assert all(harness.clock.now - timedelta(days=2) <= t <= harness.clock.now for t in times)


# --- secrets ----------------------------------------------------------------------------------------------


def test_the_token_never_shows_in_repr_errors_or_logs(
    harness: Harness, caplog: pytest.LogCaptureFixture, scripted: ScriptedServer
) -> None:
    caplog.set_level(logging.DEBUG)
    client = harness.client()
    assert harness.sim.token not in repr(client) and "prod" in repr(client)
    harness.sim.inject_status(429, count=2)
    harness.sim.inject_truncated()
    harness.sim.inject_status(503, retry_after="1")
    with client:
        list(client.iter_pages())
    retries = [record for record in caplog.records if record.name == "monitor.xano"]
    assert len(retries) == 4
    assert [record.attempt for record in retries] == [1, 2, 3, 4]  # type: ignore[attr-defined]
    assert [record.status for record in retries] == [429, 429, 200, 503]  # type: ignore[attr-defined]
    assert all(record.source == "prod" and record.delay >= 0 for record in retries)  # type: ignore[attr-defined]
    assert retries[-1].delay == 1.0  # type: ignore[attr-defined]

    secret = "s3cr3t-" + "x" * 20
    with pytest.raises(XanoAuthError) as auth, harness.client(token=secret) as bad:
        list(bad.iter_pages())
    # A server that echoes the token back in its error body: the message must not repeat it.
    scripted.respond = lambda request: (
        400,
        {},
        json.dumps({"code": "X", "message": f"bad {secret}"}).encode(),
    )
    with (
        pytest.raises(XanoUnavailableError) as echoed,
        harness.client(token=secret, base_url=scripted.url) as bad,
    ):
        list(bad.iter_pages())
    assert "bad [redacted]" in str(echoed.value)
    texts = [repr(bad), str(auth.value), repr(auth.value), str(echoed.value), caplog.text]
    texts += [repr(vars(record)) for record in caplog.records]
    assert all(secret not in text and harness.sim.token not in text for text in texts)


def test_tls_verification_cannot_be_switched_off(harness: Harness) -> None:
    with pytest.raises(ValueError, match="cannot be turned off"):
        harness.client(verify=False)


def test_tls_verifies_against_a_ca_bundle_and_refuses_an_unknown_issuer(
    harness: Harness, tmp_path: Path
) -> None:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server = ScriptedServer(tls=context)
    server.respond = lambda request: (200, {}, envelope(1, None))
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    try:
        with harness.client(base_url=server.url, verify=str(bundle)) as trusted:
            assert [page.items for page in trusted.iter_pages()] == [[{"id": 1}]]
        with pytest.raises(XanoUnavailableError) as raised, harness.client(base_url=server.url) as untrusted:
            list(untrusted.iter_pages())
        assert "CERTIFICATE_VERIFY_FAILED" in str(raised.value)
        assert untrusted.stats.requests == 1 and harness.sleeps == []  # retrying cannot fix a certificate
        assert len(server.requests) == 1
    finally:
        server.close()


# --- a misbehaving server ---------------------------------------------------------------------------------

Request = dict[str, Any]
Responder = Callable[[Request], tuple[int, dict[str, str], bytes]]


class ScriptedServer:
    """A tiny real HTTP server whose answers a test scripts; it records every request."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[Request] = []
        self.respond: Responder = lambda request: (200, {}, b"{}")
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                request = {
                    "path": self.path,
                    "headers": dict(self.headers),
                    "body": json.loads(self.rfile.read(length)),
                }
                owner.requests.append(request)
                status, headers, body = owner.respond(request)
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    yield server
    server.close()


def envelope(page: int, next_page: int | None, items: list[Any] | None = None, **extra: Any) -> bytes:
    body = {
        "items": [{"id": page}] if items is None else items,
        "curPage": page,
        "nextPage": next_page,
        **extra,
    }
    return json.dumps(body).encode()


def test_request_shape_and_headers(harness: Harness, scripted: ScriptedServer) -> None:
    scripted.respond = lambda request: (200, {}, envelope(1, None))
    with harness.client(base_url=scripted.url, per_page=250) as client:
        list(client.iter_pages(newest_first=False, include_data=False))
    (request,) = scripted.requests
    assert request["path"] == "/api:meta/workspace/1/audit_log/search"
    assert request["body"] == {
        "page": 1,
        "per_page": 250,
        "include_data": False,
        "sort": {"id": "asc"},
        "search": [],
    }
    assert request["headers"]["Authorization"] == f"Bearer {harness.sim.token}"
    assert request["headers"]["User-Agent"].startswith("xano-audit-monitor/")


def test_a_next_page_that_does_not_advance_is_a_protocol_error(
    harness: Harness, scripted: ScriptedServer
) -> None:
    scripted.respond = lambda request: (200, {}, envelope(request["body"]["page"], 1))
    with (
        pytest.raises(XanoProtocolError, match="refusing to loop"),
        harness.client(base_url=scripted.url) as client,
    ):
        list(client.iter_pages())
    assert len(scripted.requests) == 1


def test_paging_past_the_page_total_stops(harness: Harness, scripted: ScriptedServer) -> None:
    def endless(request: Request) -> tuple[int, dict[str, str], bytes]:
        page = request["body"]["page"]
        return 200, {}, envelope(page, page + 1, pageTotal=3, itemsTotal=300)

    scripted.respond = endless
    with (
        pytest.raises(XanoProtocolError, match="page total"),
        harness.client(base_url=scripted.url) as client,
    ):
        list(client.iter_pages())
    assert 3 < len(scripted.requests) <= 3 + 10  # some slack for a log that grows during the walk


def test_an_empty_page_announcing_more_is_a_protocol_error(
    harness: Harness, scripted: ScriptedServer
) -> None:
    scripted.respond = lambda request: (200, {}, envelope(request["body"]["page"], 2, items=[]))
    with pytest.raises(XanoProtocolError, match="empty"), harness.client(base_url=scripted.url) as client:
        list(client.iter_pages())


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'{"items": {"id": 1}, "nextPage": null}',
        b'{"items": [], "curPage": 1, "nextPage": true}',
        b'{"items": [], "curPage": 2, "nextPage": null}',
        b'{"items": [], "curPage": 1, "nextPage": "2"}',
    ],
)
def test_a_body_that_is_not_the_envelope_is_retried(
    harness: Harness, scripted: ScriptedServer, body: bytes
) -> None:
    answers = iter([body, envelope(1, None)])
    scripted.respond = lambda request: (200, {}, next(answers))
    with harness.client(base_url=scripted.url) as client:
        pages = list(client.iter_pages())
    assert [page.items for page in pages] == [[{"id": 1}]] and len(harness.sleeps) == 1


def test_a_page_says_whether_its_json_held_a_float(harness: Harness, scripted: ScriptedServer) -> None:
    # The archive trusts the flag to skip its own search for floats (orjson spells some differently), so
    # a float anywhere, NaN and Infinity included, must set it; a page of integers and strings must not.
    bodies = {
        1: b'{"items": [{"id": 1, "data": {"ratio": 1e-07}}], "curPage": 1, "nextPage": 2}',
        2: b'{"items": [{"id": 2, "data": {"x": [NaN, -Infinity]}}], "curPage": 2, "nextPage": 3}',
        3: b'{"items": [{"id": 3, "msg": "1.5e-07 in text", "data": {"n": 10000000000000000000000}}], '
        b'"curPage": 3, "nextPage": null}',
    }
    scripted.respond = lambda request: (200, {}, bodies[request["body"]["page"]])
    with harness.client(base_url=scripted.url) as client:
        pages = list(client.iter_pages())
    assert [page.holds_floats for page in pages] == [True, True, False]
    for page in pages:
        for item in page.items:
            assert archive_json(item, may_hold_floats=page.holds_floats) == canonical_json(item)


# --- pages in the guide's shape, without nextPage -----------------------------------------------------------


@pytest.mark.parametrize("newest_first", [True, False])
def test_the_guide_envelope_is_walked_to_its_items_total(clock: FakeClock, newest_first: bool) -> None:
    """The simulator serving ``{"items": [...], "itemsTotal": N}`` only (``simulate --envelope guide``)."""
    with Simulator(
        seed=5,
        clock=clock,
        history_start=clock.now - timedelta(days=2),
        events_per_day=250,
        live_background=False,
        envelope="guide",
    ) as sim:
        expected = visible_ids(sim)
        client = XanoClient(sim.base_url, sim.token, source_name="prod", workspace_id=1, per_page=37)
        with client:
            pages = list(client.iter_pages(newest_first=newest_first))
        assert sim.request_count == len(pages) == -(-len(expected) // 37)
    ids = [entry["id"] for page in pages for entry in page.items]
    assert ids == (expected[::-1] if newest_first else expected)
    assert [page.next_page for page in pages] == [*range(2, len(pages) + 1), None]


def test_without_any_total_a_short_page_ends_the_walk(harness: Harness, scripted: ScriptedServer) -> None:
    def only_items(request: Request) -> tuple[int, dict[str, str], bytes]:
        page = request["body"]["page"]
        count = 10 if page < 3 else 4  # pages 1 and 2 full, page 3 short
        return 200, {}, json.dumps({"items": [{"id": page * 100 + n} for n in range(count)]}).encode()

    scripted.respond = only_items
    with harness.client(base_url=scripted.url, per_page=10) as client:
        pages = list(client.iter_pages())
    assert [len(page.items) for page in pages] == [10, 10, 4] and len(scripted.requests) == 3
    assert harness.sleeps == []


def test_a_page_total_ends_the_walk_without_next_page(harness: Harness, scripted: ScriptedServer) -> None:
    def by_total(request: Request) -> tuple[int, dict[str, str], bytes]:
        page = request["body"]["page"]
        return 200, {}, json.dumps({"items": [{"id": page}] * 1, "pageTotal": 2}).encode()

    scripted.respond = by_total
    with harness.client(base_url=scripted.url, per_page=10) as client:
        assert [page.number for page in client.iter_pages()] == [1, 2]


# --- names that do not resolve ------------------------------------------------------------------------------


def test_a_host_name_that_never_resolved_is_a_configuration_error_at_once(harness: Harness) -> None:
    client = harness.client(base_url="https://no-such-instance.invalid")
    with pytest.raises(XanoConfigError) as raised, client:
        list(client.iter_pages())
    assert "'no-such-instance.invalid' does not resolve" in str(raised.value)
    assert "base_url" in str(raised.value)
    assert client.stats.requests == 1 and harness.sleeps == []


# --- a request that takes too long, pages that repeat, answers too large ------------------------------------


class Trickle:
    """A server that answers 200 at once and then sends its body one byte every ``gap`` seconds."""

    def __init__(self, body: bytes, gap: float) -> None:
        self.body, self.gap = body, gap
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.closed = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.closed.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with connection:
            connection.recv(65536)
            head = (
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(self.body)}\r\n\r\n"
            )
            try:
                connection.sendall(head.encode())
                for byte in self.body:
                    if self.closed.wait(self.gap):
                        return
                    connection.sendall(bytes([byte]))
            except OSError:
                return

    def close(self) -> None:
        self.closed.set()
        self.listener.close()


@pytest.fixture
def trickle() -> Iterator[Trickle]:
    server = Trickle(envelope(1, None, items=[{"id": n} for n in range(5)]), gap=0.2)
    yield server
    server.close()


def test_a_body_trickling_in_is_cut_off_at_the_request_deadline(harness: Harness, trickle: Trickle) -> None:
    """Every read gets a byte well within the 1 s timeout, but the whole body would take ~15 s."""
    client = harness.client(base_url=trickle.url, timeout=1.0, retry=RetryPolicy(max_attempts=2))
    with pytest.raises(XanoUnavailableError) as raised, client:
        list(client.iter_pages())
    assert "request deadline" in str(raised.value) and client.stats.requests == 2
    assert len(harness.sleeps) == 1  # retried once, like a read timeout


def test_the_client_deadline_bounds_everything_it_does(harness: Harness, trickle: Trickle) -> None:
    client = harness.client(base_url=trickle.url, timeout=30.0, deadline=time.monotonic() + 0.5)
    with pytest.raises(XanoUnavailableError) as raised, client:
        list(client.iter_pages())
    assert "deadline" in str(raised.value)
    spent = harness.client(deadline=time.monotonic() - 1)
    with pytest.raises(XanoUnavailableError, match="deadline passed"), spent:
        list(spent.iter_pages())
    assert spent.stats.requests == 0


def test_a_server_repeating_a_page_is_stopped(harness: Harness, scripted: ScriptedServer) -> None:
    items = [{"id": 300 - n} for n in range(3)]
    scripted.respond = lambda request: (
        200,
        {},
        envelope(request["body"]["page"], request["body"]["page"] + 1, items),
    )
    walked = 0
    with (
        pytest.raises(XanoProtocolError, match="page 2 repeats page 1"),
        harness.client(base_url=scripted.url, per_page=3) as client,
    ):
        for _ in client.iter_pages():
            walked += 1
            if walked > 20:
                pytest.fail("walked 20 pages of the same entries")
    assert len(scripted.requests) == 2


def test_an_answer_larger_than_the_limit_is_refused_naming_per_page(
    harness: Harness, scripted: ScriptedServer
) -> None:
    big = [{"id": n, "msg": "x" * 1000} for n in range(100)]
    scripted.respond = lambda request: (200, {}, envelope(1, None, big))
    client = harness.client(base_url=scripted.url, max_response_bytes=50_000)
    with pytest.raises(XanoProtocolError) as raised, client:
        list(client.iter_pages())
    assert "too large" in str(raised.value) and "per_page" in str(raised.value)
    assert len(scripted.requests) == 1 and harness.sleeps == []  # the same page would be as large again
    assert XanoClient("http://127.0.0.1:1", "t", source_name="x").max_response_bytes == 32 * 1024 * 1024


def test_a_page_holding_more_entries_than_asked_is_refused(
    harness: Harness, scripted: ScriptedServer
) -> None:
    scripted.respond = lambda request: (200, {}, envelope(1, None, [{"id": n} for n in range(50)]))
    with (
        pytest.raises(XanoProtocolError, match="50 entries for per_page 10"),
        harness.client(base_url=scripted.url, per_page=10) as client,
    ):
        list(client.iter_pages())

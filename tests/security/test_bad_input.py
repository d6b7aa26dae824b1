"""Bad input, by property: whatever the API serves or an operator writes, the answer is a clear rejection or
error message, never a crash, a traceback or a lost cursor.

- Audit entries (arbitrary JSON, and near-valid entries with fuzzed fields) through ``normalize``.
- A poll cycle over pages mixing junk and good entries, served over real HTTP on 127.0.0.1 to the real
  ``XanoClient`` and ``Poller`` with a real ``Store``: good entries archived, one logged reason per
  rejected entry, the cursor at the newest archived id (never past an unarchived good one).
- Arbitrary YAML (text and YAML-shaped data) through the config loader and the rule loader, and a few
  generated cases through the CLI (exit 1 or 2, no traceback).

Examples are bounded (``max_examples``) so the file runs in well under 30 s.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from monitor.config import Config, ConfigError, parse_config
from monitor.engine import RuleLoadError, load_ruleset
from monitor.events import AuditEvent, NormalizationError, normalize
from monitor.poller import Poller
from monitor.store import Store
from monitor.xano import RetryPolicy, XanoClient
from tests.conftest import FakeClock
from tests.security.security_support import PageServer, cli

BOUNDED = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# --- strategies ----------------------------------------------------------------------------------------

# Text as json.loads can produce it from an API body: any code point, lone surrogates included ("\ud800").
any_text = st.text(st.characters(codec=None, categories=None), max_size=20) | st.sampled_from(
    ["\ud800", "a\udfffb", "\x00", "🙂" * 50, "ß" * 3000, "<!channel>", "${HOME}", "9" * 5000]
)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | any_text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)

valid_times = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
).map(lambda moment: moment.isoformat())
odd_times = st.one_of(
    valid_times,
    st.integers(),  # epoch milliseconds, in range or wildly out of it
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [
            "2026-03-04 10:00:00+01",
            "2026-03-04 10:00:00.123456789+0530",
            "2026-03-04T10:00:00Z",
            "1772618400000",
            "0001-01-01 00:00:00+01",  # a UTC instant before year 1
            "9999-12-31 23:59:59-05",  # a UTC instant after year 9999
            "2026-13-45 10:00:00",
            "2026-03-04 25:61:00+99:99",
            "9" * 5000,  # more digits than int() converts
            "1" * 400 + ".5",
            "yesterday",
            "",
            "١٢٣",  # digits of another script
        ]
    ),
    json_values,
)
odd_ids = st.one_of(
    st.integers(min_value=1, max_value=2**63 - 1),
    st.integers(),
    st.sampled_from([2**63, -(2**63) - 1, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["17", " 17 ", "1e5", "abc", "9" * 5000, "", True, False]),
    json_values,
)


@st.composite
def near_valid_entries(draw: st.DrawFn) -> dict[str, Any]:
    """An audit entry with every field possibly wrong: types, formats, sizes, missing keys, nested junk."""
    entry: dict[str, Any] = {
        "id": draw(odd_ids),
        "created_at": draw(odd_times),
        "type": draw(st.one_of(st.sampled_from(["Login", "Delete Table"]), any_text, json_values)),
        "msg": draw(st.one_of(any_text, json_values)),
        "user": draw(st.one_of(st.none(), st.fixed_dictionaries({"email": any_text}), json_values)),
        "workspace": draw(st.one_of(st.none(), st.fixed_dictionaries({"name": any_text}), json_values)),
        "data": draw(json_values),
    }
    for key in draw(st.sets(st.sampled_from(sorted(entry)), max_size=3)):
        del entry[key]
    entry.update(draw(st.dictionaries(any_text, json_values, max_size=2)))
    return entry


def through_json(value: Any) -> Any:
    """The value as the client sees it: serialised by a server, parsed by ``json.loads``."""
    return json.loads(json.dumps(value, ensure_ascii=True))


def check_normalisation(entry: Any) -> AuditEvent | None:
    """normalize() returns a sound event or raises NormalizationError with a message; nothing else."""
    try:
        event = normalize("prod", entry)
    except NormalizationError as exc:
        assert str(exc).strip(), "a rejection must say why"
        return None
    assert -(2**63) <= event.id < 2**63
    assert event.created_at.tzinfo is not None and event.created_at.utcoffset() == timedelta(0)
    assert isinstance(event.type, str) and isinstance(event.msg, str)
    event.to_dict()  # templates and exports read this; it must not fail either
    return event


# --- normalisation -------------------------------------------------------------------------------------


@BOUNDED
@given(json_values)
def test_any_json_value_is_an_event_or_a_clear_rejection(value: Any) -> None:
    check_normalisation(through_json(value))


@BOUNDED
@given(near_valid_entries())
@example({"id": float("inf"), "created_at": "2026-03-04T10:00:00Z"})
@example({"id": 1, "created_at": float("nan")})
@example({"id": 1, "created_at": "9" * 5000})
@example({"id": 1, "created_at": "0001-01-01 00:00:00+01"})
@example({"id": 1, "created_at": "9999-12-31 23:59:59-05"})
def test_near_valid_entries_are_events_or_clear_rejections(entry: dict[str, Any]) -> None:
    check_normalisation(through_json(entry))


# --- a poll cycle over junk ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def page_server() -> Iterator[PageServer]:
    server = PageServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def page_client(page_server: PageServer) -> Iterator[XanoClient]:
    """One client for every example: building an HTTPS-capable client loads the CA store (slow)."""
    with XanoClient(
        page_server.url,
        "t0ken-xyz",
        source_name="prod",
        per_page=50,
        timeout=10,
        retry=RetryPolicy(max_attempts=1),
    ) as client:
        yield client


T0 = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)

# Entries that must be rejected whatever else they hold: each breaks one rule of the entry format.
junk_fields = st.one_of(
    st.just({"id": None}),
    st.fixed_dictionaries({"id": st.sampled_from(["abc", "", "1.5", [], {}, True, float("nan"), 1.5])}),
    st.fixed_dictionaries({"id": st.sampled_from([float("inf"), 2**63, 10**400])}),
    st.fixed_dictionaries(
        {"created_at": st.sampled_from(["yesterday", "", "9" * 5000, None, [], {}, float("nan")])}
    ),
    st.fixed_dictionaries(
        {"created_at": st.sampled_from(["0001-01-01 00:00:00+01", "2026-13-45 10:00:00", 10**30])}
    ),
    st.fixed_dictionaries({"msg": st.sampled_from(["\ud800", "ok \udfff ok"])}),  # not valid Unicode
)


@st.composite
def junk_pages(draw: st.DrawFn, first_id: int) -> tuple[list[Any], list[int]]:
    """One newest-first page: good entries (ids above ``first_id``) mixed with junk; and the good ids."""
    count = draw(st.integers(min_value=0, max_value=8))
    good_ids = sorted(
        draw(st.sets(st.integers(first_id + 1, first_id + 200), min_size=count, max_size=count))
    )
    good = [
        {
            "id": event_id,
            "created_at": (T0 + timedelta(seconds=event_id)).isoformat(),  # time grows with the id
            "type": draw(st.sampled_from(["Login", "Delete Table", "Odd Type"])),
            "msg": draw(st.text(max_size=30)),  # valid Unicode, odd characters welcome
            "user": draw(st.one_of(st.none(), st.just({"id": 1, "email": "ana@corp.io"}))),
        }
        for event_id in good_ids
    ]
    junk: list[Any] = []
    for _ in range(draw(st.integers(min_value=0, max_value=6))):
        breakage = draw(junk_fields)
        base = {"id": draw(st.integers(first_id + 1, first_id + 200)), "created_at": T0.isoformat()}
        junk.append({**base, **breakage})
    junk += draw(st.lists(st.one_of(json_scalars, st.lists(json_scalars, max_size=2)), max_size=3))
    if not good and not junk:
        junk = [None]  # an empty page may not announce a next one; one junk item keeps the walk going
    page: list[Any] = sorted(good, key=lambda entry: -entry["id"])
    for item in junk:  # junk anywhere in the page
        page.insert(draw(st.integers(0, len(page))), item)
    return page, good_ids


class RejectionLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.reasons: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "entry rejected":
            self.reasons.append(str(getattr(record, "reason", "")))


@settings(BOUNDED, max_examples=40)
@given(data=st.data())
def test_a_poll_cycle_archives_the_good_rejects_the_junk_and_keeps_the_cursor(
    data: st.DataObject,
    page_server: PageServer,
    page_client: XanoClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    directory = tmp_path_factory.mktemp("poll")
    config = Config.model_validate(
        {
            "state": {"path": str(directory / "a.db")},
            "sources": [{"name": "prod", "base_url": page_server.url, "token": "t0ken-xyz", "per_page": 50}],
        }
    )
    source = config.sources[0]
    clock = FakeClock(T0 + timedelta(hours=1))
    rejections = RejectionLog()
    logging.getLogger("monitor.poller").addHandler(rejections)
    store = Store.open(config.state.path)
    try:
        poller = Poller(store, config, None, clock=clock, client_factory=lambda _: nullcontext(page_client))
        archived: set[int] = set()
        cursor_id: int | None = None
        junk_served = False
        for cycle in range(2):  # the second cycle starts from the first one's cursor
            # The second cycle's ids may lie wholly below the first one's cursor (late commits), straddle
            # it, or lie above it: only the first two show a cursor moving backwards.
            base = 1000 if cycle == 0 else data.draw(st.sampled_from([400, 900, 1150, 2000]))
            pages = [data.draw(junk_pages(first_id=base + 250 * n)) for n in range(2)]
            pages.reverse()  # newest-first: the page with the higher ids is page 1
            page_server.pages = [items for items, _ in pages]
            served_good = {event_id for _, ids in pages for event_id in ids}
            served = sum(len(items) for items, _ in pages)
            rejections.reasons.clear()

            result = poller.poll(source)

            assert result.ok, result.error
            archived |= served_good
            ids_in_archive = {row[0] for row in store.conn.execute("SELECT event_id FROM events")}
            assert ids_in_archive == archived
            assert result.rejected == served - len(served_good) == len(rejections.reasons)
            assert all(reason.strip() for reason in rejections.reasons)
            cursor = store.get_cursor("prod")
            assert cursor is not None
            # The cursor is the newest archived id: it never falls back, never passes an unarchived event.
            expected = max([*served_good, *([cursor_id] if cursor_id is not None else [])], default=None)
            assert cursor.last_id == (expected if expected is not None else 0)
            cursor_id = cursor.last_id
            clock.advance(timedelta(minutes=5))
            junk_served = junk_served or served > len(served_good)
        assert store.verify().ok
        # Rejected entries are kept (deduplicated by content) with their reason, for an operator to inspect.
        kept = store.conn.execute("SELECT count(*) FROM rejected WHERE reason != ''").fetchone()[0]
        assert (kept >= 1) == junk_served
    finally:
        logging.getLogger("monitor.poller").removeHandler(rejections)
        store.close()


# --- the config loader ---------------------------------------------------------------------------------

yaml_keys = st.sampled_from(
    [
        "timezone",
        "state",
        "path",
        "retention_days",
        "sources",
        "name",
        "base_url",
        "token",
        "poll_interval",
        "per_page",
        "backfill",
        "rules",
        "paths",
        "alerts",
        "slack",
        "email",
        "smtp",
        "server",
        "listen",
        "report",
        "schedule",
        "id",
        "match",
        "severity",
        "title",
        "threshold",
        "tests",
        "lists",
        "calendars",
        "x",
    ]
)
yaml_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.sampled_from(
        ["America", "Europe/Berlin", "x" * 300, "2026-13-45", "5m", "-1s", "${NOT_SET}", "${X:-1}", "{{ x }}"]
    ),
)
yaml_data = st.recursive(
    yaml_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(yaml_keys, inner, max_size=4),
    max_leaves=15,
)

# YAML that is only sometimes valid: fragments glued together, including tags, anchors and aliases.
yaml_fragments = st.sampled_from(
    [
        "timezone: America\n",
        "timezone: !!python/object:os.system x\n",
        "timezone: !custom x\n",
        "a: &a [*a]\n",
        "a: &a {b: *a}\n",
        "state: {path: x, retention_days: 2026-13-45}\n",
        "sources:\n  - name: p\n    backfill: 2026-02-30\n",
        "? [a, b]\n: 1\n",
        "--- a\n--- b\n",
        "key: [unclosed\n",
        "\t- tab\n",
        "x: *missing\n",
        "<<: {a: 1}\n",
        "timezone: " + "x" * 300 + "\n",
        "sources: 5\n",
        "server: {listen: 'nope'}\n",
        "- a list\n",
        "timezone: ${UNSET_VARIABLE}\n",
        "%YAML 9.9\n---\na: 1\n",
        "a: !!binary notbase64\n",
        "a: !!timestamp 2026-99-99\n",
        "a: !!int abc\n",
        "a: 0x\n",
        "id: r\nmatch: {a: {type: Login}}\nseverity: high\ntitle: t\n",
        "lists: {l: [1, 2]}\n",
        "calendars: {c: {timezone: Nowhere/Land}}\n",
        "id: r\nalert: {text: '{{ event.__class__ }}'}\n",
    ]
)
yaml_texts = st.one_of(
    st.lists(yaml_fragments, min_size=1, max_size=3).map("".join),
    yaml_data.map(lambda value: yaml.safe_dump(value, allow_unicode=True)),
    st.text(max_size=60),
)


def check_config(text: str) -> None:
    try:
        parse_config(text, "audit-monitor.yaml", {"X": "1"})
    except ConfigError as exc:
        assert str(exc).startswith("audit-monitor.yaml"), str(exc)  # the message names the file


@BOUNDED
@given(yaml_texts)
@example("timezone: America\n")
@example("a: &a [*a]\n")
@example("timezone: !!python/object:os.system x\n")
@example("state: {path: x, retention_days: 2026-13-45}\n")
@example("timezone: " + "x" * 300 + "\n")
def test_any_yaml_text_is_a_config_or_a_config_error(text: str) -> None:
    check_config(text)


@BOUNDED
@given(yaml_data)
def test_any_yaml_shaped_data_is_a_config_or_a_config_error(data: Any) -> None:
    check_config(yaml.safe_dump(data, allow_unicode=True))
    check_config(json.dumps(data))  # JSON is YAML too, with other quoting


# --- the rule loader -----------------------------------------------------------------------------------


def check_rules(text: str, directory: Path) -> None:
    path = directory / "fuzzed.yml"
    path.write_text(text, encoding="utf-8")
    try:
        load_ruleset([path])
    except RuleLoadError as exc:
        assert exc.errors and all(str(path) in line for line in exc.errors), exc.errors


@BOUNDED
@given(text=yaml_texts)
@example(text="a: &a [*a]\n")
@example(text="id: r\nalert: {text: '{{ event.__class__ }}'}\n")
@example(text="lists: {l: [2026-02-30]}\n")
@example(text="calendars: {c: {timezone: America}}\n")
def test_any_yaml_text_is_rules_or_a_rule_load_error(text: str, tmp_path: Path) -> None:
    check_rules(text, tmp_path)


rule_documents = st.fixed_dictionaries(
    {"id": st.one_of(st.just("fuzz.rule"), yaml_scalars)},
    optional={
        "title": yaml_data,
        "severity": st.one_of(st.sampled_from(["low", "high"]), yaml_data),
        "match": st.one_of(st.just({"a": {"type": "Login"}}), yaml_data),
        "condition": st.one_of(st.just("a"), yaml_data),
        "threshold": yaml_data,
        "new_value": yaml_data,
        "alert": yaml_data,
        "tests": yaml_data,
        "enabled": yaml_data,
    },
)


@BOUNDED
@given(docs=st.lists(rule_documents, min_size=1, max_size=3))
def test_any_rule_shaped_data_is_rules_or_a_rule_load_error(docs: list[Any], tmp_path: Path) -> None:
    check_rules(yaml.safe_dump_all(docs, allow_unicode=True), tmp_path)


# --- through the CLI -----------------------------------------------------------------------------------


CLI_CASES = [
    "timezone: America\n",
    "a: &a [*a]\n",
    "timezone: !!python/object:os.system x\n",
    "sources:\n  - name: p\n    base_url: https://x.io\n    token: t\n    backfill: 2026-02-30\n",
    "key: [unclosed\n",
]


@pytest.mark.parametrize("text", CLI_CASES)
def test_bad_config_through_the_cli_exits_2_without_a_traceback(text: str, tmp_path: Path) -> None:
    config = tmp_path / "audit-monitor.yaml"
    config.write_text(text, encoding="utf-8")
    result = cli("--config", str(config), "status", cwd=tmp_path)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr + result.stdout
    assert str(config) in result.stderr


@pytest.mark.parametrize("text", [case for case in CLI_CASES if "timezone" not in case] + ["- 1\n- 2\n"])
def test_bad_rules_through_rules_check_exit_1_without_a_traceback(text: str, tmp_path: Path) -> None:
    rules = tmp_path / "bad.yml"
    rules.write_text(text, encoding="utf-8")
    result = cli("rules", "check", str(rules), cwd=tmp_path)
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr + result.stdout
    assert str(rules) in result.stdout


def test_an_event_dated_far_in_the_future_does_not_end_the_next_walk_early(
    page_server: PageServer, page_client: XanoClient, tmp_path: Path
) -> None:
    """The walk stops at "cursor time minus overlap"; a bogus year-9999 time on the newest event must not
    make the next cycle stop after page 1 and skip the events on page 2 (the cursor would pass them)."""
    config = Config.model_validate(
        {
            "state": {"path": str(tmp_path / "a.db")},
            "sources": [{"name": "prod", "base_url": page_server.url, "token": "t0ken-xyz"}],
        }
    )

    def entry(event_id: int, when: str) -> dict[str, Any]:
        return {"id": event_id, "created_at": when, "type": "Login"}

    with Store.open(config.state.path) as store:
        poller = Poller(
            store, config, None, clock=FakeClock(T0), client_factory=lambda _: nullcontext(page_client)
        )
        page_server.pages = [[entry(10, "9999-01-01T00:00:00Z")]]
        assert poller.poll(config.sources[0]).ok
        page_server.pages = [
            [entry(13, "2026-03-04T10:03:00Z"), entry(12, "2026-03-04T10:02:00Z")],
            [entry(11, "2026-03-04T10:01:00Z")],
            [entry(10, "9999-01-01T00:00:00Z"), entry(9, "2026-03-04T09:00:00Z")],
        ]
        result = poller.poll(config.sources[0])
        assert result.ok, result.error
        archived = [row[0] for row in store.conn.execute("SELECT event_id FROM events ORDER BY event_id")]
        assert archived == [9, 10, 11, 12, 13]
        cursor = store.get_cursor("prod")
        assert cursor is not None and cursor.last_id == 13

"""The three report files: CSV evidence with every event of the month, HTML and text renderings."""

from __future__ import annotations

import csv
import hashlib
import os
import stat
import threading
import time
from pathlib import Path

import pytest
from report_data import IN_MONTH, NOW, archive, entry

from monitor.config import Config
from monitor.report import Period, build_report, evidence
from monitor.store import Store, files


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_csv_has_every_event_with_local_offsets(store: Store, config: Config, tmp_path: Path) -> None:
    files = build_report(store, config, Period.parse("2026-03", config.tz), tmp_path / "out", now=NOW)
    assert [p.name for p in (files.html, files.text, files.csv)] == [
        "compliance-report-2026-03.html",
        "compliance-report-2026-03.txt",
        "compliance-report-2026-03.csv",
    ]
    rows = read_csv(files.csv)
    assert len(rows) == IN_MONTH == files.rows == files.figures.total
    assert len(files.csv.read_text(encoding="utf-8").splitlines()) == IN_MONTH + 1  # plus the header
    required = {"created_at", "type", "msg", "user.email", "workspace.name", "branch.label", "id", "source"}
    assert required <= set(rows[0])
    ids = {(r["source"], int(r["id"])) for r in rows}
    assert ids == {("prod", i) for i in (2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 16)} | {("staging", 4)}
    # First and last rows: minutes inside the edges, in Berlin time with the offset of the day.
    assert (rows[0]["created_at"], rows[0]["type"], rows[0]["user.email"]) == (
        "2026-03-01T00:00:00+01:00",
        "Login",
        "ana@corp.io",
    )
    assert rows[-1]["created_at"] == "2026-03-31T23:59:00+02:00"
    assert (rows[-1]["workspace.name"], rows[-1]["branch.label"]) == ("shop", "v1")
    no_user = next(r for r in rows if r["type"] == "Run Query")
    assert no_user["user.email"] == "" and no_user["created_at"] == "2026-03-30T00:30:00+02:00"
    for path in (files.html, files.text, files.csv):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # reports name users, like the archive
    assert not [p for p in files.csv.parent.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_html_escapes_event_text_and_draws_both_charts(store: Store, config: Config, tmp_path: Path) -> None:
    files = build_report(store, config, Period.parse("2026-03", config.tz), tmp_path, now=NOW)
    html = files.html.read_text(encoding="utf-8")
    assert "Delete Table #7 &lt;b&gt;&amp;&lt;/b&gt;" in html and "<b>&</b>" not in html
    assert "<script>" not in html and "fired &lt;script&gt;" in html
    assert html.count('title="2026-03-') == 31  # one bar cell per local day
    assert 'title="2026-03-30: 3 events"' in html
    for name in ("Workspace management", "Database", "API &amp; functions", "Authentication &amp; security"):
        assert name in html
    assert "743 hours" in html and "Mon-Fri 08:00-19:00 Europe/Berlin" in html
    assert files.figures.chain_head in html and "<style" not in html  # mail clients drop <style> blocks


def test_text_version_is_plain_and_complete(store: Store, config: Config, tmp_path: Path) -> None:
    files = build_report(store, config, Period.parse("2026-03", config.tz), tmp_path, now=NOW)
    text = files.text.read_text(encoding="utf-8")
    assert "Delete Table #7 <b>&</b>" in text and "&amp;" not in text  # not HTML-escaped
    assert "SECURITY-CRITICAL EVENTS (5)" in text
    assert "2026-03-29 03:30:00 CEST" in text
    assert "Retention gap (source prod" in text and "NOT polled this month" in text
    assert "xano.auth.failed-login-burst" in text and "4 throttled" in text
    lines = text.splitlines()
    mar30 = next(line for line in lines if line.strip().startswith("Mon 30"))
    assert mar30.rstrip().endswith(" 3") and "#" * 40 in mar30  # the busiest day has the longest bar


def test_control_and_bidi_characters_do_not_reach_the_report(config: Config, tmp_path: Path) -> None:
    with Store.open(config.state.path) as store:
        item = entry(1, "2026-03-10T10:00:00Z", "Delete Table", "ana@corp.io")
        item["msg"] = "dropped\x1b[2J\x1b[31m orders\r\nBcc: x@evil.io \u202egnp.exe\u202c\u2028FAKE \x9b1m"
        item["workspace"] = {"id": 1, "name": "shop\u2066\u202e"}
        archive(store, "prod", [item], NOW)
        files = build_report(store, config, Period.parse("2026-03", config.tz), tmp_path, now=NOW)
    text = files.text.read_text(encoding="utf-8")
    html = files.html.read_text(encoding="utf-8")
    for shown in (text, html):
        for char in ("\x1b", "\r", "\u202e", "\u202c", "\u2028", "\x9b", "\u2066"):
            assert char not in shown, hex(ord(char))
    # One line in the text version, each neutralised character marked by U+FFFD.
    assert "dropped\ufffd[2J\ufffd[31m orders Bcc: x@evil.io \ufffdgnp.exe\ufffd FAKE \ufffd1m" in text
    assert "\ufffdgnp.exe" in html
    assert read_csv(files.csv)[0]["msg"] == item["msg"]  # the evidence keeps the text as archived


def test_long_lists_are_capped_in_the_body_and_complete_in_the_csv(
    store: Store, config: Config, tmp_path: Path
) -> None:
    files = build_report(store, config, Period.parse("2026-03", config.tz), tmp_path, now=NOW, cap=2)
    text = files.text.read_text(encoding="utf-8")
    html = files.html.read_text(encoding="utf-8")
    for body in (text, html):
        assert "and 3 more: every one is in compliance-report-2026-03.csv" in body
        assert "and 2 more users" in body
        assert "and 2 more alerts" in body
    assert len(read_csv(files.csv)) == IN_MONTH


def test_an_empty_month_says_so(store: Store, config: Config, tmp_path: Path) -> None:
    files = build_report(store, config, Period.parse("2026-05", config.tz), tmp_path, now=NOW)
    assert files.rows == 0 and read_csv(files.csv) == []
    assert files.csv.read_text(encoding="utf-8").startswith("source,id,created_at,type,msg")
    for path in (files.text, files.html):
        body = path.read_text(encoding="utf-8")
        assert "No events were archived for May 2026" in body
        assert "not over yet" in body  # NOW is in April
    assert "No security-critical events this month" in files.html.read_text(encoding="utf-8")


def test_an_empty_archive_without_sources_still_renders(tmp_path: Path) -> None:
    config = Config.model_validate({"timezone": "UTC", "state": {"path": str(tmp_path / "a.db")}})
    with Store.open(config.state.path) as store:
        files = build_report(store, config, Period.parse("2026-02", config.tz), tmp_path / "r", now=NOW)
    text = files.text.read_text(encoding="utf-8")
    assert "No events were archived for February 2026" in text and "672 hours" in text
    assert "No source is configured" in text


def test_a_large_month_is_written_by_worker_processes_byte_for_byte(
    store: Store, config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    period = Period.parse("2026-03", config.tz)
    read_ahead_calls: list[tuple[str, threading.Event | None]] = []

    def spied_read_ahead(path: str, stop: threading.Event | None = None) -> int:
        read_ahead_calls.append((path, stop))
        return files.read_ahead(path, stop)

    monkeypatch.setattr(evidence, "read_ahead", spied_read_ahead)
    single = build_report(store, config, period, tmp_path / "single", now=NOW)
    assert read_ahead_calls == []  # a month written in one process reads as it goes
    monkeypatch.setattr(evidence, "available_cpus", lambda: 2)  # worker processes, whatever runs the test
    parallel = build_report(store, config, period, tmp_path / "parallel", now=NOW, parallel_min_events=1)
    # With workers, the archive file was asked of the kernel ahead of them, and that ended with the report.
    deadline = time.monotonic() + 10  # the thread records its call as it runs
    while not read_ahead_calls and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [(path, stop is not None and stop.is_set()) for path, stop in read_ahead_calls] == [
        (store.path, True)
    ]
    assert parallel.rows == IN_MONTH
    assert parallel.csv.read_bytes() == single.csv.read_bytes()  # the slices joined in order, one header
    assert parallel.figures.integrity == single.figures.integrity  # the walk in the workers: the same
    assert sorted(p.name for p in (tmp_path / "parallel").iterdir()) == [
        "compliance-report-2026-03.anchor.json",
        "compliance-report-2026-03.csv",
        "compliance-report-2026-03.html",
        "compliance-report-2026-03.json",
        "compliance-report-2026-03.sha256",
        "compliance-report-2026-03.txt",
    ]  # no part files left behind
    # The digest taken while the parts were joined is the file's, with a byte-order mark too.
    name = parallel.csv.name
    assert parallel.digests[name] == hashlib.sha256(parallel.csv.read_bytes()).hexdigest()
    excel = config.model_copy(update={"report": config.report.model_copy(update={"csv_bom": True})})
    marked = build_report(store, excel, period, tmp_path / "bom", now=NOW, parallel_min_events=1)
    assert marked.csv.read_bytes() == "\ufeff".encode() + single.csv.read_bytes()
    assert marked.digests[name] == hashlib.sha256(marked.csv.read_bytes()).hexdigest()
    assert f"{marked.digests[name]}  {name}\n" in marked.manifest.read_text(encoding="utf-8")


def test_slices_partition_the_month_on_millisecond_bounds(store: Store, config: Config) -> None:
    period = Period.parse("2026-03", config.tz)
    parts = evidence.slices(store, period.start, period.end, IN_MONTH, 4)
    assert parts[0][0] == period.start and parts[-1][1] == period.end
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:], strict=False))
    counts = [sum(1 for _ in store.iter_events(since, until)) for since, until in parts]
    assert sum(counts) == IN_MONTH and max(counts) - min(counts) <= 2

"""The emailed HTML in a real browser (Debian's Chromium driven by Playwright): no sideways scrolling on a
400 px phone or a 1280 px desktop, and under Gmail's clipping size for a busy month (60,000 events)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bench.month_archive import MONTH, build_archive, write_config
from monitor.config import load_config
from monitor.report import Period, build_report, build_report_email
from monitor.store import Store

CHROMIUM = "/usr/bin/chromium"
ENABLE = "apt-get install -y --no-install-recommends chromium && pip install playwright"
try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    pytest.skip(
        f"browser tests skipped: the playwright package is missing ({ENABLE})", allow_module_level=True
    )
if not Path(CHROMIUM).exists():  # pragma: no cover - depends on the machine
    pytest.skip(f"browser tests skipped: {CHROMIUM} is missing ({ENABLE})", allow_module_level=True)

NOW = datetime(2026, 4, 2, 8, 0, tzinfo=UTC)
GMAIL_CLIP = 100 * 1024


@pytest.fixture(scope="module")
def busy_month(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report folder of March 2026 with 60,000 events (bench/month_archive.py's synthetic month)."""
    work = tmp_path_factory.mktemp("busy")
    db = work / "archive.db"
    build_archive(db, 60_000)
    config = load_config(write_config(work, db))
    with Store.open(db) as store:
        files = build_report(store, config, Period.parse(MONTH, config.tz), work / "reports", now=NOW)
    assert files.rows == 60_000
    return files.html


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--headless"])
        try:
            yield launched
        finally:
            launched.close()


def overflow(browser: Any, html: str, width: int) -> tuple[int, int]:
    page = browser.new_page(viewport={"width": width, "height": 900})
    try:
        page.set_content(html, wait_until="load")
        return page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    finally:
        page.close()


def test_busy_month_html_is_below_gmails_clipping_size(busy_month: Path) -> None:
    size = busy_month.stat().st_size
    assert size < GMAIL_CLIP, f"{size} bytes"
    html = busy_month.read_text(encoding="utf-8")
    # The long lists moved to the attachments, and the body says so.
    assert "more: every one is in compliance-report-2026-03" in html
    assert (
        html.index("Control summary")
        < html.index("Coverage and completeness")
        < html.index("Activity per day")
    )


@pytest.mark.parametrize("width", [400, 1280])
def test_no_horizontal_scrolling(browser: Any, busy_month: Path, width: int) -> None:
    scroll, client = overflow(browser, busy_month.read_text(encoding="utf-8"), width)
    assert scroll <= client == width


@pytest.mark.parametrize("width", [400, 1280])
def test_the_fixture_month_email_body_fits(browser: Any, store: Store, tmp_path: Path, width: int) -> None:
    from report_data import mail_config

    from monitor.report.render import ReportFiles

    config = mail_config(tmp_path, _Unused())
    files: ReportFiles = build_report(store, config, Period.parse("2026-03", config.tz), tmp_path, now=NOW)
    message = build_report_email(files, config, now=NOW)
    html = message.get_body(preferencelist=("html",)).get_content()  # type: ignore[union-attr]
    scroll, client = overflow(browser, html, width)
    assert scroll <= client == width


class _Unused:
    """An SMTP address nothing listens on: these tests build the message, they do not send it."""

    host = "127.0.0.1"
    port = 9

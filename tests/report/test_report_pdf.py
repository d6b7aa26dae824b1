"""`report.pdf: true` writes compliance-report-YYYY-MM.pdf with WeasyPrint; its pages are rendered here
(pypdfium2) and must hold the report, not blank paper."""

from __future__ import annotations

from pathlib import Path

import pytest
from report_data import NOW, fixture_config

from monitor.report import Period, build_report
from monitor.store import Store

ENABLE = "apt-get install -y --no-install-recommends libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0"
try:
    import weasyprint  # noqa: F401 - loads Pango through cffi: fails without the system libraries
except (ImportError, OSError):  # pragma: no cover - depends on the machine
    pytest.skip(
        f"PDF tests skipped: WeasyPrint cannot load its libraries ({ENABLE})", allow_module_level=True
    )
pdfium = pytest.importorskip("pypdfium2", reason="PDF tests skipped: pypdfium2 is not installed")


def test_pdf_pages_render_the_report(tmp_path: Path, store: Store) -> None:
    config = fixture_config(tmp_path, report={"out_dir": str(tmp_path / "reports"), "pdf": True})
    files = build_report(store, config, Period.parse("2026-03", config.tz), tmp_path / "out", now=NOW)
    assert files.pdf is not None and files.pdf.name == "compliance-report-2026-03.pdf"
    assert files.manifest is not None and files.pdf.name in files.manifest.read_text(encoding="utf-8")
    document = pdfium.PdfDocument(files.pdf)
    assert len(document) >= 2  # the evidence pack does not fit on one A4 page
    text = "".join(document[i].get_textpage().get_text_range() for i in range(len(document)))
    for heading in ("Control summary", "Integrity", "Reviewer sign-off", "Delete Table #7 <b>&</b>"):
        assert heading in text, heading
    for index in range(len(document)):
        image = document[index].render(scale=0.5).to_pil().convert("L")
        inked = sum(image.histogram()[:200])  # pixels darker than light grey
        # A last page may hold only the tail of the sign-off block and the footer (~250 dark pixels at this
        # scale): not blank while it carries text and ink. Blank paper has neither.
        page_text = document[index].get_textpage().get_text_range().strip()
        assert page_text and inked > 100, f"page {index + 1} is blank"
        # Nothing cut at the right edge: the rightmost columns of every page are paper.
        right = image.crop((image.width - 8, 0, image.width, image.height))
        assert right.getextrema()[0] > 195, f"page {index + 1} overflows to the right"


def test_no_pdf_unless_asked(tmp_path: Path, store: Store) -> None:
    config = fixture_config(tmp_path)
    files = build_report(store, config, Period.parse("2026-03", config.tz), tmp_path / "out", now=NOW)
    assert files.pdf is None and not list((tmp_path / "out").glob("*.pdf"))

"""Rendering the monthly report (HTML, plain text, subject) and writing its three files.

Charts are HTML tables: each bar is a table cell with a height or width and a background colour.
Unlike images by Content-ID, the same markup shows in the .html file opened in a browser, in Gmail,
Apple Mail and in Outlook (whose Word engine honours table cell sizes and ``bgcolor``), needs no
image library, and is never blocked as "remote content".
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

import jinja2

from monitor.anchors import take_anchor
from monitor.config import Config
from monitor.display import safe_output, safe_text
from monitor.engine.calendars import Calendar
from monitor.export import CSV_COLUMNS
from monitor.report.evidence import (
    PARALLEL_MIN_EVENTS,
    manifest_text,
    report_json,
    report_json_bytes,
    sha256_file,
    start_month_csv,
    start_read_ahead,
    start_verify,
    worker_pool,
)
from monitor.report.figures import (
    CATEGORIES,
    Figures,
    Period,
    apply_reconciliation,
    apply_verify,
    business_calendar,
    compute_figures,
    walk_start,
)
from monitor.report.reconcile import CounterFactory, default_counter, reconcile
from monitor.resources import templates_dir
from monitor.store import Store
from monitor.timeutil import format_time

CATEGORY_COLOURS = {
    "Workspace management": "#6366f1",
    "Database": "#0ea5e9",
    "API & functions": "#10b981",
    "Authentication & security": "#f59e0b",
    "Configuration": "#ec4899",
    "Other": "#94a3b8",
}
CATEGORY_SHORT = {
    "Workspace management": "Workspace",
    "Database": "Database",
    "API & functions": "API",
    "Authentication & security": "Auth",
    "Configuration": "Config",
    "Other": "Other",
}
SEVERITY_COLOURS = {
    "critical": "#b91c1c",
    "high": "#dc2626",
    "medium": "#d97706",
    "low": "#2563eb",
    "info": "#64748b",
}
# Rows of each long list in the HTML and text body: with them, the email stays far below Gmail's ~102 KB
# clipping point whatever the month holds. The JSON lists up to TABLE_ROWS, the CSV every event.
BODY_ROWS = 20
TABLE_ROWS = 10_000
# Gmail clips a message body above ~102 KB and hides the rest (the evidence at the end): the HTML stays below
# this, with fewer rows per list if long event text makes the default too big.
HTML_BODY_LIMIT = 100_000
DAY_CHART_HEIGHT = 140  # px of the tallest day bar
TEXT_BAR_WIDTH = 40  # characters of the longest bar in the text version


class ReportError(Exception):
    """The report could not be built or written (message says which file or check)."""


@dataclass(frozen=True)
class Evidence:
    """Where the reader finds the CSV: beside the report, attached, compressed, or only on the host; and
    the sha256 of the files written before the HTML and text (the CSV, JSON and anchor)."""

    filename: str
    rows: int
    note: str
    digests: dict[str, str] = dataclasses.field(default_factory=dict)
    json_name: str = ""
    manifest_name: str = ""
    anchor_name: str = ""


@dataclass(frozen=True)
class RenderedReport:
    subject: str
    html: str
    text: str


@dataclass(frozen=True)
class ReportFiles:
    period: Period
    html: Path
    text: Path
    csv: Path
    figures: Figures
    rows: int
    json: Path | None = None
    anchor: Path | None = None
    manifest: Path | None = None
    digests: dict[str, str] = dataclasses.field(default_factory=dict)  # file name -> sha256
    pdf: Path | None = None

    @property
    def evidence(self) -> Evidence:
        """The evidence as written beside the report (the email says where its copy went instead)."""
        return self.evidence_at("in the CSV file beside this report")

    def evidence_at(self, note: str) -> Evidence:
        return Evidence(
            self.csv.name,
            self.rows,
            note,
            dict(self.digests),
            self.json.name if self.json else "",
            self.manifest.name if self.manifest else "",
            self.anchor.name if self.anchor else "",
        )


def report_basename(period: Period) -> str:
    return f"compliance-report-{period.key}"


# --- templates ---------------------------------------------------------------------------------------------


def _cut(value: Any, width: int) -> str:
    text = safe_text(value).replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _col(value: Any, width: int) -> str:
    return _cut(value, width).ljust(width)


def _num(value: int | float) -> str:
    return f"{value:,}"


def _pct(share: float) -> str:
    if 0 < share < 0.0005:
        return "<0.1%"  # one event in ten thousand is not "0.0%"
    return f"{share * 100:.1f}%"


def _when(value: datetime | None, tz: ZoneInfo) -> str:
    return "never" if value is None else format_time(value, tz)


_ENVIRONMENT: jinja2.Environment | None = None


def environment() -> jinja2.Environment:
    global _ENVIRONMENT
    if _ENVIRONMENT is None:
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(templates_dir()),
            # HTML is escaped (event text is untrusted); plain text must not be, or "&" would become "&amp;".
            autoescape=jinja2.select_autoescape(
                enabled_extensions=("html.j2",), disabled_extensions=("txt.j2",), default=True
            ),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            # Every {{ }} string, HTML and text alike, neutralised: no template can forget it.
            finalize=safe_output,
        )
        env.filters.update(clean=safe_text, cut=_cut, col=_col, num=_num, pct=_pct, when=_when)
        _ENVIRONMENT = env
    return _ENVIRONMENT


def _context(figures: Figures, evidence: Evidence) -> dict[str, Any]:
    peak = max((d.count for d in figures.days), default=0)
    day_bars = [
        {
            "day": d.day,
            "count": d.count,
            "weekend": d.weekend,
            # A non-empty day is at least 2 px tall so that it never looks like an empty one.
            "height": max(2, round(d.count / peak * DAY_CHART_HEIGHT)) if d.count and peak else 0,
            "text_bar": "#" * max(1, round(d.count / peak * TEXT_BAR_WIDTH)) if d.count and peak else "",
        }
        for d in figures.days
    ]
    top = max((c.count for c in figures.categories), default=0)
    category_bars = [
        {
            "name": c.name,
            "short": CATEGORY_SHORT[c.name],
            "count": c.count,
            "share": c.share,
            "colour": CATEGORY_COLOURS[c.name],
            "width": max(1, round(c.count / top * 100)) if c.count and top else 0,
            "text_bar": "#" * max(1, round(c.count / top * TEXT_BAR_WIDTH)) if c.count and top else "",
        }
        for c in figures.categories
    ]
    return {
        "f": figures,
        "period": figures.period,
        "tz": figures.tz,
        "evidence": evidence,
        "categories": CATEGORIES,
        "short": CATEGORY_SHORT,
        "colours": CATEGORY_COLOURS,
        "severity_colours": SEVERITY_COLOURS,
        "day_bars": day_bars,
        "day_peak": peak,
        "day_chart_height": DAY_CHART_HEIGHT,
        "category_bars": category_bars,
        "csv_columns": CSV_COLUMNS,
    }


def body_figures(figures: Figures, rows: int) -> Figures:
    """The figures with each long list cut to ``rows`` (the totals stay whole, so the body says how many
    more the attachments hold)."""
    return dataclasses.replace(
        figures,
        critical=figures.critical[:rows],
        users=figures.users[:rows],
        alerts=figures.alerts[:rows],
        gaps=figures.gaps[:rows],
        privileged=figures.privileged[:rows],
        changes=figures.changes[:rows],
        responses=figures.responses[:rows],
        first_admins=figures.first_admins[:rows],
        types=figures.types[:rows],
        cap=rows,
    )


# The report's templates: its HTML body, its subject and its text.
REPORT_TEMPLATES = ("report.html.j2", "report_subject.txt.j2", "report.txt.j2")


def compile_templates() -> None:
    """Compile the report's templates now (jinja keeps them): a large report does so while its workers
    still write the CSV, not after them (a third of a second)."""
    for name in REPORT_TEMPLATES:
        environment().get_template(name)


def render(figures: Figures, evidence: Evidence, rows: int = BODY_ROWS) -> RenderedReport:
    html_template, subject_template, text_template = map(environment().get_template, REPORT_TEMPLATES)
    while True:
        context = _context(body_figures(figures, rows), evidence)
        html = html_template.render(context)
        if len(html.encode("utf-8")) <= HTML_BODY_LIMIT or rows <= 1:
            break
        rows //= 2  # the lists say how many more rows the attachments hold
    subject = subject_template.render(context)
    return RenderedReport(
        subject=" ".join(subject.split()),  # one line: a header can never be split by event text
        html=html,
        text=text_template.render(context),
    )


# --- files -------------------------------------------------------------------------------------------------


def atomic_write(path: Path, write: Callable[[TextIO], object]) -> None:
    """Write ``path`` via a temporary file and rename: a reader never sees half a report. Mode 0600,
    like the archive: reports name users."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_pdf(html: str, path: Path) -> None:
    """The HTML as a PDF through WeasyPrint, imported only when ``report.pdf`` asks for it: it loads Pango
    through cffi, and a machine without the libraries must still write every other file."""
    try:
        import weasyprint
    except (ImportError, OSError) as exc:
        raise ReportError(
            f"report.pdf is true but WeasyPrint cannot load ({type(exc).__name__}: {exc}); install it with "
            "pip install weasyprint and its libraries with apt-get install libpango-1.0-0 libpangoft2-1.0-0 "
            "libharfbuzz-subset0"
        ) from None
    data = weasyprint.HTML(string=html).write_pdf()
    assert data is not None  # write_pdf returns the bytes when no target is given
    atomic_write(path, lambda handle: handle.buffer.write(data))  # bytes, through the text file's buffer


def build_report(
    store: Store,
    config: Config,
    period: Period,
    out_dir: str | os.PathLike[str],
    *,
    now: datetime,
    calendars: dict[str, Calendar] | None = None,
    cap: int = BODY_ROWS,
    parallel_min_events: int = PARALLEL_MIN_EVENTS,
    counter: CounterFactory | None = default_counter,
) -> ReportFiles:
    """Compute the figures and write the evidence pack into ``out_dir``: the CSV of every event, the JSON of
    every figure and table, the chain anchor, the HTML and text (lists cut to ``cap`` rows), and the
    ``sha256sum`` manifest of them all. ``counter`` asks Xano for the month's count per source
    (reconciliation); None reports every source as not reconciled without contacting Xano."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"{out}: cannot create the report folder: {exc.strerror}") from None
    base = report_basename(period)
    html_path, text_path, csv_path = out / f"{base}.html", out / f"{base}.txt", out / f"{base}.csv"
    json_path, anchor_path = out / f"{base}.json", out / f"{base}.anchor.json"
    manifest_path = out / f"{base}.sha256"
    calendar, origin = business_calendar(config, calendars)
    rows, csv_digest = 0, None

    def write_events(handle: TextIO) -> None:
        nonlocal rows, csv_digest
        rows, csv_digest = month_csv.write(handle, bom=config.report.csv_bom)

    pool = worker_pool(store, parallel_min_events)
    stop_read_ahead = start_read_ahead(store) if pool is not None else None
    walk = start_verify(store, walk_start(store, period), pool, parallel_min_events)
    month_csv = start_month_csv(
        store,
        period.start,
        period.end,
        config.tz,
        scratch=out,
        pool=pool,
        parallel_min_events=parallel_min_events,
    )
    if pool is not None:
        pool.shutdown(wait=False)  # the workers exit when no job is left
    try:
        with store.read_snapshot():  # the figures and the CSV see the same archive
            figures = compute_figures(
                store,
                config,
                period,
                now=now,
                calendar=calendar,
                calendar_origin=origin,
                cap=max(cap, TABLE_ROWS),
                verify=walk is None,
            )
            # The head the figures were computed on: `verify --anchor` checks later that it is still there.
            anchor = take_anchor(store, now)
            compile_templates()
            atomic_write(csv_path, write_events)
    except OSError as exc:
        raise ReportError(f"{csv_path}: cannot write the CSV: {exc.strerror}") from None
    finally:
        month_csv.close()
        if stop_read_ahead is not None:
            stop_read_ahead.set()
    if walk is not None:
        apply_verify(figures, walk.result())
    # After the snapshot: the count queries go over the network, and only when reconciling is possible.
    apply_reconciliation(figures, reconcile(figures, config, counter=counter))
    if rows != figures.total:
        # One snapshot and one range: a difference means events of the month were archived meanwhile by
        # another process (CSV workers read their own snapshot) or the range logic broke. Never send it.
        raise ReportError(
            f"{csv_path}: {rows} CSV rows but the figures count {figures.total} events "
            "(the archive changed while the report was written; it is retried)"
        )
    try:
        digests = {csv_path.name: csv_digest or sha256_file(csv_path)}
        document = report_json(
            figures, csv_name=csv_path.name, csv_rows=rows, csv_sha256=digests[csv_path.name], anchor=anchor
        )
        atomic_write(json_path, lambda handle: handle.buffer.write(report_json_bytes(document)))
        atomic_write(anchor_path, lambda handle: handle.write(anchor.to_json() + "\n"))
        digests.update({p.name: sha256_file(p) for p in (json_path, anchor_path)})
        files = ReportFiles(
            period,
            html_path,
            text_path,
            csv_path,
            figures,
            rows,
            json_path,
            anchor_path,
            manifest_path,
            digests,
        )
        rendered = render(figures, files.evidence, cap)
        atomic_write(html_path, lambda handle: handle.write(rendered.html))
        atomic_write(text_path, lambda handle: handle.write(rendered.text))
        listed = [html_path, text_path, csv_path, json_path, anchor_path]
        if config.report.pdf:
            pdf_path = out / f"{base}.pdf"
            write_pdf(rendered.html, pdf_path)
            files = dataclasses.replace(files, pdf=pdf_path)
            listed.append(pdf_path)
        atomic_write(manifest_path, lambda handle: handle.write(manifest_text(listed, digests)))
    except OSError as exc:
        raise ReportError(f"{out}: cannot write the report: {exc.strerror}") from None
    return files

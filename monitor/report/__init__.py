"""The monthly compliance report: figures from SQL, rendering through templates/, the CSV evidence,
email, and the once-per-period schedule.

- ``figures``: ``Period`` (a calendar month in the configured zone) and ``compute_figures``.
- ``render``: ``build_report`` writes compliance-report-YYYY-MM.html/.txt/.csv.
- ``mail``: ``send_report_email`` (HTML + text, CSV attached) over the alert channel's SMTP.
- ``schedule``: ``ReportScheduler.run_due`` claims each due period in the store and sends it once.
"""

from monitor.report.figures import CATEGORIES, CRITICAL_TYPES, Figures, Period, category_of, compute_figures
from monitor.report.mail import ReportSendError, build_report_email, send_report_email
from monitor.report.render import ReportError, ReportFiles, build_report, render
from monitor.report.schedule import (
    ReportRun,
    ReportScheduler,
    claim_period,
    due_periods,
    produce_report,
    record_manual_send,
)

__all__ = [
    "CATEGORIES",
    "CRITICAL_TYPES",
    "Figures",
    "Period",
    "ReportError",
    "ReportFiles",
    "ReportRun",
    "ReportScheduler",
    "ReportSendError",
    "build_report",
    "build_report_email",
    "category_of",
    "claim_period",
    "compute_figures",
    "due_periods",
    "produce_report",
    "record_manual_send",
    "render",
    "send_report_email",
]

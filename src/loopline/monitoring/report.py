"""The monitoring report of one deployment over a period: gather, render, write the file.

The pieces: ``report_gather`` reads the store into a ``report_model.MonitorReport``
(bounded reads), ``report_html`` renders it as one self-contained page with charts from
``report_charts`` (matplotlib, the optional ``report`` extra), and ``report_file`` writes
it whole or not at all. ``write_monitor_report`` does all three, checking first that
matplotlib is there, so a missing extra fails before anything is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from loopline.monitoring.report_charts import require_matplotlib
from loopline.monitoring.report_file import write_report
from loopline.monitoring.report_gather import gather
from loopline.monitoring.report_html import render
from loopline.monitoring.report_model import MonitorReport
from loopline.store import MetadataStore

__all__ = ["WrittenReport", "default_path", "write_monitor_report"]


@dataclass(frozen=True, slots=True)
class WrittenReport:
    """A report written: what it shows, where, and how many bytes."""

    report: MonitorReport
    path: Path
    size: int


def default_path(deployment: str) -> Path:
    """Return the file a report of ``deployment`` goes to when none is named."""
    return Path(f"monitor-report-{deployment}.html")


def write_monitor_report(store: MetadataStore, deployment: str, start: datetime,
                         end: datetime, path: Path | None = None) -> WrittenReport:
    """Write the report of ``deployment`` from ``start`` to ``end`` to ``path``; return it.

    Raises:
        ConfigurationError: when matplotlib is not installed (``pip install
            'loopline[report]'``); nothing is read or written.
        NotFoundError: when there is no deployment ``deployment``.
        InvalidArgumentError: for a period out of order or over 90 days, or naming
            ``--output`` when the file cannot be written (nothing is left behind).
        BackendError: when the database fails.
    """
    require_matplotlib()
    report = gather(store, deployment, start, end)
    target = path if path is not None else default_path(report.header.deployment)
    size = write_report(target, render(report))
    return WrittenReport(report, target, size)

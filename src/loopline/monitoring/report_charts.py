"""Charts for the monitoring report: matplotlib figures rendered to inline SVG text.

Rules kept here: matplotlib is optional (``pip install 'loopline[report]'``) and imported
only when a chart is drawn; ``require_matplotlib`` says so as a ``ConfigurationError``.
Figures are ``matplotlib.figure.Figure`` objects, never pyplot's, drawn by matplotlib's
own SVG canvas (no backend is chosen and no display is needed, as with Agg), and the
settings a chart needs are set for its drawing only (``rc_context``), so no global state is
left behind. The
output is a pure function of the data: no date in the SVG's metadata, ids hashed with a salt
named after the chart (``svg.hashsalt``) and prefixed with it, so two renders of the same
data are byte-identical and charts inlined in one page never share an id. Text stays text
(``svg.fonttype: none``, no embedded glyphs), read literally (``text.parse_math`` off: a
``$`` in a column name is a dollar); matplotlib escapes it for XML.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from loopline.core.errors import ConfigurationError
from loopline.monitoring.report_model import Point

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["INSTALL_HINT", "Level", "Line", "LineChart", "Mark", "Span", "Timeline",
           "line_svg", "require_matplotlib", "timeline_svg"]

INSTALL_HINT = "pip install 'loopline[report]'"
WIDTH_INCHES = 9.0
MARK_ALL_BELOW = 40  # points: a line with fewer has a marker on each
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939")
_NO_METADATA = {"Date": None, "Creator": None, "Format": None, "Type": None}
_TAG = re.compile(r"<[^>]*>")
_ID = re.compile(r'(\bid="|xlink:href="#|url\(#)([^")]*)')


def require_matplotlib() -> None:
    """Check that matplotlib can be imported.

    Raises:
        ConfigurationError: naming the extra to install when it cannot.
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ConfigurationError(f"the monitoring report draws its charts with matplotlib, "
                                 f"which is not installed; run `{INSTALL_HINT}`") from exc


@dataclass(frozen=True, slots=True)
class Line:
    """One line: a label, its points, and a colour index into the palette."""

    label: str
    points: Sequence[Point]
    color: int = 0
    dashed: bool = False


@dataclass(frozen=True, slots=True)
class Level:
    """A horizontal line across the chart (a threshold, a training value)."""

    label: str
    value: float
    color: int | None = None  # None: grey


@dataclass(frozen=True, slots=True)
class LineChart:
    """A chart of lines over the report's period."""

    key: str
    title: str
    y_label: str
    start: datetime
    end: datetime
    lines: Sequence[Line]
    levels: Sequence[Level] = ()
    height: float = 3.0


@dataclass(frozen=True, slots=True)
class Span:
    """One row of the timeline: a bar from ``start`` to ``end`` (an alert while firing)."""

    label: str
    start: datetime
    end: datetime
    color: str


@dataclass(frozen=True, slots=True)
class Mark:
    """A marker on a timeline row (an action): shape by ``kind``, colour by ``color``."""

    row: int
    at: datetime
    kind: str
    color: str


@dataclass(frozen=True, slots=True)
class Timeline:
    """Alerts as bars, actions as markers, route changes as vertical lines."""

    key: str
    start: datetime
    end: datetime
    spans: Sequence[Span]
    marks: Sequence[Mark] = ()
    changes: Sequence[tuple[datetime, str]] = ()
    markers: dict[str, str] = field(default_factory=dict)  # kind -> matplotlib marker


def _label(text: str) -> str:
    """Return ``text`` as a legend shows it: a leading ``_`` would hide the entry."""
    return "\N{ZERO WIDTH SPACE}" + text if text.startswith("_") else text


def _prefixed(svg: str, prefix: str) -> str:
    """Return ``svg`` from its ``<svg`` tag, every id and reference to one prefixed."""
    body = svg[svg.index("<svg"):]
    return _TAG.sub(lambda tag: _ID.sub(lambda m: f"{m.group(1)}{prefix}-{m.group(2)}",
                                        tag.group(0)), body)


@contextmanager
def _figure(key: str, height: float) -> Iterator[Figure]:
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context({
            "svg.hashsalt": key, "svg.id": "svg", "svg.fonttype": "none",
            "text.parse_math": False, "timezone": "UTC", "font.family": "sans-serif",
            "font.sans-serif": ["DejaVu Sans"], "font.size": 9.0, "axes.spines.top": False,
            "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
            "legend.fontsize": 8.0, "legend.frameon": False}):
        yield Figure(figsize=(WIDTH_INCHES, height), layout="constrained")


def _svg(figure: Figure, key: str) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata=_NO_METADATA)
    return _prefixed(buffer.getvalue(), key)


def _time_axis(axes: Axes, start: datetime, end: datetime) -> None:
    from matplotlib import dates

    locator = dates.AutoDateLocator()  # type: ignore[no-untyped-call]
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(
        dates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    axes.set_xlim(start, end)  # type: ignore[arg-type]  # matplotlib converts datetimes


def _values(points: Sequence[Point]) -> tuple[list[datetime], list[float]]:
    return ([point.at for point in points],
            [math.nan if point.value is None or not math.isfinite(point.value)
             else point.value for point in points])


def _marked(values: Sequence[float]) -> list[int] | None:
    """Return which points get a marker: all of a short line, else those between gaps.

    A point with no neighbour (a lone measurement between gaps) draws no line at all, so
    it needs a marker to be seen.
    """
    if len(values) < MARK_ALL_BELOW:
        return None
    last = len(values) - 1
    return [index for index, value in enumerate(values) if not math.isnan(value)
            and (index == 0 or math.isnan(values[index - 1]))
            and (index == last or math.isnan(values[index + 1]))]


def line_svg(chart: LineChart) -> str:
    """Return ``chart`` drawn as SVG text (from its ``<svg`` tag; see the module's rules)."""
    with _figure(chart.key, chart.height) as figure:
        axes = figure.add_subplot()
        for line in chart.lines:
            times, values = _values(line.points)
            axes.plot(times, values, label=_label(line.label),  # type: ignore[arg-type]
                      color=PALETTE[line.color % len(PALETTE)],
                      linestyle="--" if line.dashed else "-", linewidth=1.4, marker="o",
                      markersize=3, markevery=_marked(values))
        for level in chart.levels:
            axes.axhline(level.value, label=_label(level.label), linestyle=":", linewidth=1.2,
                         color="#555555" if level.color is None
                         else PALETTE[level.color % len(PALETTE)])
        axes.set_title(chart.title, loc="left")
        axes.set_ylabel(chart.y_label)
        _time_axis(axes, chart.start, chart.end)
        if chart.lines or chart.levels:
            axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return _svg(figure, chart.key)


def _kinds_legend(axes: Axes, kinds: Sequence[str], markers: dict[str, str]) -> None:
    """Show each action kind's marker in grey: the colours are states, not kinds."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], linestyle="none", marker=markers.get(kind, "o"),
                      markerfacecolor="#bbbbbb", markeredgecolor="#222222", label=_label(kind))
               for kind in kinds]
    axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), title="actions")


def timeline_svg(timeline: Timeline) -> str:
    """Return the alert timeline drawn as SVG text (see the module's rules)."""
    rows = len(timeline.spans)
    with _figure(timeline.key, 1.2 + 0.3 * rows) as figure:
        axes = figure.add_subplot()
        for row, span in enumerate(timeline.spans):
            axes.barh(row, span.end - span.start, left=span.start,  # type: ignore[arg-type]
                      height=0.5, color=span.color, alpha=0.55)
        for kind in sorted({mark.kind for mark in timeline.marks}):
            chosen = [mark for mark in timeline.marks if mark.kind == kind]
            axes.scatter([mark.at for mark in chosen],  # type: ignore[arg-type]
                         [mark.row for mark in chosen], c=[mark.color for mark in chosen],
                         marker=timeline.markers.get(kind, "o"), s=36, zorder=3,
                         edgecolors="#222222", linewidths=0.6)
        for at, text in timeline.changes:
            axes.axvline(at, color="#555555", linestyle=":",  # type: ignore[arg-type]
                         linewidth=1.0)
            axes.annotate(text, (at, 1.0), xycoords=("data", "axes fraction"),
                          fontsize=7, rotation=90, va="top", ha="right", color="#555555")
        axes.set_yticks(range(rows), [_label(span.label) for span in timeline.spans])
        axes.set_ylim(rows - 0.5, -0.5)
        _time_axis(axes, timeline.start, timeline.end)
        if timeline.marks:
            _kinds_legend(axes, sorted({mark.kind for mark in timeline.marks}),
                          timeline.markers)
        return _svg(figure, timeline.key)

"""Self-contained inline SVG line charts for the HTML report: no JavaScript, no external files.

One function, `line_chart`, draws every curve of the report: accuracy against images per class (x
unevenly spaced, with a confidence band), validation accuracy per epoch, the denoiser's loss per step.
Points are placed by their x value; the output is deterministic (same input, same bytes) so a report
that did not change does not change DVC's hash of it.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["COLOURS", "MAX_MARKERS", "Series", "running_mean", "indexed", "nice_ticks", "line_chart"]

COLOURS = ("#c33", "#36c", "#393", "#c80", "#939", "#099", "#666", "#960")
"""Distinct line colours, in the order series usually take them."""
MAX_MARKERS = 40
"""A series with more points than this is drawn as a bare line: markers on every step would hide it."""
MAX_VALUE_TICKS = 8
"""Up to this many distinct x values are each a tick (images per class: 0, 5, 10, 20); more get round ticks."""
FONT_SIZE = 11
CHAR_WIDTH = 6.2
"""Rough width of one character at FONT_SIZE, to size the margins and the legend without measuring text."""
LEGEND_ROW = 16
BAND_OPACITY = 0.18


@dataclass(frozen=True)
class Series:
    """One named curve: (x, y) points, or (x, y, low, high) for a band around y."""

    name: str
    colour: str
    points: Sequence[tuple[float, ...]]


def running_mean(values: Sequence[float], window: int) -> list[float]:
    """The mean of the last `window` values up to each position (fewer at the start), to smooth a noisy
    curve such as a loss per step without shifting its start. The report's former loss sparkline used
    window = len(values) // 50 + 1."""
    if window < 1:
        raise ValueError(f"running_mean window must be at least 1, got {window}")
    totals = np.concatenate([[0.0], np.cumsum(np.asarray(values, dtype=np.float64))])
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    return ((totals[ends] - totals[starts]) / (ends - starts)).tolist()


def indexed(values: Sequence[float], start: int = 0) -> list[tuple[float, float]]:
    """(start + i, value) points of a curve given per step or epoch."""
    return [(float(start + i), float(v)) for i, v in enumerate(values)]


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round ticks (steps of 1, 2 or 5 times a power of ten) from at or below `low` to at or
    above `high`; the first and last tick are the axis' ends."""
    if high == low:
        pad = abs(low) * 0.1 or 1.0
        low, high = low - pad, high + pad
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    # The 1e-9 keeps a bound that is a multiple of the step (0.3 / 0.1 = 2.9999...) on its own tick.
    first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
    decimals = max(0, -math.floor(math.log10(step)))
    return [round(k * step, decimals) for k in range(first, last + 1)]


def _number(value: float) -> str:
    """A coordinate: one decimal, never "-0.0"."""
    value = round(value, 1)
    return f"{value if value else 0.0:.1f}"


def _tick_label(value: float, step: float | None) -> str:
    if step is None:
        return f"{value:g}"
    decimals = max(0, -math.floor(math.log10(step)))
    return f"{value:.{decimals}f}"


def _checked(series: Sequence[Series]) -> list[Series]:
    """The series that have points, each sorted by x; a malformed point raises a one-line ValueError."""
    drawn = []
    for one in series:
        for point in one.points:
            if len(point) not in (2, 4) or not all(math.isfinite(v) for v in point):
                raise ValueError(f"series {one.name!r}: points are finite (x, y) or (x, y, low, high), got {point}")
            if len(point) == 4 and point[2] > point[3]:
                raise ValueError(f"series {one.name!r}: band low {point[2]} above high {point[3]} at x = {point[0]}")
        if one.points:
            drawn.append(Series(one.name, one.colour, sorted((tuple(map(float, p)) for p in one.points))))
    return drawn


def _axis(values: list[float], value_ticks: bool) -> tuple[list[float], float | None]:
    """(ticks, their step or None when the ticks are the data values); the ends are the axis' range."""
    distinct = sorted(set(values))
    if value_ticks and len(distinct) <= MAX_VALUE_TICKS:
        if len(distinct) == 1:
            return [distinct[0] - 1, distinct[0], distinct[0] + 1], None
        return distinct, None
    ticks = nice_ticks(distinct[0], distinct[-1])
    return ticks, ticks[1] - ticks[0]


def _legend(series: list[Series], left: float, top: float, right_edge: float) -> tuple[str, int]:
    """(legend SVG, rows): entries flow left to right, wrapping at right_edge."""
    parts, x, row = [], left, 0
    for one in series:
        entry = 26 + CHAR_WIDTH * len(one.name)
        if x + entry > right_edge and x > left:
            x, row = left, row + 1
        y = top + row * LEGEND_ROW + LEGEND_ROW / 2
        colour = html.escape(one.colour)
        parts.append(f'<line x1="{_number(x)}" y1="{_number(y)}" x2="{_number(x + 16)}" y2="{_number(y)}" '
                     f'stroke="{colour}" stroke-width="2"/>'
                     f'<text x="{_number(x + 20)}" y="{_number(y + 4)}">{html.escape(one.name)}</text>')
        x += entry + 12
    return "".join(parts), row + 1


def line_chart(series: Sequence[Series], x_label: str, y_label: str, width: int = 480, height: int = 200,
               title: str = "") -> str:
    """An inline SVG line chart: axes with tick labels, per series a line (with point markers up to
    MAX_MARKERS points) and, over the points that carry low/high, a translucent band; a legend below.

    Points are placed by x value and joined in increasing x. `width` x `height` is the chart; the legend
    adds a row per line of names beneath. Returns "" when no series has a point.

    Raises:
        ValueError: a point that is not finite (x, y) or (x, y, low, high), a band with low > high, or a
            size too small for the plot area.
    """
    # 1. Data and axes.
    drawn = _checked(series)
    if not drawn:
        return ""
    xs = [p[0] for one in drawn for p in one.points]
    ys = [v for one in drawn for p in one.points for v in p[1:]]
    x_ticks, x_step = _axis(xs, value_ticks=True)
    y_ticks, y_step = _axis(ys, value_ticks=False)
    y_labels = [_tick_label(t, y_step) for t in y_ticks]
    # 2. Layout: room for the y label and the widest y tick label on the left, title on top.
    left = 22 + CHAR_WIDTH * max(len(label) for label in y_labels)
    top, right, bottom = (26 if title else 10), 14, 36
    plot_width, plot_height = width - left - right, height - top - bottom
    if plot_width < 20 or plot_height < 20:
        raise ValueError(f"line_chart: {width} x {height} px leaves no room for the plot; use a larger size")

    def at_x(x: float) -> float:
        return left + (x - x_ticks[0]) / (x_ticks[-1] - x_ticks[0]) * plot_width

    def at_y(y: float) -> float:
        return top + plot_height - (y - y_ticks[0]) / (y_ticks[-1] - y_ticks[0]) * plot_height

    # 3. Grid, axes and labels.
    bottom_y, parts = top + plot_height, []
    if title:
        parts.append(f'<text x="{_number(width / 2)}" y="16" text-anchor="middle" font-weight="bold">'
                     f"{html.escape(title)}</text>")
    for tick, label in zip(y_ticks, y_labels):
        y = _number(at_y(tick))
        parts.append(f'<line x1="{_number(left)}" y1="{y}" x2="{_number(left + plot_width)}" y2="{y}" stroke="#eee"/>'
                     f'<text x="{_number(left - 4)}" y="{y}" text-anchor="end" dy="4">{label}</text>')
    for tick in x_ticks:
        x = _number(at_x(tick))
        parts.append(f'<line x1="{x}" y1="{_number(bottom_y)}" x2="{x}" y2="{_number(bottom_y + 4)}" stroke="#333"/>'
                     f'<text x="{x}" y="{_number(bottom_y + 15)}" text-anchor="middle">{_tick_label(tick, x_step)}</text>')
    parts.append(f'<path fill="none" stroke="#333" d="M{_number(left)},{_number(top)}V{_number(bottom_y)}'
                 f'H{_number(left + plot_width)}"/>')
    parts.append(f'<text x="{_number(left + plot_width / 2)}" y="{_number(bottom_y + 31)}" text-anchor="middle">'
                 f"{html.escape(x_label)}</text>")
    middle = _number(top + plot_height / 2)
    parts.append(f'<text x="12" y="{middle}" text-anchor="middle" transform="rotate(-90 12 {middle})">'
                 f"{html.escape(y_label)}</text>")
    # 4. Bands first, so that every line stays on top of every band.
    for one in drawn:
        banded = [p for p in one.points if len(p) == 4]
        if banded:
            outline = [(p[0], p[3]) for p in banded] + [(p[0], p[2]) for p in reversed(banded)]
            parts.append(f'<polygon class="band" fill="{html.escape(one.colour)}" fill-opacity="{BAND_OPACITY}" '
                         f'stroke="none" points="{" ".join(f"{_number(at_x(x))},{_number(at_y(y))}" for x, y in outline)}"/>')
    # 5. Lines and markers; a marker's title shows its values on hover.
    for one in drawn:
        colour = html.escape(one.colour)
        line = " ".join(f"{_number(at_x(p[0]))},{_number(at_y(p[1]))}" for p in one.points)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{line}"/>')
        if len(one.points) <= MAX_MARKERS:
            parts.extend(f'<circle cx="{_number(at_x(p[0]))}" cy="{_number(at_y(p[1]))}" r="2.5" fill="{colour}">'
                         f"<title>{html.escape(one.name)}: {p[0]:g}, {p[1]:.4g}</title></circle>" for p in one.points)
    # 6. Legend beneath the chart.
    legend, rows = _legend(drawn, left, height, width - right)
    total_height = height + rows * LEGEND_ROW + 4
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{total_height}" '
            f'viewBox="0 0 {width} {total_height}" font-family="sans-serif" font-size="{FONT_SIZE}">'
            + "".join(parts) + legend + "</svg>")

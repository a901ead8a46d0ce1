"""Charts drawn on the server as inline SVG: no JavaScript, no library, nothing fetched.

The reviewer's browser may have no internet access and the page's Content-Security-Policy
forbids scripts and inline styles, so colours are SVG presentation attributes (``fill``,
``stroke``, which CSP does not govern) and the rest of the look comes from the external
stylesheet. Tooltips are SVG ``<title>`` elements. Every piece of text that comes from the
log (agent names, categories) is escaped: they are data, not markup.

An SVG scales as a whole, its text included: a chart drawn 960 units wide and shown 350
pixels wide would have 4-pixel text. So each chart is drawn twice, for a wide ``Frame``
and a narrow one (fewer labels, more room per label), and the stylesheet shows the one
that fits the card it sits in (``responsive``); the narrow drawing has the class ``narrow``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Final

from markupsafe import Markup, escape

# Tableau 10: distinguishable, and readable on white.
PALETTE: Final = (
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#76b7b2",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)
OUTCOME_COLORS: Final = {
    "disclosed": "#3b8f4a",
    "withheld": "#d1495b",
    "erasure_notice": "#8d99ae",
}
OUTCOME_LABELS: Final = {
    "disclosed": "sent",
    "withheld": "withheld",
    "erasure_notice": "erasure notice",
}
HEAT_LEVELS: Final = 6
MAX_DAYS: Final = 3 * 366  # beyond this a daily axis is unreadable: the caller uses months
# Up to this many periods (a year by month, under two weeks by day) the time chart stacks a
# column per period, split by agent; beyond, a line per agent shows each one's trend.
COLUMN_PERIODS: Final = 12


@dataclass(frozen=True)
class Frame:
    """The drawing area of one chart: size in SVG units, margins, and how many labels fit
    along the time axis."""

    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int
    x_labels: int
    narrow: bool = False

    @property
    def css(self) -> str:
        return "narrow chart" if self.narrow else "chart"


# The narrow drawings are shown at 0.9 of their size or more down to a 360-pixel screen
# (the stylesheet caps them at 480 pixels), so their 13-unit text stays at 11 pixels or more.
NARROW_TIME: Final = Frame(340, 240, 38, 10, 12, 34, 4, narrow=True)
WIDE_TIME: Final = Frame(960, 320, 52, 16, 14, 44, 10)
NARROW_COLUMNS: Final = Frame(340, 220, 38, 10, 12, 34, 4, narrow=True)
WIDE_COLUMNS: Final = Frame(560, 240, 44, 10, 12, 40, 8)


def responsive(wide: Markup, narrow: Markup) -> Markup:
    """Both drawings of a chart; the stylesheet shows the one for the screen."""
    return Markup(wide + narrow)


def _text_width(text: str, size: float = 12) -> float:
    # About 0.6 em per character in the page's sans-serif: enough to lay out a legend.
    return len(text) * size * 0.6


def _axis_label(key: str, frame: Frame) -> str:
    # On a narrow chart a day is "MM-DD" (the period's range is in the filter above it).
    return key[5:] if frame.narrow and len(key) == 10 else key


def agent_colors(agents: Iterable[str]) -> dict[str, str]:
    """One colour per agent, the same in every chart on the page."""
    return {a: PALETTE[i % len(PALETTE)] for i, a in enumerate(sorted(set(agents)))}


def _num(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def nice_scale(peak: int, ticks: int = 4) -> tuple[int, int]:
    """(top of the axis, step between gridlines): round numbers at or above ``peak``."""
    if peak <= 0:
        return 1, 1
    raw = peak / ticks
    magnitude = 10 ** math.floor(math.log10(raw)) if raw >= 1 else 1
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    step = max(1, int(step))
    return step * math.ceil(peak / step), step


def periods_between(first: str, last: str, period: str) -> list[str]:
    """Every ``YYYY-MM-DD`` (day) or ``YYYY-MM`` (month) key from ``first`` to ``last``,
    so that quiet periods show as zero instead of being skipped."""
    if period == "month":
        y, m = int(first[:4]), int(first[5:7])
        y2, m2 = int(last[:4]), int(last[5:7])
        out = []
        while (y, m) <= (y2, m2):
            out.append(f"{y:04d}-{m:02d}")
            y, m = (y + 1, 1) if m == 12 else (y, m + 1)
        return out
    d, end = date.fromisoformat(first), date.fromisoformat(last)
    if (end - d).days > MAX_DAYS:
        raise ValueError("too many days for a daily axis")
    out = []
    while d <= end:
        out.append(d.isoformat())
        d += timedelta(days=1)
    return out


def _empty(width: int, height: int, label: str, css: str = "chart") -> Markup:
    return Markup(
        f'<svg class="{css}" viewBox="0 0 {width} {height}" role="img"'
        f' aria-label="{escape(label)}: no data">'
        f'<text class="empty" x="{width / 2}" y="{height / 2}" text-anchor="middle">'
        "No disclosures match</text></svg>"
    )


def _y_grid(
    parts: list[str], frame: Frame, ymax: int, ystep: int, y: Callable[[float], float]
) -> None:
    parts.append('<g class="grid">')
    for v in range(0, ymax + 1, ystep):
        parts.append(
            f'<line x1="{frame.left}" x2="{frame.width - frame.right}" y1="{_num(y(v))}"'
            f' y2="{_num(y(v))}"/><text class="tick" x="{frame.left - 6}" y="{_num(y(v) + 4)}"'
            f' text-anchor="end">{v}</text>'
        )
    parts.append("</g>")


def _x_labels(
    parts: list[str], frame: Frame, axis: Sequence[str], x: Callable[[int], float]
) -> None:
    every = max(1, math.ceil(len(axis) / frame.x_labels))
    parts.append('<g class="x-axis">')
    for i in range(0, len(axis), every):
        parts.append(
            f'<text class="tick" x="{_num(x(i))}" y="{frame.height - frame.bottom + 18}"'
            f' text-anchor="middle">{escape(_axis_label(axis[i], frame))}</text>'
        )
    bottom = frame.height - frame.bottom
    parts.append(
        f'<line class="axis" x1="{frame.left}" x2="{frame.width - frame.right}"'
        f' y1="{bottom}" y2="{bottom}"/></g>'
    )


def line_chart(
    series: Mapping[str, Mapping[str, int]],
    period: str,
    colors: Mapping[str, str],
    *,
    width: int = 960,
    height: int = 320,
    narrow: bool = False,
) -> Markup:
    """Disclosures per agent over time: one line per agent, a dot per period."""
    frame = NARROW_TIME if narrow else replace(WIDE_TIME, width=width, height=height)
    label = f"Disclosures per agent per {period}"
    keys = sorted({k for s in series.values() for k in s})
    if not keys:
        return _empty(frame.width, frame.height, label, f"{frame.css} line-chart")
    axis = periods_between(keys[0], keys[-1], period)
    pw = frame.width - frame.left - frame.right
    ph = frame.height - frame.top - frame.bottom
    peak = max((v for s in series.values() for v in s.values()), default=0)
    ymax, ystep = nice_scale(peak)
    n = len(axis)

    def x(i: int) -> float:
        return frame.left + (pw / 2 if n == 1 else i * pw / (n - 1))

    def y(v: float) -> float:
        return frame.top + ph - v * ph / ymax

    parts = [
        f'<svg class="{frame.css} line-chart" viewBox="0 0 {frame.width} {frame.height}"'
        f' role="img" aria-label="{escape(label)}">',
        f"<title>{escape(label)}</title>",
    ]
    _y_grid(parts, frame, ymax, ystep, y)
    _x_labels(parts, frame, axis, x)
    dots = n <= (31 if narrow else 62)
    for agent in sorted(series):
        values = series[agent]
        color = colors.get(agent, PALETTE[0])
        points = " ".join(f"{_num(x(i))},{_num(y(values.get(k, 0)))}" for i, k in enumerate(axis))
        total = sum(values.values())
        parts.append(f'<g class="series" data-agent="{escape(agent)}">')
        parts.append(
            f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}">'
            f"<title>{escape(agent)}: {total} disclosures</title></polyline>"
        )
        if dots:
            for i, k in enumerate(axis):
                v = values.get(k, 0)
                parts.append(
                    f'<circle cx="{_num(x(i))}" cy="{_num(y(v))}" r="3.5" fill="{color}">'
                    f"<title>{escape(agent)} · {escape(k)}: {v}</title></circle>"
                )
        parts.append("</g>")
    parts.append("</svg>")
    return Markup("".join(parts))


def stacked_columns(
    series: Mapping[str, Mapping[str, int]],
    period: str,
    colors: Mapping[str, str],
    *,
    narrow: bool = False,
) -> Markup:
    """Disclosures per period as one column each, split by agent: readable with a single
    day, where a line chart would put every agent's dot in one column."""
    frame = NARROW_TIME if narrow else WIDE_TIME
    label = f"Disclosures per agent per {period}"
    keys = sorted({k for s in series.values() for k in s})
    if not keys:
        return _empty(frame.width, frame.height, label, f"{frame.css} over-time")
    axis = periods_between(keys[0], keys[-1], period)
    pw = frame.width - frame.left - frame.right
    ph = frame.height - frame.top - frame.bottom
    totals = [sum(series[a].get(k, 0) for a in series) for k in axis]
    ymax, ystep = nice_scale(max(totals))
    slot = pw / len(axis)
    bar = max(1.0, min(slot * 0.7, 64.0))

    def x(i: int) -> float:
        return frame.left + slot * (i + 0.5)

    def y(v: float) -> float:
        return frame.top + ph - v * ph / ymax

    parts = [
        f'<svg class="{frame.css} column-chart over-time" viewBox="0 0 {frame.width}'
        f' {frame.height}" role="img" aria-label="{escape(label)}">',
        f"<title>{escape(label)}</title>",
    ]
    _y_grid(parts, frame, ymax, ystep, y)
    for i, k in enumerate(axis):
        parts.append(f'<g class="period" data-period="{escape(k)}">')
        base = 0
        for agent in sorted(series):
            v = series[agent].get(k, 0)
            if not v:
                continue
            parts.append(
                f'<rect x="{_num(x(i) - bar / 2)}" y="{_num(y(base + v))}" width="{_num(bar)}"'
                f' height="{_num(y(base) - y(base + v))}" fill="{colors.get(agent, PALETTE[0])}"'
                f' data-agent="{escape(agent)}"><title>{escape(agent)} · {escape(k)}: {v}'
                "</title></rect>"
            )
            base += v
        parts.append(
            f'<text class="total" x="{_num(x(i))}" y="{_num(y(base) - 4)}"'
            f' text-anchor="middle">{base}</text></g>'
            if base and len(axis) <= frame.x_labels * 2
            else "</g>"
        )
    _x_labels(parts, frame, axis, x)
    parts.append("</svg>")
    return Markup("".join(parts))


def over_time_chart(
    series: Mapping[str, Mapping[str, int]], period: str, colors: Mapping[str, str]
) -> Markup:
    """The dashboard's time chart, both drawings: stacked columns for a few periods
    (``COLUMN_PERIODS``), a line per agent for more."""
    keys = sorted({k for s in series.values() for k in s})
    few = not keys or len(periods_between(keys[0], keys[-1], period)) <= COLUMN_PERIODS
    draw = stacked_columns if few else line_chart
    return responsive(draw(series, period, colors), draw(series, period, colors, narrow=True))


def column_chart(
    counts: Mapping[str, int],
    period: str,
    color: str,
    *,
    label: str = "Disclosures",
    width: int = 560,
    height: int = 240,
    narrow: bool = False,
) -> Markup:
    """One series as columns (e.g. one agent's disclosures per month): readable even when
    there are only a few periods, where a line would be a lone dot."""
    frame = NARROW_COLUMNS if narrow else replace(WIDE_COLUMNS, width=width, height=height)
    if not counts:
        return _empty(frame.width, frame.height, label, f"{frame.css} column-chart")
    keys = sorted(counts)
    axis = periods_between(keys[0], keys[-1], period)
    pw = frame.width - frame.left - frame.right
    ph = frame.height - frame.top - frame.bottom
    ymax, ystep = nice_scale(max(counts.values()))
    slot = pw / len(axis)
    bar = max(1.0, min(slot * 0.7, 48.0))

    def x(i: int) -> float:
        return frame.left + slot * (i + 0.5)

    def y(v: float) -> float:
        return frame.top + ph - v * ph / ymax

    parts = [
        f'<svg class="{frame.css} column-chart" viewBox="0 0 {frame.width} {frame.height}"'
        f' role="img" aria-label="{escape(label)} per {escape(period)}">',
        f"<title>{escape(label)} per {escape(period)}</title>",
    ]
    _y_grid(parts, frame, ymax, ystep, y)
    for i, k in enumerate(axis):
        v = counts.get(k, 0)
        parts.append(
            f'<rect x="{_num(x(i) - bar / 2)}" y="{_num(y(v))}" width="{_num(bar)}"'
            f' height="{_num(ph - (y(v) - frame.top))}" rx="2" fill="{color}">'
            f"<title>{escape(k)}: {v}</title></rect>"
        )
    _x_labels(parts, frame, axis, x)
    parts.append("</svg>")
    return Markup("".join(parts))


def stacked_bars(
    outcomes: Mapping[str, Mapping[str, int]],
    *,
    width: int = 960,
    row: int = 30,
    narrow: bool = False,
) -> Markup:
    """Per agent, one bar split into sent, withheld and erasure notices. On a narrow
    drawing each agent's name stands above its bar instead of beside it."""
    label = "Sent vs withheld per agent"
    css = "narrow chart" if narrow else "chart"
    if narrow:
        width, row = 340, 46
    agents = sorted(outcomes)
    if not agents:
        return _empty(width, 120, label, f"{css} bar-chart")
    left, right, top = (4, 44, 30) if narrow else (140, 60, 34)
    pw = width - left - right
    height = top + row * len(agents) + 8
    peak = max(sum(o.values()) for o in outcomes.values()) or 1
    parts = [
        f'<svg class="{css} bar-chart" viewBox="0 0 {width} {height}" role="img"'
        f' aria-label="{escape(label)}">',
        f"<title>{escape(label)}</title>",
        '<g class="legend">',
    ]
    lx = float(left)
    for outcome, color in OUTCOME_COLORS.items():
        parts.append(
            f'<rect x="{_num(lx)}" y="8" width="12" height="12" rx="2" fill="{color}"/>'
            f'<text x="{_num(lx + 18)}" y="18">{OUTCOME_LABELS[outcome]}</text>'
        )
        lx += 18 + _text_width(OUTCOME_LABELS[outcome], 13) + 16 if narrow else 130
    parts.append("</g>")
    bar_h = 18 if narrow else row - 8
    for r, agent in enumerate(agents):
        counts = outcomes[agent]
        y0 = top + r * row
        bar_y = y0 + (row - bar_h - 4) if narrow else y0 + 4
        text_y = bar_y + bar_h / 2 + 4
        name = (
            f'<text class="label" x="{left}" y="{y0 + 14}">{escape(agent)}</text>'
            if narrow
            else f'<text class="label" x="{left - 10}" y="{_num(text_y)}" text-anchor="end">'
            f"{escape(agent)}</text>"
        )
        parts.append(f'<g class="bar" data-agent="{escape(agent)}">{name}')
        x0 = float(left)
        for outcome, color in OUTCOME_COLORS.items():
            v = counts.get(outcome, 0)
            if not v:
                continue
            w = v * pw / peak
            parts.append(
                f'<rect x="{_num(x0)}" y="{_num(bar_y)}" width="{_num(w)}" height="{bar_h}"'
                f' fill="{color}"><title>{escape(agent)}: {v} {OUTCOME_LABELS[outcome]}'
                "</title></rect>"
            )
            if w >= _text_width(str(v), 13) + 8:
                parts.append(
                    f'<text class="in-bar" x="{_num(x0 + w / 2)}" y="{_num(text_y)}"'
                    f' text-anchor="middle">{v}</text>'
                )
            x0 += w
        parts.append(
            f'<text class="total" x="{_num(x0 + 6)}" y="{_num(text_y)}">'
            f"{sum(counts.values())}</text></g>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


@dataclass(frozen=True)
class HeatCell:
    value: int
    level: int  # 0 (none) .. HEAT_LEVELS, a CSS class: the page allows no inline styles


@dataclass(frozen=True)
class HeatTable:
    agents: list[str]
    rows: list[tuple[str, list[HeatCell]]]
    peak: int


def heat_table(matrix: Mapping[str, Mapping[str, int]], agents: Sequence[str]) -> HeatTable:
    """The categories x agents matrix with a shade per cell, for an HTML table."""
    cols = sorted({*agents, *(a for per in matrix.values() for a in per)})
    peak = max((v for per in matrix.values() for v in per.values()), default=0)
    rows = []
    for category in sorted(matrix):
        cells = []
        for agent in cols:
            v = matrix[category].get(agent, 0)
            level = 0 if v <= 0 else max(1, math.ceil(HEAT_LEVELS * v / peak))
            cells.append(HeatCell(v, level))
        rows.append((category, cells))
    return HeatTable(cols, rows, peak)

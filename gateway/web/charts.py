"""Charts drawn on the server as inline SVG: no JavaScript, no library, nothing fetched.

The reviewer's browser may have no internet access and the page's Content-Security-Policy
forbids scripts and inline styles, so colours are SVG presentation attributes (``fill``,
``stroke``, which CSP does not govern) and the rest of the look comes from the external
stylesheet. Tooltips are SVG ``<title>`` elements. Every piece of text that comes from the
log (agent names, categories) is escaped: they are data, not markup.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
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


def _empty(width: int, height: int, label: str) -> Markup:
    return Markup(
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img"'
        f' aria-label="{escape(label)}: no data">'
        f'<text class="empty" x="{width / 2}" y="{height / 2}" text-anchor="middle">'
        "No disclosures match</text></svg>"
    )


def line_chart(
    series: Mapping[str, Mapping[str, int]],
    period: str,
    colors: Mapping[str, str],
    *,
    width: int = 960,
    height: int = 320,
) -> Markup:
    """Disclosures per agent over time: one line per agent, a dot per period."""
    label = f"Disclosures per agent per {period}"
    keys = sorted({k for s in series.values() for k in s})
    if not keys:
        return _empty(width, height, label)
    axis = periods_between(keys[0], keys[-1], period)
    left, right, top, bottom = 52, 16, 14, 44
    pw, ph = width - left - right, height - top - bottom
    peak = max((v for s in series.values() for v in s.values()), default=0)
    ymax, ystep = nice_scale(peak)
    n = len(axis)

    def x(i: int) -> float:
        return left + (pw / 2 if n == 1 else i * pw / (n - 1))

    def y(v: float) -> float:
        return top + ph - v * ph / ymax

    parts = [
        f'<svg class="chart line-chart" viewBox="0 0 {width} {height}" role="img"'
        f' aria-label="{escape(label)}">',
        f"<title>{escape(label)}</title>",
        '<g class="grid">',
    ]
    for v in range(0, ymax + 1, ystep):
        parts.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{_num(y(v))}" y2="{_num(y(v))}"/>'
            f'<text class="tick" x="{left - 8}" y="{_num(y(v) + 4)}" text-anchor="end">{v}</text>'
        )
    parts.append("</g>")
    every = max(1, math.ceil(n / 10))
    parts.append('<g class="x-axis">')
    for i in range(0, n, every):
        parts.append(
            f'<text class="tick" x="{_num(x(i))}" y="{height - bottom + 18}"'
            f' text-anchor="middle">{escape(axis[i])}</text>'
        )
    parts.append(
        f'<line class="axis" x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}"/></g>'
    )
    dots = n <= 62
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


def column_chart(
    counts: Mapping[str, int],
    period: str,
    color: str,
    *,
    label: str = "Disclosures",
    width: int = 560,
    height: int = 240,
) -> Markup:
    """One series as columns (e.g. one agent's disclosures per month): readable even when
    there are only a few periods, where a line would be a lone dot."""
    if not counts:
        return _empty(width, height, label)
    keys = sorted(counts)
    axis = periods_between(keys[0], keys[-1], period)
    left, right, top, bottom = 44, 10, 12, 40
    pw, ph = width - left - right, height - top - bottom
    ymax, ystep = nice_scale(max(counts.values()))
    slot = pw / len(axis)
    bar = max(1.0, min(slot * 0.7, 48.0))

    def y(v: float) -> float:
        return top + ph - v * ph / ymax

    parts = [
        f'<svg class="chart column-chart" viewBox="0 0 {width} {height}" role="img"'
        f' aria-label="{escape(label)} per {escape(period)}">',
        f"<title>{escape(label)} per {escape(period)}</title>",
        '<g class="grid">',
    ]
    for v in range(0, ymax + 1, ystep):
        parts.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{_num(y(v))}" y2="{_num(y(v))}"/>'
            f'<text class="tick" x="{left - 6}" y="{_num(y(v) + 4)}" text-anchor="end">{v}</text>'
        )
    parts.append("</g>")
    every = max(1, math.ceil(len(axis) / 8))
    for i, k in enumerate(axis):
        v = counts.get(k, 0)
        cx = left + slot * (i + 0.5)
        parts.append(
            f'<rect x="{_num(cx - bar / 2)}" y="{_num(y(v))}" width="{_num(bar)}"'
            f' height="{_num(ph - (y(v) - top))}" rx="2" fill="{color}">'
            f"<title>{escape(k)}: {v}</title></rect>"
        )
        if i % every == 0:
            parts.append(
                f'<text class="tick" x="{_num(cx)}" y="{height - bottom + 16}"'
                f' text-anchor="middle">{escape(k)}</text>'
            )
    parts.append(
        f'<line class="axis" x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}"/></svg>'
    )
    return Markup("".join(parts))


def stacked_bars(
    outcomes: Mapping[str, Mapping[str, int]],
    *,
    width: int = 960,
    row: int = 30,
) -> Markup:
    """Per agent, one bar split into sent, withheld and erasure notices."""
    label = "Sent vs withheld per agent"
    agents = sorted(outcomes)
    if not agents:
        return _empty(width, 120, label)
    left, right, top = 140, 60, 34
    pw = width - left - right
    height = top + row * len(agents) + 8
    peak = max(sum(o.values()) for o in outcomes.values()) or 1
    parts = [
        f'<svg class="chart bar-chart" viewBox="0 0 {width} {height}" role="img"'
        f' aria-label="{escape(label)}">',
        f"<title>{escape(label)}</title>",
        '<g class="legend">',
    ]
    lx = left
    for outcome, color in OUTCOME_COLORS.items():
        parts.append(
            f'<rect x="{lx}" y="8" width="12" height="12" rx="2" fill="{color}"/>'
            f'<text x="{lx + 18}" y="18">{OUTCOME_LABELS[outcome]}</text>'
        )
        lx += 130
    parts.append("</g>")
    for r, agent in enumerate(agents):
        counts = outcomes[agent]
        y0 = top + r * row
        parts.append(
            f'<g class="bar" data-agent="{escape(agent)}">'
            f'<text class="label" x="{left - 10}" y="{y0 + row / 2 + 4}" text-anchor="end">'
            f"{escape(agent)}</text>"
        )
        x0 = float(left)
        for outcome, color in OUTCOME_COLORS.items():
            v = counts.get(outcome, 0)
            if not v:
                continue
            w = v * pw / peak
            parts.append(
                f'<rect x="{_num(x0)}" y="{y0 + 4}" width="{_num(w)}" height="{row - 8}"'
                f' fill="{color}"><title>{escape(agent)}: {v} {OUTCOME_LABELS[outcome]}'
                "</title></rect>"
            )
            if w >= 28:
                parts.append(
                    f'<text class="in-bar" x="{_num(x0 + w / 2)}" y="{y0 + row / 2 + 4}"'
                    f' text-anchor="middle">{v}</text>'
                )
            x0 += w
        parts.append(
            f'<text class="total" x="{_num(x0 + 6)}" y="{y0 + row / 2 + 4}">'
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

"""Line charts as inline SVG, drawn on the server: no scripts, no external files.

The SVG has a fixed viewBox and scales to its container's width, so one drawing serves a phone and a
wide screen. Colours come from CSS classes (`s0`..`s3`) defined by the page, not style attributes, so the
page's Content-Security-Policy can forbid inline style attributes.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

WIDTH, HEIGHT = 520, 300
LEFT, RIGHT, TOP, BOTTOM = 64, 14, 22, 48
MAX_POINTS = 400          # per series: more points than pixels only makes the page heavier
DOTS_UP_TO = 40           # draw a dot on every point of short series (a single epoch is still visible)


@dataclass
class Series:
    name: str
    runs: list[list[tuple[float, float]]] = field(default_factory=list)  # each run is one connected line

    @property
    def points(self) -> list[tuple[float, float]]:
        return [p for run in self.runs for p in run]


@dataclass
class Marker:
    x: float
    label: str


def nice_step(span: float, count: int = 5, integer: bool = False) -> float:
    raw = span / max(1, count)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if raw <= m * magnitude * (1 + 1e-9))
    return max(1.0, round(step)) if integer else step


def axis(lo: float, hi: float, *, integer: bool = False, count: int = 5) -> tuple[float, float, list[float]]:
    """A rounded domain around [lo, hi] and its tick positions."""
    if hi - lo <= 0:
        pad = abs(hi) * 0.1 or 1.0
        lo, hi = (max(0.0, lo - pad) if lo >= 0 else lo - pad), hi + pad  # keep non-negative data non-negative
    step = nice_step(hi - lo, count, integer)
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    ticks = [i * step for i in range(first, last + 1)]
    return ticks[0], ticks[-1], ticks


def tick_label(value: float, step: float) -> str:
    if abs(value) < step * 1e-6:
        return "0"
    shown = f"{step:.10f}".rstrip("0")
    decimals = len(shown.split(".")[1])  # as many decimals as the step needs (2.5 -> 1, 0.02 -> 2)
    if decimals > 4 or abs(value) >= 1e6:
        return f"{value:.1e}".replace("e-0", "e-").replace("e+0", "e")
    return f"{value:.{decimals}f}"


def _thin(run: list[tuple[float, float]], limit: int) -> list[tuple[float, float]]:
    if len(run) <= limit:
        return run
    stride = math.ceil(len(run) / limit)
    return run[::stride] + ([run[-1]] if (len(run) - 1) % stride else [])


def line_chart(chart_id: str, title: str, series: list[Series], *, x_label: str, y_label: str,
               markers: list[Marker] = (), x_integer: bool = False, y_min: float | None = 0.0) -> str:
    """An <svg> element (string) with axes, grid, one path per series and dashed vertical markers."""
    esc = html.escape
    series = [Series(s.name, [r for r in s.runs if r]) for s in series]
    points = [p for s in series for p in s.points]
    if not points:
        return ""
    xs = [x for x, _ in points] + [m.x for m in markers]
    ys = [y for _, y in points]
    x0, x1, xticks = axis(min(xs), max(xs), integer=x_integer)
    low = min(ys) if y_min is None else min(y_min, min(ys))
    y0, y1, yticks = axis(low, max(ys))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def sx(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return TOP + plot_h - (y - y0) / (y1 - y0) * plot_h

    out = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="{esc(chart_id)}-t" '
           f'xmlns="http://www.w3.org/2000/svg">',
           f'<title id="{esc(chart_id)}-t">{esc(title)}</title>']
    xstep = xticks[1] - xticks[0] if len(xticks) > 1 else 1.0
    ystep = yticks[1] - yticks[0] if len(yticks) > 1 else 1.0
    for y in yticks:
        out.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{sy(y):.1f}" y2="{sy(y):.1f}"/>')
        out.append(f'<text class="tick" x="{LEFT - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{esc(tick_label(y, ystep))}</text>')
    for x in xticks:
        out.append(f'<line class="grid" x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{TOP}" y2="{TOP + plot_h}"/>')
        out.append(f'<text class="tick" x="{sx(x):.1f}" y="{TOP + plot_h + 18}" text-anchor="middle">{esc(tick_label(x, xstep))}</text>')
    out.append(f'<rect class="frame" x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}"/>')
    out.append(f'<text class="axis-label" x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 8}" text-anchor="middle">{esc(x_label)}</text>')
    out.append(f'<text class="axis-label" transform="translate(15 {TOP + plot_h / 2:.1f}) rotate(-90)" '
               f'text-anchor="middle">{esc(y_label)}</text>')
    for marker in markers:
        mx = sx(marker.x)
        out.append(f'<g class="marker"><title>{esc(marker.label)}</title>'
                   f'<line x1="{mx:.1f}" x2="{mx:.1f}" y1="{TOP}" y2="{TOP + plot_h}"/>'
                   f'<path class="flag" d="M{mx:.1f},{TOP} l-5,-9 h10 z"/></g>')
    for index, s in enumerate(series):
        cls = f"s{index % 4}"
        runs = [_thin(run, MAX_POINTS) for run in s.runs]
        d = " ".join("M" + " L".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in run) for run in runs)
        out.append(f'<path class="line {cls}" d="{d}"><title>{esc(s.name)}</title></path>')
        if sum(len(r) for r in runs) <= DOTS_UP_TO:
            out.extend(f'<circle class="dot {cls}" cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3.5"/>' for run in runs for x, y in run)
    out.append("</svg>")
    return "".join(out)

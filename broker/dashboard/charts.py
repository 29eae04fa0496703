"""Line charts over time as inline SVG (pure).  Every text is escaped."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

W, H, LEFT, RIGHT, TOP, BOTTOM = 560, 200, 56, 12, 26, 30
MAX_MARKERS = 150  # per series: beyond this the line alone reads better than dots


@dataclass(frozen=True, slots=True)
class Series:
    label: str
    points: tuple[tuple[int, float], ...]  # (time_ms, value), oldest first


def _ticks(lo: float, hi: float) -> tuple[float, float]:
    if hi <= lo:
        pad = abs(hi) * 0.1 or 1.0
        return max(lo - pad, 0.0) if lo >= 0 else lo - pad, hi + pad
    pad = (hi - lo) * 0.08
    # Counts, depths and scores are never negative: do not draw an axis below zero for them.
    return (max(lo - pad, 0.0) if lo >= 0 else lo - pad), hi + pad


def _hms(ms: int) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(ms / 1000))


def line_chart(
    title: str,
    series: Sequence[Series],
    *,
    threshold: float | None = None,
    unit: str = "",
) -> str:
    """One chart; a line per series, a dashed line at ``threshold``."""
    points = [p for s in series for p in s.points]
    head = (
        f'<figure class="chart"><figcaption>{escape(title)}</figcaption>'
        f'<svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
        f'aria-label="{escape(title)}">'
    )
    if not points:
        return (
            head + f'<text x="{W // 2}" y="{H // 2}" text-anchor="middle" class="muted">'
            "no data in this period</text></svg></figure>"
        )
    t0, t1 = min(p[0] for p in points), max(p[0] for p in points)
    values = [p[1] for p in points] + ([threshold] if threshold is not None else [])
    lo, hi = _ticks(min(values), max(values))
    span_t = max(t1 - t0, 1)

    def x(t: int) -> float:
        return LEFT + (t - t0) / span_t * (W - LEFT - RIGHT)

    def y(v: float) -> float:
        return TOP + (hi - v) / (hi - lo) * (H - TOP - BOTTOM)

    out = [
        head,
        f'<line class="axis" x1="{LEFT}" y1="{H - BOTTOM}" x2="{W - RIGHT}" y2="{H - BOTTOM}"/>',
        f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{H - BOTTOM}"/>',
        f'<text class="tick" x="{LEFT - 4}" y="{TOP + 4}" text-anchor="end">'
        f"{escape(f'{hi:.3g}{unit}')}</text>",
        f'<text class="tick" x="{LEFT - 4}" y="{H - BOTTOM}" text-anchor="end">'
        f"{escape(f'{lo:.3g}{unit}')}</text>",
        f'<text class="tick" x="{LEFT}" y="{H - 10}">{_hms(t0)}</text>',
        f'<text class="tick" x="{W - RIGHT}" y="{H - 10}" text-anchor="end">{_hms(t1)}Z</text>',
    ]
    if threshold is not None:
        ty = y(threshold)
        out.append(
            f'<line class="threshold" x1="{LEFT}" y1="{ty:.1f}" x2="{W - RIGHT}" y2="{ty:.1f}">'
            f"<title>threshold {threshold:g}</title></line>"
        )
    legend_x = LEFT
    for i, s in enumerate(series):
        cls = f"s{i % 6}"
        coords = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in s.points)
        out.append(
            f'<g class="series {cls}" data-series="{escape(s.label)}" '
            f'data-points="{len(s.points)}"><polyline points="{coords}"/>'
        )
        if len(s.points) <= MAX_MARKERS:
            out.extend(
                f'<circle class="pt" cx="{x(t):.1f}" cy="{y(v):.1f}" r="2.5">'
                f"<title>{escape(s.label)} {v:.4g} at {_hms(t)}Z</title></circle>"
                for t, v in s.points
            )
        out.append("</g>")
        out.append(
            f'<text class="legend {cls}" x="{legend_x}" y="{TOP - 10}">{escape(s.label)}</text>'
        )
        legend_x += 10 + 7 * len(s.label)
    out.append("</svg></figure>")
    return "".join(out)

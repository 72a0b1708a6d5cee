"""Small server-rendered SVG charts (no chart library, no CDN): readable in a screenshot, scale to
the container's width, and re-render with the fragment a live event refreshes. In the kernel: the
member pages (``frontend``) and the ops dashboard's panels (domain apps, which never import
``frontend``) draw with the same helpers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe


def _money(value: float) -> str:
    sign = "−" if value < 0 else ""
    value = abs(value)
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{sign}{value / size:,.2f}{suffix}"
    return f"{sign}{value:,.0f}"


def bar_chart(items: Sequence[tuple[str, float]], *, title: str, colour: str = "#2456a6") -> SafeString:
    """Horizontal bars, one per ``(label, USD value)``; negative values (credits) in green, leftwards
    from the zero line."""
    if not items:
        return format_html('<p class="muted">Nothing to chart.</p>')
    row, label_w, width = 26, 150, 560
    low = min(0.0, *(v for _, v in items))
    high = max(0.0, *(v for _, v in items))
    span = (high - low) or 1.0
    plot = width - label_w - 90

    def x(value: float) -> float:
        return label_w + (value - low) / span * plot

    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {row * len(items) + 8}" role="img" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>'
    ]
    zero = x(0.0)
    for i, (label, value) in enumerate(items):
        y = 4 + i * row
        left, right = sorted((zero, x(value)))
        fill = "#1f8a4c" if value < 0 else colour
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 17}" text-anchor="end">{escape(label)}</text>'
            f'<rect x="{left:.1f}" y="{y + 4}" width="{max(right - left, 1):.1f}" height="{row - 8}" '
            f'fill="{fill}" rx="2"/>'
            f'<text x="{right + 6:.1f}" y="{y + 17}">{_money(value)}</text>'
        )
    parts.append(
        f'<line x1="{zero:.1f}" x2="{zero:.1f}" y1="0" y2="{row * len(items) + 8}" stroke="#5b6777"/>'
    )
    parts.append("</svg>")
    return mark_safe("".join(parts))


def line_chart(
    times: Sequence[datetime],
    series: Sequence[tuple[str, str, Sequence[float]]],
    *,
    title: str,
    time_format: str = "%d %b %H:%M",
) -> SafeString:
    """Lines over time, ``series`` as ``(name, colour, values)``; a legend under the plot; the first
    and last times labelled with ``time_format`` (``"%d %b %Y"`` for daily series)."""
    if len(times) < 2:
        return mark_safe('<p class="muted">Not enough history yet.</p>')  # a constant, nothing to escape
    width, height, left, top, bottom = 560, 200, 64, 10, 24
    values = [v for _, _, vs in series for v in vs if v is not None]
    low, high = min(values), max(values)
    if high == low:
        high, low = high + 1, low - 1
    low -= (high - low) * 0.05
    high += (high - low) * 0.05
    t0, t1 = times[0].timestamp(), times[-1].timestamp()
    tspan = (t1 - t0) or 1.0

    def point(t: datetime, v: float) -> str:
        px = left + (t.timestamp() - t0) / tspan * (width - left - 8)
        py = top + (high - v) / (high - low) * (height - top - bottom)
        return f"{px:.1f},{py:.1f}"

    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height + 22}" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>"
    ]
    for fraction in (0.0, 0.5, 1.0):
        v = low + (high - low) * fraction
        y = top + (1 - fraction) * (height - top - bottom)
        parts.append(
            f'<line x1="{left}" x2="{width - 8}" y1="{y:.1f}" y2="{y:.1f}" stroke="#dde3ea"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_money(v)}</text>'
        )
    parts.append(
        f'<text x="{left}" y="{height - 6}">{times[0].strftime(time_format)}</text>'
        f'<text x="{width - 8}" y="{height - 6}" text-anchor="end">{times[-1].strftime(time_format)}</text>'
    )
    legend_x = left
    for name, colour, vs in series:
        pts = " ".join(point(t, v) for t, v in zip(times, vs, strict=True) if v is not None)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{pts}"/>')
        parts.append(
            f'<rect x="{legend_x}" y="{height + 8}" width="12" height="4" fill="{colour}"/>'
            f'<text x="{legend_x + 16}" y="{height + 14}">{escape(name)}</text>'
        )
        legend_x += 110
    parts.append("</svg>")
    return mark_safe("".join(parts))

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


def distance_gauge(
    items: Sequence[tuple[str, float | None, float | None]],
    *,
    title: str,
    watch: float,
    warning: float,
    scale: float = 10.0,
) -> SafeString:
    """One gauge per ``(label, down, up)`` distance to liquidation in daily standard deviations
    (``None``: no move of the range liquidates; NaN: no volatility forecast). From the centre
    (today's price) a bar runs left for a fall and right for a rise, as long as the distance (at
    most ``scale``): red below ``warning``, amber below ``watch``, green beyond; the two
    thresholds are marked on both sides."""
    if not items:
        return format_html('<p class="muted">Nothing to chart.</p>')
    row, label_w, width = 30, 70, 560
    half = (width - label_w - 20) / 2
    centre = label_w + 10 + half

    def reach(sigmas: float) -> float:
        return min(max(sigmas, 0.0), scale) / scale * half

    def colour(sigmas: float) -> str:
        return "#c62828" if sigmas < warning else "#b26a00" if sigmas < watch else "#1f8a4c"

    height = row * len(items) + 22
    parts = [
        f'<svg class="chart gauge" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>'
    ]
    for i, (label, down, up) in enumerate(items):
        y = 4 + i * row
        parts.append(f'<text x="{label_w}" y="{y + 18}" text-anchor="end">{escape(label)}</text>')
        parts.append(
            f'<rect x="{centre - half:.1f}" y="{y + 6}" width="{2 * half:.1f}" height="{row - 12}" '
            'fill="#eef1f5" rx="2"/>'
        )
        for side, sigmas in ((-1, down), (1, up)):
            if sigmas is None:
                text, anchor = "none in range", centre + side * half * 0.5
                parts.append(
                    f'<text x="{anchor:.1f}" y="{y + 18}" text-anchor="middle" fill="#5b6777">{text}</text>'
                )
                continue
            if sigmas != sigmas:  # NaN: no forecast
                parts.append(
                    f'<text x="{centre + side * half * 0.5:.1f}" y="{y + 18}" text-anchor="middle" '
                    'fill="#c62828">no forecast</text>'
                )
                continue
            length = max(reach(sigmas), 1.0)
            left = centre - length if side < 0 else centre
            tip = centre + side * length
            parts.append(
                f'<rect x="{left:.1f}" y="{y + 8}" width="{length:.1f}" height="{row - 16}" '
                f'fill="{colour(sigmas)}" rx="2"/>'
            )
            # The figure inside the bar near today's price (white), or past a short bar's tip.
            inside = length > 50
            text_x = centre + side * 6 if inside else tip + side * 4
            anchor = "end" if side < 0 else "start"
            fill = "#fff" if inside else "#1c2430"
            parts.append(
                f'<text x="{text_x:.1f}" y="{y + 18}" text-anchor="{anchor}" fill="{fill}">'
                f"{'≥' if sigmas >= scale else ''}{min(sigmas, scale):.1f}σ</text>"
            )
    for threshold, stroke in ((warning, "#c62828"), (watch, "#b26a00")):
        for side in (-1, 1):
            x = centre + side * reach(threshold)
            parts.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="2" y2="{height - 18}" stroke="{stroke}" '
                'stroke-dasharray="3 3"/>'
            )
    parts.append(
        f'<line x1="{centre:.1f}" x2="{centre:.1f}" y1="0" y2="{height - 18}" stroke="#1c2430"/>'
        f'<text x="{centre - half:.1f}" y="{height - 4}">◀ fall</text>'
        f'<text x="{centre:.1f}" y="{height - 4}" text-anchor="middle">today</text>'
        f'<text x="{centre + half:.1f}" y="{height - 4}" text-anchor="end">rise ▶</text>'
    )
    parts.append("</svg>")
    return mark_safe("".join(parts))

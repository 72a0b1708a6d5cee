from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def usd(value) -> str:
    """12,345.67 with a real minus sign; an em dash for no value."""
    if value is None or value == "":
        return "—"
    value = round(float(value), 2)
    return f"{'−' if value < 0 else ''}{abs(value):,.2f}"


@register.filter
def ratio(value) -> str:
    return "—" if value is None else f"{float(value):.2f}×"


@register.filter
def pct(value) -> str:
    return "—" if value is None else f"{float(value) * 100:.1f} %"


@register.filter
def chance(value) -> str:
    """A probability: 0.5 %; below 0.1 % as "< 0.1 %" (not "0.0 %", which reads as impossible)."""
    if value is None:
        return "—"
    value = float(value)
    return "< 0.1 %" if 0 <= value < 0.0005 else f"{value * 100:.1f} %"


@register.filter
def pct2(value) -> str:
    """A coverage: 98.74 % (two decimals, where one would round 98.96 % up to 99.0 %)."""
    return "—" if value is None else f"{float(value) * 100:.2f} %"


@register.filter
def qty(value) -> str:
    if value is None:
        return "—"
    return f"{float(value):,.4f}".rstrip("0").rstrip(".")


@register.filter
def status_label(value) -> str:
    """``margin_call`` → ``margin call``; no status (never swept) → an em dash."""
    return str(value).replace("_", " ") if value else "—"

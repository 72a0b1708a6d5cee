"""The custody section of a member's account page: deposits announced but not yet confirmed
(they count for nothing) and withdrawals requested but not yet sent (already out of equity).

An inclusion tag over ``accounts.selectors.custody_pending``, so the page shows it without its
view knowing about custody."""

from __future__ import annotations

from django import template

from accounts.selectors import custody_pending

register = template.Library()


@register.inclusion_tag("frontend/_custody_pending.html")
def custody_pending_section(account) -> dict:
    return {"account": account, "pending": custody_pending(account=account)}


@register.filter
def units(value) -> str:
    """A Decimal amount of an asset, exactly, without trailing zeros (``1,250.5``)."""
    return "—" if value is None else format(value.normalize(), ",f")

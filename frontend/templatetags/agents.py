"""The agents section of a member's account page (part of its live fragment, re-read on every push,
``collateral.auto_transfer`` and ``hedge.*`` included): the band policy and its latest transfers,
the hedge policies and their latest hedges; for a funding account, its transfers in and out.

An inclusion tag over ``agents.selectors``, so the page shows it without its view knowing about the
agents."""

from __future__ import annotations

from django import template

from accounts.models import AccountKind
from agents.selectors import auto_transfers_of, band_policy_of, hedge_policies_of, hedge_requests_of

register = template.Library()

RECENT = 10


@register.inclusion_tag("frontend/_agents.html")
def agents_section(account) -> dict:
    funding = account.kind == AccountKind.FUNDING
    return {
        "account": account,
        "is_funding": funding,
        "band": None if funding else band_policy_of(account=account),
        "transfers": list(auto_transfers_of(account=account)[:RECENT]),
        "hedge_policies": [] if funding else list(hedge_policies_of(account=account).filter(is_active=True)),
        "hedges": [] if funding else list(hedge_requests_of(account=account)[:RECENT]),
    }

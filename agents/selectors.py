"""Reads of the agents: which swept accounts a policy must look at, and what the member pages, the
API and the admin show."""

from __future__ import annotations

import numpy as np
from django.db.models import Q, QuerySet

from accounts.models import ACCOUNT_READER_ROLES, AccountKind, MarginAccount, Member, User
from accounts.selectors import user_admitted
from agents.models import AutoTransfer, BandPolicy, HedgePolicy, HedgeRequest, WebhookAttempt, WebhookEndpoint
from clearing.bulk import filter_any
from riskengine.sweeps.signals import SweptMargins


def swept_accounts_due(*, swept: SweptMargins) -> list[int]:
    """The accounts among ``swept`` a running policy must look at now: equity / MM below a band's
    search level or above its release level; an underlying's dollar delta further from a hedge
    policy's target than its threshold. Accounts whose figures are not numbers are left alone (no
    agent acts on them). Two queries whatever the number of accounts (one array parameter each)."""
    ids = swept.account_ids
    if not ids.size:
        return []
    running = Q(is_active=True, suspended_at=None)
    id_list = ids.tolist()
    bands = filter_any(BandPolicy.objects.filter(running), "account_id", id_list).values_list(
        "account_id", "search_level", "release_level"
    )
    hedges = filter_any(HedgePolicy.objects.filter(running), "account_id", id_list).values_list(
        "account_id", "underlying__symbol", "target_delta_usd", "threshold_usd"
    )
    due = set()
    for account_id, search, release in bands:
        i = int(np.searchsorted(ids, account_id))
        equity, maintenance = float(swept.equity[i]), float(swept.maintenance_margin[i])
        if not swept.finite[i] or not maintenance > 0:
            continue
        ratio = equity / maintenance
        if ratio < float(search) or ratio > float(release):
            due.add(account_id)
    for account_id, underlying, target, threshold in hedges:
        i = int(np.searchsorted(ids, account_id))
        if not swept.finite[i]:
            continue
        delta = swept.delta_usd(i).get(underlying, 0.0)
        if abs(delta - float(target)) > float(threshold):
            due.add(account_id)
    return sorted(due)


def funding_account_of(*, member_id: int) -> MarginAccount | None:
    return MarginAccount.objects.filter(member_id=member_id, kind=AccountKind.FUNDING).first()


def band_policy_of(*, account: MarginAccount) -> BandPolicy | None:
    return (
        BandPolicy.objects.select_related("funding_account", "suspended_by").filter(account=account).first()
    )


def auto_transfers_of(*, account: MarginAccount) -> QuerySet[AutoTransfer]:
    """The transfers into or out of ``account``: a margin account's, or all of a funding account's."""
    return (
        AutoTransfer.objects.filter(Q(account=account) | Q(funding_account=account))
        .select_related("account", "funding_account")
        .order_by("-id")
    )


def hedge_policies_of(*, account: MarginAccount) -> QuerySet[HedgePolicy]:
    """Every hedge policy of ``account``, the active ones first."""
    return (
        HedgePolicy.objects.filter(account=account)
        .select_related("underlying", "instrument", "endpoint", "account")
        .order_by("-is_active", "underlying__symbol", "-pk")
    )


def hedge_requests_of(*, account: MarginAccount) -> QuerySet[HedgeRequest]:
    return (
        HedgeRequest.objects.filter(account=account)
        .select_related("instrument", "account", "policy")
        .prefetch_related("fills")
        .order_by("-id")
    )


def webhook_endpoints_visible(*, user: User) -> QuerySet[WebhookEndpoint]:
    """The endpoints ``user`` may see, by the rule of ``margin_accounts_visible``: its member's for
    member users, all for venue readers (ops, risk approvers), none for anyone else."""
    endpoints = WebhookEndpoint.objects.select_related("member").order_by("-is_active", "pk")
    if not user_admitted(user=user):
        return endpoints.none()
    if user.is_superuser or user.role in ACCOUNT_READER_ROLES:
        return endpoints
    if user.is_member_user:
        return endpoints.filter(member_id=user.member_id)
    return endpoints.none()


def webhook_endpoints_of(*, member: Member) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.filter(member=member).order_by("-is_active", "pk")


def webhook_attempts_of(*, endpoint: WebhookEndpoint) -> QuerySet[WebhookAttempt]:
    return WebhookAttempt.objects.filter(endpoint=endpoint).select_related("hedge_request").order_by("-id")

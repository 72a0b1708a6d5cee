"""Configuring the agents: band policies, hedge policies and webhook endpoints.

Members' traders set and switch off their own account's policies and their member's endpoints
(viewers may not: ``PermissionDenied``); venue ops suspend and resume any policy (the admin).
Every change appends a ``PolicyChange`` with the fields before and after, in the same transaction.
Bad input is a ``ValidationError`` naming the field, and nothing changes. What the policies then
do is in ``agents.band`` and ``agents.hedge``; deliveries in ``agents.webhooks``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from decimal import Decimal
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models, transaction
from django.utils import timezone

from accounts.models import AccountKind, Asset, MarginAccount, MarginMode, Member, Role, User
from agents.crypto import secret_encrypt, webhook_secret_generate
from agents.models import (
    BandPolicy,
    HedgeMode,
    HedgePolicy,
    PolicyAction,
    PolicyChange,
    PolicyKind,
    WebhookEndpoint,
)
from clearing.models import Instrument, InstrumentKind, Underlying
from clearing.validation import decimal_finite, decimal_positive

LEVEL_LIMIT = Decimal(1_000_000)
MAX_ASSETS = 10
MAX_INTERVAL_SECONDS = 7 * 24 * 3600
MAX_DELTA_USD = Decimal(10) ** 15
URL_MAX_LENGTH = 500
LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}
SUSPEND_PERMISSIONS = {
    PolicyKind.BAND: "agents.suspend_bandpolicy",
    PolicyKind.HEDGE: "agents.suspend_hedgepolicy",
}


# --- Who may change what ----------------------------------------------------------------------------


def member_trader_check(*, user: User, member_id: int) -> None:
    """Only an active trader of the member changes its agents: a viewer's access is read-only."""
    if not (user.is_active and user.role == Role.TRADER and user.member_id == member_id):
        raise PermissionDenied(
            "Only a trader of the account's member changes its agents (viewers read them)."
        )


def _margin_account_check(account: MarginAccount) -> None:
    if account.kind != AccountKind.MEMBER:
        raise ValidationError(
            {
                "account": f"{account.code} is a {account.get_kind_display().lower()}: agents act on "
                "margin accounts."
            }
        )


# --- The audit log -----------------------------------------------------------------------------------


def _fields(instance: models.Model, names: Sequence[str]) -> dict:
    """``instance``'s ``names`` as JSON values (decimals and times as text, relations as ids)."""
    out = {}
    for name in names:
        value = getattr(instance, name)
        if isinstance(value, models.Model):
            value = value.pk
        elif isinstance(value, Decimal):
            value = f"{value:f}"
        elif hasattr(value, "isoformat"):
            value = value.isoformat()
        out[name] = value
    return out


BAND_FIELDS = (
    "funding_account", "search_level", "target_level", "release_level", "assets", "min_interval_seconds",
    "is_active", "suspended_at", "suspension_reason",
)  # fmt: skip
HEDGE_FIELDS = (
    "underlying", "instrument", "target_delta_usd", "threshold_usd", "max_quantity", "min_interval_seconds",
    "mode", "endpoint", "is_active", "suspended_at", "suspension_reason",
)  # fmt: skip
ENDPOINT_FIELDS = ("url", "description", "secret_hint", "is_active", "deactivated_at")
AUDITED = {PolicyKind.BAND: BAND_FIELDS, PolicyKind.HEDGE: HEDGE_FIELDS, PolicyKind.ENDPOINT: ENDPOINT_FIELDS}


def _audit(
    *,
    kind: str,
    instance: models.Model,
    action: str,
    actor: User | None,
    before: dict | None,
    note: str = "",
) -> PolicyChange:
    account = getattr(instance, "account", None)
    member_id = instance.member_id if kind == PolicyKind.ENDPOINT else account.member_id
    return PolicyChange.objects.create(
        at=timezone.now(),
        actor=actor,
        member_id=member_id,
        account=account,
        kind=kind,
        object_id=instance.pk,
        action=action,
        before=before or {},
        after=_fields(instance, AUDITED[kind]),
        note=note,
    )


# --- Input ---------------------------------------------------------------------------------------------


def _level(value: object, field: str) -> Decimal:
    level = decimal_positive(value, field=field)
    if level >= LEVEL_LIMIT or level.as_tuple().exponent < -4:
        raise ValidationError({field: "A ratio below 1,000,000 with at most 4 decimal places."})
    return level


def _interval(value: object, field: str = "min_interval_seconds") -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValidationError({field: "A whole number of seconds."})
    try:
        seconds = int(value)
    except ValueError:
        raise ValidationError({field: "A whole number of seconds."}) from None
    if not 0 <= seconds <= MAX_INTERVAL_SECONDS:
        raise ValidationError({field: f"Between 0 and {MAX_INTERVAL_SECONDS} seconds."})
    return seconds


def _assets(symbols: object) -> list[str]:
    if not isinstance(symbols, list | tuple) or not symbols:
        raise ValidationError({"assets": "At least one asset symbol, most preferred first."})
    if len(symbols) > MAX_ASSETS:
        raise ValidationError({"assets": f"At most {MAX_ASSETS} assets."})
    if len(set(symbols)) != len(symbols):
        raise ValidationError({"assets": "An asset is listed twice."})
    known = Asset.objects.filter(is_active=True).in_bulk(
        [s for s in symbols if isinstance(s, str)], field_name="symbol"
    )
    for index, symbol in enumerate(symbols):
        if symbol not in known:
            raise ValidationError({f"assets[{index}]": f"Unknown or inactive asset {symbol!r}."})
    return list(symbols)


# --- Band policies -------------------------------------------------------------------------------------


@transaction.atomic
def band_policy_set(
    *,
    account: MarginAccount,
    funding_account: MarginAccount,
    search_level: object,
    target_level: object,
    release_level: object,
    assets: object,
    user: User,
    min_interval_seconds: object = 60,
) -> BandPolicy:
    """Create or replace ``account``'s band policy (switched on). Refused naming the field unless
    ``account`` is a margin account that is not isolated (an isolated position stands on its own
    allocation: free collateral pulled in would cover none of them), ``funding_account`` is its
    member's funding account, ``1 < search < target < release`` and the assets are known."""
    member_trader_check(user=user, member_id=account.member_id)
    _margin_account_check(account)
    if account.mode == MarginMode.ISOLATED:
        raise ValidationError(
            {"account": "An isolated account margins each position on its own allocation: a band policy's "
             "transfers would reach its free collateral only. Use a cross or portfolio account."}
        )  # fmt: skip
    if funding_account.kind != AccountKind.FUNDING or funding_account.member_id != account.member_id:
        raise ValidationError({"funding_account": "Must be the funding account of the account's own member."})
    search, target, release = (
        _level(search_level, "search_level"),
        _level(target_level, "target_level"),
        _level(release_level, "release_level"),
    )
    if not search > 1:
        raise ValidationError({"search_level": "Must be above 1 (equity above the maintenance margin)."})
    if not target > search:
        raise ValidationError({"target_level": "Must be above the search level."})
    if not release > target:
        raise ValidationError({"release_level": "Must be above the target level."})
    symbols = _assets(assets)
    interval = _interval(min_interval_seconds)
    policy = BandPolicy.objects.select_for_update().filter(account=account).first()
    before = _fields(policy, BAND_FIELDS) if policy else None
    values = {
        "funding_account": funding_account,
        "search_level": search,
        "target_level": target,
        "release_level": release,
        "assets": symbols,
        "min_interval_seconds": interval,
        "is_active": True,
        "updated_by": user,
    }
    if policy is None:
        policy = BandPolicy.objects.create(account=account, created_by=user, **values)
        action = PolicyAction.CREATED
    else:
        for name, value in values.items():
            setattr(policy, name, value)
        policy.save()
        action = PolicyAction.CHANGED
    _audit(kind=PolicyKind.BAND, instance=policy, action=action, actor=user, before=before)
    return policy


@transaction.atomic
def band_policy_switch_off(*, account: MarginAccount, user: User) -> BandPolicy | None:
    """Switch ``account``'s band policy off (kept, with its transfers); None when it has none."""
    member_trader_check(user=user, member_id=account.member_id)
    policy = BandPolicy.objects.select_for_update().filter(account=account).first()
    if policy is None or not policy.is_active:
        return policy
    before = _fields(policy, BAND_FIELDS)
    policy.is_active, policy.updated_by = False, user
    policy.save(update_fields=["is_active", "updated_by", "updated_at"])
    _audit(kind=PolicyKind.BAND, instance=policy, action=PolicyAction.SWITCHED_OFF, actor=user, before=before)
    return policy


# --- Hedge policies ------------------------------------------------------------------------------------


def _hedge_instrument(instrument: Instrument | str, underlying: Underlying) -> Instrument:
    if isinstance(instrument, str):
        found = Instrument.objects.select_related("underlying").filter(symbol=instrument).first()
        if found is None:
            raise ValidationError({"instrument": f"Unknown instrument {instrument!r}."})
        instrument = found
    if instrument.kind not in (InstrumentKind.PERPETUAL, InstrumentKind.FUTURE):
        raise ValidationError({"instrument": "A hedge trades a perpetual or a dated future."})
    if instrument.underlying_id != underlying.pk:
        raise ValidationError({"instrument": f"{instrument.symbol} is not on {underlying.symbol}."})
    if not instrument.is_active or (instrument.expiry is not None and instrument.expiry <= timezone.now()):
        raise ValidationError({"instrument": f"{instrument.symbol} is not open for clearing."})
    return instrument


def _hedge_endpoint(*, mode: str, endpoint: WebhookEndpoint | None, member_id: int) -> WebhookEndpoint | None:
    if mode not in HedgeMode.values:
        raise ValidationError({"mode": f"One of {', '.join(HedgeMode.values)}."})
    if mode == HedgeMode.PROPOSE:
        return None
    if endpoint is None:
        raise ValidationError({"endpoint": "Request mode sends a webhook: name the member's endpoint."})
    if endpoint.member_id != member_id or not endpoint.is_active:
        raise ValidationError({"endpoint": "Must be an active webhook endpoint of the account's member."})
    return endpoint


def _hedge_values(
    *,
    underlying: Underlying,
    instrument: Instrument | str,
    target_delta_usd: object,
    threshold_usd: object,
    max_quantity: object,
    min_interval_seconds: object,
    mode: str,
    endpoint: WebhookEndpoint | None,
    member_id: int,
) -> dict:
    target = decimal_finite(target_delta_usd, field="target_delta_usd")
    if abs(target) >= MAX_DELTA_USD or target.as_tuple().exponent < -2:
        raise ValidationError({"target_delta_usd": "USD below 10^15 with at most 2 decimal places."})
    threshold = decimal_positive(threshold_usd, field="threshold_usd")
    if threshold >= MAX_DELTA_USD or threshold.as_tuple().exponent < -2:
        raise ValidationError({"threshold_usd": "USD below 10^15 with at most 2 decimal places."})
    quantity = decimal_positive(max_quantity, field="max_quantity")
    if quantity >= MAX_DELTA_USD or quantity.as_tuple().exponent < -10:
        raise ValidationError({"max_quantity": "Units below 10^15 with at most 10 decimal places."})
    return {
        "underlying": underlying,
        "instrument": _hedge_instrument(instrument, underlying),
        "target_delta_usd": target,
        "threshold_usd": threshold,
        "max_quantity": quantity,
        "min_interval_seconds": _interval(min_interval_seconds),
        "mode": mode,
        "endpoint": _hedge_endpoint(mode=mode, endpoint=endpoint, member_id=member_id),
    }


def _underlying(underlying: Underlying | str) -> Underlying:
    if isinstance(underlying, Underlying):
        return underlying
    found = Underlying.objects.filter(symbol=underlying, is_active=True).first()
    if found is None:
        raise ValidationError({"underlying": f"Unknown underlying {underlying!r}."})
    return found


@transaction.atomic
def hedge_policy_create(
    *,
    account: MarginAccount,
    underlying: Underlying | str,
    instrument: Instrument | str,
    threshold_usd: object,
    max_quantity: object,
    user: User,
    target_delta_usd: object = 0,
    min_interval_seconds: object = 300,
    mode: str = HedgeMode.PROPOSE,
    endpoint: WebhookEndpoint | None = None,
) -> HedgePolicy:
    """A hedge policy for one underlying of ``account`` (one active per underlying). Refused naming
    the field: not a margin account, an instrument that is not a live perpetual or future on the
    underlying, a non-positive threshold or size, request mode without an active endpoint of the
    member."""
    member_trader_check(user=user, member_id=account.member_id)
    _margin_account_check(account)
    underlying = _underlying(underlying)
    values = _hedge_values(
        underlying=underlying, instrument=instrument, target_delta_usd=target_delta_usd,
        threshold_usd=threshold_usd, max_quantity=max_quantity, min_interval_seconds=min_interval_seconds,
        mode=mode, endpoint=endpoint, member_id=account.member_id,
    )  # fmt: skip
    if HedgePolicy.objects.filter(account=account, underlying=underlying, is_active=True).exists():
        raise ValidationError(
            {"underlying": f"{account.code} already has an active hedge policy on {underlying.symbol}."}
        )
    policy = HedgePolicy.objects.create(account=account, created_by=user, updated_by=user, **values)
    _audit(kind=PolicyKind.HEDGE, instance=policy, action=PolicyAction.CREATED, actor=user, before=None)
    return policy


@transaction.atomic
def hedge_policy_change(
    *,
    policy: HedgePolicy,
    user: User,
    instrument: Instrument | str,
    threshold_usd: object,
    max_quantity: object,
    target_delta_usd: object = 0,
    min_interval_seconds: object = 300,
    mode: str = HedgeMode.PROPOSE,
    endpoint: WebhookEndpoint | None = None,
) -> HedgePolicy:
    """Replace an active policy's settings (its underlying stays); refused as ``hedge_policy_create``."""
    member_trader_check(user=user, member_id=policy.account.member_id)
    policy = HedgePolicy.objects.select_for_update().select_related("account", "underlying").get(pk=policy.pk)
    if not policy.is_active:
        raise ValidationError({"policy": "This hedge policy is switched off: create a new one."})
    values = _hedge_values(
        underlying=policy.underlying, instrument=instrument, target_delta_usd=target_delta_usd,
        threshold_usd=threshold_usd, max_quantity=max_quantity, min_interval_seconds=min_interval_seconds,
        mode=mode, endpoint=endpoint, member_id=policy.account.member_id,
    )  # fmt: skip
    before = _fields(policy, HEDGE_FIELDS)
    for name, value in values.items():
        setattr(policy, name, value)
    policy.updated_by = user
    policy.save()
    _audit(kind=PolicyKind.HEDGE, instance=policy, action=PolicyAction.CHANGED, actor=user, before=before)
    return policy


@transaction.atomic
def hedge_policy_switch_off(*, policy: HedgePolicy, user: User) -> HedgePolicy:
    member_trader_check(user=user, member_id=policy.account.member_id)
    policy = HedgePolicy.objects.select_for_update().select_related("account").get(pk=policy.pk)
    if not policy.is_active:
        return policy
    before = _fields(policy, HEDGE_FIELDS)
    policy.is_active, policy.updated_by = False, user
    policy.save(update_fields=["is_active", "updated_by", "updated_at"])
    _audit(
        kind=PolicyKind.HEDGE, instance=policy, action=PolicyAction.SWITCHED_OFF, actor=user, before=before
    )
    return policy


# --- Ops: suspension ----------------------------------------------------------------------------------


def policy_kind(policy: BandPolicy | HedgePolicy) -> str:
    return PolicyKind.BAND if isinstance(policy, BandPolicy) else PolicyKind.HEDGE


@transaction.atomic
def policy_suspend(
    *, policy: BandPolicy | HedgePolicy, user: User, reason: object
) -> BandPolicy | HedgePolicy:
    """Venue ops stop a policy (it keeps its settings; the member sees it suspended, with the
    reason). Needs the role's suspend permission and a reason."""
    kind = policy_kind(policy)
    if not user.has_perm(SUSPEND_PERMISSIONS[kind]):
        raise PermissionDenied("Only venue ops suspend an agent's policy.")
    reason = str(reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "Say why the policy is suspended (the member sees it)."})
    policy = type(policy).objects.select_for_update().select_related("account").get(pk=policy.pk)
    if policy.suspended_at is not None:
        return policy
    before = _fields(policy, AUDITED[kind])
    policy.suspended_at, policy.suspended_by, policy.suspension_reason = timezone.now(), user, reason[:2000]
    policy.save(update_fields=["suspended_at", "suspended_by", "suspension_reason", "updated_at"])
    _audit(kind=kind, instance=policy, action=PolicyAction.SUSPENDED, actor=user, before=before, note=reason)
    return policy


@transaction.atomic
def policy_resume(
    *, policy: BandPolicy | HedgePolicy, user: User, note: str = ""
) -> BandPolicy | HedgePolicy:
    kind = policy_kind(policy)
    if not user.has_perm(SUSPEND_PERMISSIONS[kind]):
        raise PermissionDenied("Only venue ops resume an agent's policy.")
    policy = type(policy).objects.select_for_update().select_related("account").get(pk=policy.pk)
    if policy.suspended_at is None:
        return policy
    before = _fields(policy, AUDITED[kind])
    policy.suspended_at, policy.suspended_by, policy.suspension_reason = None, None, ""
    policy.save(update_fields=["suspended_at", "suspended_by", "suspension_reason", "updated_at"])
    _audit(kind=kind, instance=policy, action=PolicyAction.RESUMED, actor=user, before=before, note=note)
    return policy


# --- Webhook endpoints ---------------------------------------------------------------------------------


def webhook_url_validate(url: object) -> str:
    """``url`` when it may receive webhooks: HTTPS (plain HTTP only to this machine, and only while
    ``WEBHOOK_REQUIRE_HTTPS`` is off: development and tests), a host, no credentials or fragment,
    and — unless ``WEBHOOK_ALLOW_PRIVATE_ADDRESSES`` — no address literal outside the public
    internet. A ValidationError naming ``url`` otherwise."""
    if not isinstance(url, str) or not url or len(url) > URL_MAX_LENGTH or not url.isprintable():
        raise ValidationError({"url": f"An https:// URL of at most {URL_MAX_LENGTH} characters."})
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 (a port that is not a number raises here)
    except ValueError:
        raise ValidationError({"url": "Not a valid URL."}) from None
    if not host:
        raise ValidationError({"url": "The URL names no host."})
    if parts.username is not None or parts.password is not None or parts.fragment:
        raise ValidationError(
            {"url": "No credentials or fragment in a webhook URL: the signature authenticates."}
        )
    if parts.scheme == "http" and not settings.WEBHOOK_REQUIRE_HTTPS and host in LOOPBACK_HOSTS:
        return url
    if parts.scheme != "https":
        raise ValidationError({"url": "Webhooks are sent over HTTPS only."})
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return url
    if not settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES and not address.is_global:
        raise ValidationError({"url": "The address is not on the public internet."})
    return url


@transaction.atomic
def webhook_endpoint_create(
    *, member: Member, url: object, user: User, description: object = ""
) -> tuple[WebhookEndpoint, str]:
    """A new endpoint of ``member`` and its signing secret, returned this once (only its encrypted
    form and first characters are stored)."""
    member_trader_check(user=user, member_id=member.pk)
    url = webhook_url_validate(url)
    description = str(description or "").strip()
    if len(description) > 200 or not description.isprintable():
        raise ValidationError({"description": "At most 200 printable characters."})
    secret = webhook_secret_generate()
    endpoint = WebhookEndpoint.objects.create(
        member=member,
        url=url,
        description=description,
        secret_encrypted=secret_encrypt(secret),
        secret_hint=secret[:10],
        created_by=user,
    )
    _audit(kind=PolicyKind.ENDPOINT, instance=endpoint, action=PolicyAction.CREATED, actor=user, before=None)
    return endpoint, secret


@transaction.atomic
def webhook_endpoint_deactivate(*, endpoint: WebhookEndpoint, user: User) -> WebhookEndpoint:
    """Switch an endpoint off: nothing more is delivered to it (requests waiting for it give up at
    their next attempt); request-mode policies naming it withhold their hedges until changed."""
    member_trader_check(user=user, member_id=endpoint.member_id)
    endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
    if not endpoint.is_active:
        return endpoint
    before = _fields(endpoint, ENDPOINT_FIELDS)
    endpoint.is_active, endpoint.deactivated_at, endpoint.deactivated_by = False, timezone.now(), user
    endpoint.save(update_fields=["is_active", "deactivated_at", "deactivated_by"])
    _audit(
        kind=PolicyKind.ENDPOINT,
        instance=endpoint,
        action=PolicyAction.SWITCHED_OFF,
        actor=user,
        before=before,
    )
    return endpoint

"""Band policies at work: move collateral between a margin account and its member's funding account
so that the account's equity / MM comes back to the policy's target (``docs/agents.md``).

``band_policy_apply`` runs for an account right after a sweep found its ratio outside its band
(``agents.receivers``, ``agents.tasks.accounts_act``), in one transaction:

1. both accounts are locked in primary-key order (``margin_accounts_lock``), then the policy row;
2. it does nothing while the policy is off or suspended, the account is isolated or has a
   liquidation in progress, its last transfer is more recent than ``min_interval_seconds``, or
   any price the margin account depends on, or of an asset the policy may move, is not ``ok``
   (``riskengine.withdrawals.prices_untrusted``, the withdrawals' own rule);
3. the engine margins the account now (``riskengine.whatif``, at the oracle's current quotes);
   figures that are not numbers, or no maintenance margin, do nothing; a ratio below the search
   level pulls collateral in, above the release level returns the excess, inside does nothing;
4. a top-up sizes each asset, most preferred first, by the haircut value still missing
   (``riskengine.core.collateral.units_for_value``, rounded up to the asset's decimals), never
   more than the funding account holds, and margins the account with it (collateral linked to an
   underlying changes the requirement too: the value is then corrected, ``_top_up_plan``). What
   funding cannot cover is left to the normal margin call, which the sweeps open as usual;
5. a release takes the least preferred asset first, never more than the account holds, never
   below its initial margin: the transfer is written, then the account is margined at the worse
   of each price's last good and latest observed value (``margin_worst_case``, as withdrawals
   are) and the release is undone unless ``equity >= IM`` (a NaN undoes it too);
6. the transfer is a pair of ``auto_transfer`` movements per asset and an ``AutoTransfer`` row,
   pushed live as ``collateral.auto_transfer`` to both accounts (the outbox); the movements'
   ``accounts_changed`` makes the event sweep that re-margins both.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import numpy as np
from django.db import transaction
from django.utils import timezone

from accounts.models import (
    AccountKind,
    Asset,
    CollateralBalance,
    MarginAccount,
    MarginMode,
    MovementKind,
)
from accounts.services import BalanceChange, collateral_movements_apply, margin_accounts_lock
from agents.models import AutoTransfer, BandPolicy, TransferDirection
from clearing.events import events_publish
from clearing.marketdata.quotes import MarketQuotes
from riskengine import whatif
from riskengine.core import DocumentError, NonFiniteFigures, parse_market
from riskengine.core.collateral import units_for_value
from riskengine.core.margin import haircut_values
from riskengine.loading import margin_book_load, market_form_build
from riskengine.reference import Reference, reference_current
from riskengine.selectors import NoActiveParameterSet
from riskengine.sweeps.models import Liquidation, LiquidationStatus
from riskengine.withdrawals import (
    PricesUntrusted,
    account_price_symbols,
    margin_worst_case,
    prices_untrusted,
)

log = logging.getLogger(__name__)

# Engine runs of a top-up plan: enough for collateral linked to an underlying, whose value also
# moves the requirement (one run for stablecoins, which do not).
MAX_ROUNDS = 6
# A transfer worth less than this (USD of collateral value) is not made: no dust moves.
MIN_TRANSFER_USD = 1.0


@dataclass(frozen=True)
class BandOutcome:
    """What one application did: ``action`` is ``top_up``, ``release``, ``none`` (inside the
    band, or nothing to move) or ``skipped`` (a safety rule), with the reason in words."""

    action: str
    reason: str
    transfer: AutoTransfer | None = None


class _ReleaseRefused(Exception):
    """The engine's check of a written release failed: undo it (a savepoint rolls back)."""


def _none(reason: str) -> BandOutcome:
    return BandOutcome("none", reason)


def _skipped(reason: str) -> BandOutcome:
    log.info("band policy skipped: %s", reason)
    return BandOutcome("skipped", reason)


@dataclass
class _Book:
    """The figures of the margin account now and the prices and holdings a plan needs."""

    equity: float
    initial_margin: float
    maintenance_margin: float
    asset_price: np.ndarray  # (n_assets,) USD per unit, in parameters.assets order
    held: dict[int, Decimal]  # asset id -> units in the margin account
    funding: dict[int, Decimal]  # asset id -> units in the funding account


def _figures(after: dict) -> tuple[float, float, float]:
    return after["equity"], after["initial_margin"], after["maintenance_margin"]


def _ratio(equity: float, maintenance: float) -> float:
    return equity / maintenance if maintenance > 0 else math.nan


def _value(reference: Reference, asset_index: int, price: float, units: float) -> float:
    """Haircut value (USD) of ``units`` of one asset: the engine's own rule (spec section 3)."""
    n_assets = len(reference.parameters.assets)
    prices, amounts = np.ones(n_assets), np.zeros((1, n_assets))
    prices[asset_index], amounts[0, asset_index] = price, units
    return float(haircut_values(reference.parameters, prices, amounts)[0, asset_index])


def _rounded(units: float, asset: Asset, rounding: str) -> Decimal:
    return Decimal(repr(float(units))).quantize(Decimal(1).scaleb(-asset.decimals), rounding=rounding)


def _plan(
    *,
    reference: Reference,
    book: _Book,
    assets: Sequence[Asset],
    value: float,
    planned: dict[Asset, Decimal],
    top_up: bool,
) -> float:
    """Add to ``planned`` (asset → units moved, in place) what brings ``value`` USD of haircut
    value into (``top_up``) or out of the margin account, asset by asset in ``assets`` order.
    Returns the value still missing."""
    parameters = reference.parameters
    for asset in assets:
        if value < MIN_TRANSFER_USD:
            break
        if asset.symbol not in parameters.assets:
            continue  # not collateral under the active set: the engine would not count it
        a = parameters.asset_index(asset.symbol)
        price = float(book.asset_price[a])
        moved = planned.get(asset, Decimal(0))
        held = book.held.get(asset.pk, Decimal(0)) + (moved if top_up else -moved)
        available = book.funding.get(asset.pk, Decimal(0)) - moved if top_up else held
        if available <= 0:
            continue
        units = units_for_value(
            parameters, asset=a, price=price, held=float(held), value=value if top_up else -value
        )
        if math.isnan(units):
            continue
        wanted = (
            available
            if math.isinf(units)
            else _rounded(units, asset, ROUND_CEILING if top_up else ROUND_FLOOR)
        )
        # Within the asset's decimals (a balance never holds more places than its asset has).
        take = min(wanted, available).quantize(Decimal(1).scaleb(-asset.decimals), rounding=ROUND_FLOOR)
        if take <= 0:
            continue
        after = held + take if top_up else held - take
        value -= abs(_value(reference, a, price, float(after)) - _value(reference, a, price, float(held)))
        planned[asset] = moved + take
    return value


def _what_if(
    *, margin: MarginAccount, planned: dict[Asset, Decimal], top_up: bool, quotes, reference
) -> tuple[float, float, float]:
    sign = 1 if top_up else -1
    outcome = whatif.margin_what_if(
        account=margin,
        collateral=[(asset, sign * units) for asset, units in planned.items() if units],
        quotes=quotes,
        reference=reference,
    )
    return _figures(outcome.after)


def _balances(account_id: int) -> dict[int, Decimal]:
    return dict(CollateralBalance.objects.filter(account_id=account_id).values_list("asset_id", "amount"))


# How close to the target (relative) a top-up must land when the engine re-checks it: a ratio of
# 1.8 lands between 1.79982 and 1.80018.
TARGET_TOLERANCE = 1e-4


def _top_up_plan(
    *, margin: MarginAccount, book: _Book, assets: Sequence[Asset], target: float, quotes, reference
) -> tuple[dict[Asset, Decimal], tuple[float, float, float]]:
    """The collateral to pull in (asset → units) and the engine's figures with it. The haircut
    value pulled in is ``target × MM − equity`` first; the engine then margins the account with it
    and, when the requirement moved too (collateral linked to an underlying), the value is
    corrected — by the shortfall while short of the target, by interpolation once the target is
    bracketed — up to ``MAX_ROUNDS`` engine runs, until the ratio is within ``TARGET_TOLERANCE`` of
    the target. Short of it only when funding is exhausted; when the runs are spent first, the
    nearest plan that reached it."""
    figures = (book.equity, book.initial_margin, book.maintenance_margin)
    below: tuple[float, float] = (0.0, _ratio(book.equity, book.maintenance_margin))
    above: tuple[float, float, dict, tuple] | None = None
    planned: dict[Asset, Decimal] = {}
    value = target * book.maintenance_margin - book.equity
    for _ in range(MAX_ROUNDS):
        attempt: dict[Asset, Decimal] = {}
        _plan(reference=reference, book=book, assets=assets, value=value, planned=attempt, top_up=True)
        if not attempt or attempt == planned:
            break  # nothing to pull in, or funding has nothing more to give
        planned = attempt
        figures = _what_if(margin=margin, planned=planned, top_up=True, quotes=quotes, reference=reference)
        ratio = _ratio(figures[0], figures[2])
        if abs(ratio - target) <= TARGET_TOLERANCE * target:
            return planned, figures
        if ratio > target:
            above = (value, ratio, planned, figures)
        else:
            below = (value, ratio)
        if above is None:
            value += target * figures[2] - figures[0]
        else:
            (v0, r0), (v1, r1) = below, above[:2]
            value = v0 + (target - r0) * (v1 - v0) / (r1 - r0)
    if above is not None and _ratio(figures[0], figures[2]) < target:
        return above[2], above[3]  # the nearest plan that reached the target
    return planned, figures


@transaction.atomic
def band_policy_apply(
    *, account_id: int, quotes: MarketQuotes | None = None, now: datetime | None = None
) -> BandOutcome:
    """Bring ``account_id`` back to its band policy's target if a sweep left it outside the band
    (module docstring, steps 1–6). Never raises for a rule: returns what it did and why."""
    policy = BandPolicy.objects.filter(account_id=account_id).only("pk", "funding_account_id").first()
    if policy is None:
        return _none("no band policy")
    locked = margin_accounts_lock(account_ids=[account_id, policy.funding_account_id])
    policy = BandPolicy.objects.select_for_update().get(pk=policy.pk)
    margin, funding = locked[account_id], locked.get(policy.funding_account_id)
    if not policy.is_running:
        return _none(f"the policy is {policy.state}")
    if funding is None or funding.kind != AccountKind.FUNDING or funding.member_id != margin.member_id:
        return _skipped(f"{margin.code}: the policy's funding account is not the member's funding account")
    if margin.mode == MarginMode.ISOLATED:
        return _skipped(f"{margin.code} is isolated: its positions do not draw on free collateral")
    if Liquidation.objects.filter(account_id=account_id, status=LiquidationStatus.IN_PROGRESS).exists():
        return _skipped(f"{margin.code} has a liquidation in progress")
    now = now or timezone.now()
    last = policy.transfers.order_by("-created_at").values_list("created_at", flat=True).first()
    if last is not None and now - last < timedelta(seconds=policy.min_interval_seconds):
        return _skipped(f"{margin.code}: the last transfer was less than {policy.min_interval_seconds} s ago")
    quotes = quotes or whatif.quotes_current()
    assets = list(Asset.objects.filter(symbol__in=policy.assets, is_active=True))
    assets.sort(key=lambda asset: policy.assets.index(asset.symbol))
    symbols = account_price_symbols(account_id=account_id, assets=assets)
    untrusted = prices_untrusted(quotes=quotes, symbols=symbols)
    if untrusted:
        which = "; ".join(f"{symbol} is {why}" for symbol, why in untrusted.items())
        return _skipped(f"{margin.code}: {which}")
    try:
        reference = reference_current()
        before = whatif.margin_what_if(account=margin, quotes=quotes, reference=reference).before
    except (NoActiveParameterSet, NonFiniteFigures, DocumentError) as error:
        return _skipped(f"{margin.code} cannot be margined now ({error})")
    equity, initial, maintenance = _figures(before)
    ratio = _ratio(equity, maintenance)
    search, target, release = (
        float(level) for level in (policy.search_level, policy.target_level, policy.release_level)
    )
    if not maintenance > 0:
        return _none(f"{margin.code} has no maintenance margin: nothing at risk")
    if search <= ratio <= release:
        return _none(f"{margin.code} is inside its band (equity / MM {ratio:.4f})")
    top_up = ratio < search
    market = parse_market(
        market_form_build(quotes=quotes, instruments=[]), reference.parameters, quotes.valuation_time
    )
    book = _Book(
        equity, initial, maintenance, market.asset_price, _balances(margin.pk), _balances(funding.pk)
    )
    planned: dict[Asset, Decimal] = {}
    after = (equity, initial, maintenance)
    try:
        if top_up:
            planned, after = _top_up_plan(
                margin=margin, book=book, assets=assets, target=target, quotes=quotes, reference=reference
            )
        else:
            # Never below the initial margin: at most the excess over it, whatever the target.
            value = min(equity - target * maintenance, equity - initial)
            _plan(
                reference=reference,
                book=book,
                assets=assets[::-1],
                value=value,
                planned=planned,
                top_up=False,
            )
            if planned:
                after = _what_if(
                    margin=margin, planned=planned, top_up=False, quotes=quotes, reference=reference
                )
    except (NonFiniteFigures, DocumentError) as error:
        return _skipped(f"{margin.code}: the transfer's effect cannot be margined ({error})")
    planned = {asset: units for asset, units in planned.items() if units > 0}
    if not planned:
        where = "the funding account holds none of" if top_up else "the account holds none of"
        return _none(f"{margin.code}: {where} {', '.join(policy.assets)} to move")
    direction = TransferDirection.TOP_UP if top_up else TransferDirection.RELEASE
    cause = (
        f"equity / MM {ratio:.4f} {'below the search' if top_up else 'above the release'} level "
        f"{(policy.search_level if top_up else policy.release_level):f}; target {policy.target_level:f}"
    )
    try:
        with transaction.atomic():
            transfer = _transfer_write(
                policy=policy, margin=margin, funding=funding, planned=planned, direction=direction,
                before=(ratio, equity, initial, maintenance), after=after, cause=cause, now=now,
            )  # fmt: skip
            if not top_up:
                _release_check(margin=margin, quotes=quotes, reference=reference, symbols=symbols)
    except _ReleaseRefused as refusal:
        return _skipped(f"{margin.code}: release undone, {refusal}")
    return BandOutcome(direction, cause, transfer)


def _transfer_write(
    *,
    policy: BandPolicy,
    margin: MarginAccount,
    funding: MarginAccount,
    planned: dict[Asset, Decimal],
    direction: str,
    before: tuple[float, float, float, float],
    after: tuple[float, float, float],
    cause: str,
    now: datetime,
) -> AutoTransfer:
    ratio, equity, initial, maintenance = before
    ratio_after = _ratio(after[0], after[2])
    legs = [{"asset": asset.symbol, "amount": f"{units:f}"} for asset, units in planned.items()]
    transfer = AutoTransfer.objects.create(
        policy=policy,
        account=margin,
        funding_account=funding,
        direction=direction,
        legs=legs,
        target_level=policy.target_level,
        ratio_before=ratio,
        ratio_after=None if math.isnan(ratio_after) else ratio_after,
        equity_before=equity,
        initial_margin_before=initial,
        maintenance_margin_before=maintenance,
        equity_after=after[0],
        initial_margin_after=after[1],
        maintenance_margin_after=after[2],
        cause=cause[:300],
        created_at=now,
    )
    source, destination = (funding, margin) if direction == TransferDirection.TOP_UP else (margin, funding)
    reference = f"auto transfer {transfer.pk}"
    changes = []
    for asset, units in planned.items():
        changes.append(BalanceChange(source.pk, asset, MovementKind.AUTO_TRANSFER, -units, reference))
        changes.append(BalanceChange(destination.pk, asset, MovementKind.AUTO_TRANSFER, units, reference))
    collateral_movements_apply(changes=changes, created_by=None)
    payload = {
        "transfer": transfer.pk,
        "direction": direction,
        "from": source.code,
        "to": destination.code,
        "legs": legs,
        "ratio_before": ratio,
        "ratio_after": transfer.ratio_after,
        "target": policy.target_level,
    }
    events_publish(
        events=[(account.pk, "collateral.auto_transfer", payload) for account in (margin, funding)]
    )
    return transfer


def _release_check(
    *, margin: MarginAccount, quotes: MarketQuotes, reference: Reference, symbols: set[str]
) -> None:
    """The written release leaves ``equity >= IM`` at the worse of each price's last good and latest
    observed value (the withdrawals' check), or ``_ReleaseRefused``; a NaN refuses."""
    try:
        book = margin_book_load(
            parameters_form=reference.parameters_form, quotes=quotes, account_ids=[margin.pk]
        )
        worst = margin_worst_case(book=book, quotes=quotes, symbols=symbols)
    except (DocumentError, PricesUntrusted) as error:
        raise _ReleaseRefused(f"the account cannot be margined after it ({error})") from None
    if not (worst.equity >= worst.initial_margin):
        raise _ReleaseRefused(
            f"equity {worst.equity:,.2f} would be below the initial margin {worst.initial_margin:,.2f}"
        )

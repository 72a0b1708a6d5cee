"""Withdrawal requests: no money leaves an account that the margin would then not cover, nor on
prices the oracle does not trust.

``withdrawal_request`` (a member's trader) and ``fund_withdrawal_approve`` (the insurance fund,
after maker-checker) both end in ``_withdrawal_reserve``, one transaction under the account lock
(``margin_accounts_lock``):

1. the amount must be within the balance (requests already reserved are out of it);
2. every price the account's margin depends on — its positions' underlyings, its collateral
   assets' prices (a linked asset's is its underlying's) and the withdrawn asset's — must be
   trusted: ``ok``. ``stale``, ``unconfirmed`` (a move held by the circuit breaker), ``degraded``
   (fewer agreeing sources than the quorum ``min_sources``: degraded means exactly that) or no
   price at all refuse the request with ``PricesUntrusted`` (HTTP 409), naming the symbols;
3. the amount is reserved: a ``withdrawal_reserve`` movement debits the balance now, so every
   margin computation (sweeps, what-if, the next request) sees it without knowing about custody;
4. the account is margined as it now stands inside the transaction, at the *worse* of each
   price's last good and latest observed values (``margin_worst_case``), and the request is
   refused unless ``equity >= initial margin`` — written so that a NaN figure refuses too; an
   isolated account (methodology v1.1 section 4a) is refused unless its free collateral stays
   ``>= 0`` and the engine's status is ``healthy`` (its positions' allocations are not
   withdrawable, and no position's profit pays out another's margin);
5. the ``Withdrawal`` is appended; the custodian then marks it sent or failed (``accounts.custody``).

Any refusal raises, so the transaction rolls back and nothing is written. Two concurrent requests
queue on the account lock and the second is judged on the balance the first reserved.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

import numpy as np
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from accounts.custody import (
    REFERENCE_MAX_LENGTH,
    CustodyConflict,
    custody_events_publish,
    custody_row_lock,
    fund_decider_require,
    member_account_require,
    member_trader_require,
    text_clean,
)
from accounts.models import (
    Asset,
    CollateralBalance,
    FundDecision,
    FundWithdrawalDecision,
    FundWithdrawalProposal,
    MarginAccount,
    MarginMode,
    MovementKind,
    User,
    Withdrawal,
    WithdrawalState,
)
from accounts.services import (
    BalanceChange,
    collateral_amount_validate,
    collateral_movements_apply,
    margin_accounts_lock,
)
from clearing.marketdata.quotes import MarketQuotes
from clearing.models import Position
from riskengine import whatif
from riskengine.core import ISOLATED, STATUSES, compute_margin, parse_document
from riskengine.core.errors import DocumentError
from riskengine.loading import LoadedBook, margin_book_load
from riskengine.reference import reference_current
from riskengine.selectors import NoActiveParameterSet

TRUSTED = "ok"
UNTRUSTED_REASONS = {
    "stale": "stale (no fresh price source)",
    "unconfirmed": "unconfirmed (a move held by the circuit breaker awaits confirmation)",
    "degraded": "below quorum (fewer agreeing price sources than required)",
}
# The worst case evaluates 2^k corners for the k prices whose last good and latest observed values
# differ. While every price must be ``ok`` to withdraw, the two are equal and k is 0; k > 0 means
# the oracle moved between its status and its price being read. The venue's accounts depend on at
# most six prices (three underlyings, three stablecoins), so 2^6 = 64 portfolios in one engine run
# (a few milliseconds) covers every real account; beyond that the request is refused rather than
# approximated, as a check that skips corners could miss the one that breaches.
MAX_PRICE_SWITCHES = 6
# Names of the copies of switched underlyings, assets and instruments in the worst-case document.
OBSERVED_SUFFIX = "@observed"


class PricesUntrusted(CustodyConflict):
    """A price the account's margin depends on is not trusted now: no money leaves (HTTP 409)."""

    def __init__(self, message: str, *, symbols: Iterable[str]):
        super().__init__(message)
        self.symbols = tuple(symbols)


# --- What the account's margin depends on ---------------------------------------------------------


def account_price_symbols(*, account_id: int, assets: Iterable[Asset] = ()) -> set[str]:
    """The oracle symbols the account's margin depends on: its open positions' underlyings and
    the prices of its non-zero collateral and of ``assets`` (a linked asset's price is its
    underlying's; the settlement asset is exactly 1 and depends on nothing). Two queries."""
    symbols = set(
        Position.objects.filter(account_id=account_id)
        .exclude(quantity=0)
        .values_list("instrument__underlying__symbol", flat=True)
    )
    held = CollateralBalance.objects.filter(account_id=account_id).exclude(amount=0)
    pairs = list(held.values_list("asset__symbol", "asset__underlying__symbol"))
    pairs += [(asset.symbol, asset.underlying.symbol if asset.underlying_id else None) for asset in assets]
    symbols |= {underlying or symbol for symbol, underlying in pairs}
    symbols.discard(settings.SETTLEMENT_ASSET)
    return symbols


def prices_untrusted(*, quotes: MarketQuotes, symbols: Iterable[str]) -> dict[str, str]:
    """``symbol → why it is not trusted`` for the symbols among ``symbols`` whose status is not
    ``ok`` or that have no price; empty when all are trusted."""
    untrusted = {}
    for symbol in sorted(symbols):
        status = quotes.statuses.get(symbol)
        priced = symbol in quotes.underlying_prices or symbol in quotes.asset_prices
        if status is None or not priced:
            untrusted[symbol] = "without a price"
        elif status != TRUSTED:
            untrusted[symbol] = UNTRUSTED_REASONS.get(status, status)
    return untrusted


def prices_trusted_require(*, quotes: MarketQuotes, symbols: Iterable[str]) -> None:
    untrusted = prices_untrusted(quotes=quotes, symbols=symbols)
    if untrusted:
        which = "; ".join(f"{symbol} is {why}" for symbol, why in untrusted.items())
        raise PricesUntrusted(
            f"Refused: {which}. No withdrawal is accepted while a price this account's margin "
            "depends on is stale, unconfirmed or below quorum; try again once the oracle trusts it.",
            symbols=untrusted,
        )


# --- The worst case of last good and latest observed prices --------------------------------------


@dataclass(frozen=True)
class WorstCase:
    """The account's figures in its worst corner and the observed prices that corner used."""

    equity: float
    initial_margin: float
    observed: dict[str, float]  # symbol -> the latest observed price used instead of the last good
    corners: int
    status: str = "healthy"  # the engine's status in that corner (STATUSES)
    free_collateral: float = float("nan")  # collateral value less the allocations (every mode)


def _last_good(quotes: MarketQuotes, symbol: str) -> float | None:
    return quotes.underlying_prices.get(symbol, quotes.asset_prices.get(symbol))


def price_switches(*, quotes: MarketQuotes, symbols: Iterable[str]) -> dict[str, float]:
    """``symbol → latest observed price`` for the symbols whose observed price differs from the
    last good price the book is valued at."""
    switches = {}
    for symbol in sorted(symbols):
        observed, good = quotes.observed_prices.get(symbol), _last_good(quotes, symbol)
        if observed is not None and good is not None and observed != good:
            switches[symbol] = float(observed)
    return switches


def price_corners_document(document: dict, switches: dict[str, float]) -> tuple[dict, list[dict[str, float]]]:
    """A margin document holding ``document``'s one portfolio once per corner of ``switches``
    (each switched symbol at its last good price or at its observed one), and each corner's
    observed prices, in portfolio order (corner 0: all at their last good price).

    The market has one price per underlying and asset, so each switched symbol gets a copy valued
    at its observed price (``BTC@observed``, with the same parameters, its instruments and linked
    assets copied too) and each corner's portfolio refers to the copies of the symbols it
    switches. A copy's correlations are its original's, and 1 with its original (a duplicated row
    and column keep the matrix a valid correlation matrix); no portfolio holds both, so every
    corner is margined exactly as if the market quoted its prices.
    """
    doc = copy.deepcopy(document)
    parameters, market = doc["parameters"], doc["market"]
    (portfolio,) = doc.pop("portfolios")
    underlyings, assets = parameters["underlyings"], parameters["assets"]
    switched = [
        s for s in sorted(switches) if s in underlyings or (s in assets and not assets[s].get("underlying"))
    ]
    correlation = parameters["correlation"]
    for symbol in switched:
        copy_name = symbol + OBSERVED_SUFFIX
        if symbol in underlyings:
            underlyings[copy_name] = copy.deepcopy(underlyings[symbol])
            names, matrix = correlation["underlyings"], correlation["matrix"]
            i = names.index(symbol)
            for row in matrix:
                row.append(row[i])
            matrix.append(list(matrix[i]))
            names.append(copy_name)
            market["underlyings"][copy_name] = {"price": switches[symbol]}
            for name, entry in list(market["instruments"].items()):
                if entry["underlying"] == symbol:
                    market["instruments"][name + OBSERVED_SUFFIX] = dict(entry, underlying=copy_name)
            for name, entry in list(assets.items()):
                if entry.get("underlying") == symbol:
                    assets[name + OBSERVED_SUFFIX] = dict(copy.deepcopy(entry), underlying=copy_name)
        else:
            assets[copy_name] = copy.deepcopy(assets[symbol])
            market["assets"][copy_name] = {"price": switches[symbol]}

    def follows(symbol: str | None, chosen: set[str]) -> bool:
        return symbol is not None and symbol in chosen

    portfolios, corners = [], []
    for mask in range(1 << len(switched)):
        chosen = {symbol for bit, symbol in enumerate(switched) if mask >> bit & 1}
        positions = [
            dict(p, instrument=p["instrument"] + OBSERVED_SUFFIX)
            if follows(market["instruments"][p["instrument"]]["underlying"], chosen)
            else p
            for p in portfolio["positions"]
        ]
        collateral = {
            (
                asset + OBSERVED_SUFFIX
                if asset in assets and (follows(assets[asset].get("underlying"), chosen) or asset in chosen)
                else asset
            ): amount
            for asset, amount in portfolio["collateral"].items()
        }
        portfolios.append(
            dict(portfolio, id=f"{portfolio['id']}#{mask}", positions=positions, collateral=collateral)
        )
        corners.append({symbol: switches[symbol] for symbol in sorted(chosen)})
    doc["portfolios"] = portfolios
    return doc, corners


def margin_worst_case(*, book: LoadedBook, quotes: MarketQuotes, symbols: Iterable[str]) -> WorstCase:
    """The figures of the account in ``book`` (one account) at the worse, for it, of each price's
    last good and latest observed values: every corner in ONE engine run (the engine is vectorised
    over portfolios), keeping the corner with the least ``equity − initial margin`` (an isolated
    account: the worst status, then the least free collateral); a corner whose figures are not
    numbers is the worst (it must refuse). More than ``MAX_PRICE_SWITCHES`` diverging prices
    refuse the withdrawal (``PricesUntrusted``)."""
    switches = price_switches(quotes=quotes, symbols=symbols)
    if len(switches) > MAX_PRICE_SWITCHES:
        raise PricesUntrusted(
            f"Refused: {len(switches)} of the prices this account depends on ({', '.join(switches)}) are "
            "moving away from their last good values; try again once the oracle settles.",
            symbols=switches,
        )
    document, corners = price_corners_document(book.document([0]), switches)
    result = compute_margin(parse_document(document))
    equity = np.asarray(result.equity, dtype=np.float64)
    initial = np.asarray(result.initial_margin, dtype=np.float64)
    excess = equity - initial
    isolated = int(book.rows.account_modes[0]) == ISOLATED
    if isolated:
        free = np.asarray(result.free_collateral, dtype=np.float64)
        # The worst status first, then the least free collateral (lexsort: last key is primary).
        excess = np.lexsort((free, -result.status.astype(np.int64))).argsort().astype(np.float64)
        excess[np.isnan(free)] = np.nan
    not_numbers = np.flatnonzero(np.isnan(excess))
    k = int(not_numbers[0]) if not_numbers.size else int(np.argmin(excess))
    worst = WorstCase(
        equity=float(equity[k]), initial_margin=float(initial[k]), observed=corners[k], corners=len(corners)
    )
    if isolated:
        worst = replace(worst, status=STATUSES[int(result.status[k])], free_collateral=float(free[k]))
    return worst


# --- Requests --------------------------------------------------------------------------------------


def _withdrawal_reserve(
    *,
    account: MarginAccount,
    asset: Asset,
    amount: Decimal,
    requested_by: User,
    destination: str,
    quotes: MarketQuotes | None,
    now: datetime | None,
) -> Withdrawal:
    """Steps 1–5 of the module docstring; the caller's transaction rolls back on any refusal."""
    margin_accounts_lock(account_ids=[account.pk])
    available = CollateralBalance.objects.filter(account=account, asset=asset).values_list(
        "amount", flat=True
    ).first() or Decimal(0)
    if amount > available:
        raise ValidationError(
            {
                "amount": f"Only {available:f} {asset.symbol} is available to withdraw (requests not yet "
                "sent are already reserved)."
            }
        )
    # ``riskengine.reference.quotes_current`` read through the what-if's module: one seam fixes
    # the quotes of both.
    quotes = quotes or whatif.quotes_current()
    symbols = account_price_symbols(account_id=account.pk, assets=[asset])
    prices_trusted_require(quotes=quotes, symbols=symbols)
    try:
        form = reference_current().parameters_form
    except NoActiveParameterSet as error:
        raise ValidationError(
            {"amount": f"The account's margin cannot be computed now ({error}); try again later."}
        ) from None
    (reservation,) = collateral_movements_apply(
        changes=[
            BalanceChange(account.pk, asset, MovementKind.WITHDRAWAL_RESERVE, -amount, "withdrawal request")
        ],
        created_by=requested_by,
    )
    try:
        # Read inside the transaction: the book includes the reservation just written.
        book = margin_book_load(parameters_form=form, quotes=quotes, account_ids=[account.pk])
        worst = margin_worst_case(book=book, quotes=quotes, symbols=symbols)
    except DocumentError as error:
        # Without a margin figure nobody can tell whether the withdrawal is safe: refuse it.
        raise ValidationError(
            {"amount": f"The account's margin cannot be computed now ({error}); try again later."}
        ) from None
    equity, initial = worst.equity, worst.initial_margin
    at = ", ".join(
        f"{symbol} at its latest observed {price:,.2f}" for symbol, price in worst.observed.items()
    )
    valued = f" (valuing {at} rather than its last good price)" if at else ""
    if account.mode == MarginMode.ISOLATED:
        # Written so that NaN refuses: every comparison with NaN is false.
        if not (worst.free_collateral >= 0 and worst.status == "healthy"):
            raise ValidationError(
                {
                    "amount": (
                        f"Refused: after withdrawing {amount:f} {asset.symbol} this isolated account's free "
                        f"collateral would be {worst.free_collateral:,.2f} USD and its status "
                        f"{worst.status.replace('_', ' ')}{valued}. At most the free collateral can be "
                        "withdrawn, and only while every position stands at its initial margin."
                    )
                }
            )
    # Written so that NaN refuses: every comparison with NaN is false.
    elif not (equity >= initial):
        raise ValidationError(
            {
                "amount": (
                    f"Refused: after withdrawing {amount:f} {asset.symbol} the account's equity would be "
                    f"{equity:,.2f} USD, below its initial margin of {initial:,.2f} USD{valued}. At most "
                    "the excess over the initial margin can be withdrawn."
                )
            }
        )
    withdrawal = Withdrawal.objects.create(
        account=account,
        asset=asset,
        amount=amount,
        destination=destination,
        reservation=reservation,
        requested_by=requested_by,
        created_at=now or timezone.now(),
    )
    custody_events_publish(changes=[(account.pk, "withdrawal", withdrawal.pk, WithdrawalState.REQUESTED)])
    return withdrawal


@transaction.atomic
def withdrawal_request(
    *,
    account: MarginAccount,
    asset: Asset,
    amount: object,
    requested_by: User,
    destination: object = "",
    quotes: MarketQuotes | None = None,
    now: datetime | None = None,
) -> Withdrawal:
    """A member's trader requests a withdrawal from one of its member's accounts: accepted and
    reserved, or refused with nothing written — a ValidationError naming the field (venue account,
    not a trader of the member, bad amount, beyond the balance, below the initial margin) or
    ``PricesUntrusted`` (a price the margin depends on is not trusted)."""
    member_account_require(account)
    member_trader_require(user=requested_by, account=account, field="requested_by")
    amount = collateral_amount_validate(asset=asset, amount=amount)
    destination = text_clean(
        destination, field="destination", max_length=REFERENCE_MAX_LENGTH, required=False
    )
    return _withdrawal_reserve(
        account=account,
        asset=asset,
        amount=amount,
        requested_by=requested_by,
        destination=destination,
        quotes=quotes,
        now=now,
    )


@transaction.atomic
def fund_withdrawal_approve(
    *,
    proposal: FundWithdrawalProposal,
    approved_by: User,
    note: object = "",
    quotes: MarketQuotes | None = None,
    now: datetime | None = None,
) -> FundWithdrawalDecision:
    """A risk approver who is not the proposer approves an insurance-fund withdrawal: it becomes a
    custody withdrawal request on the fund (the same checks and reservation as a member's), which
    the custodian then sends. Refused, with nothing written, when it cannot be reserved now."""
    fund_decider_require(proposal=proposal, user=approved_by, field="approved_by")
    note = text_clean(note, field="note", max_length=2000, required=False)
    proposal = custody_row_lock(FundWithdrawalProposal, proposal.pk, proposal.account_id)
    if proposal.decision_or_none is not None:
        raise CustodyConflict(f"Insurance-fund withdrawal #{proposal.pk} is already {proposal.state}.")
    now = now or timezone.now()
    withdrawal = _withdrawal_reserve(
        account=proposal.account,
        asset=proposal.asset,
        amount=proposal.amount,
        requested_by=approved_by,
        destination=proposal.destination,
        quotes=quotes,
        now=now,
    )
    return FundWithdrawalDecision.objects.create(
        proposal=proposal,
        decision=FundDecision.APPROVED,
        proposed_by_id=proposal.proposed_by_id,
        decided_by=approved_by,
        note=note,
        withdrawal=withdrawal,
        created_at=now,
    )

"""What-if: an account's margin before and after hypothetical trades and collateral changes.

Hypothetical fills are checked and applied to the account's rows exactly as
``accounts.trading.trades_book`` books them (``fill_check``, ``position_after_fill``: netted into
the position, average entry price; ``fill_cash``: realised linear P&L and option premiums moved in
the settlement asset), so the "after" figures are what the account would show once those fills
clear. Nothing is written. The result carries the margin document of the hypothetical book, which
replays to the "after" figures with the engine alone.

Used by the API (``POST /api/v1/accounts/{id}/what-if/``), the web app's what-if form and its
hedge suggestion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import numpy as np
from django.conf import settings
from django.core.exceptions import ValidationError

from accounts.models import Asset, MarginAccount
from accounts.trading import fill_cash, fill_check, position_after_fill
from clearing.marketdata.quotes import MarketQuotes
from clearing.models import Instrument, InstrumentKind
from clearing.validation import (
    QUANTUM,
    decimal_from_float,
    decimal_nonzero,
    errors_prefixed,
)
from riskengine.allocation_rules import (
    Lot,
    allocation_after_fill,
    allocations_in_order,
    cents_down,
    lots_initial_margin,
)
from riskengine.core import ISOLATED, NonFiniteFigures, black76_price, compute_margin, non_finite_figures
from riskengine.loading import BookRows, account_rows_fetch, margin_book_build
from riskengine.reference import Reference, quotes_current, reference_current

SECONDS_PER_YEAR = 365 * 24 * 3600


@dataclass(frozen=True)
class WhatIf:
    """``before`` and ``after`` are engine result dicts (spec section 5) of the account;
    ``document`` is the margin document of the hypothetical book (it replays ``after``) and
    ``document_before`` the one of the current book (it replays ``before``)."""

    before: dict
    after: dict
    document: dict
    document_before: dict


def _mark_price(*, instrument: Instrument, quotes: MarketQuotes, rate: float, field: str) -> Decimal:
    """The price a hypothetical fill without a price trades at: the index for linear instruments,
    the Black-76 mark for options (what the engine values it at, so the fill moves no equity)."""
    spot = quotes.underlying_prices.get(instrument.underlying.symbol)
    if spot is None:
        raise ValidationError({field: f"No index price for {instrument.underlying.symbol}; give a price."})
    if instrument.kind != InstrumentKind.OPTION:
        return decimal_from_float(spot)
    iv = quotes.option_ivs.get(instrument.symbol)
    if iv is None:
        raise ValidationError({field: f"No mark implied volatility for {instrument.symbol}; give a price."})
    years = (instrument.expiry - quotes.valuation_time).total_seconds() / SECONDS_PER_YEAR
    price = float(black76_price(spot, float(instrument.strike), iv, years, instrument.right == "call", rate))
    # The mark may round to zero for a far out-of-the-money option; a fill needs a positive price.
    return max(decimal_from_float(price), QUANTUM)


def _rows_after(
    *,
    rows: BookRows,
    account_id: int,
    trades: Sequence[tuple[Instrument, Decimal, Decimal | None]],
    collateral: Sequence[tuple[Asset, Decimal]],
    quotes: MarketQuotes,
    rate: float,
    valuation_time: datetime,
    parameters_form: dict,
    settlement_asset_id: int | None = None,
) -> BookRows:
    """``rows`` with the hypothetical fills netted into the account's positions and the cash and
    collateral changes added to its balances. In an isolated account the fills allocate as booking
    would (``riskengine.allocation_rules``): a fill against a position releases in proportion, the
    lot it opens takes its initial margin at the fill's price from free collateral, as much as
    there is (free collateral after the fills' cash and the collateral changes)."""
    isolated = bool(rows.account_modes.size) and int(rows.account_modes[0]) == ISOLATED
    lots: list[tuple[list, Lot]] = []
    positions = [
        [int(rows.position_ids[j]), int(rows.position_account[j]), int(rows.position_instrument[j]),
         float(rows.position_quantity[j]), float(rows.position_entry[j]), float(rows.position_allocated[j])]
        for j in range(rows.position_ids.size)
    ]  # fmt: skip
    balances: list[tuple[int, int, float]] = []
    settlement_id = settlement_asset_id
    for index, (instrument, quantity, price) in enumerate(trades):
        field = f"trades[{index}]"
        if price is None:
            price = _mark_price(instrument=instrument, quotes=quotes, rate=rate, field=f"{field}.price")
        try:
            quantity, price = fill_check(
                instrument=instrument, quantity=quantity, price=price, at=valuation_time
            )
        except ValidationError as error:
            raise errors_prefixed(error, field) from None
        row = next((p for p in positions if p[1] == account_id and p[2] == instrument.pk and p[3] != 0), None)
        if row is None:
            row = [0, account_id, instrument.pk, 0.0, 0.0, 0.0]
            positions.append(row)
        kept, opened = allocation_after_fill(
            quantity=decimal_from_float(row[3]), allocated=decimal_from_float(row[5]), fill_quantity=quantity
        )
        row[5] = float(kept)
        if isolated and opened != 0:
            lots.append((row, Lot(instrument, opened, price)))
        entry = Decimal(0) if row[3] == 0 or np.isnan(row[4]) else decimal_from_float(row[4])
        change = position_after_fill(
            quantity=decimal_from_float(row[3]), entry_price=entry, fill_quantity=quantity, fill_price=price
        )
        row[3], row[4] = float(change.quantity), float(change.entry_price)
        _kind, cash = fill_cash(instrument=instrument, quantity=quantity, price=price, change=change)
        if cash:
            if settlement_id is None:
                settlement_id = Asset.objects.values_list("pk", flat=True).get(
                    symbol=settings.SETTLEMENT_ASSET
                )
            balances.append((account_id, settlement_id, float(cash)))
    for index, (asset, amount) in enumerate(collateral):
        amount = decimal_nonzero(amount, field=f"collateral[{index}].amount")
        balances.append((account_id, asset.pk, float(amount)))

    _held_positions, held_balances = rows.tables()
    if lots:
        collateral_only = BookRows.build(
            account_ids=rows.account_ids,
            account_codes=rows.account_codes,
            account_modes=rows.account_modes,
            positions=[],
            balances=np.vstack([held_balances, np.array(balances, dtype=np.float64).reshape(-1, 3)]),
        )
        book = margin_book_build(rows=collateral_only, parameters_form=parameters_form, quotes=quotes)
        collateral_value = compute_margin(book.margin_input).collateral_value[0]
        free = cents_down(collateral_value) - sum(decimal_from_float(p[5]) for p in positions if p[3] != 0)
        needs = lots_initial_margin(
            lots=[lot for _, lot in lots], quotes=quotes, parameters_form=parameters_form
        )
        for (row, _), added in zip(lots, allocations_in_order(needs=needs, free=free), strict=True):
            row[5] += float(added)
    netted = BookRows.build(
        account_ids=rows.account_ids,
        account_codes=rows.account_codes,
        account_modes=rows.account_modes,
        positions=[p for p in positions if p[3] != 0],
        balances=held_balances,
    )
    return netted.with_hypothetical(balances=balances)


def margin_what_if(
    *,
    account: MarginAccount,
    trades: Sequence[tuple[Instrument, Decimal, Decimal | None]] = (),
    collateral: Sequence[tuple[Asset, Decimal]] = (),
    quotes: MarketQuotes | None = None,
    parameters_form: dict | None = None,
    reference: Reference | None = None,
) -> WhatIf:
    """The account's margin now and after ``trades`` ``(instrument, signed quantity, price or
    None for the current mark)`` and ``collateral`` ``(asset, signed amount: + deposit, −
    withdrawal)``, under the active parameter set and the oracle's current quotes.

    Raises ``ValidationError`` naming ``trades[i].<field>`` or ``collateral[i].<field>`` for bad
    hypothetical input, ``DocumentError`` when the book cannot be margined (missing price or vol),
    ``NonFiniteFigures`` (field ``after`` or ``before``, naming the figures) when a book's figures
    would not be finite, ``NoActiveParameterSet``. ``reference`` is ``reference_current()`` when
    the caller already has it.
    """
    # The active set, instruments and assets come from the per-process cache (one probe query).
    reference = reference or reference_current()
    quotes = quotes or quotes_current()
    form = parameters_form or reference.parameters_form
    rows = account_rows_fetch(account=account)
    after_rows = _rows_after(
        rows=rows,
        account_id=account.pk,
        trades=trades,
        collateral=collateral,
        quotes=quotes,
        rate=float(form.get("rate", 0.0)),
        valuation_time=quotes.valuation_time,
        parameters_form=form,
        settlement_asset_id=reference.settlement_asset_id,
    )
    # One engine run for both books: the hypothetical book is a second portfolio under a
    # placeholder id that sorts first (portfolio 0 = after, 1 = before).
    both = _side_by_side(after=after_rows, before=rows)
    book = margin_book_build(
        rows=both,
        parameters_form=form,
        quotes=quotes,
        parameters=reference.parameters if parameters_form is None else None,
        instruments=_instruments_for(reference, rows=both),
        asset_symbols=_asset_symbols_for(reference, rows=both),
    )
    result = compute_margin(book.margin_input)
    for k, side in ((0, "after"), (1, "before")):
        if not result.finite[k]:  # fail closed: no figure is shown that is not a number
            figures = ", ".join(non_finite_figures(result, k)[:5])
            raise NonFiniteFigures(
                side, f"the figures of account {account.code} {side} the hypothetical changes would "
                f"not be finite: {figures}",
            )  # fmt: skip
    after, before = result.to_dicts([0, 1])
    return WhatIf(before=before, after=after, document=book.document([0]), document_before=book.document([1]))


_PLACEHOLDER_ID = -1


def _side_by_side(*, after: BookRows, before: BookRows) -> BookRows:
    """One ``BookRows`` holding the after book (account id ``_PLACEHOLDER_ID``) then the before
    book: both portfolios share one market and one engine run."""
    after_positions, after_balances = after.tables()
    after_positions[:, 1] = _PLACEHOLDER_ID
    after_balances[:, 0] = _PLACEHOLDER_ID
    before_positions, before_balances = before.tables()
    return BookRows.build(
        account_ids=np.concatenate([np.full(after.account_ids.shape, _PLACEHOLDER_ID), before.account_ids]),
        account_codes=after.account_codes + before.account_codes,
        account_modes=np.concatenate([after.account_modes, before.account_modes]),
        positions=np.vstack([after_positions, before_positions]),
        balances=np.vstack([after_balances, before_balances]),
    )


def _instruments_for(reference: Reference, *, rows: BookRows) -> dict[int, Instrument] | None:
    """The cached instruments, or None (read them) when the book holds one the cache has not seen
    (listed since the last probe by a transaction that had not committed then)."""
    held = set(np.unique(rows.position_instrument).tolist())
    return reference.instruments if held <= reference.instruments.keys() else None


def _asset_symbols_for(reference: Reference, *, rows: BookRows) -> dict[int, str] | None:
    held = set(np.unique(rows.balance_asset).tolist())
    return reference.asset_symbols if held <= reference.asset_symbols.keys() else None

"""The booking rule of isolated allocations (methodology v1.1 section 4a), without the database:
what a fill keeps and opens (``allocation_after_fill``), the initial margin of the lots it opens
(``lots_initial_margin``, by the engine) and how free collateral meets them in order
(``allocations_in_order``). ``riskengine.allocations`` applies it to booked trades and the what-if
(``riskengine.whatif``) to hypothetical ones, so both allocate alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal

import numpy as np

from clearing.marketdata.quotes import MarketQuotes
from clearing.models import Instrument
from clearing.validation import MAX_DECIMAL_PLACES
from riskengine.core import ISOLATED, compute_margin
from riskengine.loading import BookRows, margin_book_build

ALLOCATION_QUANTUM = Decimal(1).scaleb(-MAX_DECIMAL_PLACES)


CENT = Decimal("0.01")


def usd_decimal(value: float) -> Decimal:
    """An engine figure (float USD) as a Decimal of the ledger's precision."""
    return Decimal(repr(float(value))).quantize(ALLOCATION_QUANTUM, rounding=ROUND_HALF_EVEN)


def cents_up(value: float) -> Decimal:
    """A margin requirement (float USD) as whole cents, rounded up: an allocation of it never
    leaves the position a float rounding below the requirement the engine compares it with."""
    return max(Decimal(repr(float(value))).quantize(CENT, rounding=ROUND_CEILING), Decimal(0))


def cents_down(value: float) -> Decimal:
    """Free collateral (float USD) as whole cents, rounded down: never more than there is."""
    return Decimal(repr(float(value))).quantize(CENT, rounding=ROUND_FLOOR)


def allocations_in_order(*, needs: Sequence[Decimal], free: Decimal) -> list[Decimal]:
    """Each need met from ``free`` in order, as much as there is (the later ones get what is left)."""
    left = max(free, Decimal(0))
    out = []
    for need in needs:
        taken = min(need, left)
        out.append(taken)
        left -= taken
    return out


@dataclass(frozen=True)
class Lot:
    """Quantity opened by a fill (signed), at the fill's price."""

    instrument: Instrument
    quantity: Decimal
    price: Decimal


def lots_initial_margin(*, lots: Sequence[Lot], quotes: MarketQuotes, parameters_form: dict) -> list[Decimal]:
    """Each lot's initial margin under the standard rules (spec section 4a), USD, computed by the
    engine at the trade's price: a linear lot with its underlying at the fill price, an option lot
    at the index price (an option's trade price is its premium, which its IM does not depend on).

    Lots are margined as one-position isolated portfolios, one engine run per distinct
    (underlying, price) pair: the market has one price per underlying. Raises ``DocumentError``
    when a lot cannot be margined (its underlying not in the parameter set, an option without an
    index price or mark volatility)."""
    groups: dict[tuple[str, float | None], list[int]] = {}
    for index, lot in enumerate(lots):
        symbol = lot.instrument.underlying.symbol
        groups.setdefault((symbol, float(lot.price) if lot.instrument.is_linear else None), []).append(index)
    out: list[Decimal] = [Decimal(0)] * len(lots)
    for (symbol, price), members in groups.items():
        priced = quotes if price is None else replace(
            quotes, underlying_prices={**quotes.underlying_prices, symbol: price}
        )  # fmt: skip
        n = len(members)
        ids = np.arange(1, n + 1, dtype=np.int64)
        # One portfolio per lot: (position id 0, account, instrument, quantity, entry, no allocation).
        rows = BookRows.build(
            account_ids=ids,
            account_codes=tuple(f"lot-{index}" for index in members),
            account_modes=np.full(n, ISOLATED, dtype=np.int8),
            positions=[
                (0, ids[j], lots[i].instrument.pk, float(lots[i].quantity), float(lots[i].price), 0.0)
                for j, i in enumerate(members)
            ],
            balances=[],
        )
        book = margin_book_build(
            rows=rows,
            parameters_form=parameters_form,
            quotes=priced,
            instruments={lots[i].instrument.pk: lots[i].instrument for i in members},
        )
        result = compute_margin(book.margin_input)
        for j, index in enumerate(members):
            out[index] = cents_up(result.position_initial_margin[j])
    return out


def allocation_after_fill(
    *, quantity: Decimal, allocated: Decimal, fill_quantity: Decimal
) -> tuple[Decimal, Decimal]:
    """``(allocation kept, quantity opened)`` of a position of ``quantity`` holding ``allocated``
    after a fill of ``fill_quantity``: a fill against the position releases in proportion to the
    quantity it closes (all of it when it closes or flips the position); the quantity it opens
    (the whole fill when it increases the position, the remainder when it flips it) is what needs
    new initial margin."""
    if quantity == 0 or (quantity > 0) == (fill_quantity > 0):
        return allocated, fill_quantity
    closed = min(abs(fill_quantity), abs(quantity))
    kept = (allocated * (abs(quantity) - closed) / abs(quantity)).quantize(
        ALLOCATION_QUANTUM, rounding=ROUND_HALF_EVEN
    )
    remainder = quantity + fill_quantity
    opened = remainder if remainder != 0 and (remainder > 0) != (quantity > 0) else Decimal(0)
    return kept, opened

"""The insurance fund's value: its balances at the oracle's prices, in USD.

One way to value the fund, shared by its guard (``riskengine.sweeps.insurance``: the floor and
the deficit path) and by model validation (``riskengine.validation``: Cover-1 and Cover-2 are
reported against it, methodology v1.1 section 8).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from accounts.models import AccountKind, CollateralBalance, MarginAccount
from clearing.marketdata.quotes import MarketQuotes
from clearing.validation import decimal_from_float
from riskengine.models import ParameterSet, ParameterStatus
from riskengine.reference import quotes_current


@dataclass(frozen=True)
class FundValue:
    account_id: int
    value: Decimal  # USD at the quotes' prices, unpriced assets left out
    floor: Decimal
    unpriced: tuple[str, ...] = ()


def insurance_fund_value(*, quotes: MarketQuotes | None = None) -> FundValue | None:
    """The fund's value in USD at ``quotes`` (default: the oracle's current market) and the active
    floor; None when the venue has no fund (3–4 queries)."""
    fund = MarginAccount.objects.filter(kind=AccountKind.INSURANCE_FUND).values_list("pk", flat=True).first()
    if fund is None:
        return None
    quotes = quotes or quotes_current()
    floor = (
        ParameterSet.objects.filter(status=ParameterStatus.ACTIVE)
        .values_list("insurance_fund_floor", flat=True)
        .first()
    )
    value, unpriced = Decimal(0), []
    for symbol, underlying, amount in CollateralBalance.objects.filter(account_id=fund).values_list(
        "asset__symbol", "asset__underlying__symbol", "amount"
    ):
        price = quotes.underlying_prices.get(underlying) if underlying else quotes.asset_prices.get(symbol)
        if price is None:
            if amount:
                unpriced.append(symbol)
            continue
        value += amount * decimal_from_float(price)
    return FundValue(fund, value, floor if floor is not None else Decimal(0), tuple(sorted(unpriced)))

import io
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.core.management import call_command

from accounts.models import Asset, MarginAccount, Member
from accounts.services import collateral_deposit
from accounts.trading import Fill, trades_book
from clearing.marketdata.demo import UNDERLYINGS, spot_prices
from clearing.marketdata.quotes import MarketQuotes
from clearing.models import Instrument, InstrumentKind


def demo_quotes(**statuses) -> MarketQuotes:
    return MarketQuotes(
        valuation_time=datetime(2026, 11, 24, 12, tzinfo=UTC),
        underlying_prices={symbol: float(price) for symbol, price in spot_prices().items()},
        asset_prices={"USD": 1.0, "USDC": 1.0, "USDT": 1.0, "DAI": 1.0},
        option_ivs={
            i.symbol: UNDERLYINGS[i.underlying.symbol][2]
            for i in Instrument.objects.filter(kind=InstrumentKind.OPTION).select_related("underlying")
        },
        statuses=statuses,
    )


def moved(quotes: MarketQuotes, **prices) -> MarketQuotes:
    return replace(quotes, underlying_prices={**quotes.underlying_prices, **prices})


@pytest.fixture
def demo(db):
    call_command("seed_demo", stdout=io.StringIO())


@pytest.fixture
def quotes(demo):
    return demo_quotes()


def account_with_btc_long(*, code: str, usd: str, btc: str = "10") -> MarginAccount:
    """A fresh cross account long ``btc`` BTC-PERP at the demo spot, with ``usd`` of cash."""
    member = Member.objects.get(code="ALPHA")
    account = MarginAccount.objects.create(member=member, code=code, mode="cross")
    collateral_deposit(account=account, asset=Asset.objects.get(symbol="USD"), amount=Decimal(usd))
    trades_book(fills=[Fill(account, "BTC-PERP", Decimal(btc), spot_prices()["BTC"])])
    return account

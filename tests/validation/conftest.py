from dataclasses import dataclass
from decimal import Decimal

import pytest

from accounts.models import AccountKind, MarginAccount, Member
from accounts.services import collateral_deposit
from accounts.trading import Fill, trades_book
from tests import factories


@dataclass
class Book:
    """The small venue's member books for model validation (``book`` fixture)."""

    long_btc: MarginAccount  # cross, long BTC perpetual
    short_call: MarginAccount  # portfolio mode, short BTC call against BTC collateral
    hedged: MarginAccount  # portfolio mode, long BTC perpetual short BTC future, and ETH
    cash_only: MarginAccount  # USDC only: stressed, not backtested (no position)
    other_member: MarginAccount  # member BBB, short ETH perpetual
    fund: MarginAccount  # the venue's insurance fund (not a member account)


def book_make(
    venue, member_a, member_b, *, fund_usd: str = "1000000", long_usd: str = "150000",
    short_usd: str = "60000",
) -> Book:  # fmt: skip
    """Books on ``venue_make``'s venue (prices of ``factories.quotes_fixed``); ``long_usd`` and
    ``short_usd`` the cash of the long BTC and the short ETH accounts."""

    def account(member, code, mode, **deposits):
        row = factories.account_make(member=member, code=code, mode=mode)
        for symbol, amount in deposits.items():
            collateral_deposit(account=row, asset=getattr(venue, symbol), amount=Decimal(amount))
        return row

    long_btc = account(member_a, "AAA-01", "cross", usd=long_usd)
    short_call = account(member_a, "AAA-02", "portfolio", usd="50000", btc_asset="2")
    hedged = account(member_a, "AAA-03", "portfolio", usdc="200000")
    cash_only = account(member_a, "AAA-04", "cross", usdc="10000")
    other_member = account(member_b, "BBB-01", "cross", usd=short_usd)
    trades_book(
        fills=[
            Fill(long_btc, "BTC-PERP", "10", "60000"),
            Fill(short_call, "BTC-70000-C", "-4", "2500"),
            Fill(hedged, "BTC-PERP", "5", "60000"),
            Fill(hedged, "BTC-FUT", "-5", "60500"),
            Fill(hedged, "ETH-PERP", "30", "3000"),
            Fill(other_member, "ETH-PERP", "-100", "3000"),
        ]
    )
    venue_member = Member.objects.create(code="VENUE", name="The venue")
    fund = MarginAccount.objects.create(
        member=venue_member, code="VENUE-INSURANCE", mode="cross", kind=AccountKind.INSURANCE_FUND
    )
    collateral_deposit(account=fund, asset=venue.usd, amount=Decimal(fund_usd))
    return Book(long_btc, short_call, hedged, cash_only, other_member, fund)


@pytest.fixture
def book(venue, active_set, member_a, member_b, history):
    return book_make(venue, member_a, member_b)


@pytest.fixture
def quotes_now(venue):
    return factories.quotes_fixed()

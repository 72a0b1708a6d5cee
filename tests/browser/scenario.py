"""A member account one price drop away from a margin call, on the seeded demo venue; shared by the
browser tests and ``bench/bench_live.py``."""

from __future__ import annotations

from decimal import Decimal

from django.utils import timezone

from accounts.models import Asset, MarginAccount, Member, User
from accounts.services import collateral_deposit
from accounts.trading import Fill, trades_book
from clearing.marketdata.models import IndexState, PriceSource
from clearing.marketdata.services import PriceIn, price_observations_submit
from riskengine.sweeps.models import AccountMargin
from riskengine.sweeps.services import sweep_accounts_run


def btc_index() -> Decimal:
    return IndexState.objects.get(symbol="BTC").last_good_price


def thin_account_make(
    *, code: str, member_code: str = "ALPHA", btc: str = "10", cushion: float = 1.04
) -> MarginAccount:
    """A cross account long ``btc`` BTC-PERP at the index, with just enough USD for equity to be
    ``cushion`` × its initial margin after a sweep: healthy now, a margin call after a few % drop."""
    member = Member.objects.get(code=member_code)
    account = MarginAccount.objects.create(member=member, code=code, mode="cross")
    usd = Asset.objects.get(symbol="USD")
    collateral_deposit(account=account, asset=usd, amount=Decimal(1_000_000))
    trades_book(fills=[Fill(account, "BTC-PERP", Decimal(btc), btc_index())])
    sweep_accounts_run(account_ids=[account.pk], cause="scenario")
    margin = AccountMargin.objects.get(account=account)
    excess = Decimal(repr(margin.equity - cushion * margin.initial_margin)).quantize(Decimal("0.01"))
    from accounts.services import collateral_withdraw

    collateral_withdraw(account=account, asset=usd, amount=excess)
    sweep_accounts_run(account_ids=[account.pk], cause="scenario")
    return account


def btc_observe(*, fraction: float) -> Decimal:
    """Every demo price source reports BTC ``fraction`` below the current index; returns the price."""
    price = (btc_index() * Decimal(repr(1 - fraction))).quantize(Decimal("0.01"))
    now = timezone.now()
    sources = User.objects.filter(pk__in=PriceSource.objects.values("user_id")).order_by("pk")
    price_observations_submit(
        observations=[
            PriceIn(source_user=user, symbol="BTC", price=price, source_time=now) for user in sources
        ]
    )
    return price

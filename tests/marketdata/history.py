"""A venue built on the real history: the demo's reference data and parameters, the shipped daily
closes as index history and three price sources (no member books: each test books its own)."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time
from decimal import Decimal

from accounts.models import Asset, MarginAccount, Member, Role, User
from accounts.services import collateral_deposit, user_create
from accounts.trading import Fill, trades_book
from clearing.history import daily_history
from clearing.marketdata.demo import demo_sources_ensure, index_history_load
from clearing.marketdata.services import PriceIn, price_observations_submit
from riskengine.demo import DEMO_PARAMETERS, reference_data_seed
from riskengine.services import parameter_set_bootstrap


def history_venue_make() -> list[User]:
    reference_data_seed(today=date(2026, 11, 24))
    parameter_set_bootstrap(form=DEMO_PARAMETERS)
    index_history_load()
    return demo_sources_ensure()


def close(symbol: str, day: date) -> Decimal:
    return next(bar.close for bar in daily_history(symbol) if bar.day == day)


def at(day: date, hour: int = 0, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute, tzinfo=UTC))


def sources_submit(
    sources, clock, prices: dict[str, Decimal], *, rng: random.Random, spread=Decimal("0.0005")
):
    """Every source quotes every symbol at the clock's time, each with its own small noise."""
    batch = []
    for symbol, price in prices.items():
        for user in sources:
            noise = Decimal(repr(rng.uniform(-1, 1))) * spread
            batch.append(PriceIn(user, symbol, (price * (1 + noise)).quantize(Decimal("1e-8")), clock.now))
    return price_observations_submit(observations=batch)


def account_make(code: str, *, mode: str = "cross") -> MarginAccount:
    member, _ = Member.objects.get_or_create(code="EPI", defaults={"name": "Episode member"})
    return MarginAccount.objects.create(member=member, code=code, mode=mode)


def book(account: MarginAccount, *, deposits: dict[str, Decimal], fills: list[tuple[str, Decimal, Decimal]]):
    venue = User.objects.filter(username="venue").first() or user_create(
        username="venue", password=None, role=Role.VENUE
    )
    for symbol, amount in deposits.items():
        collateral_deposit(account=account, asset=Asset.objects.get(symbol=symbol), amount=amount)
    trades_book(
        fills=[Fill(account=account, instrument=i, quantity=q, price=p) for i, q, p in fills], booked_by=venue
    )

"""The oracle's part of ``seed_demo``: real history as index history, demo sources, current prices
and IV marks, so a fresh ``make run`` has a complete market. Idempotent."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from accounts.models import Role, User
from accounts.services import user_create
from clearing.history import daily_history, last_close
from clearing.marketdata.models import IndexClose, IndexState, PriceSource, VolMark
from clearing.marketdata.services import (
    PriceIn,
    VolIn,
    price_observations_submit,
    price_source_register,
    vol_observations_submit,
)
from clearing.models import Instrument, InstrumentKind
from clearing.validation import decimal_from_float

UNDERLYINGS = {
    # symbol: (name, strike step, demo implied vol)
    "BTC": ("Bitcoin", Decimal(1000), 0.55),
    "ETH": ("Ether", Decimal(50), 0.65),
    "SOL": ("Solana", Decimal(1), 0.85),
}
HISTORY_SYMBOLS = ("BTC", "ETH", "SOL", "USDC", "USDT", "DAI")
STABLECOINS = ("USDC", "USDT", "DAI")
DEMO_SOURCES = ("feed", "feed-2", "feed-3")
# Where ``demo_feed`` starts replaying the history: the weeks of FTX's collapse, whose moves bring
# the demo's first margin calls within a minute or two and its liquidations soon after (the seeded
# books all start healthy: riskengine.demo, CUSHION).
REPLAY_START = date(2022, 10, 25)


def index_history_load(*, symbols: tuple[str, ...] = HISTORY_SYMBOLS) -> int:
    """Load the shipped daily history as index closes (``origin=history``); returns rows added."""
    before = IndexClose.objects.count()
    IndexClose.objects.bulk_create(
        [
            IndexClose(symbol=symbol, day=bar.day, price=bar.close, origin="history")
            for symbol in symbols
            for bar in daily_history(symbol)
        ],
        ignore_conflicts=True,
        batch_size=2000,
    )
    return IndexClose.objects.count() - before


def demo_sources_ensure(*, names: tuple[str, ...] = DEMO_SOURCES) -> list[User]:
    """The demo's price-source users (``feed`` exists in the demo users; the others are created
    without a password: they write through the services, never through the API)."""
    users = []
    for name in names:
        user = User.objects.filter(username=name).first() or user_create(
            username=name, password=None, role=Role.PRICE_SOURCE
        )
        price_source_register(user=user)
        users.append(user)
    return users


def spot_prices() -> dict[str, Decimal]:
    return {symbol: last_close(symbol).quantize(Decimal("0.01")) for symbol in UNDERLYINGS}


def demo_symbols_prices() -> dict[str, Decimal]:
    """Last closes of the history: the demo's spot prices (cents for crypto, as the books use)."""
    prices = dict(spot_prices())
    for symbol in STABLECOINS:
        prices[symbol] = daily_history(symbol)[-1].close
    return prices


@transaction.atomic
def marketdata_demo_seed(*, log: Callable[[str], None] = print) -> None:
    loaded = index_history_load()
    sources = demo_sources_ensure()
    now = timezone.now()
    priced = set(IndexState.objects.exclude(last_good_price=None).values_list("symbol", flat=True))
    batch = [
        PriceIn(source_user=user, symbol=symbol, price=price, source_time=now)
        for symbol, price in demo_symbols_prices().items()
        if symbol not in priced
        for user in sources
    ]
    price_observations_submit(observations=batch)
    marked = set(VolMark.objects.values_list("instrument_id", flat=True))
    options = Instrument.objects.filter(kind=InstrumentKind.OPTION, is_active=True).select_related(
        "underlying"
    )
    vol_observations_submit(
        observations=[
            VolIn(
                source_user=sources[0],
                instrument=option.symbol,
                iv=decimal_from_float(UNDERLYINGS[option.underlying.symbol][2]),
                source_time=now,
            )
            for option in options
            if option.pk not in marked and option.underlying.symbol in UNDERLYINGS
        ]
    )
    log(
        f"Market data ready: {loaded} daily closes loaded, {PriceSource.objects.count()} price sources, "
        f"{IndexState.objects.count()} index prices, {VolMark.objects.count()} option IV marks."
    )

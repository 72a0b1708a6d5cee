"""The demo feed replays the real history through the oracle, and the oracle rejects its bad ticks."""

import random
from datetime import date
from decimal import Decimal

import pytest
from django.core.management import call_command

from clearing.marketdata.feed import DemoFeed
from clearing.marketdata.models import IndexPrice, PriceObservation, VolMark
from clearing.marketdata.selectors import market_quotes_current
from clearing.models import Instrument
from tests.marketdata.history import close, history_venue_make


def test_the_replay_follows_the_real_closes_scaled_to_the_current_price():
    feed = DemoFeed(
        anchors={"SOL": Decimal(20)},
        start=date(2022, 11, 6),
        seconds_per_day=10,
        n_sources=3,
        rng=random.Random(1),
    )
    ratio = float(close("SOL", date(2022, 11, 9)) / close("SOL", date(2022, 11, 6)))
    assert feed.prices(0)["SOL"] == pytest.approx(20.0, rel=1e-12)
    assert feed.prices(30)["SOL"] == pytest.approx(20.0 * ratio, rel=1e-12)  # three days later
    tick = feed.tick(30)
    assert tick.day == date(2022, 11, 9)
    assert {symbol for _, symbol, _ in tick.quotes} == {"SOL"}


def test_the_feed_command_feeds_every_symbol_and_iv_and_its_bad_ticks_are_excluded(db, capsys):
    history_venue_make()
    call_command(
        "demo_feed", ticks=9, interval=0, seconds_per_day=0.05, bad_tick_probability=1.0, seed=7, iv_every=5
    )
    out = capsys.readouterr().out
    assert set(PriceObservation.objects.values_list("symbol", flat=True)) == {
        "BTC", "ETH", "SOL", "USDC", "USDT", "DAI",
    }  # fmt: skip
    quotes = market_quotes_current()
    assert set(quotes.underlying_prices) == {"BTC", "ETH", "SOL"}
    # Four bad ticks after the five warm-up ticks, each excluded by the oracle with its reason.
    assert out.count("bad tick from source") == 4
    rejected = [
        row
        for row in IndexPrice.objects.exclude(exclusions=[])
        if any("deviates" in e["reason"] for e in row.exclusions)
    ]
    assert len(rejected) >= 4
    assert VolMark.objects.count() == Instrument.objects.filter(kind="option").count()

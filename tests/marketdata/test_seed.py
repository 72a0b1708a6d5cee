"""``seed_demo`` gives a fresh venue a complete market built from the real history."""

import pytest
from django.core.management import call_command

from clearing.history import daily_history
from clearing.marketdata.models import IndexClose, IndexPrice, IndexState, PriceSource, VolMark
from clearing.marketdata.selectors import market_quotes_current
from clearing.models import Instrument


@pytest.fixture
def seeded(db, capsys):
    call_command("seed_demo")
    return capsys.readouterr().out


def test_the_demo_market_has_the_real_history_current_prices_and_every_iv_mark(seeded):
    for symbol in ("BTC", "ETH", "SOL", "USDC", "USDT", "DAI"):
        closes = IndexClose.objects.filter(symbol=symbol, origin="history")
        assert closes.count() == len(daily_history(symbol)) >= 960
        assert closes.get(day=daily_history(symbol)[-1].day).price == daily_history(symbol)[-1].close
    assert PriceSource.objects.count() == 3
    quotes = market_quotes_current()
    assert set(quotes.underlying_prices) == {"BTC", "ETH", "SOL"}
    assert set(quotes.asset_prices) == {"USD", "USDC", "USDT", "DAI"}
    assert {quotes.statuses[s] for s in ("BTC", "ETH", "SOL", "USDC", "USDT", "DAI")} == {"ok"}
    assert quotes.underlying_prices["BTC"] == float(round(daily_history("BTC")[-1].close, 2))
    options = set(Instrument.objects.filter(kind="option").values_list("symbol", flat=True))
    assert set(quotes.option_ivs) == options
    assert quotes.option_ivs[next(s for s in options if s.startswith("SOL"))] == 0.85
    assert "Market data ready" in seeded


def test_seeding_again_adds_no_history_prices_or_marks(seeded):
    counts = (IndexClose.objects.count(), IndexPrice.objects.count(), VolMark.objects.count())
    call_command("seed_demo")
    assert (IndexClose.objects.count(), IndexPrice.objects.count(), VolMark.objects.count()) == counts
    assert IndexState.objects.filter(status="ok").count() == 6

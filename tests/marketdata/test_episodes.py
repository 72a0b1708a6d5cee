"""Real episodes replayed through the oracle, the event hook, calibration and the margin engine:
the FTX week for SOL (2022-11-06..09) and the USDC depeg of March 2023."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal

import pytest

from clearing.marketdata.models import IndexPrice
from clearing.marketdata.selectors import market_quotes_current
from clearing.marketdata.services import price_observation_submit
from clearing.marketdata.signals import index_moved
from riskengine.calibration import calibration_propose
from riskengine.core import compute_document, compute_margin
from riskengine.loading import margin_book_load
from riskengine.selectors import parameter_set_active
from tests.marketdata.history import account_make, at, book, close, history_venue_make, sources_submit

BTC_FLAT = Decimal(20000)  # the depeg test holds BTC still so that only USDC moves


@pytest.fixture
def history_venue(db, clock):
    return history_venue_make()


@pytest.fixture
def moves():
    received = []

    def receiver(sender, **kwargs):
        received.append(kwargs)

    index_moved.connect(receiver)
    yield received
    index_moved.disconnect(receiver)


def real_prices(day: date) -> dict[str, Decimal]:
    """The day's real closes of every symbol the venue prices (the engine needs all underlyings)."""
    return {symbol: close(symbol, day) for symbol in ("BTC", "ETH", "SOL", "USDC", "USDT", "DAI")}


def margins(accounts, quotes=None):
    quotes = quotes or market_quotes_current()
    loaded = margin_book_load(
        parameters_form=parameter_set_active().to_parameters_form(),
        quotes=quotes,
        account_ids=[a.pk for a in accounts],
    )
    return {r["id"]: r for r in compute_margin(loaded.margin_input).to_dicts()}, loaded


def test_the_ftx_week_moves_sol_accounts_from_healthy_to_call_to_liquidation(
    history_venue, clock, moves, django_capture_on_commit_callbacks
):
    sources, rng = history_venue, random.Random(2022)
    start = date(2022, 11, 6)
    clock.set(at(start))
    sources_submit(sources, clock, real_prices(start), rng=rng)
    entry = close("SOL", start).quantize(Decimal("0.01"))
    edge, safe = account_make("FTX-EDGE"), account_make("FTX-SAFE")
    book(edge, deposits={"USDC": Decimal(500_000)}, fills=[("SOL-PERP", Decimal(100_000), entry)])
    book(safe, deposits={"USDC": Decimal(5_000_000)}, fills=[("SOL-PERP", Decimal(100_000), entry)])

    timeline = []
    for day in (start, date(2022, 11, 7), date(2022, 11, 8), date(2022, 11, 9)):
        clock.set(at(day, 23, 59))
        with django_capture_on_commit_callbacks(execute=True):
            rows = sources_submit(sources, clock, real_prices(day), rng=rng)
            if day == date(2022, 11, 8):
                # A fat-fingered tick (a decimal slip) from one source during the crash.
                bad = price_observation_submit(
                    source_user=sources[2], symbol="SOL", price=close("SOL", day) / 10, source_time=clock.now
                )
                # Excluded: the index holds at the two good sources, degraded until feed-3 corrects.
                assert bad.status == "degraded"
                assert bad.price == next(r for r in reversed(rows) if r.symbol == "SOL").price
                assert bad.exclusions[0]["source"] == "feed-3"
                assert "deviates" in bad.exclusions[0]["reason"]
                rows = sources_submit(sources[2:], clock, {"SOL": close("SOL", day)}, rng=rng)
        quotes = market_quotes_current()
        assert set(quotes.statuses.values()) == {"ok"}
        assert rows[-1].status == "ok"
        assert quotes.underlying_prices["SOL"] == pytest.approx(float(close("SOL", day)), rel=1e-3)
        results, _ = margins([edge, safe], quotes)
        timeline.append((day, results["FTX-EDGE"]["status"], results["FTX-SAFE"]["status"]))

    # 32.68 → 29.60 (−9 %) → 24.15 (−18 %) → 13.94 (−42 %): the thin account is called, then
    # liquidated; the well-collateralised one stays healthy until the last day.
    assert [t[1] for t in timeline] == ["healthy", "margin_call", "liquidation", "liquidation"]
    assert [t[2] for t in timeline[:3]] == ["healthy", "healthy", "healthy"]
    # Every crash day moved SOL more than its event threshold (2 %) since the previous sweep.
    sol_moves = [m for m in moves if m["underlying"] == "SOL"]
    assert len(sol_moves) == 3
    assert all(m["price"] < m["reference_price"] for m in sol_moves)
    # The oracle's daily closes feed calibration: the week more than doubles SOL's proposed psr.
    before = calibration_propose(as_of=date(2022, 11, 5)).to_parameters_form()["underlyings"]["SOL"]["psr"]
    after = calibration_propose(as_of=date(2022, 11, 9)).to_parameters_form()["underlyings"]["SOL"]["psr"]
    assert after > 2 * before


def test_the_usdc_depeg_values_collateral_at_the_oracle_price_and_calls_accounts_near_the_edge(
    history_venue, clock, moves, django_capture_on_commit_callbacks
):
    sources, rng = history_venue, random.Random(2023)
    clock.set(at(date(2023, 3, 10)))
    sources_submit(sources, clock, real_prices(date(2023, 3, 9)) | {"BTC": BTC_FLAT}, rng=rng)
    # Cross margin, long 490 BTC: IM = 10 % of 9.8 M = 980,000 against 1,000,000 USDC.
    edge, safe = account_make("DEPEG-EDGE"), account_make("DEPEG-SAFE")
    book(edge, deposits={"USDC": Decimal(1_000_000)}, fills=[("BTC-PERP", Decimal(490), BTC_FLAT)])
    book(safe, deposits={"USDC": Decimal(1_000_000)}, fills=[("BTC-PERP", Decimal(300), BTC_FLAT)])
    results, _ = margins([edge, safe])
    assert results["DEPEG-EDGE"]["status"] == "healthy"

    # 2023-03-11, as Circle's reserves at SVB made the news: USDC slides, then plunges intraday.
    # Thirty seconds after 09:00 two of the three sources print the day's intraday low.
    steps = [
        (at(date(2023, 3, 11), 6), Decimal("0.99"), sources),
        (at(date(2023, 3, 11), 9), Decimal("0.95"), sources),
        (at(date(2023, 3, 11), 9) + timedelta(seconds=30), Decimal("0.8774"), sources[:2]),
    ]
    seen = []
    for moment, usdc, quoting in steps:
        clock.set(moment)
        with django_capture_on_commit_callbacks(execute=True):
            rows = sources_submit(quoting, clock, {"USDC": usdc}, rng=rng)
        quotes = market_quotes_current()
        results, loaded = margins([edge, safe], quotes)
        seen.append((rows[-1].status, quotes.asset_prices["USDC"], results["DEPEG-EDGE"]["status"]))

    # 0.99: equity 990,000 ≥ IM 980,000. 0.95: 950,000 < IM → margin call (MM is 490,000).
    assert [(s[0], s[2]) for s in seen[:2]] == [("ok", "healthy"), ("ok", "margin_call")]
    # The −7.6 % plunge within thirty seconds trips the stablecoin breaker (5 % in 5 minutes): the
    # sweep keeps the last good 0.95, liquidations of USDC holders are suspended, calls still go out.
    status, usdc_used, edge_status = seen[2]
    assert status == "unconfirmed"
    assert usdc_used == pytest.approx(0.95, rel=1e-3)
    assert edge_status == "margin_call"
    assert "USDC" in market_quotes_current().unsafe_for_liquidation()

    clock.advance(seconds=30)
    rows = sources_submit(sources[2:], clock, {"USDC": Decimal("0.8774")}, rng=rng)
    assert rows[-1].status == "ok"  # the next aggregation, with the third source, confirms the plunge
    assert "confirms" in IndexPrice.objects.filter(symbol="USDC", note__contains="confirms").first().note

    # The daily closes that follow: 0.9715, then 0.9921, then back to 0.9989.
    statuses = []
    for day in (date(2023, 3, 11), date(2023, 3, 12), date(2023, 3, 13)):
        clock.set(at(day, 23, 59))
        sources_submit(sources, clock, real_prices(day) | {"BTC": BTC_FLAT}, rng=rng)
        quotes = market_quotes_current()
        results, loaded = margins([edge, safe], quotes)
        statuses.append(results["DEPEG-EDGE"]["status"])
        assert results["DEPEG-SAFE"]["status"] == "healthy"
        if day == date(2023, 3, 11):
            # Valued at the oracle price, not at 1.0: 1,000,000 USDC count for about 971,500 …
            edge_result = results["DEPEG-EDGE"]
            assert edge_result["collateral_value"] == pytest.approx(
                1_000_000 * quotes.asset_prices["USDC"], rel=1e-9
            )
            assert edge_result["equity"] == pytest.approx(971_500, rel=2e-3)
            # … and the replay document carries that price.
            document = loaded.document()
            assert document["market"]["assets"]["USDC"]["price"] == quotes.asset_prices["USDC"]
            assert compute_document(document)[0]["status"] == "margin_call"
            # At a hard-coded 1.0 the same account would look healthy.
            at_par = replace(quotes, asset_prices={**quotes.asset_prices, "USDC": 1.0})
            assert margins([edge], at_par)[0]["DEPEG-EDGE"]["status"] == "healthy"
    assert statuses == ["margin_call", "healthy", "healthy"]
    usdc_moves = [m for m in moves if m["underlying"] == "USDC"]
    assert {m["kind"] for m in usdc_moves} == {"asset"}

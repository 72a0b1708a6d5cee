"""The Django→engine loader computes exactly what the engine computes from the document it builds."""

import numpy as np
import pytest

from clearing.marketdata.demo import spot_prices
from clearing.marketdata.quotes import MarketQuotes
from clearing.models import Instrument, InstrumentKind
from riskengine.core import DocumentError, compute_document, compute_margin
from riskengine.loading import book_rows_fetch, margin_book_build, margin_book_load
from riskengine.selectors import parameter_set_active
from tests.factories import demo_quotes


def test_the_loaded_book_gives_the_same_figures_as_its_replay_document(demo):
    book = margin_book_load(parameters_form=parameter_set_active().to_parameters_form(), quotes=demo_quotes())
    result = compute_margin(book.margin_input)
    replayed = compute_document(book.document())

    assert len(replayed) == book.rows.account_ids.size >= 50
    for k, figures in enumerate(replayed):
        assert figures["id"] == book.rows.account_codes[k]
        assert figures["initial_margin"] == pytest.approx(result.initial_margin[k], rel=1e-12, abs=1e-9)
        assert figures["equity"] == pytest.approx(result.equity[k], rel=1e-12, abs=1e-9)


def test_one_accounts_document_replays_that_account_alone(demo):
    form = parameter_set_active().to_parameters_form()
    everyone = margin_book_load(parameters_form=form, quotes=demo_quotes())
    k = 7
    alone = margin_book_load(
        parameters_form=form, quotes=demo_quotes(), account_ids=[int(everyone.rows.account_ids[k])]
    )
    document = alone.document()

    assert [p["id"] for p in document["portfolios"]] == [everyone.rows.account_codes[k]]
    held = {p["instrument"] for p in document["portfolios"][0]["positions"]}
    assert set(document["market"]["instruments"]) == held
    assert compute_document(document)[0] == compute_margin(everyone.margin_input).to_dicts([k])[0]


def test_usdc_collateral_is_valued_at_its_quoted_price(demo):
    form = parameter_set_active().to_parameters_form()
    at_par = compute_margin(margin_book_load(parameters_form=form, quotes=demo_quotes()).margin_input)
    depegged = compute_margin(
        margin_book_load(parameters_form=form, quotes=demo_quotes(usdc=0.877)).margin_input
    )

    rows = book_rows_fetch()
    usdc_holders = np.unique(rows.balance_account[rows.balance_amount > 0])
    lower = depegged.collateral_value < at_par.collateral_value - 1e-6
    assert lower.sum() >= 1
    assert set(rows.account_ids[lower]) <= set(usdc_holders)


def test_hypothetical_rows_change_only_their_account(demo):
    form = parameter_set_active().to_parameters_form()
    rows = book_rows_fetch()
    perp = Instrument.objects.get(symbol="BTC-PERP")
    account_id = int(rows.account_ids[0])
    what_if = rows.with_hypothetical(positions=[(account_id, perp.pk, 5.0, float(spot_prices()["BTC"]))])

    before = compute_margin(
        margin_book_build(rows=rows, parameters_form=form, quotes=demo_quotes()).margin_input
    )
    after = compute_margin(
        margin_book_build(rows=what_if, parameters_form=form, quotes=demo_quotes()).margin_input
    )
    assert after.initial_margin[0] != before.initial_margin[0]
    np.testing.assert_allclose(after.initial_margin[1:], before.initial_margin[1:], rtol=0, atol=0)


def test_an_option_without_a_mark_volatility_is_refused_naming_it(demo):
    quotes = demo_quotes()
    held_option = (
        Instrument.objects.filter(kind=InstrumentKind.OPTION, positions__quantity__lt=0)
        .order_by("symbol")
        .first()
    )
    ivs = {symbol: iv for symbol, iv in quotes.option_ivs.items() if symbol != held_option.symbol}
    quotes = MarketQuotes(quotes.valuation_time, quotes.underlying_prices, quotes.asset_prices, ivs)
    with pytest.raises(DocumentError) as error:
        margin_book_load(parameters_form=parameter_set_active().to_parameters_form(), quotes=quotes)
    assert held_option.symbol in str(error.value)

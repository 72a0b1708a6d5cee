"""The array API (used by the Django sweep) gives the same figures as the document front end."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from riskengine.core import (
    CROSS,
    PORTFOLIO,
    DocumentError,
    MarginInput,
    Portfolios,
    check_input,
    compute_document,
    compute_margin,
    parse_document,
)
from tests.riskengine.documents import hand_example_document


def test_portfolios_built_from_arrays_give_the_document_results():
    doc = hand_example_document()
    parsed = parse_document(doc)
    market, parameters = parsed.market, parsed.parameters
    instrument = {name: i for i, name in enumerate(market.instruments)}
    portfolios = Portfolios(
        ids=("HAND-1", "HAND-1-CROSS"),
        mode=np.array([PORTFOLIO, CROSS], dtype=np.int8),
        position_portfolio=np.array([0, 0, 1, 1]),
        position_instrument=np.array([instrument["BTC-PERP"], instrument["ETH-PERP"]] * 2),
        position_quantity=np.array([1.0, -15.0, 1.0, -15.0]),
        position_entry=np.array([60000.0, 3000.0, 60000.0, 3000.0]),
        balance_portfolio=np.array([0, 1]),
        balance_asset=np.array([parameters.asset_index("USDC")] * 2),
        balance_amount=np.array([20000.0, 20000.0]),
    )
    margin_input = MarginInput(parameters=parameters, market=market, portfolios=portfolios)
    check_input(margin_input)
    result = compute_margin(margin_input)
    assert result.to_dict(0) == compute_document(doc)[0]
    assert result.initial_margin[1] == pytest.approx(10500.0)
    assert result.im_portfolio[1] == pytest.approx(8849.589021814718)
    assert list(result.pair_indptr) == [0, 2, 4]
    assert result.delta_usd.tolist() == [60000.0, -45000.0, 60000.0, -45000.0]


def test_array_input_with_an_unknown_instrument_index_is_rejected_naming_the_position():
    parsed = parse_document(hand_example_document())
    bad = dataclasses.replace(parsed.portfolios, position_instrument=np.array([0, 99]))
    with pytest.raises(DocumentError) as raised:
        check_input(dataclasses.replace(parsed, portfolios=bad))
    assert raised.value.field == "positions[1]"

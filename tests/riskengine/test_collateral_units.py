"""``riskengine.core.collateral.units_for_value``: the units of an asset that move a holding's
haircut value by a given amount (spec section 3, inverted), by hand and against the engine."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from riskengine.core import parse_parameters
from riskengine.core.collateral import units_for_value
from riskengine.core.margin import haircut_values
from tests.riskengine.documents import spec_parameters

PARAMETERS = parse_parameters(spec_parameters())
USDC, BTC = PARAMETERS.asset_index("USDC"), PARAMETERS.asset_index("BTC")


def worth(asset: int, units: float, price: float) -> float:
    prices = np.ones(len(PARAMETERS.assets))
    prices[asset] = price
    amounts = np.zeros((1, len(PARAMETERS.assets)))
    amounts[0, asset] = units
    return float(haircut_values(PARAMETERS, prices, amounts)[0, asset])


def test_a_value_inside_one_bracket_takes_value_over_one_minus_the_haircut_units():
    # BTC at 60,000: the first 1,000,000 USD of market value keep 95 %.
    assert units_for_value(PARAMETERS, asset=BTC, price=60_000.0, held=1.0, value=9_500.0) == pytest.approx(
        10_000 / 60_000
    )


def test_a_value_across_a_bracket_bound_is_cut_like_tax_brackets():
    # 9,990,000 USDC held: the next 10,000 keep 100 %, beyond 10,000,000 each dollar keeps 98 cents.
    units = units_for_value(PARAMETERS, asset=USDC, price=1.0, held=9_990_000.0, value=20_000.0)
    assert units == pytest.approx(10_000 + 10_000 / 0.98)


def test_a_liability_is_paid_down_at_its_add_on_before_the_brackets_apply():
    # -1,000 USDC is worth -1,050: 1,000 units add 1,050, the next 100 add 100.
    units = units_for_value(PARAMETERS, asset=USDC, price=1.0, held=-1_000.0, value=1_150.0)
    assert units == pytest.approx(1_100.0)


def test_a_removal_never_takes_the_holding_below_zero():
    assert units_for_value(PARAMETERS, asset=USDC, price=1.0, held=500.0, value=-400.0) == pytest.approx(400)
    assert units_for_value(PARAMETERS, asset=USDC, price=1.0, held=500.0, value=-501.0) == math.inf
    assert units_for_value(PARAMETERS, asset=USDC, price=1.0, held=-5.0, value=-1.0) == math.inf


def test_inputs_that_are_not_numbers_move_nothing():
    assert math.isnan(units_for_value(PARAMETERS, asset=USDC, price=math.nan, held=1.0, value=1.0))
    assert math.isnan(units_for_value(PARAMETERS, asset=USDC, price=0.0, held=1.0, value=1.0))
    assert math.isnan(units_for_value(PARAMETERS, asset=BTC, price=60_000.0, held=math.inf, value=1.0))
    assert units_for_value(PARAMETERS, asset=BTC, price=60_000.0, held=1.0, value=0.0) == 0.0


@given(
    asset=st.sampled_from([USDC, BTC]),
    held=st.floats(min_value=-1e6, max_value=1e8),
    value=st.floats(min_value=-1e8, max_value=1e8),
)
def test_the_units_found_move_the_engines_haircut_value_by_exactly_the_value_asked(asset, held, value):
    price = 60_000.0 if asset == BTC else 1.0
    held = held / price
    units = units_for_value(PARAMETERS, asset=asset, price=price, held=held, value=value)
    if math.isinf(units):
        # Only a removal beyond the whole (positive) holding is out of reach: haircuts stay below 100 %.
        assert value < 0
        assert held <= 0 or worth(asset, held, price) < -value
        return
    moved = worth(asset, held + math.copysign(units, value), price) - worth(asset, held, price)
    # Exact up to the rounding of figures as large as the holding itself.
    assert moved == pytest.approx(value, rel=1e-9, abs=1e-12 * max(abs(held * price), abs(value), 1.0))
    assert units >= 0

"""Black-76 prices and Greeks against QuantLib, to 1e-9 relative."""

from __future__ import annotations

import math

import numpy as np
import pytest
import QuantLib as ql

from riskengine.core.black76 import black76, black76_price
from riskengine.core.reference import black76_reference

# (forward, strike, vol, years, rate): in, at and out of the money, short and long expiries.
CASES = [
    (60000.0, 70000.0, 0.55, 0.3352, 0.0),  # OTM call / ITM put, a few months
    (60000.0, 50000.0, 0.60, 0.3352, 0.0),  # ITM call / OTM put
    (3000.0, 3000.0, 0.70, 31 / 365, 0.0),  # at the money, one month
    (3000.0, 3300.0, 0.80, 1 / 365, 0.0),  # one day
    (3000.0, 2900.0, 0.45, 2 / 24 / 365, 0.0),  # two hours
    (150.0, 120.0, 0.90, 2.0, 0.03),  # two years, positive rate
    (150.0, 200.0, 0.35, 1.5, 0.05),
    (60000.0, 40000.0, 0.50, 0.75, -0.01),
]


def quantlib(forward, strike, vol, years, rate, call):
    option_type = ql.Option.Call if call else ql.Option.Put
    std_dev = vol * math.sqrt(years)
    discount = math.exp(-rate * years)
    calc = ql.BlackCalculator(ql.PlainVanillaPayoff(option_type, strike), forward, std_dev, discount)
    price = ql.blackFormula(option_type, strike, forward, std_dev, discount)
    # QuantLib's theta(spot, T) is per year and includes the -r*V carry: with spot = forward it is
    # r*V - D*F*phi(d1)*sigma/(2 sqrt T), the spec's theta times 365.
    return {
        "price": price,
        "delta": calc.deltaForward(),
        "gamma": calc.gammaForward(),
        "vega": calc.vega(years),
        "theta": calc.theta(forward, years) / 365.0,
    }


@pytest.mark.parametrize("call", [True, False], ids=["call", "put"])
@pytest.mark.parametrize(("forward", "strike", "vol", "years", "rate"), CASES)
def test_prices_and_greeks_match_quantlib_to_1e_9(forward, strike, vol, years, rate, call):
    ours = black76(forward, strike, vol, years, call, rate)
    theirs = quantlib(forward, strike, vol, years, rate, call)
    for name, expected in theirs.items():
        assert float(getattr(ours, name)) == pytest.approx(expected, rel=1e-9, abs=1e-12), name
    assert float(black76_price(forward, strike, vol, years, call, rate)) == pytest.approx(
        theirs["price"], rel=1e-9
    )
    assert black76_reference(forward, strike, vol, years, call, rate)[0] == pytest.approx(
        theirs["price"], rel=1e-9
    )


@pytest.mark.parametrize(("forward", "strike"), [(60000.0, 50000.0), (60000.0, 70000.0), (3000.0, 3000.0)])
@pytest.mark.parametrize("call", [True, False], ids=["call", "put"])
def test_at_expiry_the_value_is_intrinsic_and_matches_quantlib(forward, strike, call):
    intrinsic = max(forward - strike, 0.0) if call else max(strike - forward, 0.0)
    option_type = ql.Option.Call if call else ql.Option.Put
    assert ql.blackFormula(option_type, strike, forward, 0.0, 1.0) == pytest.approx(intrinsic, abs=1e-12)
    for years in (0.0, -0.01):
        ours = black76(forward, strike, 0.6, years, call, 0.05)
        assert float(ours.price) == intrinsic
        in_the_money = forward > strike if call else forward < strike
        assert float(ours.delta) == ((1.0 if call else -1.0) if in_the_money else 0.0)
        assert float(ours.gamma) == float(ours.vega) == float(ours.theta) == 0.0


def test_arrays_of_mixed_calls_puts_and_expiries_are_valued_elementwise():
    forward = np.array([60000.0, 60000.0, 3000.0, 3000.0])
    strike = np.array([70000.0, 50000.0, 3000.0, 2500.0])
    vol = np.array([0.55, 0.6, 0.7, 0.5])
    years = np.array([0.3, 0.3, 0.0, 0.1])
    call = np.array([True, False, True, False])
    vector = black76(forward, strike, vol, years, call)
    for k in range(4):
        single = black76_reference(forward[k], strike[k], vol[k], years[k], bool(call[k]))
        assert np.allclose([getattr(vector, f)[k] for f in vector._fields], single, rtol=1e-12, atol=1e-12)

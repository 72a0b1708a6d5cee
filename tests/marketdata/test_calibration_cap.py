"""A calibrated psr never breaks methodology v1.1 section 5: it is capped under
``1 / max(1, |multiple|)`` and the proposal says so (the FTX week asks SOL for psr ≈ 0.63)."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pytest

from riskengine.calibration import calibration_compute
from riskengine.core import parse_parameters
from riskengine.core.calibration import PSR_CAP_SHARE
from tests.riskengine.documents import spec_parameters


def closes(daily_vol: float, days: int = 120, seed: int = 1) -> list[tuple[date, float]]:
    rng = np.random.default_rng(seed)
    prices = 100 * np.exp(np.cumsum(rng.normal(0, daily_vol, days)))
    start = date(2022, 1, 1)
    return [(start + timedelta(days=i), float(p)) for i, p in enumerate(prices)]


def test_a_crisis_volatility_is_capped_under_the_scan_bound_and_named_in_the_reason():
    form = spec_parameters()
    calibration = calibration_compute(
        form=form, closes={"BTC": closes(0.02), "ETH": closes(0.25, seed=2)}, as_of=date(2022, 5, 1)
    )
    assert calibration.psr["ETH"] == PSR_CAP_SHARE * 0.5  # ±2 extremes: psr < 0.5
    assert calibration.capped["ETH"] > 0.5
    assert "ETH: psr" in calibration.summary()
    assert "capped at 0.4950" in calibration.summary()
    assert "BTC" not in calibration.capped
    form["underlyings"]["ETH"]["psr"] = calibration.psr["ETH"]
    parse_parameters(form)  # the proposal passes the one validator


def test_the_cap_follows_the_extreme_moves_of_the_underlying():
    form = spec_parameters()
    form["underlyings"]["ETH"]["extreme"] = [{"multiple": -3, "coverage": 0.3}]
    calibration = calibration_compute(
        form=form, closes={"BTC": closes(0.02), "ETH": closes(0.25, seed=2)}, as_of=date(2022, 5, 1)
    )
    assert calibration.psr["ETH"] == pytest.approx(0.99 / 3, abs=2e-6)  # rounded down to 6 decimals
    assert calibration.psr["ETH"] * 3 < 1

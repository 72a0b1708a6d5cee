"""The look-ahead requirement (``riskengine.core.lookahead``) and the warning ladder
(``riskengine.core.ladder``), on hand cases (issue #17 items 3 and 4)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from riskengine.core import compute_margin, parse_document
from riskengine.core.ladder import (
    LIQUIDATION,
    MARGIN_CALL,
    NO_LEVEL,
    OK,
    WARNING,
    WATCH,
    LadderThresholds,
    distance_sigmas,
    nearest_distances,
    warning_levels,
)
from riskengine.core.lookahead import PARAMETER_SET, TOMORROW, lookahead, valuation_shifted
from riskengine.core.margin import STATUSES
from tests.riskengine.documents import make_document, perp, spec_market, spec_parameters

HEALTHY_CODE = STATUSES.index("healthy")


def cross(*positions: dict, usdc: str = "10000") -> dict:
    return {"id": "A", "mode": "cross", "collateral": {"USDC": usdc}, "positions": list(positions)}


def market_with_expiring_future() -> dict:
    market = spec_market()
    market["instruments"]["BTC-24NOV26"] = {
        "kind": "future", "underlying": "BTC", "multiplier": 1, "expiry": "2026-11-24T12:00:00Z",
    }  # fmt: skip
    return market


def next_set_input(parameters: dict):
    return parse_document(make_document(cross(perp("BTC-PERP", "1", "60000")), parameters=parameters))


# --- look-ahead ---------------------------------------------------------------------------------


def test_a_future_expiring_within_the_day_is_gone_from_tomorrows_requirement():
    doc = make_document(cross(perp("BTC-24NOV26", "1", "60000")), market=market_with_expiring_future())
    margin_input = parse_document(doc)
    today = compute_margin(margin_input)
    assert today.initial_margin[0] == pytest.approx(0.10 * 60000)  # imf 0.10 of the notional
    ahead = lookahead(margin_input)
    assert ahead.tomorrow_im[0] == 0.0
    assert ahead.im[0] == 0.0
    assert ahead.excess[0] == pytest.approx(10000.0)
    assert ahead.reason[0] == TOMORROW
    assert valuation_shifted(margin_input).portfolios.position_quantity.size == 0


def test_tomorrows_valuation_is_the_document_valued_a_day_later():
    positions = [
        {"instrument": "BTC-26MAR27-70000-C", "quantity": "-3"},
        {"instrument": "ETH-25DEC26-3000-C", "quantity": "-20"},
        perp("BTC-26MAR27", "1", "60000"),
    ]
    portfolio = {"id": "A", "mode": "portfolio", "collateral": {"USDC": "100000"}, "positions": positions}
    doc = make_document(portfolio)
    later = make_document(portfolio) | {"valuation_time": "2026-11-25T00:00:00Z"}
    ahead = lookahead(parse_document(doc))
    expected = compute_margin(parse_document(later)).initial_margin[0]
    assert ahead.tomorrow_im[0] == pytest.approx(expected, rel=1e-9)
    today = compute_margin(parse_document(doc)).initial_margin[0]
    assert ahead.tomorrow_im[0] != pytest.approx(today, rel=1e-6)


def test_an_approved_set_with_a_higher_requirement_sets_the_lookahead():
    doc = make_document(cross(perp("BTC-PERP", "1", "60000")))
    next_parameters = spec_parameters()
    next_parameters["underlyings"]["BTC"]["imf"] = 0.20
    next_input = next_set_input(next_parameters)
    ahead = lookahead(parse_document(doc), next_input=next_input)
    assert ahead.tomorrow_im[0] == pytest.approx(6000.0)
    assert ahead.next_set_im[0] == pytest.approx(12000.0)
    assert ahead.im[0] == pytest.approx(12000.0)
    assert ahead.reason[0] == PARAMETER_SET
    assert ahead.excess[0] == pytest.approx(10000.0 - 12000.0)


def test_a_lower_next_set_leaves_tomorrow_as_the_reason():
    doc = make_document(cross(perp("BTC-PERP", "1", "60000")))
    next_parameters = spec_parameters()
    next_parameters["underlyings"]["BTC"]["imf"] = 0.05
    next_input = next_set_input(next_parameters)
    ahead = lookahead(parse_document(doc), next_input=next_input)
    assert ahead.im[0] == pytest.approx(6000.0)
    assert ahead.reason[0] == TOMORROW


# --- the ladder ---------------------------------------------------------------------------------

T = LadderThresholds(
    watch_sigmas=3.0, warning_sigmas=1.5, watch_ratio=2.0, warning_ratio=1.25, hysteresis=0.1
)


def grade(*, sigmas, ratio=10.0, previous=NO_LEVEL, status=HEALTHY_CODE, trusted=True, equity=None):
    equity = ratio * 1000.0 if equity is None else equity
    return int(
        warning_levels(
            status=np.array([status]), sigmas=np.array([sigmas], dtype=float),
            equity=np.array([equity], dtype=float), maintenance=np.array([1000.0]),
            trusted=np.array([trusted]), previous=np.array([previous]), thresholds=T,
        )[0]
    )  # fmt: skip


def test_a_distance_in_daily_standard_deviations_is_the_log_move_over_the_daily_vol():
    got = distance_sigmas(np.array([-0.1, 0.25, np.nan]), np.array([0.8, 0.8, 0.8]))
    daily = 0.8 / math.sqrt(365.0)
    assert got[0] == pytest.approx(-math.log(0.9) / daily)
    assert got[1] == pytest.approx(math.log(1.25) / daily)
    assert got[2] == math.inf  # no move in range
    assert np.isnan(distance_sigmas(np.array([-0.1]), np.array([0.0]))[0])  # no usable vol


@pytest.mark.parametrize(
    ("sigmas", "ratio", "level"),
    [(10.0, 10.0, OK), (2.9, 10.0, WATCH), (1.4, 10.0, WARNING), (10.0, 1.9, WATCH), (10.0, 1.2, WARNING),
     (math.inf, 10.0, OK)],
)  # fmt: skip
def test_the_level_comes_from_the_nearer_of_distance_and_ratio(sigmas, ratio, level):
    assert grade(sigmas=sigmas, ratio=ratio) == level


def test_a_warning_is_not_left_when_just_past_its_threshold():
    assert grade(sigmas=1.5 * 1.05, previous=WARNING) == WARNING
    assert grade(sigmas=10.0, ratio=1.25 * 1.05, previous=WARNING) == WARNING


def test_a_warning_is_left_when_clearly_past_its_threshold():
    assert grade(sigmas=1.5 * 1.15, previous=WARNING) == WATCH
    assert grade(sigmas=10.0, previous=WARNING) == OK


def test_a_watch_is_kept_just_past_and_left_clearly_past():
    assert grade(sigmas=3.0 * 1.05, previous=WATCH) == WATCH
    assert grade(sigmas=3.0 * 1.15, previous=WATCH) == OK
    assert grade(sigmas=3.0 * 1.05, previous=OK) == OK  # no hysteresis on the way up


def test_non_finite_or_untrusted_inputs_never_grade_ok():
    assert grade(sigmas=math.nan) == WARNING
    assert grade(sigmas=10.0, equity=math.inf) == WARNING
    assert grade(sigmas=10.0, equity=math.nan) == WARNING
    assert grade(sigmas=10.0, trusted=False) == WARNING
    assert grade(sigmas=10.0, trusted=False, previous=OK) == WARNING


def test_the_engines_margin_call_and_liquidation_are_never_softened():
    assert grade(sigmas=50.0, status=STATUSES.index("margin_call")) == MARGIN_CALL
    assert grade(sigmas=50.0, status=STATUSES.index("liquidation")) == LIQUIDATION
    # A healthy account is at most a warning, whatever came before.
    assert grade(sigmas=0.5, ratio=1.1, previous=LIQUIDATION) == WARNING


def test_the_nearest_distance_names_its_underlying_and_fails_closed_on_a_missing_vol():
    # Account 0: BTC down 10 %, ETH up 30 %; account 1: only a joint move of −5 %; account 2 holds an
    # underlying with no vol; account 3 holds nothing.
    nearest = nearest_distances(
        pair_indptr=np.array([0, 2, 3, 4, 4]), pair_underlying=np.array([0, 1, 0, 2]),
        down=np.array([-0.10, np.nan, np.nan, -0.2]), up=np.array([np.nan, 0.30, np.nan, np.nan]),
        joint_down=np.array([-0.5, -0.05, np.nan, np.nan]), joint_up=np.full(4, np.nan),
        vols=np.array([0.8, 0.6, np.nan]),
    )  # fmt: skip
    daily = 0.8 / math.sqrt(365.0)
    assert nearest.driver[0] == 0
    assert nearest.sigmas[0] == pytest.approx(-math.log(0.9) / daily)
    assert not nearest.joint[0]
    assert nearest.joint[1]
    assert nearest.driver[1] == -1
    assert nearest.sigmas[1] == pytest.approx(-math.log(0.95) / daily)
    assert np.isnan(nearest.sigmas[2])
    assert nearest.sigmas[3] == math.inf

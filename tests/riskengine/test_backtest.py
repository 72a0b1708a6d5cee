"""Backtesting and procyclicality (methodology v1.1 section 7): statistics worked by hand, books
whose losses and IM are known in closed form, the day-axis engine against ``compute_margin`` one
day at a time, the ``backtest`` command, and a run over the real history.

Hand working uses natural logarithms: ln 0.99 = -0.0100503, ln 0.01 = -4.6051702, ln 0.9 =
-0.1053605, ln 0.1 = -2.3025851, ln 0.7 = -0.3566749, ln 0.3 = -1.2039728, ln(2/3) = -0.4054651,
ln(1/3) = -1.0986123, ln(5/6) = -0.1823216, ln(1/6) = -1.7917595. For chi2 p-values:
P(chi2(1) > x) = erfc(sqrt(x/2)) and P(chi2(2) > x) = exp(-x/2).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from riskengine.core import compute_margin, parse_document
from riskengine.core.backtest import (
    Backtest,
    backtest,
    backtest_report,
    backtest_statistics,
    christoffersen,
    kupiec,
    procyclicality,
    traffic_light,
    transition_counts,
)
from riskengine.core.calibration import psr_path
from riskengine.core.cli import main
from riskengine.core.errors import DocumentError
from tests.riskengine.documents import (
    REAL_PRICES,
    daily_days,
    make_document,
    perp,
    price_history,
    real_document,
    write_prices,
)
from tests.riskengine.strategies import INSTRUMENTS, MODES, document

# One BTC close a day from 2021-01-01; ETH and USDC stand still. With h = 2 there are 8
# observations t = 0..7 and L_t = S_t - S_{t+2} for one long BTC-PERP.
BTC_CLOSES = [100.0, 102.0, 95.0, 91.0, 100.0, 89.0, 95.0, 96.0, 80.0, 84.0]


def flat(count: int, value: float) -> list[float]:
    return [value] * count


def long_perp(mode: str, **extra) -> dict:
    return make_document(
        {"id": "LONG", "mode": mode, "collateral": {"USDC": "1000"},
         "positions": [perp("BTC-PERP", "1", "100") | extra]},
    )  # fmt: skip


def synthetic_history(doc: dict, btc: list[float]):
    n = len(btc)
    return price_history(
        parse_document(doc).parameters, {"BTC": btc, "ETH": flat(n, 50.0), "USDC": flat(n, 1.0)}
    )


# --- Kupiec ---------------------------------------------------------------------------------------


def test_kupiec_on_one_exception_in_ten_observations_matches_the_hand_computation():
    # n = 10, x = 1, p = 0.01:
    #   -2 [9 ln 0.99 + ln 0.01] = -2 [-0.0904530 - 4.6051702] = 9.3912464
    #   +2 [9 ln 0.9 + ln 0.1]   = +2 [-0.9482446 - 2.3025851] = -6.5016595
    #   LR = 2.8895869; p-value = erfc(sqrt(1.4447935)) = 2 (1 - N(1.6998785)) = 0.0891538.
    lr, p_value = kupiec(10, 1)
    assert float(lr) == pytest.approx(2.8895869, abs=1e-6)
    assert float(p_value) == pytest.approx(0.0891538, abs=1e-6)


def test_kupiec_with_no_exception_takes_zero_log_zero_as_zero():
    # n = 250, x = 0: LR = -2 * 250 ln 0.99 + 2 * (250 ln 1 + 0 ln 0) = 5.0251679 (0 ln 0 = 0);
    # p-value = erfc(sqrt(2.5125840)) = 0.0249815.
    lr, p_value = kupiec(250, 0)
    assert float(lr) == pytest.approx(5.0251679, abs=1e-6)
    assert float(p_value) == pytest.approx(0.0249815, abs=1e-6)


def test_kupiec_when_every_observation_is_an_exception():
    # n = x = 2: LR = -2 * 2 ln 0.01 + 2 * (0 ln 0 + 2 ln 1) = 18.4206807.
    lr, _ = kupiec(2, 2)
    assert float(lr) == pytest.approx(18.4206807, abs=1e-6)


def test_kupiec_is_zero_when_the_exception_rate_is_exactly_one_percent():
    lr, p_value = kupiec(300, 3)
    assert float(lr) == pytest.approx(0.0, abs=1e-12)
    assert float(p_value) == pytest.approx(1.0)


# --- Christoffersen -------------------------------------------------------------------------------


def sequence(text: str) -> np.ndarray:
    return np.array([c == "1" for c in text])[:, None]


def test_christoffersen_on_a_clustered_sequence_matches_the_hand_computation():
    # 0000111000: transitions 00 00 00 01 11 11 10 00 00 -> n00 = 5, n01 = 1, n10 = 1, n11 = 2.
    # pi01 = 1/6, pi11 = 2/3, pi = 3/9 = 1/3.
    #   -2 [(5+1) ln(2/3) + (1+2) ln(1/3)] = -2 [-2.4327906 - 3.2958369] = 11.4572551
    #   +2 [5 ln(5/6) + ln(1/6) + ln(1/3) + 2 ln(2/3)] = +2 [-0.9116078 - 1.7917595 - 1.0986123
    #      - 0.8109302] = -9.2258196
    #   LR_ind = 2.2314355.
    # LR_pof (n = 10, x = 3) = -2 [7 ln 0.99 + 3 ln 0.01] + 2 [7 ln 0.7 + 3 ln 0.3]
    #   = -2 [-0.0703524 - 13.8155106] + 2 [-2.4967246 - 3.6119184] = 27.7717259 - 12.2172861
    #   = 15.5544398; LR_cc = 17.7858753; p-value = exp(-17.7858753 / 2) = 0.000137356.
    exceptions = sequence("0000111000")
    counts = transition_counts(exceptions)
    assert [int(c[0]) for c in counts] == [5, 1, 1, 2]
    lr_pof, _ = kupiec(10, 3)
    assert float(lr_pof) == pytest.approx(15.5544398, abs=1e-6)
    lr_ind, lr_cc, p_cc = christoffersen(*counts, lr_pof)
    assert float(lr_ind[0]) == pytest.approx(2.2314355, abs=1e-6)
    assert float(lr_cc[0]) == pytest.approx(17.7858753, abs=1e-6)
    assert float(p_cc[0]) == pytest.approx(0.000137356, rel=1e-5)


def test_christoffersen_finds_no_dependence_when_an_exception_is_followed_by_one_as_often_as_a_calm_day():
    # 0011000100: n00 = 4, n01 = 2, n10 = 2, n11 = 1: pi01 = 2/6 = pi11 = 1/3 = pi = 3/9, so both
    # likelihoods are equal and LR_ind = 0 exactly (up to rounding).
    counts = transition_counts(sequence("0011000100"))
    assert [int(c[0]) for c in counts] == [4, 2, 2, 1]
    lr_ind, _, _ = christoffersen(*counts, 0.0)
    assert float(lr_ind[0]) == pytest.approx(0.0, abs=1e-12)


def test_christoffersen_with_one_exception_on_the_last_day_is_defined():
    # 0001: n00 = 2, n01 = 1, n10 = n11 = 0 (the exception state is never left: pi11 has no
    # observation, its terms are 0). pi01 = 1/3 = pi: LR_ind = 0, not NaN.
    counts = transition_counts(sequence("0001"))
    assert [int(c[0]) for c in counts] == [2, 1, 0, 0]
    lr_ind, lr_cc, p_cc = christoffersen(*counts, 1.0)
    assert float(lr_ind[0]) == pytest.approx(0.0, abs=1e-12)
    assert float(lr_cc[0]) == pytest.approx(1.0)
    assert float(p_cc[0]) == pytest.approx(math.exp(-0.5))


# --- the Basel traffic light ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exceptions", "light"),
    [(x, "green") for x in range(5)]
    + [(x, "yellow") for x in range(5, 10)]
    + [(x, "red") for x in (10, 11, 25)],
)
def test_the_basel_zones_for_250_observations(exceptions, light):
    # F(4; 250, 0.01) = 0.8922 < 0.95 <= F(5) = 0.9588; F(9) = 0.99975 < 0.9999 <= F(10) = 0.99995.
    assert ("green", "yellow", "red")[int(traffic_light(250, exceptions))] == light


# --- procyclicality ---------------------------------------------------------------------------------


def test_procyclicality_by_hand_with_a_missing_day():
    # Days 1, 2, 3, 5, 6 (day 4 missing); IM 100, 120, 90, 180, 150.
    # Peak to trough 180 / 90 = 2. One-day increases: 1->2 +20 %, 2->3 -25 %, 5->6 -16.7 %
    # (3->5 is two days apart): max 0.2. Two days: 1->3 -10 %, 3->5 +100 %: max 1.0.
    days = daily_days("2021-01-01", 6)[[0, 1, 2, 4, 5]]
    im = np.array([[100.0], [120.0], [90.0], [180.0], [150.0]])
    peak, increases = procyclicality(im, days, horizons=(1, 2, 30))
    assert float(peak[0]) == pytest.approx(2.0)
    assert float(increases[1][0]) == pytest.approx(0.2)
    assert float(increases[2][0]) == pytest.approx(1.0)
    assert math.isnan(increases[30][0])  # no pair 30 days apart


def test_procyclicality_is_undefined_when_the_im_touches_zero():
    days = daily_days("2021-01-01", 3)
    peak, increases = procyclicality(np.array([[0.0], [10.0], [20.0]]), days, horizons=(1,))
    assert math.isnan(peak[0])
    assert float(increases[1][0]) == pytest.approx(1.0)  # only 10 -> 20: no increase from 0


# --- closed-form books -----------------------------------------------------------------------------


def test_a_long_perpetual_in_cross_mode_needs_a_tenth_of_the_close_and_loses_the_two_day_fall():
    # IM_t = |q| m S_t imf = 0.1 S_t; W = 1,000 USDC + (S - 100): L_t = S_t - S_{t+2}.
    #   t: 0    1     2    3    4    5    6    7
    #   S: 100  102   95   91   100  89   95   96     (S_{t+2}: 95 91 100 89 95 96 80 84)
    #   L: 5    11    -5   2    5    -7   15   12
    #  IM: 10   10.2  9.5  9.1  10   8.9  9.5  9.6
    # Exceptions (L > IM): t = 1, 6, 7.
    doc = long_perp("cross")
    result = backtest(parse_document(doc), synthetic_history(doc, BTC_CLOSES), mpor_days=2)
    assert result.days.tolist() == daily_days("2021-01-01", 8).tolist()
    assert result.initial_margin[:, 0] == pytest.approx([10, 10.2, 9.5, 9.1, 10, 8.9, 9.5, 9.6])
    assert result.loss[:, 0] == pytest.approx([5, 11, -5, 2, 5, -7, 15, 12])
    assert np.flatnonzero(result.exception[:, 0]).tolist() == [1, 6, 7]
    assert set(result.exception_driver) == {"BTC"}
    report = backtest_report(result)
    (section,) = report["portfolios"]
    assert (section["observations"], section["exceptions"]) == (8, 3)
    assert section["coverage"] == pytest.approx(5 / 8)
    assert section["exception_days"] == ["2021-01-02", "2021-01-07", "2021-01-08"]
    assert section["procyclicality"]["peak_to_trough"] == pytest.approx(10.2 / 8.9)
    assert (report["start"], report["end"]) == ("2021-01-01", "2021-01-08")


def test_the_same_perpetual_in_portfolio_mode_needs_psr_plus_the_perpetual_basis():
    # Scan: the worst standard move -psr gives -0.15 S (the extreme -2 psr at 35 % is -0.105 S);
    # D = min(0.15 S, |S| 0.15) = 0.15 S, N = 0; one underlying: A' = |D|; basis: perpetual bucket
    # (T = 0) at min_basis 0.01 S; no SOM or concentration. IM_t = 0.16 S_t.
    # Exceptions: L 11 < 16.32, 15 < 15.2, 12 < 15.36: none.
    doc = long_perp("portfolio")
    result = backtest(parse_document(doc), synthetic_history(doc, BTC_CLOSES))
    assert result.initial_margin[:, 0] == pytest.approx(0.16 * np.array(BTC_CLOSES[:8]))
    assert not result.exception.any()


def test_in_calibrated_mode_the_perpetual_needs_the_psr_its_history_gives_each_day():
    # psr_t by a plain loop: EWMA (0.94) of the log returns up to t, seeded with the mean of the
    # first 30 squared returns; max(0.10, 2.326 sigma sqrt(2) 1.25) rounded to 6 decimals, capped
    # at 0.495 (psr < 1/2 with the +-2 extremes); the set's 0.15 while fewer than 60 returns.
    rng = np.random.default_rng(16)
    closes = (100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.05, 90)))).tolist()
    doc = long_perp("portfolio")
    result = backtest(parse_document(doc), synthetic_history(doc, closes), mode="calibrated")
    returns = np.diff(np.log(closes))
    expected = []
    for t in range(88):
        if t < 60:
            expected.append(0.15)
            continue
        variance = float(np.mean(returns[:30] ** 2))
        for r in returns[:t]:
            variance = 0.94 * variance + 0.06 * r * r
        expected.append(min(round(max(0.10, 2.326 * math.sqrt(variance) * math.sqrt(2) * 1.25), 6), 0.495))
    assert result.psr[:, 0] == pytest.approx(expected, abs=1e-12)
    assert max(expected) > 0.15  # the history asks for more than the set
    assert result.initial_margin[:, 0] == pytest.approx((np.array(expected) + 0.01) * closes[:88])


def test_an_isolated_account_is_backtested_at_account_level_like_cross():
    # Section 4a's account IM is sum IM_i and an allocation earmarks collateral without changing W:
    # the isolated account's IM_t and L_t are the cross account's, whatever it allocated.
    isolated = long_perp("isolated", allocated_margin=500)
    history = synthetic_history(isolated, BTC_CLOSES)
    ours = backtest(parse_document(isolated), history)
    cross = backtest(parse_document(long_perp("cross")), history)
    assert ours.initial_margin.tolist() == cross.initial_margin.tolist()
    assert ours.loss.tolist() == cross.loss.tolist()


def test_the_driver_of_an_exception_is_the_underlying_whose_positions_lost_most():
    # Long 1 BTC-PERP and long 1 ETH-PERP in cross mode, 100 USDC. BTC stands at 100, ETH falls from
    # 50 to 30 in two days: L_0 = 20 > IM_0 = 10 + 5. The loss splits into BTC 0, ETH 20, the
    # collateral 0 (USDC at 1): the driver is ETH. The aggregate book (the same positions in
    # portfolio mode) needs more: D = (15, 9), A = sqrt(15^2 + 9^2 + 2*0.8*15*9) = 22.85,
    # A' = 24 - 0.8 (24 - 22.85) = 23.08, basis 0.01 * 150 = 1.5: IM 24.58 >= 20, no exception.
    doc = make_document(
        {"id": "TWO", "mode": "cross", "collateral": {"USDC": "100"},
         "positions": [perp("BTC-PERP", "1", "100"), perp("ETH-PERP", "1", "50")]},
    )  # fmt: skip
    history = price_history(
        parse_document(doc).parameters,
        {"BTC": flat(3, 100.0), "ETH": [50.0, 40.0, 30.0], "USDC": flat(3, 1.0)},
    )
    result = backtest(parse_document(doc), history)
    assert result.exception[0].tolist() == [True, False]  # the account, the aggregate book
    assert result.initial_margin[0, 1] == pytest.approx(24.58, abs=0.005)
    assert result.exception_loss_by[0] == pytest.approx([0.0, 20.0, 0.0])
    assert result.exception_driver[0] == "ETH"


def test_a_figure_that_is_not_finite_is_an_exception_never_a_pass():
    # 1e300 BTC at closes of 1e10: every figure overflows to infinity (IM) or NaN (L).
    doc = make_document(
        {"id": "HUGE", "mode": "cross", "positions": [perp("BTC-PERP", "1e300", "1")]},
    )
    history = price_history(
        parse_document(doc).parameters, {"BTC": [1e10, 2e10, 3e10], "ETH": flat(3, 1.0), "USDC": flat(3, 1.0)}
    )
    result = backtest(parse_document(doc), history)
    assert not np.isfinite(result.initial_margin[0, 0])
    assert result.exception[0, 0]


# --- the day-axis engine against compute_margin, one day at a time ------------------------------


def seeded_books(count: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    books = []
    for k in range(count):
        chosen = rng.choice(len(INSTRUMENTS), size=rng.integers(0, 7))
        books.append(
            {
                "id": f"R{k}",
                "mode": MODES[k % 3],
                "collateral": {
                    "USDC": str(int(rng.integers(-10_000, 300_000))),
                    "BTC": float(rng.integers(-4, 20)),
                },
                "positions": [
                    {
                        "instrument": INSTRUMENTS[i],
                        "quantity": float(rng.integers(-8, 9)) / 2,
                        "entry_price": float(rng.integers(2000, 80000)),
                        "allocated_margin": float(rng.integers(0, 5000)),
                    }
                    for i in chosen
                ],
            }
        )
    return books


def day_market(margin_input, closes, assets, *, psr=None, elapsed_years=0.0):
    """``margin_input`` at one day's closes (and psr), options ``elapsed_years`` closer to expiry."""
    p = margin_input.parameters if psr is None else dataclasses.replace(margin_input.parameters, psr=psr)
    m = dataclasses.replace(
        margin_input.market,
        underlying_price=closes,
        asset_price=assets,
        years=margin_input.market.years - elapsed_years,
    )
    return dataclasses.replace(margin_input, parameters=p, market=m)


def wealth(result) -> np.ndarray:
    """W per portfolio: collateral at market value (no haircut) + position values."""
    inp = result.margin_input
    f = inp.portfolios
    cash = np.bincount(
        f.balance_portfolio,
        weights=f.balance_amount * inp.market.asset_price[f.balance_asset],
        minlength=f.n_portfolios,
    )
    return cash + result.positions_value


@pytest.mark.parametrize("mode", ["fixed", "calibrated"])
def test_every_day_matches_compute_margin_at_that_days_market(mode):
    # 40 books of every mode with options (short-dated and expired ones too), a 75-day history
    # (calibrated psr from day 60), markets computed in small blocks: IM_t is compute_margin's IM at
    # the closes of t (with that day's psr), L_t the fall of W from t to t + 2 with T - 2/365.
    doc = document(seeded_books(40, seed=16))
    margin_input = parse_document(doc)
    rng = np.random.default_rng(17)
    n = 75
    closes = {
        "BTC": 60000.0 * np.exp(np.cumsum(rng.normal(0, 0.05, n))),
        "ETH": 3000.0 * np.exp(np.cumsum(rng.normal(0, 0.06, n))),
        "USDC": 1.0 + rng.normal(0, 0.002, n),
    }
    history = price_history(margin_input.parameters, closes)
    ours = backtest(margin_input, history, mode=mode)
    psr = psr_path(
        history.days, history.underlying_close, margin_input.parameters.psr, np.array([0.495, 0.495])
    )
    if mode == "fixed":
        psr[:] = margin_input.parameters.psr
    for t in (0, 30, 61, 72):
        start = day_market(margin_input, history.underlying_close[t], history.asset_close[t], psr=psr[t])
        end = day_market(
            margin_input, history.underlying_close[t + 2], history.asset_close[t + 2], elapsed_years=2 / 365
        )
        at_start, at_end = compute_margin(start), compute_margin(end)
        assert ours.initial_margin[t, :-1] == pytest.approx(at_start.initial_margin, rel=1e-9, abs=1e-6)
        assert ours.loss[t, :-1] == pytest.approx(wealth(at_start) - wealth(at_end), rel=1e-9, abs=1e-6)


def test_the_aggregate_book_is_every_entry_and_balance_in_one_portfolio_mode_portfolio():
    books = seeded_books(12, seed=3)
    doc = document(books)
    margin_input = parse_document(doc)
    n = 6
    history = price_history(
        margin_input.parameters,
        {"BTC": [60000.0, 52000, 58000, 61000, 45000, 47000], "ETH": [3000.0, 2500, 2800, 3100, 2000, 2100],
         "USDC": flat(n, 1.0)},
    )  # fmt: skip
    result = backtest(margin_input, history)
    merged = {
        "id": "ALL", "mode": "portfolio",
        "collateral": {
            asset: str(sum(float(b["collateral"].get(asset, 0)) for b in books)) for asset in ("USDC", "BTC")
        },
        "positions": [copy.deepcopy(p) for b in books for p in b["positions"]],
    }  # fmt: skip
    aggregate = parse_document(document([merged]))
    for t in range(4):
        at_t = compute_margin(day_market(aggregate, history.underlying_close[t], history.asset_close[t]))
        assert result.initial_margin[t, -1] == pytest.approx(at_t.initial_margin[0], rel=1e-9)
    # W is linear in the book: the aggregate loses what the portfolios lose together.
    assert result.loss[:, -1] == pytest.approx(result.loss[:, :-1].sum(axis=1), rel=1e-9, abs=1e-6)


def test_a_backtest_without_the_aggregate_book_has_the_same_portfolio_columns():
    doc = document(seeded_books(6, seed=5))
    margin_input = parse_document(doc)
    history = price_history(
        margin_input.parameters,
        {
            "BTC": [60000.0, 52000, 58000, 61000, 45000],
            "ETH": [3000.0, 2500, 2800, 3100, 2000],
            "USDC": flat(5, 1.0),
        },
    )
    whole = backtest(margin_input, history)
    shard = backtest(margin_input, history, aggregate=False)
    assert shard.initial_margin.tolist() == whole.initial_margin[:, :-1].tolist()
    assert shard.loss.tolist() == whole.loss[:, :-1].tolist()
    report = backtest_report(shard)
    assert set(report["venue"]) == {"pooled"}
    assert report["venue"]["pooled"] == backtest_report(whole)["venue"]["pooled"]


# --- pooled statistics ---------------------------------------------------------------------------------


def test_pooled_statistics_count_account_days_and_no_transition_from_one_account_to_the_next():
    # Account A: 0 0 1; account B: 1 0 0 (the aggregate column: 0 0 0). Within the accounts:
    # A n00 = 1, n01 = 1; B n10 = 1, n00 = 1 -> pooled n00 = 2, n01 = 1, n10 = 1, n11 = 0 (A's last
    # day followed by B's first would have made a spurious 1 -> 1). n = 6, x = 2.
    exception = np.array([[0, 1, 0], [0, 0, 0], [1, 0, 0]], dtype=bool)
    days = daily_days("2021-01-01", 3)
    result = Backtest(
        mode="fixed", mpor_days=2, ids=("A", "B"), aggregate=True, days=days, psr=np.full((3, 2), 0.15),
        initial_margin=np.array([[10.0, 20.0, 25.0], [12.0, 20.0, 26.0], [11.0, 40.0, 45.0]]),
        loss=np.zeros((3, 3)), exception=exception, exception_day=np.array([2, 0]),
        exception_column=np.array([0, 1]), exception_loss_by=np.zeros((2, 3)),
        exception_driver=("BTC", "BTC"),
    )  # fmt: skip
    _, pooled = backtest_statistics(result)
    assert (int(pooled.observations[0]), int(pooled.exceptions[0])) == (6, 2)
    lr_pof, _ = kupiec(6, 2)
    lr_ind, _, _ = christoffersen(2, 1, 1, 0, lr_pof)
    assert float(pooled.lr_ind[0]) == pytest.approx(float(lr_ind))
    # The venue's total IM: 30, 32, 51.
    assert float(pooled.peak_to_trough[0]) == pytest.approx(51 / 30)
    report = backtest_report(result)
    assert report["venue"]["pooled"]["exception_days"] == ["2021-01-01", "2021-01-03"]
    assert [p["exception_days"] for p in report["portfolios"]] == [["2021-01-03"], ["2021-01-01"]]


# --- refusals -------------------------------------------------------------------------------------------


def test_a_history_without_a_day_t_plus_h_is_refused():
    doc = long_perp("cross")
    with pytest.raises(DocumentError, match=r"^prices: no day t of the history has t \+ 2 days"):
        backtest(parse_document(doc), synthetic_history(doc, [100.0, 101.0]))


@pytest.mark.parametrize(
    ("options", "field"),
    [({"mode": "dynamic"}, "mode"), ({"mpor_days": 0}, "mpor_days"), ({"mpor_days": 1.5}, "mpor_days")],
)
def test_an_unknown_mode_or_a_margin_period_that_is_not_whole_days_is_refused(options, field):
    doc = long_perp("cross")
    with pytest.raises(DocumentError) as refused:
        backtest(parse_document(doc), synthetic_history(doc, BTC_CLOSES), **options)
    assert refused.value.field == field


# --- the command ------------------------------------------------------------------------------------------

SECTION_KEYS = {
    "id", "observations", "exceptions", "coverage", "kupiec", "christoffersen", "traffic_light",
    "procyclicality", "exception_days",
}  # fmt: skip


def assert_section_shape(section: dict) -> None:
    assert set(section) == SECTION_KEYS
    assert set(section["kupiec"]) == {"lr", "p_value"}
    assert set(section["christoffersen"]) == {"lr_ind", "lr_cc", "p_value_cc"}
    assert set(section["procyclicality"]) == {"peak_to_trough", "max_increase"}
    assert set(section["procyclicality"]["max_increase"]) == {"1", "5", "30"}
    assert section["traffic_light"] in {"green", "yellow", "red"}
    days = section["exception_days"]
    assert days == sorted(set(days))
    if section["id"] == "pooled":  # the days with an exception in at least one account
        assert len(days) <= section["exceptions"]
    else:
        assert len(days) == section["exceptions"]


def synthetic_prices(directory: Path) -> None:
    n = len(BTC_CLOSES)
    write_prices(directory, {"BTC": BTC_CLOSES, "ETH": flat(n, 50.0), "USDC": flat(n, 1.0)})


def test_the_backtest_command_prints_the_issues_shape(tmp_path, run_cli):
    doc = make_document(
        {
            "id": "LONG",
            "mode": "cross",
            "collateral": {"USDC": "1000"},
            "positions": [perp("BTC-PERP", "1", "100")],
        },
        {"id": "PM", "mode": "portfolio", "positions": [perp("BTC-PERP", "1", "100")]},
    )
    (tmp_path / "doc.json").write_text(json.dumps(doc))
    synthetic_prices(tmp_path)
    done = run_cli("backtest", str(tmp_path / "doc.json"), "--prices", str(tmp_path))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report) == {"mode", "mpor_days", "start", "end", "portfolios", "venue"}
    assert (report["mode"], report["mpor_days"], report["start"], report["end"]) == (
        "fixed", 2, "2021-01-01", "2021-01-08"
    )  # fmt: skip
    assert [p["id"] for p in report["portfolios"]] == ["LONG", "PM"]
    assert set(report["venue"]) == {"pooled", "aggregate"}
    for section in [*report["portfolios"], *report["venue"].values()]:
        assert_section_shape(section)
    long, pm = report["portfolios"]
    assert long["exception_days"] == ["2021-01-02", "2021-01-07", "2021-01-08"]
    assert long["kupiec"]["lr"] == pytest.approx(float(kupiec(8, 3)[0]))
    assert pm["exceptions"] == 0
    assert (report["venue"]["pooled"]["observations"], report["venue"]["pooled"]["exceptions"]) == (16, 3)


def test_the_backtest_command_takes_the_mode_and_the_margin_period(tmp_path, capsys):
    (tmp_path / "doc.json").write_text(json.dumps(long_perp("cross")))
    synthetic_prices(tmp_path)
    assert main(["backtest", str(tmp_path / "doc.json"), "--prices", str(tmp_path), "--mpor-days", "1",
                 "--mode", "calibrated"]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert (report["mode"], report["mpor_days"], report["end"]) == ("calibrated", 1, "2021-01-09")
    # h = 1: L_t = S_t - S_{t+1} = -2, 7, 4, -9, 11, -6, -1, 16, -4 against IM_t = 0.1 S_t
    # (10, 10.2, 9.5, 9.1, 10, 8.9, 9.5, 9.6, 8): exceptions at t = 4 (11 > 10) and t = 7 (16 > 9.6).
    # (Fewer than 60 returns: calibrated keeps the set's psr, and cross mode does not use it.)
    assert report["portfolios"][0]["exception_days"] == ["2021-01-05", "2021-01-08"]


def test_a_missing_price_file_is_an_error_naming_it(tmp_path, run_cli):
    (tmp_path / "doc.json").write_text(json.dumps(long_perp("cross")))
    synthetic_prices(tmp_path)
    (tmp_path / "ETH-USD.csv").unlink()
    done = run_cli("backtest", str(tmp_path / "doc.json"), "--prices", str(tmp_path))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip() == f"error: {tmp_path / 'ETH-USD.csv'}: missing"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty (a header with Date and Close is needed)"),
        ("Date,Open\n2021-01-01,1\n", "line 1: no Close column"),
        ("Date,Close\n2021-01-01,3000\n2021-01-02,null\n",
         "line 3: Close 'null' is not a finite positive number"),
        ("Date,Close\n2021-01-01,-3\n", "line 2: Close '-3' is not a finite positive number"),
        ("Date,Close\n2021-01-01,nan\n", "line 2: Close 'nan' is not a finite positive number"),
        ("Date,Close\n01/02/2021,3000\n", "line 2: Date '01/02/2021' is not a YYYY-MM-DD date"),
        ("Date,Close\n2021-02-30,3000\n", "line 2: Date '2021-02-30' is not a YYYY-MM-DD date"),
        ("Date,Close\n2021-01-02,1\n2021-01-01,1\n", "line 3: 2021-01-01 does not come after 2021-01-02"),
        ("Date,Close\n2021-01-01,1,2\n", "line 2: 3 fields, the header has 2"),
        ("Date,Close\n", "no price rows"),
    ],
)  # fmt: skip
def test_a_malformed_price_file_is_an_error_naming_the_file_and_line(tmp_path, capsys, content, message):
    (tmp_path / "doc.json").write_text(json.dumps(long_perp("cross")))
    synthetic_prices(tmp_path)
    (tmp_path / "ETH-USD.csv").write_text(content)
    assert main(["backtest", str(tmp_path / "doc.json"), "--prices", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip() == f"error: {tmp_path / 'ETH-USD.csv'}: {message}"


def test_a_prices_directory_that_does_not_exist_is_an_error_naming_it(tmp_path, capsys):
    (tmp_path / "doc.json").write_text(json.dumps(long_perp("cross")))
    assert main(["backtest", str(tmp_path / "doc.json"), "--prices", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'nowhere'}: not a directory"


def test_the_command_prints_nothing_when_a_figure_would_not_be_finite(tmp_path, capsys):
    # The overflow book of the fail-closed test: all or nothing, as the margin command.
    doc = make_document({"id": "HUGE", "mode": "cross", "positions": [perp("BTC-PERP", "1e300", "1")]})
    (tmp_path / "doc.json").write_text(json.dumps(doc))
    write_prices(tmp_path, {"BTC": [1e10, 2e10, 3e10], "ETH": flat(3, 1.0), "USDC": flat(3, 1.0)})
    assert main(["backtest", str(tmp_path / "doc.json"), "--prices", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert (
        err.strip() == "error: portfolios[0]: the backtest figures of 'HUGE' would not be finite (overflow)"
    )


def test_a_linked_asset_needs_no_file_and_a_stablecoin_needs_its_own(tmp_path, capsys):
    # spec parameters: BTC (underlying and linked asset), ETH, USDC: exactly three files.
    (tmp_path / "doc.json").write_text(json.dumps(long_perp("cross")))
    synthetic_prices(tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.csv")) == ["BTC-USD.csv", "ETH-USD.csv", "USDC-USD.csv"]
    assert main(["backtest", str(tmp_path / "doc.json"), "--prices", str(tmp_path)]) == 0
    (tmp_path / "USDC-USD.csv").unlink()
    capsys.readouterr()
    assert main(["backtest", str(tmp_path / "doc.json"), "--prices", str(tmp_path)]) == 2
    assert "USDC-USD.csv: missing" in capsys.readouterr().err


def test_a_margin_period_that_is_not_a_whole_number_of_days_is_refused_by_the_command(tmp_path, run_cli):
    (tmp_path / "doc.json").write_text(json.dumps(long_perp("cross")))
    synthetic_prices(tmp_path)
    done = run_cli("backtest", str(tmp_path / "doc.json"), "--prices", str(tmp_path), "--mpor-days", "0")
    assert done.returncode == 2
    assert "--mpor-days: must be a whole number of days >= 1" in done.stderr


# --- the real history ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["fixed", "calibrated"])
def test_the_backtest_runs_end_to_end_over_the_real_history(tmp_path, mode, run_cli):
    (tmp_path / "doc.json").write_text(json.dumps(real_document()))
    done = run_cli("backtest", str(tmp_path / "doc.json"), "--prices", str(REAL_PRICES), "--mode", mode)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    # 971 days from 2021-01-01 to 2023-08-29: 969 days t have t + 2.
    assert (report["start"], report["end"]) == ("2021-01-01", "2023-08-27")
    assert [p["id"] for p in report["portfolios"]] == ["BTC-LONG", "SHORT-VOL", "ISO"]
    for section in [*report["portfolios"], *report["venue"].values()]:
        assert_section_shape(section)
        assert section["observations"] == (3 * 969 if section["id"] == "pooled" else 969)
        assert section["coverage"] == pytest.approx(1 - section["exceptions"] / section["observations"])
    # A long BTC perpetual at 10 % IM did not hold through the May 2021 crash: 2021-05-17 -> 05-19
    # closed from 43,537.51 to 37,002.44 (-15.0 %, IM 4,353.75 against a loss of 6,535.07).
    assert "2021-05-17" in report["portfolios"][0]["exception_days"]

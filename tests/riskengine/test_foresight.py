"""Liquidation foresight (spec v1.1 section 9, ``riskengine.core.foresight``): distances against
closed forms on linear books and against a slow plain-Python bisection over ``compute_margin`` on
option and portfolio-mode books, isolated mode's first position, the joint move, the edge cases,
the probability against the barrier formula, the EWMA forecast and the CLI."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import replace

import numpy as np
import pytest

from riskengine.core import compute_margin, parse_document
from riskengine.core.cli import main
from riskengine.core.foresight import (
    DOWN_LIMIT,
    PRECISION,
    UP_LIMIT,
    Book,
    barrier_probability,
    distances,
    liquidation_probability,
    scenario_normals,
)
from riskengine.core.margin import HEALTHY
from riskengine.core.margin import LIQUIDATION as LIQUIDATION_STATUS
from riskengine.core.volatility import annualised, ewma_variances, ewma_volatility, log_returns
from tests.riskengine.documents import make_document, perp, spec_market, spec_parameters

MMF = 0.05  # spec_parameters: mmf of BTC and ETH
PSR_BTC = 0.15


def option(name: str, quantity) -> dict:
    return {"instrument": name, "quantity": quantity}


def account(mode: str, positions: list, collateral: dict | None = None, id_: str = "A") -> dict:
    return {"id": id_, "mode": mode, "collateral": collateral or {"USDC": "10000"}, "positions": positions}


def foresight_of(*portfolios: dict, market: dict | None = None):
    return distances(parse_document(make_document(*portfolios, market=market)))


# --- a slow reference: plain Python, one compute_margin per trial price ------------------------


def status_at(margin_input, moves: dict[int, float]) -> int:
    """Status of the single portfolio with underlying ``u`` moved by ``moves[u]`` (linked assets
    follow their underlying)."""
    p, m = margin_input.parameters, margin_input.market
    prices = m.underlying_price.copy()
    for u, x in moves.items():
        prices[u] *= 1.0 + x
    assets = m.asset_price.copy()
    for a, u in enumerate(p.asset_underlying.tolist()):
        if u >= 0:
            assets[a] = prices[u]
    moved = replace(margin_input, market=replace(m, underlying_price=prices, asset_price=assets))
    return int(compute_margin(moved).status[0])


def reference_distance(margin_input, underlyings: list[int], direction: int) -> float | None:
    """Smallest |x| in the direction's range at which the status is liquidation: a scan in steps
    of 0.004 (then 0.05 beyond 100 %) and a bisection to 1e-7; None when none."""
    if status_at(margin_input, {}) == LIQUIDATION_STATUS:
        return 0.0
    limit = DOWN_LIMIT if direction < 0 else UP_LIMIT
    safe, x = 0.0, 0.0
    while abs(x) < abs(limit):
        step = 0.004 if abs(x) < 1.0 else 0.05
        x = max(x - step, limit) if direction < 0 else min(x + step, limit)
        if status_at(margin_input, dict.fromkeys(underlyings, x)) == LIQUIDATION_STATUS:
            hit = x
            while abs(hit - safe) > 1e-7:
                middle = 0.5 * (safe + hit)
                if status_at(margin_input, dict.fromkeys(underlyings, middle)) == LIQUIDATION_STATUS:
                    hit = middle
                else:
                    safe = middle
            return hit
        safe = x
    return None


def assert_close_to_reference(found: float, reference: float | None) -> None:
    if reference is None:
        assert math.isnan(found)
    else:
        # The engine reports the end of a bracket at most 1e-4 wide that is in liquidation.
        assert abs(found - reference) <= PRECISION + 1e-6, (found, reference)


# --- closed forms on linear books --------------------------------------------------------------


@pytest.mark.parametrize(("quantity", "collateral"), [(1.0, 10000.0), (2.5, 30000.0), (0.3, 1000.0)])
def test_a_long_perpetual_in_cross_mode_liquidates_where_equity_meets_maintenance_margin(
    quantity, collateral
):
    # E = C + q(S' - e), MM = q S' mmf: E = MM at S' = (q e - C) / (q (1 - mmf)).
    found = foresight_of(
        account("cross", [perp("BTC-PERP", str(quantity), "60000")], {"USDC": str(collateral)})
    )
    exact = (quantity * 60000.0 - collateral) / (quantity * (1.0 - MMF)) / 60000.0 - 1.0
    assert exact - PRECISION <= found.down[0] <= exact
    assert found.down_price[0] == pytest.approx(60000.0 * (1.0 + found.down[0]))
    assert math.isnan(found.up[0])  # a long linear book only gains upwards
    assert found.joint_down[0] == found.down[0]


def test_a_short_perpetual_in_cross_mode_liquidates_upwards_where_equity_meets_maintenance_margin():
    # E = C - |q| (S' - e), MM = |q| S' mmf: S' = (C + |q| e) / (|q| (1 + mmf)).
    found = foresight_of(account("cross", [perp("BTC-PERP", "-2", "60000")], {"USDC": "20000"}))
    exact = (20000.0 + 2 * 60000.0) / (2 * (1.0 + MMF)) / 60000.0 - 1.0
    assert exact <= found.up[0] <= exact + PRECISION
    assert math.isnan(found.down[0])
    assert found.joint_up[0] == found.up[0]


def test_a_long_perpetual_in_portfolio_mode_liquidates_where_equity_meets_the_scan_based_maintenance():
    # Scan = |q| S' psr (the standard +-psr move beats the 0.35-covered extremes), all directional;
    # basis |q| S' min_basis 0.01; MM = 0.8 IM = 0.8 q S' (psr + 0.01).
    found = foresight_of(account("portfolio", [perp("BTC-PERP", "1", "60000")], {"USDC": "15000"}))
    exact = (60000.0 - 15000.0) / (1.0 - 0.8 * (PSR_BTC + 0.01)) / 60000.0 - 1.0
    assert exact - PRECISION <= found.down[0] <= exact


def test_the_joint_move_of_two_long_perpetuals_in_cross_mode_solves_the_summed_equation():
    # E = C + q1 (S1 (1+x) - e1) + q2 (S2 (1+x) - e2) = (1+x)(q1 S1 + q2 S2) mmf.
    book = account(
        "cross", [perp("BTC-PERP", "1", "60000"), perp("ETH-PERP", "10", "3000")], {"USDC": "30000"}
    )
    found = foresight_of(book)
    notional = 60000.0 + 10 * 3000.0
    exact = (notional - 30000.0) / (notional * (1.0 - MMF)) - 1.0
    assert exact - PRECISION <= found.joint_down[0] <= exact
    # Each alone needs a larger move than both together.
    assert found.down[0] < found.joint_down[0]
    assert found.down[1] < found.joint_down[0]


def test_a_long_perpetual_held_against_linked_btc_collateral_moves_the_collateral_with_the_price():
    # Collateral 0.5 BTC (haircut 5 % in its first bracket) moves with S: E = 0.95 b S' + q(S' - e).
    found = foresight_of(account("cross", [perp("BTC-PERP", "1", "60000")], {"BTC": "0.5", "USDC": "5000"}))
    # E = 5000 + 0.95*0.5*S' + S' - 60000 = mmf S'  =>  S' = 55000 / (1 + 0.475 - 0.05)
    exact = 55000.0 / (1.0 + 0.475 - MMF) / 60000.0 - 1.0
    assert exact - PRECISION <= found.down[0] <= exact


# --- isolated mode: the first position ----------------------------------------------------------


def test_in_isolated_mode_the_first_position_to_reach_liquidation_sets_the_distance():
    # Long 1 at 60,000 with 9,000 allocated: e = 9000 + S' - 60000 = 0.05 S' at S' = 51000/0.95.
    # Short 1 at 60,000 with 6,000 allocated: e = 6000 - (S' - 60000) = 0.05 S' at S' = 66000/1.05.
    # A long with 20,000 allocated liquidates further down (S' = 40000/0.95), so it is not first.
    positions = [
        perp("BTC-PERP", "1", "60000") | {"allocated_margin": "20000"},
        perp("BTC-PERP", "1", "60000") | {"allocated_margin": "9000"},
        perp("BTC-PERP", "-1", "60000") | {"allocated_margin": "6000"},
    ]
    found = foresight_of(account("isolated", positions, {"USDC": "40000"}))
    down, up = 51000.0 / 0.95 / 60000.0 - 1.0, 66000.0 / 1.05 / 60000.0 - 1.0
    assert down - PRECISION <= found.down[0] <= down
    assert up <= found.up[0] <= up + PRECISION
    assert (found.down_position[0], found.up_position[0]) == (1, 2)
    assert (found.joint_down[0], found.joint_up[0]) == (found.down[0], found.up[0])


def test_in_isolated_mode_free_collateral_does_not_keep_a_position_from_liquidation():
    rich = account(
        "isolated", [perp("BTC-PERP", "1", "60000") | {"allocated_margin": "9000"}], {"USDC": "1e6"}
    )
    poor = account(
        "isolated", [perp("BTC-PERP", "1", "60000") | {"allocated_margin": "9000"}], {"USDC": "9000"}, "B"
    )
    found = foresight_of(rich, poor)
    assert found.down[0] == found.down[1]
    assert found.down[0] == pytest.approx(51000.0 / 0.95 / 60000.0 - 1.0, abs=PRECISION)


# --- option and portfolio-mode books against the slow reference --------------------------------

OPTION_BOOKS = [
    account("cross", [option("BTC-26MAR27-70000-C", "-3"), option("BTC-26MAR27-50000-P", "-3")],
            {"USDC": "60000"}),
    account("portfolio", [option("BTC-26MAR27-70000-C", "-3"), option("BTC-26MAR27-50000-P", "-3")],
            {"USDC": "50000"}),
    account("portfolio", [perp("BTC-PERP", "2", "60000"), option("BTC-26MAR27-50000-P", "2"),
                          perp("ETH-PERP", "-20", "3000"), option("ETH-25DEC26-3000-C", "-10")],
            {"USDC": "25000", "BTC": "0.2"}),
    account("portfolio", [perp("BTC-26MAR27", "-1", "61000"), option("BTC-26MAR27-70000-C", "4"),
                          option("ETH-25DEC26-3000-C", "-30")], {"USDC": "20000"}),
    account("isolated", [option("BTC-26MAR27-50000-P", "-2") | {"allocated_margin": "20000"},
                         perp("ETH-PERP", "5", "3000") | {"allocated_margin": "2500"}], {"USDC": "30000"}),
    account("cross", [perp("ETH-PERP", "-40", "3000"), option("ETH-25DEC26-3000-C", "25"),
                      option("BTC-26MAR27-70000-C", "-2")], {"USDC": "15000", "BTC": "0.3"}),
]  # fmt: skip


@pytest.mark.parametrize("book", OPTION_BOOKS, ids=lambda b: f"{b['mode']}-{len(b['positions'])}")
def test_distances_per_underlying_match_a_plain_bisection_over_the_engine(book):
    margin_input = parse_document(make_document(book))
    found = distances(margin_input)
    assert found.book.result.status[0] != LIQUIDATION_STATUS
    for r in range(found.book.n_pairs):
        u = int(found.book.pair_underlying[r])
        assert_close_to_reference(found.down[r], reference_distance(margin_input, [u], -1))
        assert_close_to_reference(found.up[r], reference_distance(margin_input, [u], +1))


@pytest.mark.parametrize("book", OPTION_BOOKS, ids=lambda b: f"{b['mode']}-{len(b['positions'])}")
def test_the_joint_distance_matches_a_plain_bisection_moving_every_underlying(book):
    margin_input = parse_document(make_document(book))
    found = distances(margin_input)
    every = list(range(len(margin_input.parameters.underlyings)))
    assert_close_to_reference(found.joint_down[0], reference_distance(margin_input, every, -1))
    assert_close_to_reference(found.joint_up[0], reference_distance(margin_input, every, +1))


def test_many_accounts_at_once_give_what_each_gives_alone():
    books = [copy.deepcopy(b) | {"id": f"P{k}"} for k, b in enumerate(OPTION_BOOKS)]
    together = foresight_of(*books)
    for k, book in enumerate(books):
        alone = foresight_of(book)
        pairs = slice(together.book.pair_indptr[k], together.book.pair_indptr[k + 1])
        np.testing.assert_array_equal(together.down[pairs], alone.down)
        np.testing.assert_array_equal(together.up[pairs], alone.up)
        assert (
            together.joint_down[k] == alone.joint_down[0]
            or np.isnan([together.joint_down[k], alone.joint_down[0]]).all()
        )


# --- edge cases ---------------------------------------------------------------------------------


def test_an_account_already_in_liquidation_is_at_distance_zero_everywhere_with_probability_one():
    found = foresight_of(account("cross", [perp("BTC-PERP", "1", "70000")], {"USDC": "5000"}))
    assert found.book.result.status[0] == LIQUIDATION_STATUS
    assert found.down[0] == found.up[0] == found.joint_down[0] == found.joint_up[0] == 0.0
    assert found.down_price[0] == 60000.0
    probability = liquidation_probability(found.book, vols=np.array([0.6, 0.7]), horizon_days=1)
    assert probability[0] == 1.0


def test_no_liquidation_within_the_range_is_null():
    # Collateral covers a 99 % fall: E = 1e6 + (S' - 60000) >= 0.05 S' for every S' > 0.
    found = foresight_of(account("cross", [perp("BTC-PERP", "1", "60000")], {"USDC": "1000000"}))
    assert np.isnan([found.down[0], found.up[0], found.joint_down[0], found.joint_up[0]]).all()


def test_an_account_holding_only_cash_has_no_underlying_and_no_joint_distance():
    found = foresight_of(account("portfolio", [], {"USDC": "1000"}))
    assert found.book.n_pairs == 0
    assert np.isnan([found.joint_down[0], found.joint_up[0]]).all()
    assert liquidation_probability(found.book, vols=np.array([0.6, 0.7]), horizon_days=1)[0] == 0.0


def test_a_liquidation_just_inside_the_range_edge_is_found_and_one_beyond_it_is_not():
    # Short perp: S' = (C + |q| e)/(|q| (1 + mmf)); C chosen for x = 9.5 (inside) and 10.5 (beyond).
    inside = 10.5 * 60000.0 * 1.05 - 60000.0
    beyond = 11.5 * 60000.0 * 1.05 - 60000.0
    found = foresight_of(
        account("cross", [perp("BTC-PERP", "-1", "60000")], {"USDC": str(inside)}),
        account("cross", [perp("BTC-PERP", "-1", "60000")], {"USDC": str(beyond)}, "B"),
    )
    assert 9.5 <= found.up[0] <= 9.5 + PRECISION
    assert math.isnan(found.up[1])


def test_a_move_at_which_the_figures_overflow_counts_as_liquidation():
    # A long call of multiplier 1e303 is finite now (value ~5e306) and overflows once BTC has
    # risen some 300 %: fail closed, an infinite equity is no "healthy".
    market = spec_market()
    market["instruments"]["BTC-26MAR27-70000-C"]["multiplier"] = 1e303
    found = foresight_of(
        account("cross", [option("BTC-26MAR27-70000-C", "1")], {"USDC": "1000"}), market=market
    )
    assert found.book.result.status[0] == HEALTHY
    assert 1.0 < found.up[0] < UP_LIMIT
    assert math.isnan(found.down[0])


# --- probability --------------------------------------------------------------------------------


@pytest.mark.parametrize("vol", [0.8, 1.5, 3.0])
@pytest.mark.parametrize("horizon_days", [1, 3])
def test_the_probability_on_one_underlying_linear_books_agrees_with_the_barrier_formula(vol, horizon_days):
    books = (
        [
            account("cross", [perp("BTC-PERP", "1", "60000")], {"USDC": str(c)}, f"L{c}")
            for c in (9000, 11000, 14000)
        ]
        + [
            account("cross", [perp("BTC-PERP", "-1", "60000")], {"USDC": str(c)}, f"S{c}")
            for c in (6000, 9000)
        ]
        + [
            account(
                "isolated",
                [perp("BTC-PERP", "1", "60000") | {"allocated_margin": "8000"}],
                {"USDC": "8000"},
                "I",
            )
        ]
    )
    found = foresight_of(*books)
    probability = liquidation_probability(found.book, vols=np.array([vol, 0.7]), horizon_days=horizon_days)
    for k in range(len(books)):
        move = found.down[k] if np.isfinite(found.down[k]) else found.up[k]
        expected = barrier_probability(float(move), vol, horizon_days)
        assert abs(probability[k] - expected) <= 0.01, (books[k]["id"], probability[k], expected)
    assert probability.max() > 0.05
    assert probability.min() < 0.95


def test_the_barrier_formula_is_the_one_of_section_nine():
    sigma_root_tau = 0.6 * math.sqrt(2 / 365)
    assert barrier_probability(-0.1, 0.6, 2) == pytest.approx(
        2 * 0.5 * math.erfc(-math.log(0.9) / sigma_root_tau / math.sqrt(2))
    )
    assert barrier_probability(0.1, 0.6, 2) == pytest.approx(
        2 * 0.5 * math.erfc(math.log(1.1) / sigma_root_tau / math.sqrt(2))
    )


def test_the_probability_is_reproducible_and_comes_from_the_seeded_scenarios():
    found = foresight_of(*(copy.deepcopy(b) | {"id": f"P{k}"} for k, b in enumerate(OPTION_BOOKS[1:3])))
    vols = np.array([0.9, 1.1])
    first = liquidation_probability(found.book, vols=vols, horizon_days=2)
    again = liquidation_probability(Book(found.book.margin_input), vols=vols, horizon_days=2)
    np.testing.assert_array_equal(first, again)
    other_seed = liquidation_probability(found.book, vols=vols, horizon_days=2, seed=7)
    assert not np.array_equal(first, other_seed)
    assert np.abs(first - other_seed).max() < 0.05  # another sample of the same model
    normals = scenario_normals(64, 4, 2, 11)
    assert not normals.flags.writeable
    np.testing.assert_array_equal(normals[:32], -normals[32:])  # antithetic halves


def test_the_probability_grows_with_the_horizon_and_the_volatility():
    found = foresight_of(OPTION_BOOKS[0])
    low = liquidation_probability(found.book, vols=np.array([0.6, 0.7]), horizon_days=1)[0]
    longer = liquidation_probability(found.book, vols=np.array([0.6, 0.7]), horizon_days=10)[0]
    wilder = liquidation_probability(found.book, vols=np.array([1.2, 0.7]), horizon_days=1)[0]
    assert low < longer
    assert low < wilder


# --- EWMA forecast ------------------------------------------------------------------------------


def test_the_ewma_forecast_follows_the_recursion_by_hand():
    closes = 100.0 * np.exp(np.cumsum([0.0, 0.1, -0.2, 0.05]))
    np.testing.assert_allclose(log_returns(closes), [0.1, -0.2, 0.05])
    # Seed: mean of the squared returns (fewer than 30): (0.01 + 0.04 + 0.0025) / 3 = 0.0175.
    # 0.94 * 0.0175 + 0.06 * 0.01 = 0.01705; 0.94 * 0.01705 + 0.06 * 0.04 = 0.018427;
    # 0.94 * 0.018427 + 0.06 * 0.0025 = 0.01747138.
    np.testing.assert_allclose(ewma_variances(log_returns(closes)), [0.0175, 0.01705, 0.018427, 0.01747138])
    assert ewma_volatility(closes) == pytest.approx(math.sqrt(0.01747138))
    assert annualised(0.01) == pytest.approx(0.01 * math.sqrt(365))


# --- the CLI and the document's vol --------------------------------------------------------------


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write(tmp_path, doc: dict) -> str:
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(doc))
    return str(path)


def vol_document(btc_vol=0.8, eth_vol=None, *portfolios) -> dict:
    doc = make_document(*(portfolios or (
        account("cross", [perp("BTC-PERP", "1", "60000")], {"USDC": "11000"}),
        account("portfolio", [perp("ETH-PERP", "-10", "3000"), option("BTC-26MAR27-70000-C", "-1")],
                {"USDC": "9000"}, "B"),
    )))  # fmt: skip
    doc["market"]["underlyings"]["BTC"]["vol"] = btc_vol
    if eth_vol is not None:
        doc["market"]["underlyings"]["ETH"]["vol"] = eth_vol
    return doc


def test_the_cli_prints_the_issue_shape_with_the_document_vols(tmp_path, capsys):
    code, out, err = run(capsys, "foresight", write(tmp_path, vol_document(0.8, 0.9)), "--horizon-days", "2")
    assert code == 0, err
    result = json.loads(out)
    assert list(result) == ["portfolios"]
    first, second = result["portfolios"]
    assert list(first) == ["id", "status", "by_underlying", "joint", "probability"]
    assert first["id"] == "A"
    assert first["status"] == "healthy"
    (btc,) = first["by_underlying"]
    assert list(btc) == ["underlying", "down", "up"]
    assert btc["underlying"] == "BTC"
    assert list(btc["down"]) == ["move", "price"]
    assert btc["up"] is None
    assert btc["down"]["price"] == pytest.approx(60000.0 * (1 + btc["down"]["move"]))
    assert first["joint"] == {"down": {"move": btc["down"]["move"]}, "up": None}
    assert first["probability"]["horizon_days"] == 2.0
    assert first["probability"]["model"] == "document"
    expected = barrier_probability(btc["down"]["move"], 0.8, 2)
    assert abs(first["probability"]["value"] - expected) <= 0.01
    assert [u["underlying"] for u in second["by_underlying"]] == ["BTC", "ETH"]


def test_the_cli_forecasts_missing_vols_from_the_price_history(tmp_path, capsys):
    prices = tmp_path / "prices"
    prices.mkdir()
    rows = ["Date,Open,High,Low,Close,Adj Close,Volume"]
    closes = 3000.0 * np.exp(np.cumsum(np.tile([0.03, -0.03], 40)))
    rows += [f"2021-01-{k % 28 + 1:02d},0,0,0,{c},{c},0" for k, c in enumerate(closes)]
    (prices / "ETH-USD.csv").write_text("\n".join(rows) + "\n")
    code, out, err = run(capsys, "foresight", write(tmp_path, vol_document(0.8)), "--prices", str(prices))
    assert code == 0, err
    second = json.loads(out)["portfolios"][1]
    assert second["probability"]["model"] == "document+ewma-0.94"


def test_the_cli_refuses_when_a_vol_is_neither_given_nor_forecastable(tmp_path, capsys):
    code, out, err = run(capsys, "foresight", write(tmp_path, vol_document(0.8)))
    assert code == 2
    assert out == ""
    assert "market.underlyings.ETH.vol" in err
    assert "no volatility for ETH" in err
    code, out, err = run(capsys, "foresight", write(tmp_path, vol_document(0.8)), "--prices", str(tmp_path))
    assert code == 2
    assert out == ""
    assert "ETH-USD.csv does not exist" in err


def test_the_cli_refuses_a_non_positive_horizon(tmp_path, capsys):
    code, out, err = run(capsys, "foresight", write(tmp_path, vol_document(0.8, 0.9)), "--horizon-days", "0")
    assert code == 2
    assert out == ""
    assert "--horizon-days" in err


def test_a_market_vol_is_accepted_by_the_margin_command_and_changes_nothing(tmp_path, capsys):
    with_vol = vol_document(0.8, 0.9)
    code, out, _ = run(capsys, "margin", write(tmp_path, with_vol))
    assert code == 0
    without = copy.deepcopy(with_vol)
    for entry in without["market"]["underlyings"].values():
        del entry["vol"]
    assert json.loads(out) == json.loads(json.dumps(compute_margin(parse_document(without)).to_dicts()))


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("market", "underlyings", "BTC", "vol"), -0.5, "market.underlyings.BTC.vol"),
        (("market", "underlyings", "BTC", "vol"), "high", "market.underlyings.BTC.vol"),
        (("market", "underlyings", "BTC", "volatility"), 0.5, "market.underlyings.BTC.volatility"),
        (("parameters", "underlyings", "BTC", "vol"), 0.5, "parameters.underlyings.BTC.vol"),
        (("parameters", "vol"), 0.5, "parameters.vol"),
    ],
)
def test_vol_is_accepted_only_where_defined_and_other_keys_stay_refused(tmp_path, capsys, path, value, field):
    doc = vol_document(0.8, 0.9)
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    for command in ("margin", "foresight"):
        code, out, err = run(capsys, command, write(tmp_path, doc))
        assert code == 2
        assert out == ""
        assert err.startswith(f"error: {field}"), err


def test_spec_parameters_are_those_the_closed_forms_assume():
    parameters = spec_parameters()
    assert parameters["underlyings"]["BTC"]["mmf"] == MMF
    assert parameters["underlyings"]["BTC"]["psr"] == PSR_BTC


def test_the_venue_path_and_the_one_account_path_agree_within_the_precision():
    # block_rows=1: one grid point per evaluation and the option-free searches on their own ends,
    # as across the whole venue; the default takes the small book's grid in one evaluation.
    books = [copy.deepcopy(b) | {"id": f"P{k}"} for k, b in enumerate(OPTION_BOOKS)]
    books.append(account("cross", [perp("BTC-PERP", "1", "60000")], {"USDC": "10000"}, "LINEAR"))
    margin_input = parse_document(make_document(*books))
    small, venue_like = distances(margin_input), distances(margin_input, block_rows=1)
    for name in ("down", "up", "joint_down", "joint_up"):
        a, b = getattr(small, name), getattr(venue_like, name)
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_allclose(a[~np.isnan(a)], b[~np.isnan(b)], rtol=0, atol=PRECISION)
    assert venue_like.rows != small.rows

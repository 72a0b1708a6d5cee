"""Properties of the methodology (hypothesis) and engine == reference implementation to 1e-9."""

from __future__ import annotations

import copy
import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from riskengine.core import compute_document, compute_margin, parse_document
from riskengine.core.reference import reference_amount_due, reference_document
from tests.riskengine.documents import spec_parameters
from tests.riskengine.strategies import (
    INSTRUMENTS,
    MODES,
    SETTINGS,
    document,
    portfolios,
    quantities,
)


def close(a, b, *, rel=1e-9, abs_tol=1e-6) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_tol)


def assert_same(a, b, path="result"):
    """Deep equality with floats compared to 1e-9 relative (1e-6 USD absolute near zero)."""
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for key in a:
            assert_same(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for k, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{k}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert close(a, b), f"{path}: {a!r} != {b!r}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def strip_worst(results):
    """Worst-scenario labels may legitimately differ on exact P&L ties; compare them separately."""
    results = copy.deepcopy(results)
    for result in results:
        for group in result["by_underlying"]:
            group.pop("worst_scenario")
    return results


@SETTINGS
@given(portfolios(max_size=5))
def test_the_engine_matches_the_reference_implementation_in_all_three_modes(books):
    doc = document(books)
    ours, theirs = compute_document(doc), reference_document(doc)
    assert_same(strip_worst(ours), strip_worst(theirs))
    due = compute_margin(parse_document(doc)).amount_due
    for k, result in enumerate(theirs):
        assert close(due[k], reference_amount_due(result)), result["id"]


def test_the_engine_matches_the_reference_on_a_few_hundred_seeded_portfolios_worst_scenarios_included():
    rng = np.random.default_rng(7)
    books = []
    for k in range(300):
        chosen = rng.choice(len(INSTRUMENTS), size=rng.integers(0, 7))
        books.append(
            {
                "id": f"R{k}",
                "mode": MODES[k % 3],
                "collateral": {
                    "USDC": str(int(rng.integers(-10_000, 500_000))),
                    "BTC": float(rng.integers(-4, 40)),
                },
                "positions": [
                    {
                        "instrument": INSTRUMENTS[i],
                        "quantity": round(float(rng.normal(0, 5)), 3),
                        "entry_price": float(rng.uniform(1000, 70000)),
                        "allocated_margin": float(rng.choice([0.0, rng.uniform(0, 20_000)])),
                    }
                    for i in chosen
                ],
            }
        )
    doc = document(books)
    assert_same(compute_document(doc), reference_document(doc))


@SETTINGS
@given(portfolios())
def test_initial_margin_is_at_least_maintenance_margin_which_is_not_negative(books):
    result = compute_margin(parse_document(document(books)))
    pairs = [
        (result.initial_margin, result.maintenance_margin),
        (result.im_standard, result.mm_standard),
        (result.im_portfolio, result.mm_portfolio),
    ]
    for im, mm in pairs:
        assert np.all(mm >= 0.0)
        assert np.all(im >= mm - 1e-9)


@SETTINGS
@given(portfolios())
def test_isolated_never_requires_less_than_cross_in_the_comparison(books):
    for result in compute_document(document(books)):
        comparison = result["comparison"]
        assert comparison["isolated"] >= comparison["cross"] - 1e-9 * (1 + comparison["cross"])


@SETTINGS
@given(portfolios(mode="portfolio", max_size=1), st.sampled_from(INSTRUMENTS), quantities.filter(bool))
def test_a_position_and_its_exact_opposite_net_to_nothing(books, instrument, quantity):
    # Under the portfolio rules identical instruments net, so adding +q and -q of one instrument
    # (at one entry price) changes nothing; under the standard rules each entry is margined gross.
    before = compute_document(document(books))[0]
    pair = [{"instrument": instrument, "quantity": sign * quantity, "entry_price": 30000} for sign in (1, -1)]
    books[0]["positions"] += pair
    after = compute_document(document(books))[0]
    for key in ("equity", "collateral_value", "initial_margin", "maintenance_margin"):
        assert close(before[key], after[key]), key
    assert_same(before["components"], after["components"])
    assert close(before["comparison"]["portfolio"], after["comparison"]["portfolio"])


@SETTINGS
@given(portfolios(max_size=4), st.randoms(use_true_random=False))
def test_permuting_positions_or_portfolios_changes_nothing(books, random):
    results = {r["id"]: r for r in compute_document(document(books))}
    shuffled = copy.deepcopy(books)
    random.shuffle(shuffled)
    for book in shuffled:
        random.shuffle(book["positions"])
    for result in compute_document(document(shuffled)):
        expected = results[result["id"]]
        for key in ("equity", "initial_margin", "maintenance_margin", "excess", "status"):
            assert result[key] == expected[key] or close(result[key], expected[key]), key
        assert_same(result["components"], expected["components"])
        assert_same(result["comparison"], expected["comparison"])
        assert_same(strip_worst([result])[0]["by_underlying"], strip_worst([expected])[0]["by_underlying"])
        key = lambda p: (p["instrument"], p["quantity"], p["value"])  # noqa: E731
        assert sorted(map(key, result["positions"])) == sorted(map(key, expected["positions"]))


def linear_parameters() -> dict:
    """Spec parameters with flat haircut brackets and concentration out of reach."""
    parameters = spec_parameters()
    for asset in parameters["assets"].values():
        asset["haircuts"] = [{"up_to": None, "haircut": 0.05}]
    for underlying in parameters["underlyings"].values():
        underlying["conc_threshold"] = 1e15
    return parameters


@SETTINGS
@given(portfolios(max_size=3), st.sampled_from([0.5, 2.0, 3.0, 10.0]))
def test_results_scale_linearly_with_quantities_when_tiers_and_concentration_are_inactive(books, factor):
    base = compute_document(document(books, parameters=linear_parameters()))
    scaled_books = copy.deepcopy(books)
    for book in scaled_books:
        book["collateral"] = {a: float(v) * factor for a, v in book["collateral"].items()}
        for position in book["positions"]:
            position["quantity"] *= factor
            if "allocated_margin" in position:
                position["allocated_margin"] *= factor
    scaled = compute_document(document(scaled_books, parameters=linear_parameters()))
    for a, b in zip(base, scaled, strict=True):
        for key in ("equity", "collateral_value", "initial_margin", "maintenance_margin", "excess"):
            assert close(a[key] * factor, b[key], abs_tol=1e-6 * factor), key
        for key, value in a["components"].items():
            assert close(value * factor, b["components"][key], abs_tol=1e-6 * factor), key
        assert a["status"] == b["status"] or abs(a["excess"]) < 1e-6 * factor


@SETTINGS
@given(portfolios(mode="portfolio", max_size=3))
def test_a_correlation_of_one_everywhere_gives_no_credit_to_one_signed_directional_exposure(books):
    # With rho = 1, A = |sum D|, so the credit 0.8*(sum|D| - |sum D|) is zero whenever the directional
    # exposures share a sign; opposite signs are a perfect hedge under rho = 1 and keep the offset.
    parameters = spec_parameters()
    parameters["correlation"]["matrix"] = [[1.0, 1.0], [1.0, 1.0]]
    for result in compute_document(document(books, parameters=parameters)):
        directional = [g["directional"] for g in result["by_underlying"]]
        credit = result["components"]["correlation_credit"]
        expected = 0.8 * (sum(map(abs, directional)) - abs(sum(directional)))
        assert close(credit, expected, abs_tol=1e-6)
        if all(d >= 0 for d in directional) or all(d <= 0 for d in directional):
            assert abs(credit) <= 1e-6

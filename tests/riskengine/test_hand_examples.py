"""Portfolios checked by hand from the spec's formulas (the arithmetic is in each test's comments).

Parameters are the spec's example set (tests/riskengine/documents.py); S_BTC = 60,000, S_ETH = 3,000.
"""

from __future__ import annotations

import math

import pytest

from riskengine.core import compute_document
from riskengine.core.black76 import black76
from riskengine.core.reference import reference_amount_due
from tests.riskengine.documents import hand_example_document, make_document, perp, spec_market


def only(doc: dict) -> dict:
    (result,) = compute_document(doc)
    return result


def test_the_issue_hand_example_long_btc_short_eth_perpetuals():
    # BTC: delta 60,000; worst move -15 % -> scan 9,000 = |delta|*psr, so D = 9,000, N = 0.
    # ETH: delta -45,000; worst move +18 % -> scan 8,100, D = -8,100.
    # A = sqrt(9000^2 + 8100^2 - 2*0.8*9000*8100) = sqrt(29,970,000) = 5,474.49
    # A' = 17,100 - 0.8*(17,100 - 5,474.49) = 7,799.59; credit 9,300.41
    # basis: perpetual buckets at min_basis 1 %: 600 + 450 = 1,050. IM 8,849.59, MM 7,079.67.
    result = only(hand_example_document())
    assert result["initial_margin"] == pytest.approx(8849.59, abs=0.01)
    assert result["maintenance_margin"] == pytest.approx(7079.67, abs=0.01)
    components = result["components"]
    assert components["scan_directional"] == pytest.approx(7799.59, abs=0.01)
    assert components["correlation_credit"] == pytest.approx(9300.41, abs=0.01)
    assert components["basis"] == pytest.approx(1050.00, abs=1e-9)
    assert components["scan_non_directional"] == pytest.approx(0.0, abs=1e-9)
    assert components["short_option_minimum"] == components["concentration"] == 0.0
    assert result["comparison"]["cross"] == pytest.approx(10500.0)  # 6,000 + 4,500
    assert result["comparison"]["isolated"] == pytest.approx(10500.0)
    assert result["comparison"]["portfolio"] == pytest.approx(result["initial_margin"])
    assert result["equity"] == result["collateral_value"] == 20000.0
    assert result["status"] == "healthy"
    assert result["excess"] == pytest.approx(20000.0 - 8849.59, abs=0.01)
    assert result["margin_ratio"] == pytest.approx(20000.0 / 7079.67, rel=1e-6)
    btc, eth = result["by_underlying"]
    assert (btc["underlying"], btc["scan_risk"], btc["directional"], btc["delta_usd"]) == (
        "BTC", pytest.approx(9000.0), pytest.approx(9000.0), 60000.0,
    )  # fmt: skip
    assert btc["worst_scenario"] == {"price_move": pytest.approx(-0.15), "vol_move": "up", "kind": "standard"}
    assert eth["worst_scenario"] == {"price_move": pytest.approx(0.18), "vol_move": "up", "kind": "standard"}
    assert [p["initial_margin"] for p in result["positions"]] == [
        pytest.approx(6000.0),
        pytest.approx(4500.0),
    ]


def test_linked_btc_collateral_alone_is_tiered_and_carries_price_risk_and_concentration():
    # 500 BTC linked collateral, V = 30,000,000 USD.
    # Haircut brackets: first 1,000,000 at 5 % -> 950,000; the other 29,000,000 at 10 % -> 26,100,000.
    # Collateral value 27,050,000.
    # Portfolio rules: delta 30,000,000 (b*S); worst -15 % -> scan 4,500,000 = D (no credit alone).
    # Concentration 0.05*(30,000,000 - 20,000,000) = 500,000. IM 5,000,000, MM 4,000,000.
    doc = make_document({"id": "COLL", "mode": "portfolio", "collateral": {"BTC": 500}, "positions": []})
    result = only(doc)
    assert result["collateral_value"] == pytest.approx(27_050_000.0)
    assert result["equity"] == pytest.approx(27_050_000.0)
    assert result["components"]["scan_directional"] == pytest.approx(4_500_000.0)
    assert result["components"]["concentration"] == pytest.approx(500_000.0)
    assert result["initial_margin"] == pytest.approx(5_000_000.0)
    assert result["maintenance_margin"] == pytest.approx(4_000_000.0)
    assert result["excess"] == pytest.approx(22_050_000.0)
    (btc,) = result["by_underlying"]
    assert btc["delta_usd"] == pytest.approx(30_000_000.0)
    assert btc["worst_scenario"] == {"price_move": pytest.approx(-0.15), "vol_move": "up", "kind": "standard"}
    assert result["comparison"] == {"isolated": 0.0, "cross": 0.0, "portfolio": pytest.approx(5_000_000.0)}


def test_negative_balance_and_isolated_positions_cannot_lean_on_each_other():
    # Collateral: USDC -1,000 -> liability -1,000*1.05 = -1,050; BTC 0.5 -> 30,000*0.95 = 28,500.
    #   collateral value 27,450.
    # Long 1 BTC-PERP from 50,000: value +10,000, IM 6,000, MM 3,000; nothing allocated:
    #   e = 10,000 >= 6,000, healthy.
    # Short 10 ETH-PERP from 2,500: value -5,000, IM 3,000, MM 1,500; 7,000 allocated:
    #   e = 2,000, MM <= e < IM: margin call for 1,000. The long's profit does not help it.
    # Free collateral 27,450 - 7,000 = 20,450 (does not help it either). Equity E = 27,450 + 5,000
    #   = 32,450 (= free + 10,000 + 2,000); IM 9,000; MM 4,500. Account: margin call (its worst
    #   position), amount due 1,000.
    # Comparison: isolated = max(0, 6,000-10,000) + max(0, 3,000+5,000) = 8,000;
    #   cross = max(0, 9,000 - 5,000) = 4,000.
    # Portfolio: BTC delta 60,000 + 0.5*60,000 (linked) = 90,000 -> scan 13,500 = D;
    #   ETH delta -30,000 -> scan 5,400, D = -5,400.
    #   A^2 = 13,500^2 + 5,400^2 - 2*0.8*13,500*5,400 = 94,770,000;
    #   A' = 18,900 - 0.8*(18,900 - sqrt(94,770,000)); basis 600 + 300 (linked BTC is not in basis).
    short = perp("ETH-PERP", -10, 2500) | {"allocated_margin": "7000"}
    doc = make_document(
        {"id": "ISO", "mode": "isolated", "collateral": {"USDC": "-1000", "BTC": "0.5"},
         "positions": [perp("BTC-PERP", 1, 50000), short]},
    )  # fmt: skip
    result = only(doc)
    assert result["collateral_value"] == pytest.approx(27_450.0)
    assert result["equity"] == pytest.approx(32_450.0)
    assert result["free_collateral"] == pytest.approx(20_450.0)
    assert result["initial_margin"] == pytest.approx(9_000.0)
    assert result["maintenance_margin"] == pytest.approx(4_500.0)
    assert result["excess"] == pytest.approx(23_450.0)
    assert result["margin_ratio"] == pytest.approx(32_450.0 / 4_500.0)
    assert result["status"] == "margin_call"
    assert reference_amount_due(result) == pytest.approx(1_000.0)
    long, short_result = result["positions"]
    assert (long["allocated_margin"], long["equity"], long["status"]) == (0.0, 10_000.0, "healthy")
    assert (short_result["allocated_margin"], short_result["equity"], short_result["status"]) == (
        7_000.0, 2_000.0, "margin_call",
    )  # fmt: skip
    assert result["components"] == dict.fromkeys(result["components"], 0.0)
    a_prime = 18_900.0 - 0.8 * (18_900.0 - math.sqrt(94_770_000.0))
    assert result["comparison"] == {
        "isolated": pytest.approx(8_000.0),
        "cross": pytest.approx(4_000.0),
        "portfolio": pytest.approx(a_prime + 900.0 - 5_000.0),
    }
    # The same book in cross mode: the same equity, shared, so healthy; no isolated figures.
    doc["portfolios"][0]["mode"] = "cross"
    cross = only(doc)
    assert cross["equity"] == pytest.approx(32_450.0)
    assert cross["status"] == "healthy"
    assert cross["free_collateral"] is None
    isolated_fields = {(p["allocated_margin"], p["equity"], p["status"]) for p in cross["positions"]}
    assert isolated_fields == {(None, None, None)}


def test_an_expired_short_call_is_charged_the_short_option_minimum():
    # Short 2 ETH calls, strike 5,000, expired four days ago: value 0 (intrinsic), delta 0,
    # and no scenario up to +36 % (3,000 -> 4,080) reaches the strike, so ScanRisk = 0.
    # SOM = 0.01*3,000*2 = 60 -> F = max(0, 60 - 0) = 60 = IM; MM = 48.
    # Standard rules: otm = 5,000 - 3,000 = 2,000; IM_i = 2*max(0.15*3,000 - 2,000, 0.10*3,000) = 600.
    market = spec_market()
    market["instruments"]["ETH-20NOV26-5000-C"] = {
        "kind": "option", "underlying": "ETH", "multiplier": 1, "expiry": "2026-11-20T08:00:00Z",
        "strike": 5000, "right": "call", "iv": 0.7,
    }  # fmt: skip
    doc = make_document(
        {"id": "SOM", "mode": "portfolio", "collateral": {"USDC": 100},
         "positions": [{"instrument": "ETH-20NOV26-5000-C", "quantity": -2}]},
        market=market,
    )  # fmt: skip
    result = only(doc)
    assert result["components"]["short_option_minimum"] == pytest.approx(60.0)
    assert result["initial_margin"] == pytest.approx(60.0)
    assert result["maintenance_margin"] == pytest.approx(48.0)
    assert result["by_underlying"][0]["scan_risk"] == 0.0
    # MM_i = 2*0.075*3,000 = 450; the isolated fields are null outside isolated mode.
    assert result["positions"][0] == {
        "instrument": "ETH-20NOV26-5000-C", "quantity": -2.0, "price": 0.0, "value": 0.0,
        "delta_usd": 0.0, "initial_margin": pytest.approx(600.0), "maintenance_margin": pytest.approx(450.0),
        "allocated_margin": None, "equity": None, "status": None,
    }  # fmt: skip
    assert result["free_collateral"] is None
    assert result["comparison"]["cross"] == pytest.approx(600.0)
    assert result["status"] == "healthy"  # 100 >= 60


def test_a_short_call_under_cross_is_charged_the_option_minimum_and_can_be_liquidated():
    # Short 2 BTC 70,000 calls: otm 10,000; IM_i = 2*max(0.15*60,000 - 10,000, 0.10*60,000) = 12,000;
    # MM_i = 2*0.075*60,000 = 9,000. Equity = 10,000 USDC - 2*price (price from Black-76, T = 122.33 days).
    price = float(black76(60000.0, 70000.0, 0.55, (122 + 8 / 24) / 365, True).price)
    doc = make_document(
        {"id": "CALL", "mode": "cross", "collateral": {"USDC": 10000},
         "positions": [{"instrument": "BTC-26MAR27-70000-C", "quantity": -2}]},
    )  # fmt: skip
    result = only(doc)
    assert result["initial_margin"] == pytest.approx(12_000.0)
    assert result["maintenance_margin"] == pytest.approx(9_000.0)
    assert result["equity"] == pytest.approx(10_000.0 - 2 * price)
    assert result["status"] == "liquidation"  # about 1,686 < 9,000
    assert result["comparison"]["cross"] == pytest.approx(12_000.0 + 2 * price)
    assert result["comparison"]["isolated"] == pytest.approx(12_000.0 + 2 * price)


def test_a_calendar_spread_pays_basis_on_each_expiry_bucket():
    # Long 1 BTC-26MAR27, short 1 BTC-PERP: delta 0 and every scenario P&L 0, so no scan risk.
    # Basis: the future's bucket T = 122 days 8 hours / 365 -> 0.075*T = 2.51 % > 1 %: 60,000*0.075*T;
    # the perpetual bucket 60,000*1 % = 600. Buckets do not net.
    years = (122 + 8 / 24) / 365
    doc = make_document(
        {"id": "CAL", "mode": "portfolio", "collateral": {"USDC": 2000},
         "positions": [perp("BTC-26MAR27", 1, 60000), perp("BTC-PERP", -1, 60000)]},
    )  # fmt: skip
    result = only(doc)
    assert result["by_underlying"][0]["scan_risk"] == pytest.approx(0.0, abs=1e-9)
    assert result["components"]["basis"] == pytest.approx(60000 * 0.075 * years + 600.0)
    assert result["initial_margin"] == pytest.approx(60000 * 0.075 * years + 600.0)
    assert result["status"] == "margin_call"  # 2,000 < 2,108.22 and >= 0.8*2,108.22 = 1,686.58

"""Isolated margin (methodology v1.1 section 4a): each position stands on its own allocated margin.

Hand-checked cases (the arithmetic is in each test's comments; spec parameters, S_BTC = 60,000,
S_ETH = 3,000, so one BTC-PERP has IM 6,000 and MM 3,000), the short option minimum on net
quantities (section 4b.9), and properties of isolation (hypothesis).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from riskengine.core import (
    STATUSES,
    DocumentError,
    check_input,
    compute_document,
    compute_margin,
    parse_document,
)
from riskengine.core.reference import reference_amount_due, reference_document
from tests.riskengine.documents import make_document, perp, spec_market, two_perpetuals
from tests.riskengine.strategies import (
    SETTINGS,
    collateral,
    document,
    portfolios,
    position_entry,
    positions,
)

RANK = {name: rank for rank, name in enumerate(STATUSES)}  # healthy < margin_call < liquidation


def only(doc: dict) -> dict:
    (result,) = compute_document(doc)
    return result


def test_a_short_losing_more_than_the_collateral_allows_is_liquidated_on_its_own_next_to_a_winning_long():
    # Everything on the short: a = 5,000, e = 5,000 - 4,000 = 1,000 < MM 3,000: liquidation.
    # The long: a = 0, e = 10,000 >= IM 6,000: healthy; its profit does not reach the short.
    # Free 5,000 - 5,000 = 0. E = 5,000 + 10,000 - 4,000 = 11,000 = 0 + 10,000 + 1,000.
    # IM 12,000, MM 6,000. Account: liquidation (its worst position); nothing due (a position in
    # liquidation is closed, not called).
    doc = two_perpetuals(mode="isolated", short_allocation=5000)
    result = only(doc)
    long, short = result["positions"]
    assert (long["value"], long["initial_margin"], long["maintenance_margin"]) == (10_000.0, 6_000.0, 3_000.0)
    assert (long["allocated_margin"], long["equity"], long["status"]) == (0.0, 10_000.0, "healthy")
    assert (short["value"], short["initial_margin"], short["maintenance_margin"]) == (
        -4_000.0,
        6_000.0,
        3_000.0,
    )
    assert (short["allocated_margin"], short["equity"], short["status"]) == (5_000.0, 1_000.0, "liquidation")
    assert result["free_collateral"] == 0.0
    assert result["equity"] == 11_000.0
    assert (result["initial_margin"], result["maintenance_margin"]) == (12_000.0, 6_000.0)
    assert result["excess"] == -1_000.0
    assert result["status"] == "liquidation"
    assert compute_margin(parse_document(doc)).amount_due.tolist() == [0.0]
    # Pooled (cross), the long's profit covers the short: MM 6,000 <= E 11,000 < IM 12,000.
    cross = only(two_perpetuals(mode="cross", short_allocation=5000))
    assert (cross["equity"], cross["status"]) == (11_000.0, "margin_call")
    assert reference_amount_due(cross) == 1_000.0


@pytest.mark.parametrize("short_allocation", [0.0, 1_000.0, 2_500.0, 4_999.99, 5_000.0])
def test_however_the_collateral_is_split_the_short_perpetual_is_in_liquidation(short_allocation):
    # The short can have at most 5,000: e <= 5,000 - 4,000 = 1,000 < MM 3,000.
    result = only(two_perpetuals(mode="isolated", short_allocation=short_allocation,
                                 long_allocation=5000 - short_allocation))  # fmt: skip
    assert [p["status"] for p in result["positions"]] == ["healthy", "liquidation"]
    assert result["status"] == "liquidation"
    assert result["free_collateral"] == pytest.approx(0.0, abs=1e-9)


def test_a_long_call_bought_on_borrowed_cash_counts_its_value_in_equity():
    # USDC -1,000 -> liability -1,000*1.05 = -1,050. Long 1 BTC 70,000 call, Black-76 value
    # 4,156.93 (T = 122 days 8 hours, iv 0.55); a long option has IM = MM = 0.
    # E = -1,050 + 4,156.93 = 3,106.93 in every mode (v1 isolated said -1,050 and liquidation).
    # Isolated: the call stands alone: e = 0 + 4,156.93 >= 0, healthy. Free collateral -1,050 < 0,
    # so the account is at least in margin call (section 4a), due 1,050: the borrowed cash is no
    # position's and no position's profit covers it. Cross: healthy (E >= IM = 0), nothing due.
    doc = make_document(
        {"id": "CALL", "mode": "isolated", "collateral": {"USDC": "-1000"},
         "positions": [{"instrument": "BTC-26MAR27-70000-C", "quantity": 1}]},
    )  # fmt: skip
    result = only(doc)
    (call,) = result["positions"]
    assert call["value"] == pytest.approx(4_156.93, abs=0.005)
    assert (call["initial_margin"], call["maintenance_margin"]) == (0.0, 0.0)
    assert (call["allocated_margin"], call["equity"], call["status"]) == (0.0, call["value"], "healthy")
    assert result["equity"] == pytest.approx(3_106.93, abs=0.005)
    assert result["free_collateral"] == pytest.approx(-1_050.0)
    assert result["status"] == "margin_call"
    assert compute_margin(parse_document(doc)).amount_due[0] == pytest.approx(1_050.0)
    assert result["margin_ratio"] is None  # MM = 0

    doc["portfolios"][0]["mode"] = "cross"
    cross = only(doc)
    assert cross["equity"] == pytest.approx(3_106.93, abs=0.005)
    assert cross["status"] == "healthy"
    assert reference_amount_due(cross) == 0.0


def test_the_amount_due_adds_each_called_positions_shortfall_and_the_negative_free_collateral():
    # 1,000 USDC. Long 1 BTC-PERP at 60,000 (value 0, IM 6,000, MM 3,000) with 4,000 allocated:
    #   e = 4,000, margin call, short of IM by 2,000.
    # Short 10 ETH-PERP at 3,000 (value 0, IM 3,000, MM 1,500) with 2,000 allocated:
    #   e = 2,000, margin call, short of IM by 1,000.
    # Free 1,000 - 6,000 = -5,000. Amount due 2,000 + 1,000 + 5,000 = 8,000; E = 1,000.
    doc = make_document(
        {"id": "DUE", "mode": "isolated", "collateral": {"USDC": 1000},
         "positions": [perp("BTC-PERP", 1, 60000) | {"allocated_margin": 4000},
                       perp("ETH-PERP", -10, 3000) | {"allocated_margin": "2000"}]},
        {"id": "EMPTY-DEBT", "mode": "isolated", "collateral": {"USDC": -1000}, "positions": []},
        {"id": "EMPTY", "mode": "isolated", "collateral": {"USDC": 1000}, "positions": []},
    )  # fmt: skip
    result = compute_margin(parse_document(doc))
    due, debt, empty = result.to_dicts()
    assert [p["status"] for p in due["positions"]] == ["margin_call", "margin_call"]
    assert result.position_amount_due.tolist() == [2_000.0, 1_000.0]
    assert due["free_collateral"] == -5_000.0
    assert due["equity"] == 1_000.0
    assert due["status"] == "margin_call"
    # An account with nothing but a debt is called for it; one with nothing but cash is healthy.
    assert (debt["status"], debt["free_collateral"]) == ("margin_call", -1_050.0)
    assert (empty["status"], empty["free_collateral"]) == ("healthy", 1_000.0)
    assert result.amount_due.tolist() == [8_000.0, 1_050.0, 0.0]
    assert [reference_amount_due(r) for r in reference_document(doc)] == [8_000.0, 1_050.0, 0.0]


def test_allocations_are_ignored_outside_isolated_mode():
    doc = two_perpetuals(mode="cross", short_allocation=5000)
    bare = two_perpetuals(mode="cross", short_allocation=0)
    assert only(doc) == only(bare)
    doc["portfolios"][0]["mode"] = bare["portfolios"][0]["mode"] = "portfolio"
    assert only(doc) == only(bare)
    assert only(doc)["free_collateral"] is None


def test_the_short_option_minimum_counts_each_options_net_short_quantity():
    # Section 4b.9. Expired ETH calls far out of the money: value 0, delta 0 and no scenario up to
    # +36 % (3,000 -> 4,080) reaches 5,000 or 5,500, so ScanRisk = 0 and IM = SOM.
    # Short 3 and long 1 of the 5,000 call: net short 2 -> SOM = 0.01*3,000*2 = 60 (counted entry by
    # entry it would be 90). Long 2 of the 5,500 call: another instrument, no offset: still 60.
    market = spec_market()
    for strike in (5000, 5500):
        market["instruments"][f"ETH-20NOV26-{strike}-C"] = {
            "kind": "option", "underlying": "ETH", "multiplier": 1, "expiry": "2026-11-20T08:00:00Z",
            "strike": strike, "right": "call", "iv": 0.7,
        }  # fmt: skip
    doc = make_document(
        {"id": "NET", "mode": "portfolio", "collateral": {"USDC": 100},
         "positions": [{"instrument": "ETH-20NOV26-5000-C", "quantity": -3},
                       {"instrument": "ETH-20NOV26-5000-C", "quantity": 1},
                       {"instrument": "ETH-20NOV26-5500-C", "quantity": 2}]},
        market=market,
    )  # fmt: skip
    result = only(doc)
    assert result["by_underlying"][0]["scan_risk"] == 0.0
    assert result["components"]["short_option_minimum"] == pytest.approx(60.0)
    assert result["initial_margin"] == pytest.approx(60.0)
    assert reference_document(doc)[0]["components"]["short_option_minimum"] == pytest.approx(60.0)
    # The standard rules stay gross: the short entry alone is charged 3*max(450 - 2,000, 300) = 900.
    assert [p["initial_margin"] for p in result["positions"]] == [pytest.approx(900.0), 0.0, 0.0]


def test_array_input_without_allocations_allocates_nothing_and_a_negative_one_is_refused():
    doc = two_perpetuals(mode="isolated", short_allocation=5000)
    parsed = parse_document(doc)
    bare = dataclasses.replace(parsed.portfolios, position_allocated_margin=None)
    assert bare.position_allocated_margin.tolist() == [0.0, 0.0]
    result = compute_margin(dataclasses.replace(parsed, portfolios=bare))
    assert result.position_status.tolist() == [RANK["healthy"], RANK["liquidation"]]  # e = -4,000
    assert result.free_collateral.tolist() == [5_000.0]
    for bad in (-1.0, math.nan, math.inf):
        portfolios = dataclasses.replace(parsed.portfolios, position_allocated_margin=np.array([0.0, bad]))
        with pytest.raises(DocumentError) as raised:
            check_input(dataclasses.replace(parsed, portfolios=portfolios))
        assert raised.value.field == "positions[1].allocated_margin"


def test_a_position_whose_equity_is_not_finite_is_in_liquidation_and_so_is_its_account():
    parsed = parse_document(two_perpetuals(mode="isolated", short_allocation=0))
    portfolios = dataclasses.replace(parsed.portfolios, position_allocated_margin=np.array([np.inf, 0.0]))
    result = compute_margin(dataclasses.replace(parsed, portfolios=portfolios))  # unchecked on purpose
    assert result.position_status[0] == RANK["liquidation"]
    assert not result.finite[0]
    assert result.status[0] == RANK["liquidation"]


# --- Properties -------------------------------------------------------------------------------------

isolated_books = portfolios(mode="isolated", max_size=1).filter(lambda books: books[0]["positions"])


@SETTINGS
@given(isolated_books, st.data())
def test_an_isolated_positions_status_depends_on_no_other_position_and_not_on_free_collateral(books, data):
    book = books[0]
    j = data.draw(st.integers(min_value=0, max_value=len(book["positions"]) - 1))
    mine = book["positions"][j]
    before = compute_document(document(books))[0]["positions"][j]
    # Another account around the same position: other collateral, other positions, other place.
    others = [position_entry(*drawn) for drawn in data.draw(positions)]
    k = data.draw(st.integers(min_value=0, max_value=len(others)))
    moved = {"id": "P0", "mode": "isolated", "collateral": data.draw(collateral),
             "positions": [*others[:k], copy.deepcopy(mine), *others[k:]]}  # fmt: skip
    after = compute_document(document([moved]))[0]["positions"][k]
    for key in ("value", "initial_margin", "maintenance_margin", "allocated_margin", "equity", "status"):
        assert after[key] == before[key], key


@SETTINGS
@given(isolated_books, st.data())
def test_allocating_more_to_a_position_never_worsens_a_status(books, data):
    book = books[0]
    j = data.draw(st.integers(min_value=0, max_value=len(book["positions"]) - 1))
    extra = data.draw(st.integers(min_value=0, max_value=20_000).map(lambda n: n / 2))
    before = compute_document(document(books))[0]
    more = copy.deepcopy(books)
    position = more[0]["positions"][j]
    position["allocated_margin"] = float(position.get("allocated_margin", 0.0)) + extra
    after = compute_document(document(more))[0]
    assert RANK[after["positions"][j]["status"]] <= RANK[before["positions"][j]["status"]]
    for i, (a, b) in enumerate(zip(after["positions"], before["positions"], strict=True)):
        if i != j:
            assert a["status"] == b["status"]
    # Taken from free collateral that stays non-negative, it never worsens the account either.
    if after["free_collateral"] >= 0.0:
        assert RANK[after["status"]] <= RANK[before["status"]]


@SETTINGS
@given(portfolios(mode="isolated", max_size=4))
def test_free_collateral_plus_the_positions_equity_is_the_accounts_equity(books):
    for result in compute_document(document(books)):
        total = result["free_collateral"] + math.fsum(p["equity"] for p in result["positions"])
        scale = 1.0 + abs(result["collateral_value"]) + sum(abs(p["equity"]) for p in result["positions"])
        assert abs(total - result["equity"]) <= 1e-12 * scale, result["id"]


@SETTINGS
@given(portfolios(max_size=4))
def test_only_a_healthy_account_owes_nothing_unless_it_is_in_liquidation(books):
    result = compute_margin(parse_document(document(books)))
    for status, due in zip(result.status.tolist(), result.amount_due.tolist(), strict=True):
        if status == RANK["healthy"]:
            assert due == 0.0
        elif status == RANK["margin_call"]:
            assert due > 0.0


def test_the_cli_replays_isolated_allocations_and_prints_the_isolated_fields(tmp_path, run_cli):
    doc = two_perpetuals(mode="isolated", short_allocation=5000)
    doc["portfolios"].append(copy.deepcopy(doc["portfolios"][0]) | {"id": "TWO-CROSS", "mode": "cross"})
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(doc))
    completed = run_cli("margin", str(path))
    assert completed.returncode == 0, completed.stderr
    isolated, cross = json.loads(completed.stdout)
    assert [isolated, cross] == compute_document(doc)
    assert [p["status"] for p in isolated["positions"]] == ["healthy", "liquidation"]
    assert (isolated["status"], isolated["free_collateral"]) == ("liquidation", 0.0)
    assert (cross["status"], cross["free_collateral"]) == ("margin_call", None)
    assert [p["maintenance_margin"] for p in cross["positions"]] == [3_000.0, 3_000.0]

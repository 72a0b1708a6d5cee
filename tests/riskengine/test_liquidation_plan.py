"""The liquidation plan over arrays (``riskengine.core.liquidation``): a hand-checked plan, the
same plan as the P × (P − 1) engine-run reference on random books, and a bound on its work."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from riskengine.core import MarginInput, Portfolios, compute_margin, parse_document
from riskengine.core import liquidation as liquidation_module
from riskengine.core.liquidation import first_best, isolated_liquidation_plan, liquidation_plan
from riskengine.core.market import OPTION
from tests.riskengine.documents import make_document, perp, spec_parameters, two_perpetuals, wide_market

FEE = 0.01


def reference_plan(margin_input: MarginInput, *, fee_rate: float, settlement_asset: int):
    """The plan as it was made before (slow, kept for this test only): each step one engine run
    over every candidate, a what-if portfolio of all remaining positions but that one plus the
    cash its close brings. Returns ``[(position, equity_after, im_after)]`` and the start."""
    p, m, f = margin_input.parameters, margin_input.market, margin_input.portfolios
    result = compute_margin(margin_input)
    equity, im = float(result.equity[0]), float(result.initial_margin[0])
    start = (equity, im)
    inst = f.position_instrument
    price = np.where(m.kind[inst] == OPTION, result.position_price, m.underlying_price[m.underlying[inst]])
    notional = np.abs(f.position_quantity) * m.multiplier[inst] * np.maximum(price, 1e-10)
    fee = fee_rate * notional
    value = result.position_value
    remaining = list(range(inst.size))
    cash = 0.0
    steps = []
    while equity < im and remaining:
        n = len(remaining)
        keep = [[j for j in remaining if j != c] for c in remaining]
        pos = np.array([j for kept in keep for j in kept], dtype=np.int64)
        owner = np.repeat(np.arange(n), [len(kept) for kept in keep])
        n_bal = f.balance_asset.size
        trial = compute_margin(
            MarginInput(
                p,
                m,
                Portfolios(
                    ids=tuple(str(c) for c in remaining),
                    mode=np.repeat(f.mode, n),
                    position_portfolio=owner,
                    position_instrument=inst[pos],
                    position_quantity=f.position_quantity[pos],
                    position_entry=f.position_entry[pos],
                    balance_portfolio=np.concatenate([np.repeat(np.arange(n), n_bal), np.arange(n)]),
                    balance_asset=np.concatenate([np.tile(f.balance_asset, n), np.full(n, settlement_asset)]),
                    balance_amount=np.concatenate(
                        [np.tile(f.balance_amount, n), [cash + value[c] - fee[c] for c in remaining]]
                    ),
                ),
            )
        )
        released = im - trial.initial_margin
        best = first_best(released / np.maximum(notional[remaining], 1e-12))  # the one change: ties
        c = remaining[best]
        cash += value[c] - fee[c]
        equity, im = float(trial.equity[best]), float(trial.initial_margin[best])
        steps.append((c, equity, im))
        remaining.remove(c)
    return steps, start


def one_account(portfolio: dict, parameters: dict | None = None) -> MarginInput:
    return parse_document(make_document(portfolio, parameters=parameters, market=wide_market()))


def usdc(margin_input: MarginInput) -> int:
    return margin_input.parameters.assets.index("USDC")


def test_a_hand_checked_cross_plan_closes_the_most_im_per_notional_first_until_equity_covers_im():
    parameters = spec_parameters()
    parameters["underlyings"]["ETH"]["imf"] = 0.20
    # Cross: USDC 2,000; 1 BTC-PERP at 60,000 (value 0, IM 6,000, notional 60,000); 10 ETH-PERP
    # entered at 2,900 (value 1,000, IM 10 × 3,000 × 0.20 = 6,000, notional 30,000).
    book = one_account(
        {"id": "A", "mode": "cross", "collateral": {"USDC": "2000"},
         "positions": [perp("BTC-PERP", "1", "60000"), perp("ETH-PERP", "10", "2900")]},
        parameters,
    )  # fmt: skip
    plan = liquidation_plan(book, fee_rate=FEE, settlement_asset=usdc(book))

    assert (plan.equity_before, plan.initial_margin_before) == pytest.approx((3000.0, 12000.0))
    # ETH first (6,000 / 30,000 = 0.2 per unit of notional against BTC's 0.1): its value less the
    # 300 fee becomes cash, 2,700; then BTC (fee 600): 2,100 against no IM.
    assert plan.positions.tolist() == [1, 0]
    assert plan.price.tolist() == pytest.approx([3000.0, 60000.0])
    assert plan.notional.tolist() == pytest.approx([30000.0, 60000.0])
    assert plan.released.tolist() == pytest.approx([6000.0, 6000.0])
    assert plan.equity_after.tolist() == pytest.approx([2700.0, 2100.0])
    assert plan.initial_margin_after.tolist() == pytest.approx([6000.0, 0.0])


def test_the_plan_stops_as_soon_as_equity_covers_im():
    parameters = spec_parameters()
    parameters["underlyings"]["ETH"]["imf"] = 0.20
    book = one_account(
        {"id": "A", "mode": "cross", "collateral": {"USDC": "6000"},
         "positions": [perp("BTC-PERP", "1", "60000"), perp("ETH-PERP", "10", "2900")]},
        parameters,
    )  # fmt: skip
    plan = liquidation_plan(book, fee_rate=FEE, settlement_asset=usdc(book))

    assert plan.positions.tolist() == [1]  # 6,700 ≥ 6,000 after the ETH close: BTC stays
    assert plan.equity_after.tolist() == pytest.approx([6700.0])


def test_a_healthy_account_plans_nothing():
    book = one_account(
        {"id": "A", "mode": "portfolio", "collateral": {"USDC": "1000000"},
         "positions": [perp("BTC-PERP", "1", "60000")]},
    )  # fmt: skip
    plan = liquidation_plan(book, fee_rate=FEE, settlement_asset=usdc(book))

    assert plan.positions.size == 0
    assert plan.rows.size == 0


POSITION = st.tuples(
    st.sampled_from(sorted(wide_market()["instruments"])),
    st.floats(min_value=-40, max_value=40).filter(lambda q: abs(q) > 0.05),
    st.floats(min_value=0.9, max_value=1.1),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    positions=st.lists(POSITION, min_size=1, max_size=7, unique_by=lambda row: row[0]),
    mode=st.sampled_from(["cross", "portfolio"]),
    cash=st.floats(min_value=-20_000, max_value=200_000),
    btc=st.sampled_from([0.0, 0.0, 0.5, -0.3]),
)
def test_the_plan_is_the_reference_engine_run_plan_on_random_books(positions, mode, cash, btc):
    market = wide_market()
    spot = {"BTC": 60000.0, "ETH": 3000.0}
    rows = [
        {"instrument": name, "quantity": repr(round(q, 4)),
         "entry_price": repr(round(spot[market["instruments"][name]["underlying"]] * drift, 2))}
        for name, q, drift in positions
    ]  # fmt: skip
    collateral = {"USDC": repr(round(cash, 2))}
    if btc:
        collateral["BTC"] = repr(btc)
    book = one_account({"id": "A", "mode": mode, "collateral": collateral, "positions": rows})
    plan = liquidation_plan(book, fee_rate=0.005, settlement_asset=usdc(book))
    steps, start = reference_plan(book, fee_rate=0.005, settlement_asset=usdc(book))

    assert (plan.equity_before, plan.initial_margin_before) == start
    assert plan.positions.tolist() == [c for c, _, _ in steps]
    scale = max(1.0, abs(start[1]), abs(start[0]))
    np.testing.assert_allclose(plan.equity_after, [e for _, e, _ in steps], rtol=1e-9, atol=1e-9 * scale)
    np.testing.assert_allclose(
        plan.initial_margin_after, [i for _, _, i in steps], rtol=1e-9, atol=1e-9 * scale
    )


def test_each_step_evaluates_rows_linear_in_the_positions_left_and_runs_the_engine_once(monkeypatch):
    runs = []

    def counted(margin_input):
        runs.append(margin_input.portfolios.position_instrument.size)
        return compute_margin(margin_input)

    monkeypatch.setattr(liquidation_module, "compute_margin", counted)
    instruments = wide_market()["instruments"]
    spot = {"BTC": "60000", "ETH": "3000"}
    rows = [
        perp(name, repr(-(k + 1) * 0.7), spot[instruments[name]["underlying"]])
        for k, name in enumerate(sorted(instruments) * 4)
    ]  # 40 short positions entered at the index: equity 1 USDC less the options' value
    book = one_account({"id": "A", "mode": "portfolio", "collateral": {"USDC": "1"}, "positions": rows})
    plan = liquidation_plan(book, fee_rate=FEE, settlement_asset=usdc(book))

    n_und = len(book.parameters.underlyings)
    remaining = 40 - np.arange(plan.positions.size)
    assert plan.positions.size > 5
    assert runs == [40]  # one engine run, over the account's own 40 positions
    # Per step: one pair row per candidate plus candidate × pair rows for the portfolio rules,
    # never the P × (P − 1) positions of the engine-run plan (1,560 at the first step).
    assert (plan.rows <= remaining * (1 + n_und)).all()
    assert plan.rows[0] == 40 * (1 + n_und)


def isolated(short_allocation: float, long_allocation: float = 0.0) -> MarginInput:
    return parse_document(
        two_perpetuals(mode="isolated", short_allocation=short_allocation, long_allocation=long_allocation)
    )


def test_the_greedy_account_plan_refuses_an_isolated_account():
    with pytest.raises(ValueError, match="position by position"):
        liquidation_plan(isolated(5000), fee_rate=FEE, settlement_asset=usdc(isolated(5000)))


def test_an_isolated_position_in_liquidation_is_closed_alone_and_pays_its_fee_from_its_own_equity():
    # The short: a = 5,000, value -4,000, e = 1,000 < MM 3,000. Notional 60,000, fee 1 % = 600,
    # within e. The long (healthy, e = 10,000) stays; free collateral 0 + 1,000 - 600 = 400.
    plan = isolated_liquidation_plan(isolated(5000), fee_rate=FEE, overdue=False)

    assert plan.positions.tolist() == [1]
    assert plan.notional.tolist() == [60_000.0]
    assert (plan.allocated.tolist(), plan.position_equity.tolist()) == ([5_000.0], [1_000.0])
    assert (plan.fee.tolist(), plan.deficit.tolist()) == ([600.0], [0.0])
    assert (plan.free_before, plan.free_after.tolist()) == (0.0, [400.0])
    assert plan.released.tolist() == [6_000.0]


def test_a_loss_beyond_the_allocation_is_the_venues_deficit_and_leaves_free_collateral_alone():
    # a = 3,000 on the short: e = -1,000. No fee (nothing left to pay it from), deficit 1,000;
    # free collateral 5,000 - 3,000 = 2,000 before and after.
    plan = isolated_liquidation_plan(isolated(3000), fee_rate=FEE, overdue=False)

    assert plan.positions.tolist() == [1]
    assert (plan.fee.tolist(), plan.deficit.tolist()) == ([0.0], [1_000.0])
    assert (plan.free_before, plan.free_after.tolist()) == (2_000.0, [2_000.0])


def test_an_overdue_isolated_call_also_closes_positions_in_margin_call_and_restores_free_collateral():
    # a = 8,000 on the short (e = 4,000: margin call, between MM 3,000 and IM 6,000) and 1,000 on
    # the long: free = 5,000 - 9,000 = -4,000. Not overdue: nothing is closed (no position is in
    # liquidation). Overdue: the short (e 4,000 - fee 600: free -600), then the long, the largest
    # equity left (11,000 - 600: free 9,800).
    book = isolated(8000, long_allocation=1000)
    assert isolated_liquidation_plan(book, fee_rate=FEE, overdue=False).positions.tolist() == []

    plan = isolated_liquidation_plan(book, fee_rate=FEE, overdue=True)

    assert plan.positions.tolist() == [1, 0]
    assert plan.status.tolist() == [1, 0]  # margin_call, healthy
    np.testing.assert_allclose(plan.free_after, [-600.0, 9_800.0])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    positions=st.lists(POSITION, min_size=1, max_size=7),
    cash=st.floats(min_value=0, max_value=100_000),
    shares=st.lists(st.floats(min_value=0, max_value=0.5), min_size=7, max_size=7),
)
def test_an_isolated_plan_closes_exactly_the_positions_in_liquidation_and_caps_each_loss_at_its_allocation(
    positions, cash, shares
):
    market = wide_market()
    spot = {"BTC": 60000.0, "ETH": 3000.0}
    rows = [
        {"instrument": name, "quantity": repr(round(q, 4)),
         "entry_price": repr(round(spot[market["instruments"][name]["underlying"]] * drift, 2)),
         "allocated_margin": repr(round(cash * share, 2))}
        for (name, q, drift), share in zip(positions, shares, strict=False)
    ]  # fmt: skip
    book = one_account({"id": "A", "mode": "isolated", "collateral": {"USDC": repr(cash)}, "positions": rows})
    result = compute_margin(book)
    plan = isolated_liquidation_plan(book, fee_rate=0.005, overdue=False)

    assert plan.positions.tolist() == np.flatnonzero(result.position_status == 2).tolist()
    # What the account loses on each close: its value less the fee plus the deficit the venue
    # pays, never more than the position's allocation.
    value = result.position_value[plan.positions]
    lost = -(value - plan.fee + plan.deficit)
    assert (lost <= plan.allocated + 1e-9 * np.maximum(1.0, plan.allocated)).all()

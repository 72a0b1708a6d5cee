"""The liquidation plan of one account, as a pure function over its arrays (no database, no
parameter parsing: the caller hands in the ``MarginInput`` it already built).

The plan is greedy (docs/operations.md, "Liquidation"): close the account's positions one at a
time, each time the one whose close releases the most initial margin per unit of notional (ties,
within 1e-9, to the earlier position), until equity ≥ IM or the account is flat. A position is
closed at its index price (the mark for an option), so its value moves into cash in the
settlement asset and equity falls only by the fee.

Bounded work per step. The engine is run once (``compute_margin``) for the starting figures;
each step then evaluates every remaining candidate from the account's per-underlying figures
instead of re-running the engine over P what-if portfolios of P − 1 positions each:

- cross mode: a position's IM is its own (``position_initial_margin``), so closing it takes
  exactly that off; its value leaves the positions and enters cash;
- portfolio mode: a position belongs to one (account, underlying) pair, and removing it changes
  only that pair's scenario P&L, dollar delta, basis buckets and net short option units (all
  linear in the position's units). Each candidate's pair is re-scanned once (``n_s`` scenarios)
  and the portfolio rules (correlation offset, sums) are re-applied over the account's pairs.

Per step that is ``n_remaining`` pair rows of ``n_s`` scenarios plus ``n_remaining × n_pairs``
rows for the portfolio rules (``n_pairs`` ≤ the number of underlyings): O(P) rows, against
P × (P − 1) positions and one engine run per step before. ``LiquidationPlan.rows`` records it.

Isolated accounts are not liquidated as a whole (methodology v1.1 section 4a): each position
stands on its own allocation, so ``isolated_liquidation_plan`` closes positions one by one by their
own statuses, and each closed position loses at most its allocation (the rest is the venue's).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .document import ISOLATED, PORTFOLIO, MarginInput
from .margin import (
    HEALTHY,
    LIQUIDATION,
    MARGIN_CALL,
    basis_buckets,
    compute_margin,
    haircut_values,
    instrument_table,
    pair_charges,
    pair_scan,
    portfolio_risk,
)
from .market import OPTION


@dataclass(frozen=True, eq=False)
class LiquidationPlan:
    """The steps in closing order, each array ``(n_steps,)``: ``positions`` int64 (index into the
    input's positions), ``price`` USD per unit closed at, ``notional`` USD, ``released`` USD of IM
    the close released, ``equity_after`` and ``initial_margin_after`` USD; the account's
    ``equity_before`` and ``initial_margin_before`` USD; ``rows`` ``(n_steps,)`` int64, the rows
    evaluated at each step (candidates plus candidate × pair rows in portfolio mode)."""

    positions: np.ndarray
    price: np.ndarray
    notional: np.ndarray
    released: np.ndarray
    equity_after: np.ndarray
    initial_margin_after: np.ndarray
    equity_before: float
    initial_margin_before: float
    rows: np.ndarray


def liquidation_plan(margin_input: MarginInput, *, fee_rate: float, settlement_asset: int) -> LiquidationPlan:
    """Plan the liquidation of the single portfolio of ``margin_input`` (see the module doc).

    ``fee_rate`` is the fee as a fraction of the notional closed (it leaves the account with the
    close); ``settlement_asset`` the index in ``parameters.assets`` of the asset the closes settle
    in, which must not be linked to an underlying (its cash would move an underlying's delta)."""
    p, m, f = margin_input.parameters, margin_input.market, margin_input.portfolios
    if f.n_portfolios != 1:
        raise ValueError("a liquidation plan is made for one portfolio")
    if int(f.mode[0]) == ISOLATED:
        raise ValueError("an isolated account is liquidated position by position: isolated_liquidation_plan")
    if p.asset_underlying[settlement_asset] >= 0:
        raise ValueError("the settlement asset must not be linked to an underlying")
    result = compute_margin(margin_input)
    equity, im = float(result.equity[0]), float(result.initial_margin[0])
    start = (equity, im)
    mode = int(f.mode[0])
    inst = f.position_instrument
    units = f.position_quantity * m.multiplier[inst]
    n_assets = len(p.assets)
    price = np.where(m.kind[inst] == OPTION, result.position_price, m.underlying_price[m.underlying[inst]])
    price = np.maximum(price, 1e-10)
    notional = np.abs(f.position_quantity) * m.multiplier[inst] * price
    fee = fee_rate * notional
    value = result.position_value
    held = value  # what a position adds to equity besides cash
    amounts = np.bincount(f.balance_asset, weights=f.balance_amount, minlength=n_assets)
    pairs = _Pairs(margin_input, units) if mode == PORTFOLIO else None

    remaining = np.arange(inst.size)
    cash = 0.0
    steps: list[tuple[int, float, float, float, float, float, float]] = []
    rows: list[int] = []
    while equity < im and remaining.size:
        candidates = remaining
        # Equity after closing each candidate: its value into cash less the fee.
        trial_amounts = np.repeat(amounts[None, :], candidates.size, axis=0)
        trial_amounts[:, settlement_asset] += cash + value[candidates] - fee[candidates]
        collateral = haircut_values(p, m.asset_price, trial_amounts).sum(axis=1)
        kept = held[remaining].sum() - held[candidates]
        trial_equity = collateral + kept
        if pairs is None:
            own = result.position_initial_margin
            trial_im = own[remaining].sum() - own[candidates]
            rows.append(int(candidates.size))
        else:
            trial_im, evaluated = pairs.im_without(remaining)
            rows.append(evaluated)
        released = im - trial_im
        best = first_best(released / np.maximum(notional[candidates], 1e-12))
        c = int(candidates[best])
        cash += value[c] - fee[c]
        equity, im = float(trial_equity[best]), float(trial_im[best])
        steps.append((c, float(price[c]), float(notional[c]), float(released[best]), equity, im))
        remaining = remaining[remaining != c]
    columns = list(zip(*steps, strict=True)) if steps else [()] * 6
    return LiquidationPlan(
        positions=np.array(columns[0], dtype=np.int64),
        price=np.array(columns[1], dtype=np.float64),
        notional=np.array(columns[2], dtype=np.float64),
        released=np.array(columns[3], dtype=np.float64),
        equity_after=np.array(columns[4], dtype=np.float64),
        initial_margin_after=np.array(columns[5], dtype=np.float64),
        equity_before=start[0],
        initial_margin_before=start[1],
        rows=np.array(rows, dtype=np.int64),
    )


def first_best(score: np.ndarray) -> int:
    """Index of the best ``score`` ``(n,)``, the first of those within 1e-9 (relative) of the
    maximum: equal candidates (two linear positions of one underlying release the same IM per
    unit of notional) go in position order, whatever the last bit of their rounding says."""
    top = float(score.max())
    return int(np.flatnonzero(score >= top - 1e-9 * max(abs(top), 1e-9))[0])


class _Pairs:
    """The portfolio-mode figures of one account per underlying (a dense row per underlying; an
    underlying without positions or linked collateral has zero figures and charges nothing)."""

    def __init__(self, margin_input: MarginInput, units: np.ndarray) -> None:
        p, m, f = margin_input.parameters, margin_input.market, margin_input.portfolios
        self.parameters = p
        self.spot = m.underlying_price
        self.grid, _, table = instrument_table(margin_input)
        self.n_s = self.grid.price_move.shape[1]
        self.table = table
        self.units = units
        self.instrument = f.position_instrument
        self.underlying = m.underlying[self.instrument]
        self.is_option_instrument = m.kind == OPTION
        self.is_option = self.is_option_instrument[self.instrument]
        bucket, self.bucket_rate = basis_buckets(margin_input)
        self.bucket = bucket[self.instrument]  # (n_pos,), -1 for options
        self.dollar_units = units * self.spot[self.underlying]  # net dollar delta of a linear position
        n_und = len(p.underlyings)
        linked = (p.asset_underlying[f.balance_asset] >= 0) & (f.balance_amount != 0.0)
        balance_und = p.asset_underlying[f.balance_asset[linked]]
        self.linked_delta = np.bincount(
            balance_und, weights=f.balance_amount[linked] * self.spot[balance_und], minlength=n_und
        )
        self.has_linked = np.bincount(balance_und, minlength=n_und) > 0
        self.n_und = n_und
        self.n_instr = m.n_instruments

    def im_without(self, remaining: np.ndarray) -> tuple[np.ndarray, int]:
        """Portfolio-mode IM ``(n_remaining,)`` USD of the account holding ``remaining`` less each
        one of them in turn, and the number of rows evaluated."""
        n_und, n_s, table = self.n_und, self.n_s, self.table
        und, instr, units = self.underlying[remaining], self.instrument[remaining], self.units[remaining]
        # Net units per (underlying, instrument) of the remaining positions, and what they sum to.
        net = np.zeros((n_und, self.n_instr))
        np.add.at(net, (und, instr), units)
        aggregated = net @ table  # (n_und, n_s + 4)
        n_bucket = self.bucket_rate.size
        buckets = np.zeros((n_und, max(n_bucket, 1)))
        linear = self.bucket[remaining] >= 0
        linear_bucket, linear_dollars = self.bucket[remaining][linear], self.dollar_units[remaining][linear]
        np.add.at(buckets, (und[linear], linear_bucket), linear_dollars)
        short = np.where(self.is_option_instrument[None, :], np.maximum(-net, 0.0), 0.0).sum(axis=1)
        count = np.bincount(und, minlength=n_und)
        present = np.flatnonzero((count > 0) | self.has_linked)

        # Every remaining position's own pair without it (one row per candidate).
        scenario = aggregated[und, :n_s] - units[:, None] * table[instr, :n_s]
        delta = aggregated[und, n_s] - units * table[instr, n_s]
        gone = (count[und] == 1) & ~self.has_linked[und]
        scenario[gone] = 0.0  # the pair's last position: nothing left (no rounding residue)
        delta[gone] = 0.0
        delta = delta + self.linked_delta[und]
        cand_buckets = buckets[und].copy()
        rows = np.flatnonzero(linear)
        cand_buckets[rows, linear_bucket] -= linear_dollars
        cand_buckets[gone] = 0.0
        cand_basis = np.abs(cand_buckets[:, :n_bucket]) @ self.bucket_rate
        before = net[und, instr]
        cand_short = short[und] - np.where(
            self.is_option[remaining], np.maximum(-before, 0.0) - np.maximum(-(before - units), 0.0), 0.0
        )
        cand_short[gone] = 0.0
        _, cand_scan = pair_scan(self.grid, und, scenario, self.linked_delta[und])
        cand = pair_charges(self.parameters, und, cand_scan, delta, cand_short, self.spot)

        # The account's pairs as they are (present underlyings only).
        base_scenario = aggregated[present, :n_s].copy()
        _, base_scan = pair_scan(self.grid, present, base_scenario, self.linked_delta[present])
        base_delta = aggregated[present, n_s] + self.linked_delta[present]
        base_basis = np.abs(buckets[present, :n_bucket]) @ self.bucket_rate
        base = pair_charges(self.parameters, present, base_scan, base_delta, short[present], self.spot)

        # One what-if portfolio per candidate: the account's pairs, its own pair replaced.
        n, k = remaining.size, present.size
        slot = np.searchsorted(present, und)  # the candidate's pair among the present ones
        charges = []
        for base_values, cand_values in zip((*base, base_basis), (*cand, cand_basis), strict=True):
            values = np.repeat(base_values[None, :], n, axis=0)
            values[np.arange(n), slot] = cand_values
            charges.append(values.reshape(-1))
        directional, non_directional, som, concentration, basis = charges
        risk = portfolio_risk(
            self.parameters, np.repeat(np.arange(n), k), np.tile(present, n), n,
            directional=directional, non_directional=non_directional, basis=basis, som=som,
            concentration=concentration,
        )  # fmt: skip
        return risk["im"], n + n * k


@dataclass(frozen=True, eq=False)
class IsolatedLiquidationPlan:
    """The closes of an isolated account, in closing order, each array ``(n_steps,)``:
    ``positions`` int64 (index into the input's positions), ``status`` int8 (the position's own
    status, ``STATUSES`` codes), ``price`` USD per unit closed at, ``notional`` USD, ``released``
    USD (the position's IM, which the close takes off the account's), ``allocated`` (``a_i``) and
    ``position_equity`` (``e_i = a_i + value_i``) USD at the plan's market, ``fee`` USD (the fee
    rate of the notional, never more than what the position's equity leaves: ``max(0, e_i)``),
    ``deficit`` USD (``max(0, −e_i)``: the loss beyond the allocation, which the venue meets),
    ``free_after`` USD (the account's free collateral after the close); the account's
    ``equity_before``, ``initial_margin_before`` and ``free_before`` USD."""

    positions: np.ndarray
    status: np.ndarray
    price: np.ndarray
    notional: np.ndarray
    released: np.ndarray
    allocated: np.ndarray
    position_equity: np.ndarray
    fee: np.ndarray
    deficit: np.ndarray
    free_after: np.ndarray
    equity_before: float
    initial_margin_before: float
    free_before: float


def isolated_liquidation_plan(
    margin_input: MarginInput, *, fee_rate: float, overdue: bool
) -> IsolatedLiquidationPlan:
    """Plan the liquidation of the single isolated portfolio of ``margin_input``.

    1. Every position in ``liquidation`` is closed, on its own, in input order: the other
       positions and the free collateral are not touched (a position below its MM never takes
       another's profit nor unallocated collateral, nor does another position pay for it).
    2. Only when the account's call is ``overdue`` (its cure period elapsed without a cure):
       every position in ``margin_call`` is closed too, then, while free collateral is negative
       (allocations the collateral no longer backs), the remaining positions with the largest
       equity first (each close frees ``e_i − fee``) until it is not.

    A close moves the position's value into cash and releases its allocation, so the account
    loses at most ``a_i`` (plus nothing: a fee is only taken from a positive ``e_i``); a loss
    beyond ``a_i`` is the ``deficit``. Free collateral moves by ``max(0, e_i) − fee`` (taken at
    face value: the settlement asset carries no haircut at the amounts of a close)."""
    f, m = margin_input.portfolios, margin_input.market
    if f.n_portfolios != 1 or int(f.mode[0]) != ISOLATED:
        raise ValueError("an isolated liquidation plan is made for one isolated portfolio")
    result = compute_margin(margin_input)
    inst = f.position_instrument
    price = np.where(m.kind[inst] == OPTION, result.position_price, m.underlying_price[m.underlying[inst]])
    price = np.maximum(price, 1e-10)
    notional = np.abs(f.position_quantity) * m.multiplier[inst] * price
    equity = result.position_equity
    status = result.position_status
    fee = np.minimum(fee_rate * notional, np.maximum(equity, 0.0))
    gives = np.maximum(equity, 0.0) - fee  # what a close adds to free collateral
    order = np.flatnonzero(status == LIQUIDATION).tolist()
    if overdue:
        order += np.flatnonzero(status == MARGIN_CALL).tolist()
        free = float(result.free_collateral[0]) + float(gives[order].sum())
        healthy = np.flatnonzero(status == HEALTHY)
        for j in healthy[np.argsort(-equity[healthy], kind="stable")].tolist():
            if not free < 0.0:  # written so that a NaN free collateral is never read as enough
                break
            free += float(gives[j])
            order.append(j)
    steps = np.array(order, dtype=np.int64)
    return IsolatedLiquidationPlan(
        positions=steps,
        status=status[steps],
        price=price[steps],
        notional=notional[steps],
        released=result.position_initial_margin[steps],
        allocated=result.position_allocated_margin[steps],
        position_equity=equity[steps],
        fee=fee[steps],
        deficit=np.maximum(-equity[steps], 0.0),
        free_after=float(result.free_collateral[0]) + np.cumsum(gives[steps]),
        equity_before=float(result.equity[0]),
        initial_margin_before=float(result.initial_margin[0]),
        free_before=float(result.free_collateral[0]),
    )

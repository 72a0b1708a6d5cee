"""The vectorised margin computation (spec sections 3 and 4) over many portfolios at once.

How it stays fast: every instrument is valued once (price and Greeks) and revalued once per
scenario, giving a per-unit P&L table ``(n_instr, n_scenarios)``. Positions are then added up per
(portfolio, underlying) *pair* with one sparse matrix product: ``W (n_pairs, n_instr)`` holds the
summed ``q * m`` of each pair's positions in each instrument, and ``W @ table`` yields every pair's
scenario P&L and dollar Greeks in one pass. Per-portfolio sums are ``np.bincount`` over pairs or
positions. There is no Python loop over portfolios or positions; the only loops are over the
handful of underlyings/assets inside parsing.

Scenario order (``n_scenarios = 3*(2n+1) + n_ext``): standard scenarios first, price step
``j = -n..n`` outer and vol move ``up, none, down`` inner, then the extreme moves in parameter order.
The worst scenario is the first one reaching the minimum P&L.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .black76 import black76, black76_price
from .document import ISOLATED, PORTFOLIO, MarginInput
from .errors import NonFiniteFigures
from .market import OPTION, PERPETUAL
from .parsing import shown

HEALTHY, MARGIN_CALL, LIQUIDATION = 0, 1, 2
STATUSES = ("healthy", "margin_call", "liquidation")
VOL_UP, VOL_NONE, VOL_DOWN = 0, 1, 2
VOL_MOVES = ("up", "none", "down")


@dataclass(frozen=True, eq=False)
class ScenarioGrid:
    """The scenario definitions shared by every portfolio of a run.

    ``price_move`` ``(n_und, n_s)`` fraction x; ``vol_move`` ``(n_s,)`` int (``VOL_UP``...);
    ``is_extreme`` ``(n_s,)`` bool; ``coverage`` ``(n_und, n_s)`` P&L multiplier (1 for standard);
    ``valid`` ``(n_und, n_s)`` False for padding where an underlying has fewer extreme moves.
    """

    price_move: np.ndarray
    vol_move: np.ndarray
    is_extreme: np.ndarray
    coverage: np.ndarray
    valid: np.ndarray


@dataclass(frozen=True, eq=False)
class MarginResult:
    """Arrays for ``n_port`` portfolios, ``n_pairs`` (portfolio, underlying) pairs, ``n_pos`` positions.

    Money is USD. Per portfolio ``(n_port,)``:
      ``mode`` int8, ``status`` int8 (``STATUSES``), ``finite`` bool (every figure of the
      portfolio, its pairs' and positions' included, is finite; a portfolio that is not finite is
      in ``liquidation`` whatever its figures say: fail closed), ``equity`` (spec section 3 E, in
      every mode), ``collateral_value``, ``initial_margin``, ``maintenance_margin``, ``excess``
      (``E - IM``), ``margin_ratio`` (``E / MM``, NaN when MM = 0); ``free_collateral``
      (``collateral_value - sum a_i``; the result dicts show it in isolated mode only);
      ``amount_due`` (what brings the account back to healthy without closing anything: in
      isolated mode ``sum over positions in margin call of (IM_i - e_i) + max(0, -free)``, spec
      section 4a; in cross and portfolio mode ``max(0, IM - E)``); components (zero outside
      portfolio mode): ``scan_directional``, ``scan_non_directional``, ``correlation_credit``,
      ``basis``, ``short_option_minimum``, ``concentration``; ``required_isolated``,
      ``required_cross``, ``required_portfolio`` (the comparison); and all modes' raw figures:
      ``total_equity`` (= ``equity``), ``positions_value``, ``im_standard``, ``mm_standard``,
      ``im_portfolio``, ``mm_portfolio``.
    ``collateral_by_asset`` ``(n_port, n_assets)`` haircut collateral values.
    Per pair ``(n_pairs,)``, sorted by portfolio then underlying index; portfolio k owns
      ``pair_indptr[k]:pair_indptr[k+1]``: ``pair_portfolio``, ``pair_underlying``, ``scan_risk``,
      ``directional``, ``non_directional``, ``delta_usd``, ``gamma_usd``, ``vega_usd``,
      ``theta_usd``, ``worst_scenario`` (index into ``grid``), ``pair_basis``,
      ``pair_short_option_minimum`` (the shortfall ``max(0, SOM - ScanRisk)``),
      ``pair_concentration``.
    Per position ``(n_pos,)``, in input order: ``position_price`` (per unit), ``position_value``,
      ``position_delta_usd``, ``position_initial_margin``, ``position_maintenance_margin``
      (standard rules); the isolated position (spec section 4a, computed for every position, shown
      in isolated portfolios only): ``position_allocated_margin`` ``a_i``, ``position_equity``
      ``e_i = a_i + value_i``, ``position_status`` int8 (``e_i >= IM_i`` healthy,
      ``MM_i <= e_i < IM_i`` margin call, else liquidation; only a position whose own figures are
      finite can be healthy or in margin call), ``position_amount_due`` (``IM_i - e_i`` for a
      position in margin call, else 0).
    """

    margin_input: MarginInput
    grid: ScenarioGrid
    mode: np.ndarray
    status: np.ndarray
    finite: np.ndarray
    equity: np.ndarray
    collateral_value: np.ndarray
    initial_margin: np.ndarray
    maintenance_margin: np.ndarray
    excess: np.ndarray
    margin_ratio: np.ndarray
    free_collateral: np.ndarray
    amount_due: np.ndarray
    scan_directional: np.ndarray
    scan_non_directional: np.ndarray
    correlation_credit: np.ndarray
    basis: np.ndarray
    short_option_minimum: np.ndarray
    concentration: np.ndarray
    required_isolated: np.ndarray
    required_cross: np.ndarray
    required_portfolio: np.ndarray
    total_equity: np.ndarray
    positions_value: np.ndarray
    im_standard: np.ndarray
    mm_standard: np.ndarray
    im_portfolio: np.ndarray
    mm_portfolio: np.ndarray
    collateral_by_asset: np.ndarray
    pair_indptr: np.ndarray
    pair_portfolio: np.ndarray
    pair_underlying: np.ndarray
    scan_risk: np.ndarray
    directional: np.ndarray
    non_directional: np.ndarray
    delta_usd: np.ndarray
    gamma_usd: np.ndarray
    vega_usd: np.ndarray
    theta_usd: np.ndarray
    worst_scenario: np.ndarray
    pair_basis: np.ndarray
    pair_short_option_minimum: np.ndarray
    pair_concentration: np.ndarray
    position_price: np.ndarray
    position_value: np.ndarray
    position_delta_usd: np.ndarray
    position_initial_margin: np.ndarray
    position_maintenance_margin: np.ndarray
    position_allocated_margin: np.ndarray
    position_equity: np.ndarray
    position_status: np.ndarray
    position_amount_due: np.ndarray

    def to_dicts(self, indices=None) -> list[dict]:
        """Spec section 5 result dicts for portfolios ``indices`` (default: all, in order)."""
        from .results import result_dicts  # circular: results imports MarginResult from here

        return result_dicts(self, indices)

    def to_dict(self, k: int) -> dict:
        """The spec section 5 result dict of portfolio ``k``."""
        return self.to_dicts([k])[0]


def scenario_grid(parameters) -> ScenarioGrid:
    """The ``(n_und, n_s)`` scenario table of a parameter set (order in the module doc)."""
    n = parameters.price_steps
    n_std = parameters.n_standard_scenarios
    n_ext = parameters.extreme_multiple.shape[1]
    steps = np.repeat(np.arange(-n, n + 1, dtype=np.float64) / n, 3)  # (n_std,)
    psr = parameters.psr[:, None]
    price_move = np.concatenate([steps[None, :] * psr, parameters.extreme_multiple * psr], axis=1)
    vol_move = np.concatenate([np.tile([VOL_UP, VOL_NONE, VOL_DOWN], 2 * n + 1), np.full(n_ext, VOL_UP)])
    n_und = len(parameters.underlyings)
    coverage = np.concatenate([np.ones((n_und, n_std)), parameters.extreme_coverage], axis=1)
    valid = np.concatenate([np.ones((n_und, n_std), dtype=bool), parameters.extreme_valid], axis=1)
    is_extreme = np.arange(n_std + n_ext) >= n_std
    return ScenarioGrid(price_move, vol_move.astype(np.int8), is_extreme, coverage, valid)


def instrument_scenario_pnl(
    margin_input: MarginInput, grid: ScenarioGrid, base_price: np.ndarray
) -> np.ndarray:
    """Per-unit scenario P&L of every instrument, ``(n_instr, n_s)`` USD, before the coverage factor.

    Linear: ``S*x``. Options: ``value(S(1+x), sigma', T') - value(S, sigma, T)`` with the term-scaled
    vol shock floored at ``min_vol`` and ``T' = max(T - lookahead/365, 0)``. Each option is revalued
    exactly once per scenario.
    """
    m = margin_input.market
    und = m.underlying
    spot = m.underlying_price[und]
    moves = grid.price_move[und]  # (n_instr, n_s)
    pnl = spot[:, None] * moves
    option = np.flatnonzero(m.kind == OPTION)
    if option.size:
        pnl[option] = option_scenario_pnl(margin_input, grid, option, base_price[option])
    return pnl


def option_scenario_pnl(margin_input, grid, option, base_price) -> np.ndarray:
    """Per-unit scenario P&L ``(n_opt, n_s)`` of the options with instrument indices ``option``."""
    p, m = margin_input.parameters, margin_input.market
    und = m.underlying[option]
    years = m.years[option]
    days_to_expiry = 365.0 * years
    power = np.where(days_to_expiry < p.pivot_days, p.short_power, p.long_power)
    term = (p.pivot_days / np.maximum(days_to_expiry, 1.0)) ** power
    factors = np.stack([1.0 + p.vol_up[und] * term, np.ones_like(term), 1.0 - p.vol_down[und] * term], axis=1)
    vols = np.maximum(p.min_vol, m.iv[option, None] * factors[:, grid.vol_move])  # (n_opt, n_s)
    forward = m.underlying_price[und, None] * (1.0 + grid.price_move[und])
    shifted_years = np.maximum(years - p.lookahead_days / 365.0, 0.0)[:, None]
    revalued = black76_price(
        forward, m.strike[option, None], vols, shifted_years, m.is_call[option, None], p.rate
    )
    return revalued - base_price[:, None]


def compute_margin(margin_input: MarginInput) -> MarginResult:
    """Margin of every portfolio under its own mode plus the three-mode comparison (see module doc).

    Assumes a validated input (``parse_document`` or ``check_input``). Figures that overflow or
    are undefined come out as inf/NaN without a warning: ``result.finite`` marks their portfolios,
    which are in ``liquidation`` (fail closed; ``require_finite`` refuses them outright).
    """
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return _compute_margin(margin_input)


def instrument_table(margin_input: MarginInput) -> tuple[ScenarioGrid, np.ndarray, np.ndarray]:
    """Every instrument valued once: ``(grid, price, table)`` with ``price`` ``(n_instr,)`` USD per
    unit and ``table`` ``(n_instr, n_s + 4)`` per unit: scenario P&L (before the coverage
    factor), then dollar delta, gamma P&L of a 1 % move, vega per vol point, theta per day."""
    p, m = margin_input.parameters, margin_input.market
    n_instr = m.n_instruments
    inst_spot = m.underlying_price[m.underlying]
    option = np.flatnonzero(m.kind == OPTION)
    price = inst_spot.copy()
    delta = np.ones(n_instr)
    gamma, vega, theta = np.zeros(n_instr), np.zeros(n_instr), np.zeros(n_instr)
    if option.size:
        greeks = black76(
            inst_spot[option], m.strike[option], m.iv[option], m.years[option], m.is_call[option], p.rate
        )
        price[option], delta[option] = greeks.price, greeks.delta
        gamma[option], vega[option], theta[option] = greeks.gamma, greeks.vega, greeks.theta
    grid = scenario_grid(p)
    n_s = grid.price_move.shape[1]
    table = np.empty((n_instr, n_s + 4))
    table[:, :n_s] = instrument_scenario_pnl(margin_input, grid, price)
    table[:, n_s] = delta * inst_spot  # dollar delta per unit
    table[:, n_s + 1] = gamma * inst_spot**2 / 100.0  # P&L of a 1 % move from gamma
    table[:, n_s + 2] = vega / 100.0  # per vol point
    table[:, n_s + 3] = theta  # per day
    return grid, price, table


def pair_scan(
    grid: ScenarioGrid, pair_underlying: np.ndarray, scenario: np.ndarray, linked_delta: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Worst scenario and scan risk per pair: ``scenario`` ``(n_pairs, n_s)`` USD is the pairs'
    position P&L (changed in place: linked collateral's P&L added, extreme coverage applied,
    padding scenarios made +inf); ``linked_delta`` ``(n_pairs,)`` USD dollar delta of linked
    collateral. Returns ``(worst (n_pairs,) int, scan_risk (n_pairs,) USD)``."""
    with_linked = np.flatnonzero(linked_delta)
    scenario[with_linked] += linked_delta[with_linked, None] * grid.price_move[pair_underlying[with_linked]]
    if grid.is_extreme.any():
        extreme = grid.is_extreme
        scenario[:, extreme] *= grid.coverage[pair_underlying][:, extreme]
        if not grid.valid.all():
            scenario[~grid.valid[pair_underlying]] = np.inf
    worst = np.argmin(scenario, axis=1)
    scan_risk = np.maximum(0.0, -scenario[np.arange(scenario.shape[0]), worst])
    return worst, scan_risk


def pair_charges(
    parameters,
    pair_underlying: np.ndarray,
    scan_risk: np.ndarray,
    delta_usd: np.ndarray,
    short_units: np.ndarray,
    spot: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per pair ``(n_pairs,)`` USD: ``(directional, non_directional, short option minimum
    shortfall, concentration)`` from its scan risk, dollar delta and net short option units
    (``short_units``, q*m); ``spot`` ``(n_und,)`` USD."""
    p = parameters
    psr = p.psr[pair_underlying]
    directional = np.sign(delta_usd) * np.minimum(scan_risk, np.abs(delta_usd) * psr)
    non_directional = scan_risk - np.abs(directional)
    som = p.som_rate[pair_underlying] * spot[pair_underlying] * short_units
    pair_som = np.maximum(0.0, som - scan_risk)
    pair_conc = p.conc_rate[pair_underlying] * np.maximum(
        0.0, np.abs(delta_usd) - p.conc_threshold[pair_underlying]
    )
    return directional, non_directional, pair_som, pair_conc


def portfolio_risk(
    parameters,
    pair_portfolio: np.ndarray,
    pair_underlying: np.ndarray,
    n_port: int,
    *,
    directional: np.ndarray,
    non_directional: np.ndarray,
    basis: np.ndarray,
    som: np.ndarray,
    concentration: np.ndarray,
) -> dict[str, np.ndarray]:
    """Portfolio-mode figures ``(n_port,)`` USD from per-pair charges ``(n_pairs,)`` (pairs sorted
    by portfolio, at most one per (portfolio, underlying)): ``abs_directional``, ``scan_dir``
    (after the correlation offset), ``scan_non_dir``, ``basis``, ``som``, ``concentration`` and
    ``im`` (their sum)."""
    p = parameters

    def per_portfolio(values: np.ndarray) -> np.ndarray:
        return np.bincount(pair_portfolio, weights=values, minlength=n_port)

    abs_directional = per_portfolio(np.abs(directional))
    directional_matrix = np.zeros((n_port, len(p.underlyings)))
    directional_matrix[pair_portfolio, pair_underlying] = directional
    quadratic = np.einsum("pi,ij,pj->p", directional_matrix, p.correlation, directional_matrix)
    del directional_matrix
    aggregated_directional = np.minimum(np.sqrt(np.maximum(0.0, quadratic)), abs_directional)
    scan_dir = abs_directional - p.offset_cap * (abs_directional - aggregated_directional)
    figures = {
        "abs_directional": abs_directional, "scan_dir": scan_dir,
        "scan_non_dir": per_portfolio(non_directional), "basis": per_portfolio(basis),
        "som": per_portfolio(som), "concentration": per_portfolio(concentration),
    }  # fmt: skip
    figures["im"] = (
        figures["scan_dir"] + figures["scan_non_dir"] + figures["basis"] + figures["som"]
        + figures["concentration"]
    )  # fmt: skip
    return figures


def _compute_margin(margin_input: MarginInput) -> MarginResult:
    p, m, f = margin_input.parameters, margin_input.market, margin_input.portfolios
    n_und, n_port, n_instr = len(p.underlyings), f.n_portfolios, m.n_instruments
    spot = m.underlying_price
    inst_und = m.underlying
    inst_spot = spot[inst_und]
    is_option = m.kind == OPTION

    # --- 1. value every instrument once: price and Greeks per unit --------------------------------
    # --- 2. scenario P&L per unit, then the per-instrument table W multiplies -------------------
    grid, price, table = instrument_table(margin_input)
    n_s = grid.price_move.shape[1]

    # --- 3. (portfolio, underlying) pairs present: positions or non-zero linked collateral -------
    pos_port, pos_inst, qty = f.position_portfolio, f.position_instrument, f.position_quantity
    pos_key = pos_port * n_und + inst_und[pos_inst]
    linked_bal = np.flatnonzero((p.asset_underlying[f.balance_asset] >= 0) & (f.balance_amount != 0.0))
    bal_und = p.asset_underlying[f.balance_asset[linked_bal]]
    bal_key = f.balance_portfolio[linked_bal] * n_und + bal_und
    present = np.zeros(n_port * n_und, dtype=bool)
    present[pos_key] = True
    present[bal_key] = True
    pair_key = np.flatnonzero(present)
    pair_of_key = np.cumsum(present) - 1
    pair_portfolio, pair_underlying = np.divmod(pair_key, n_und)
    n_pairs = pair_key.size
    pos_pair = pair_of_key[pos_key]
    del present, pair_of_key

    units = qty * m.multiplier[pos_inst]  # signed q*m per position
    weights = sp.csr_matrix((units, (pos_pair, pos_inst)), shape=(n_pairs, n_instr))
    weights.sum_duplicates()
    aggregated = weights @ table  # (n_pairs, n_s + 4)
    scenario = aggregated[:, :n_s]
    linked_delta = np.bincount(
        pair_of_key_lookup(pair_key, bal_key), weights=f.balance_amount[linked_bal] * spot[bal_und],
        minlength=n_pairs,
    )  # fmt: skip
    delta_usd = aggregated[:, n_s] + linked_delta
    gamma_usd, vega_usd, theta_usd = (np.ascontiguousarray(aggregated[:, n_s + k]) for k in (1, 2, 3))

    # --- 4. scan risk, directional / non-directional split ----------------------------------------
    worst, scan_risk = pair_scan(grid, pair_underlying, scenario, linked_delta)
    del aggregated, scenario

    # --- 5. basis, short option minimum, concentration per pair -----------------------------------
    pair_basis = _pair_basis(margin_input, weights, inst_spot)
    option_mask = is_option[weights.indices]
    short_units = np.bincount(
        np.repeat(np.arange(n_pairs), np.diff(weights.indptr)),
        weights=np.where(option_mask, np.maximum(-weights.data, 0.0), 0.0),
        minlength=n_pairs,
    )  # net short option units q*m per instrument (identical instruments net within a portfolio)
    directional, non_directional, pair_som, pair_conc = pair_charges(
        p, pair_underlying, scan_risk, delta_usd, short_units, spot
    )

    # --- 6. portfolio rules per portfolio -----------------------------------------------------------
    risk = portfolio_risk(
        p, pair_portfolio, pair_underlying, n_port, directional=directional,
        non_directional=non_directional, basis=pair_basis, som=pair_som, concentration=pair_conc,
    )  # fmt: skip
    abs_directional, scan_dir, scan_non_dir = risk["abs_directional"], risk["scan_dir"], risk["scan_non_dir"]
    basis, som_total, concentration = risk["basis"], risk["som"], risk["concentration"]
    im_portfolio = risk["im"]
    mm_portfolio = p.mm_ratio * im_portfolio

    # --- 7. standard rules and value per position ---------------------------------------------------
    strike = m.strike
    otm = np.where(m.is_call, np.maximum(0.0, strike - inst_spot), np.maximum(0.0, inst_spot - strike))
    linear_im = inst_spot * p.imf[inst_und]
    linear_mm = inst_spot * p.mmf[inst_und]
    short_option_im = np.maximum(p.option_imf * inst_spot - otm, p.option_min * inst_spot)
    im_short = np.where(is_option, short_option_im, linear_im)  # per unit, short position
    im_long = np.where(is_option, 0.0, linear_im)
    mm_short = np.where(is_option, p.option_mmf * inst_spot, linear_mm)
    mm_long = np.where(is_option, 0.0, linear_mm)
    abs_units = np.abs(units)
    short = units < 0.0
    pos_im = abs_units * np.where(short, im_short[pos_inst], im_long[pos_inst])
    pos_mm = abs_units * np.where(short, mm_short[pos_inst], mm_long[pos_inst])
    pos_price = price[pos_inst]
    pos_is_option = is_option[pos_inst]
    pos_value = units * (pos_price - np.where(pos_is_option, 0.0, f.position_entry))
    pos_delta = units * table[pos_inst, n_s]

    def per_position_portfolio(values: np.ndarray) -> np.ndarray:
        return np.bincount(pos_port, weights=values, minlength=n_port)

    positions_value = per_position_portfolio(pos_value)
    im_standard = per_position_portfolio(pos_im)
    mm_standard = per_position_portfolio(pos_mm)
    required_isolated = per_position_portfolio(np.maximum(0.0, pos_im - pos_value))

    collateral_by_asset = collateral_values(margin_input)
    collateral_value = collateral_by_asset.sum(axis=1)
    total_equity = collateral_value + positions_value

    # --- 8. isolated positions (spec section 4a): each stands on its allocation and its own value
    pos_allocated = f.position_allocated_margin
    pos_equity = pos_allocated + pos_value
    free_collateral = collateral_value - per_position_portfolio(pos_allocated)
    position_figures = {
        "price": pos_price, "value": pos_value, "delta_usd": pos_delta, "initial_margin": pos_im,
        "maintenance_margin": pos_mm, "allocated_margin": pos_allocated, "equity": pos_equity,
    }  # fmt: skip
    pos_finite = np.ones(pos_port.size, dtype=bool)
    for values in position_figures.values():
        pos_finite &= np.isfinite(values)
    # Fail closed, as for portfolios below: every comparison is False on NaN.
    pos_healthy = pos_finite & (pos_equity >= pos_im)
    pos_call = pos_finite & ~pos_healthy & (pos_equity >= pos_mm)
    # HEALTHY 0, MARGIN_CALL 1, LIQUIDATION 2 as "not healthy" + "neither healthy nor called":
    # two byte views added, several times cheaper than nested np.where over every position.
    not_healthy = ~pos_healthy
    pos_status = not_healthy.view(np.int8) + (not_healthy & ~pos_call).view(np.int8)
    pos_amount_due = np.where(pos_call, pos_im - pos_equity, 0.0)
    any_liquidating = np.zeros(n_port, dtype=bool)
    any_liquidating[pos_port[pos_status == LIQUIDATION]] = True
    any_called = np.zeros(n_port, dtype=bool)
    any_called[pos_port[pos_call]] = True
    # The worst position's status, and at least a margin call when free collateral is negative
    # (written ``not free >= 0`` so that a NaN is never read as enough).
    isolated_status = np.where(
        any_liquidating, LIQUIDATION, np.where(any_called | ~(free_collateral >= 0.0), MARGIN_CALL, HEALTHY)
    )
    isolated_due = per_position_portfolio(pos_amount_due) + np.maximum(0.0, -free_collateral)

    # --- 9. the portfolio's own mode, status and the comparison ---------------------------------
    mode = f.mode
    in_portfolio_mode = mode == PORTFOLIO
    in_isolated_mode = mode == ISOLATED
    equity = total_equity  # spec section 3 E in every mode (4a: "as in every mode")
    initial_margin = np.where(in_portfolio_mode, im_portfolio, im_standard)
    maintenance_margin = np.where(in_portfolio_mode, mm_portfolio, mm_standard)
    excess = equity - initial_margin
    with np.errstate(divide="ignore", invalid="ignore"):
        margin_ratio = np.where(maintenance_margin != 0.0, equity / maintenance_margin, np.nan)
    amount_due = np.where(in_isolated_mode, isolated_due, np.maximum(0.0, initial_margin - equity))

    def only_portfolio_mode(values: np.ndarray) -> np.ndarray:
        return np.where(in_portfolio_mode, values, 0.0)

    figures = {
        "equity": equity, "collateral_value": collateral_value, "initial_margin": initial_margin,
        "maintenance_margin": maintenance_margin, "excess": excess,
        "margin_ratio": np.where(maintenance_margin != 0.0, margin_ratio, 0.0),
        "free_collateral": free_collateral, "amount_due": amount_due,
        "scan_directional": only_portfolio_mode(scan_dir),
        "scan_non_directional": only_portfolio_mode(scan_non_dir),
        "correlation_credit": only_portfolio_mode(abs_directional - scan_dir),
        "basis": only_portfolio_mode(basis), "short_option_minimum": only_portfolio_mode(som_total),
        "concentration": only_portfolio_mode(concentration), "required_isolated": required_isolated,
        "required_cross": np.maximum(0.0, im_standard - positions_value),
        "required_portfolio": np.maximum(0.0, im_portfolio - positions_value),
        "total_equity": total_equity,
        "positions_value": positions_value, "im_standard": im_standard, "mm_standard": mm_standard,
        "im_portfolio": im_portfolio, "mm_portfolio": mm_portfolio,
    }  # fmt: skip
    pair_figures = {
        "scan_risk": scan_risk, "directional": directional, "non_directional": non_directional,
        "delta_usd": delta_usd, "gamma_usd": gamma_usd, "vega_usd": vega_usd, "theta_usd": theta_usd,
        "basis": pair_basis, "short_option_minimum": pair_som, "concentration": pair_conc,
    }  # fmt: skip
    finite = _finite_portfolios(figures, pair_figures, pair_portfolio, pos_finite, pos_port, n_port)
    # Fail closed: a portfolio is healthy only when it is finite and E >= IM holds (isolated: every
    # position healthy and free >= 0), in margin call only when finite and E >= MM holds (isolated:
    # no position in liquidation); everything else, NaN and infinities included, is in liquidation
    # (a comparison with NaN is False, so every test is written to refuse on NaN).
    healthy = finite & (equity >= initial_margin)
    margin_call = finite & ~healthy & (equity >= maintenance_margin)
    pooled_status = np.where(healthy, HEALTHY, np.where(margin_call, MARGIN_CALL, LIQUIDATION))
    own_mode_status = np.where(in_isolated_mode, isolated_status, pooled_status)
    status = np.where(finite, own_mode_status, LIQUIDATION).astype(np.int8)

    return MarginResult(
        margin_input=margin_input, grid=grid, mode=mode, status=status, finite=finite, equity=equity,
        collateral_value=collateral_value, initial_margin=initial_margin,
        maintenance_margin=maintenance_margin, excess=excess, margin_ratio=margin_ratio,
        free_collateral=free_collateral, amount_due=amount_due,
        scan_directional=figures["scan_directional"],
        scan_non_directional=figures["scan_non_directional"],
        correlation_credit=figures["correlation_credit"],
        basis=figures["basis"], short_option_minimum=figures["short_option_minimum"],
        concentration=figures["concentration"],
        required_isolated=required_isolated,
        required_cross=figures["required_cross"],
        required_portfolio=figures["required_portfolio"],
        total_equity=total_equity, positions_value=positions_value,
        im_standard=im_standard, mm_standard=mm_standard, im_portfolio=im_portfolio,
        mm_portfolio=mm_portfolio, collateral_by_asset=collateral_by_asset,
        pair_indptr=np.searchsorted(pair_portfolio, np.arange(n_port + 1)),
        pair_portfolio=pair_portfolio, pair_underlying=pair_underlying, scan_risk=scan_risk,
        directional=directional, non_directional=non_directional, delta_usd=delta_usd,
        gamma_usd=gamma_usd, vega_usd=vega_usd, theta_usd=theta_usd, worst_scenario=worst,
        pair_basis=pair_basis, pair_short_option_minimum=pair_som, pair_concentration=pair_conc,
        position_price=pos_price, position_value=pos_value, position_delta_usd=pos_delta,
        position_initial_margin=pos_im, position_maintenance_margin=pos_mm,
        position_allocated_margin=pos_allocated, position_equity=pos_equity, position_status=pos_status,
        position_amount_due=pos_amount_due,
    )  # fmt: skip


def _finite_portfolios(
    figures: dict,
    pair_figures: dict,
    pair_portfolio: np.ndarray,
    position_finite: np.ndarray,
    position_portfolio: np.ndarray,
    n_port: int,
) -> np.ndarray:
    """``(n_port,)`` bool: every figure of the portfolio, its pairs' and its positions' included,
    is finite (``margin_ratio`` counts only where MM != 0: it is null by definition otherwise).
    ``position_finite`` ``(n_pos,)``: whether each position's own figures are finite."""
    finite = np.ones(n_port, dtype=bool)
    for values in figures.values():
        finite &= np.isfinite(values)
    bad = np.zeros(pair_portfolio.size, dtype=bool)
    for values in pair_figures.values():
        bad |= ~np.isfinite(values)
    finite[pair_portfolio[bad]] = False
    finite[position_portfolio[~position_finite]] = False
    return finite


def non_finite_figures(result: MarginResult, k: int) -> list[str]:
    """Names of portfolio ``k``'s figures that are not finite, as the result dict names them
    (``initial_margin``, ``by_underlying[BTC].scan_risk``, ``positions[2].value``...); empty
    when the portfolio is finite."""
    if result.finite[k]:
        return []
    skip = {"margin_ratio"} if result.maintenance_margin[k] == 0.0 else set()
    names = [n for n in _FIGURES if n not in skip and not np.isfinite(getattr(result, n)[k])]
    underlyings = result.margin_input.parameters.underlyings
    names += [
        f"by_underlying[{underlyings[int(result.pair_underlying[r])]}].{n}"
        for r in range(result.pair_indptr[k], result.pair_indptr[k + 1])
        for n in _PAIR_FIGURES
        if not np.isfinite(getattr(result, n)[r])
    ]
    positions = np.flatnonzero(result.margin_input.portfolios.position_portfolio == k).tolist()
    names += [
        f"positions[{j}].{n}"
        for j, index in enumerate(positions)
        for n in _POSITION_FIGURES
        if not np.isfinite(getattr(result, f"position_{n}")[index])
    ]
    return names or ["(a figure)"]


def require_finite(result: MarginResult) -> None:
    """Raise ``NonFiniteFigures`` (a ``DocumentError``) naming the first portfolio whose figures are
    not finite (an overflow, or a scenario the validation did not foresee): spec section 5, output
    is all or nothing."""
    bad = np.flatnonzero(~result.finite)
    if bad.size:
        k = int(bad[0])
        names = ", ".join(non_finite_figures(result, k)[:5])
        portfolio_id = result.margin_input.portfolios.ids[k]
        raise NonFiniteFigures(
            f"portfolios[{k}]", f"the figures of portfolio {shown(portfolio_id)} would not be finite "
            f"(overflow): {names}",
        )  # fmt: skip


_FIGURES = (
    "equity", "collateral_value", "initial_margin", "maintenance_margin", "excess", "margin_ratio",
    "free_collateral",
    "scan_directional", "scan_non_directional", "correlation_credit", "basis", "short_option_minimum",
    "concentration", "required_isolated", "required_cross", "required_portfolio",
)  # fmt: skip
_PAIR_FIGURES = ("scan_risk", "directional", "delta_usd", "gamma_usd", "vega_usd", "theta_usd")
_POSITION_FIGURES = (
    "price", "value", "delta_usd", "initial_margin", "maintenance_margin", "allocated_margin", "equity",
)  # fmt: skip


def pair_of_key_lookup(pair_key: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Pair index of each ``portfolio*n_und + underlying`` key (every key is known to be present)."""
    return np.searchsorted(pair_key, keys)


def basis_buckets(margin_input: MarginInput) -> tuple[np.ndarray, np.ndarray]:
    """The basis buckets: ``(bucket (n_instr,) int64, rate (n_buckets,))``, each linear
    instrument's bucket (-1 for options) and each bucket's basis rate. Buckets are (underlying,
    expiry); all perpetuals of an underlying share one bucket with T = 0."""
    p, m = margin_input.parameters, margin_input.market
    linear = np.flatnonzero(m.kind != OPTION)
    bucket = np.full(m.n_instruments, -1, dtype=np.int64)
    if linear.size == 0:
        return bucket, np.zeros(0)
    is_perp = m.kind[linear] == PERPETUAL
    bucket_years = np.where(is_perp, -np.inf, m.years[linear])  # -inf keeps perps apart from T = 0 futures
    keys = np.stack([m.underlying[linear].astype(np.float64), bucket_years], axis=1)
    buckets, bucket_of_linear = np.unique(keys, axis=0, return_inverse=True)
    bucket[linear] = bucket_of_linear.reshape(-1)
    bucket_und = buckets[:, 0].astype(np.int64)
    bucket_t = np.where(np.isneginf(buckets[:, 1]), 0.0, buckets[:, 1])
    return bucket, np.maximum(p.min_basis[bucket_und], p.basis_rate[bucket_und] * bucket_t)


def _pair_basis(margin_input: MarginInput, weights: sp.csr_matrix, inst_spot: np.ndarray) -> np.ndarray:
    """Basis charge per pair ``(n_pairs,)`` USD: ``sum_e |net dollar delta of linear in bucket e|
    * rate_e``."""
    bucket, bucket_rate = basis_buckets(margin_input)
    n_pairs = weights.shape[0]
    linear = np.flatnonzero(bucket >= 0)
    if linear.size == 0:
        return np.zeros(n_pairs)
    to_bucket = sp.csr_matrix(
        (inst_spot[linear], (linear, bucket[linear])), shape=(bucket.size, bucket_rate.size)
    )
    net = (weights @ to_bucket).tocsr()  # net dollar delta (n_pairs, n_buckets)
    charge = np.abs(net.data) * bucket_rate[net.indices]
    rows = np.repeat(np.arange(n_pairs), np.diff(net.indptr))
    return np.bincount(rows, weights=charge, minlength=n_pairs)


def collateral_values(margin_input: MarginInput) -> np.ndarray:
    """Haircut collateral value per portfolio and asset, ``(n_port, n_assets)`` USD (spec section 3).

    ``V = b*P``: ``V >= 0`` is cut bracket by bracket like tax brackets; ``V < 0`` is a liability
    worth ``V*(1 + liability_addon)``. Several balances of one asset in a portfolio are added first.
    """
    p, m, f = margin_input.parameters, margin_input.market, margin_input.portfolios
    n_port, n_assets = f.n_portfolios, len(p.assets)
    amounts = np.bincount(
        f.balance_portfolio * n_assets + f.balance_asset,
        weights=f.balance_amount,
        minlength=n_port * n_assets,
    ).reshape(n_port, n_assets)
    return haircut_values(p, m.asset_price, amounts)


def haircut_values(parameters, asset_price: np.ndarray, amounts: np.ndarray) -> np.ndarray:
    """Haircut value ``(n, n_assets)`` USD of ``amounts`` ``(n, n_assets)`` units of each asset at
    ``asset_price`` ``(n_assets,)`` USD (the brackets of ``collateral_values``)."""
    p = parameters
    value = amounts * asset_price[None, :]
    with np.errstate(invalid="ignore"):  # padding brackets are inf - inf
        width = p.haircut_upper - p.haircut_lower  # (n_assets, n_brackets); inf for the open bracket
    width = np.where(np.isnan(width), 0.0, width)  # padding brackets (inf - inf) have no width
    slices = np.clip(value[:, :, None] - p.haircut_lower[None], 0.0, width[None])
    haircut_value = (slices * (1.0 - p.haircut_rate[None])).sum(axis=2)
    liability = value * (1.0 + p.liability_addon[None, :])
    return np.where(value >= 0.0, haircut_value, liability)

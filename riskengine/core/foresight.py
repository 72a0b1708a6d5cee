"""Liquidation foresight (methodology v1.1 section 9), vectorised over accounts.

How far each account stands from liquidation (the move of one underlying, or of all of them
together, at which its status becomes ``liquidation``) and how likely it is to get there within a
horizon. Everything is computed from the engine's own per-(portfolio, underlying) *pairs*.

Pair figures. Moving ``S_u`` by the factor ``1 + x`` (and the assets linked to ``u``) changes only
the pairs of ``u``: each such pair is re-evaluated at ``S' = S_u·(1 + x)`` (``evaluate_pairs``),
giving per row ``(n_rows,)`` USD:

- ``equity``: the pair's part of ``E``: option values ``Σ q·m·price(S')``, linear values
  ``Σ q·m·(S' − entry)``, the haircut value of the balances of the assets linked to ``u``;
- ``maintenance``: the standard-rules MM of its positions (``∝ S'``);
- ``directional`` ``D`` and ``rest`` ``N + basis + SOM shortfall + concentration``: the
  portfolio-rule charges from the full scan around ``S'`` (29 scenarios with the defaults, the
  options revalued in each; portfolio-mode pairs only);
- ``isolated``: ``min_i (e_i − MM_i)`` over the pair's positions (isolated accounts only), and
  ``position`` the position reaching it.

The account's health ``h`` is then put together from its pairs (``account_health``):
``cross`` ``E − MM``, ``portfolio`` ``E − mm_ratio·IM`` (``IM = A' + Σ rest``, the correlation
offset of spec section 4b.7 over the pairs' ``D``), ``isolated`` ``min`` over its pairs (a position
in liquidation liquidates the account; unallocated collateral only gives a margin call). The
account is in liquidation exactly when ``not h ≥ 0`` (a NaN is liquidation: fail closed). For one
moved underlying the account's other pairs are not recomputed: ``E``, ``MM``, ``Σ|D|``,
``DᵀρD`` and ``Σ rest`` are updated from the moved pair alone (``(ρD)_u`` kept per pair), so one
trial costs the moved pair's positions, not the account's book.

Distances (``distances``). Per pair and direction, then per account for the joint move (every
underlying by the same ``x``): a grid (``DOWN_GRID``, ``UP_GRID``, outward from 0), each search
leaving it at its first grid point in liquidation, then refinement inside that grid cell until the
bracket is at most ``PRECISION`` (1e-4) wide (false position closed by two points 0.9e-4 apart,
halving when that does not halve the bracket; more points a round when few searches are open:
``_Brackets``). Searches of option-free pairs and accounts skip the grid: their health is concave
in the move, so the end of the range decides (``_linear_ends``). The reported move is the
bracket's end *in* liquidation (the account is in liquidation at the reported price; the true
boundary is within 1e-4 of it, towards 0). ``NaN`` (null) when no move of the range is found in
liquidation; 0 for an account already in liquidation. A liquidation region narrower than a grid
cell can be stepped over: the grid is the resolution of "first". All open searches, both
directions, single and joint, are evaluated together in each round; on the grid every row of a
block shares its moves, so each option is revalued once per grid point for all the pairs holding
it.

Probability (``liquidation_probability``): see its docstring and docs/foresight.md.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp
from scipy.special import ndtr

from .black76 import _d1_d2, black76_price
from .document import CROSS, ISOLATED, PORTFOLIO, MarginInput
from .margin import LIQUIDATION, MarginResult, ScenarioGrid, compute_margin, haircut_values, pair_scan
from .market import OPTION

PRECISION = 1e-4
MAX_POINTS = 16  # points per search and refinement round at most (see ``distances``)
SMALL_ROUND_ROWS = 1024  # below this many rows a round costs its call more than its rows
DOWN_LIMIT, UP_LIMIT = -0.99, 10.0
_STEPS = (0.02, 0.05, 0.10, 0.15, 0.20, 0.30, 0.40, 0.50)
DOWN_GRID = -np.array([*_STEPS, 0.65, 0.80, 0.99])
UP_GRID = np.array([*_STEPS, 0.70, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0])
GRID = np.concatenate([DOWN_GRID, UP_GRID])
DOWN_COLUMNS = np.arange(DOWN_GRID.size)
UP_COLUMNS = np.arange(DOWN_GRID.size, GRID.size)
FIGURES = ("equity", "maintenance", "directional", "rest", "isolated")


@dataclass(frozen=True, eq=False)
class PairFigures:
    """Figures of ``n_rows`` evaluated pairs, each ``(n_rows,)`` USD (see the module doc);
    ``position`` ``(n_rows,)`` int64, the isolated position with the least ``e_i − MM_i`` (index
    into the input's positions; −1 when none)."""

    equity: np.ndarray
    maintenance: np.ndarray
    directional: np.ndarray
    rest: np.ndarray
    isolated: np.ndarray
    position: np.ndarray

    def take(self, rows: np.ndarray) -> PairFigures:
        return PairFigures(*(getattr(self, name)[rows] for name in (*FIGURES, "position")))


class Book:
    """The pair structure of a ``MarginInput`` and its figures at the current market, built once
    (one ``compute_margin`` run, on ``held_instruments(margin_input)`` unless ``result`` is
    given). ``n_pairs`` pairs as in ``MarginResult`` (sorted by portfolio, then underlying;
    portfolio ``k`` owns ``pair_indptr[k]:pair_indptr[k + 1]``).

    Per pair: ``pair_portfolio``, ``pair_underlying``, ``pair_mode``, ``pair_spot`` ``S_u`` USD;
    ``linear_units`` ``Σ q·m`` and ``linear_cost`` ``Σ q·m·entry`` USD of its linear positions;
    ``maintenance0`` standard MM USD; ``basis0`` basis charge USD (``∝ S``); ``short_units`` net
    short option units (``q·m``); ``linked_amount`` ``(n_pairs, n_assets)`` balances of the assets
    linked to its underlying (other columns 0); ``linked_units`` their sum. Option entries (the
    pair's option positions summed per instrument) in CSR: ``entry_indptr`` ``(n_pairs + 1,)``,
    ``entry_instrument``, ``entry_units``. Isolated positions in CSR: ``iso_indptr``,
    ``iso_position`` (input index), ``iso_units``, ``iso_entry_price`` (NaN for options),
    ``iso_allocated``, ``iso_maintenance0``, ``iso_entry`` (index of its option entry, −1).
    ``base``: ``PairFigures`` at the current market; per portfolio ``equity`` (spec ``E``),
    ``maintenance`` (standard MM), ``abs_directional``, ``quadratic`` (``DᵀρD``), ``rest``;
    per pair ``rho_directional`` ``(ρD)_u``; ``combo_*``: every (pair, pair) of a portfolio with
    its correlation, for ``DᵀρD`` of a joint move."""

    def __init__(self, margin_input: MarginInput, result: MarginResult | None = None) -> None:
        if result is None:
            margin_input = held_instruments(margin_input)
        p, m, f = margin_input.parameters, margin_input.market, margin_input.portfolios
        self.margin_input = margin_input
        self.result = result if result is not None else compute_margin(margin_input)
        r = self.result
        self.grid: ScenarioGrid = r.grid
        self.n_port = f.n_portfolios
        self.pair_portfolio, self.pair_underlying = r.pair_portfolio, r.pair_underlying
        self.pair_indptr = r.pair_indptr
        self.n_pairs = self.pair_portfolio.size
        n_und, n_pairs = len(p.underlyings), self.n_pairs
        self.pair_mode = f.mode[self.pair_portfolio]
        self.pair_spot = m.underlying_price[self.pair_underlying]
        pair_key = self.pair_portfolio * n_und + self.pair_underlying

        inst = f.position_instrument
        pos_pair = np.searchsorted(pair_key, f.position_portfolio * n_und + m.underlying[inst])
        units = f.position_quantity * m.multiplier[inst]
        is_option = m.kind[inst] == OPTION
        linear = ~is_option
        self.linear_units = np.bincount(pos_pair[linear], weights=units[linear], minlength=n_pairs)
        self.linear_cost = np.bincount(
            pos_pair[linear], weights=units[linear] * f.position_entry[linear], minlength=n_pairs
        )
        self.maintenance0 = np.bincount(pos_pair, weights=r.position_maintenance_margin, minlength=n_pairs)
        self.basis0 = r.pair_basis
        # Option entries: q·m summed per (pair, instrument), sorted by pair.
        option_key = pos_pair[is_option] * m.n_instruments + inst[is_option]
        keys, entry_of_option = np.unique(option_key, return_inverse=True)
        self.entry_units = np.bincount(entry_of_option, weights=units[is_option], minlength=keys.size)
        entry_pair, self.entry_instrument = np.divmod(keys, m.n_instruments)
        self.entry_indptr = np.searchsorted(entry_pair, np.arange(n_pairs + 1))
        self.short_units = np.bincount(
            entry_pair, weights=np.maximum(-self.entry_units, 0.0), minlength=n_pairs
        )
        # Balances of linked assets, per pair.
        asset_und = p.asset_underlying[f.balance_asset]
        linked = np.flatnonzero((asset_und >= 0) & (f.balance_amount != 0.0))
        bal_pair = np.searchsorted(pair_key, f.balance_portfolio[linked] * n_und + asset_und[linked])
        self.linked_amount = np.zeros((n_pairs, len(p.assets)))
        np.add.at(self.linked_amount, (bal_pair, f.balance_asset[linked]), f.balance_amount[linked])
        self.linked_units = self.linked_amount.sum(axis=1)
        self.has_linked = np.flatnonzero(np.any(self.linked_amount != 0.0, axis=1))
        # Isolated positions, sorted by pair.
        iso = np.flatnonzero(f.mode[f.position_portfolio] == ISOLATED)
        iso = iso[np.argsort(pos_pair[iso], kind="stable")]
        self.iso_position = iso
        self.iso_indptr = np.searchsorted(pos_pair[iso], np.arange(n_pairs + 1))
        self.iso_units = units[iso]
        self.iso_entry_price = np.where(is_option[iso], np.nan, f.position_entry[iso])
        self.iso_allocated = f.position_allocated_margin[iso]
        self.iso_maintenance0 = r.position_maintenance_margin[iso]
        entry_index = np.full(units.size, -1, dtype=np.int64)
        entry_index[np.flatnonzero(is_option)] = entry_of_option
        self.iso_entry = entry_index[iso]

        # The figures at the current market, and what the accounts add up to.
        self.base = evaluate_pairs(self, np.arange(n_pairs), np.zeros(n_pairs))
        b = self.base
        per_port = functools.partial(np.bincount, self.pair_portfolio, minlength=self.n_port)
        self.equity = r.equity
        self.equity_rest = r.equity - per_port(weights=b.equity)  # unlinked collateral
        self.maintenance = per_port(weights=b.maintenance)
        self.abs_directional = per_port(weights=np.abs(b.directional))
        self.rest = per_port(weights=b.rest)
        # (pair, pair) combinations within each portfolio, with their correlation.
        counts = np.diff(self.pair_indptr)
        self.combo_indptr = np.concatenate([[0], np.cumsum(counts**2)])
        combo_port = np.repeat(np.arange(self.n_port), counts**2)
        within = np.arange(self.combo_indptr[-1]) - self.combo_indptr[combo_port]
        self.combo_i, self.combo_j = np.divmod(within, counts[combo_port])  # local pair offsets
        first = self.pair_indptr[combo_port]
        self.combo_rho = p.correlation[
            self.pair_underlying[first + self.combo_i], self.pair_underlying[first + self.combo_j]
        ]
        products = b.directional[first + self.combo_i] * self.combo_rho * b.directional[first + self.combo_j]
        self.quadratic = np.bincount(combo_port, weights=products, minlength=self.n_port)
        self.rho_directional = np.bincount(
            first + self.combo_i,
            weights=self.combo_rho * b.directional[first + self.combo_j],
            minlength=n_pairs,
        )
        self.rho_diagonal = np.diag(p.correlation)[self.pair_underlying]


def held_instruments(margin_input: MarginInput) -> MarginInput:
    """The same input with its market cut down to the instruments the portfolios hold, when they
    hold less than half of them (one account against the venue's whole instrument table): every
    figure is the same, an instrument nobody holds adds nothing, and the engine values each
    instrument of the market in every scenario. Positions keep their order."""
    m, f = margin_input.market, margin_input.portfolios
    held = np.unique(f.position_instrument)
    if 2 * held.size > m.n_instruments:
        return margin_input
    index = np.full(m.n_instruments, -1, dtype=np.int64)
    index[held] = np.arange(held.size)
    market = replace(
        m, instruments=tuple(m.instruments[i] for i in held.tolist()), kind=m.kind[held],
        underlying=m.underlying[held], multiplier=m.multiplier[held], years=m.years[held],
        strike=m.strike[held], is_call=m.is_call[held], iv=m.iv[held],
    )  # fmt: skip
    portfolios = replace(f, position_instrument=index[f.position_instrument])
    return MarginInput(margin_input.parameters, market, portfolios)


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The concatenated ``arange(starts[k], starts[k] + counts[k])``."""
    total = int(counts.sum())
    offsets = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(total) - offsets + np.repeat(starts, counts)


def _option_rows(book: Book, instrument: np.ndarray, spot: np.ndarray, scan: np.ndarray):
    """Options ``instrument`` ``(n,)`` revalued at underlying ``spot`` ``(n,)`` USD: per unit
    ``price``, dollar delta ``delta_usd`` ``(n,)`` and, for the rows where ``scan``, the scenario
    P&L ``(n_scan, n_s)`` (spec section 4b.2-3, as ``margin.option_scenario_pnl``)."""
    p, m = book.margin_input.parameters, book.margin_input.market
    price, delta = _price_delta(spot, m.strike[instrument], m.iv[instrument], m.years[instrument],
                                m.is_call[instrument], p.rate)  # fmt: skip
    rows = np.flatnonzero(scan)
    if rows.size == 0:
        return price, delta * spot, np.zeros((0, book.grid.price_move.shape[1]))
    grid = book.grid
    opt = instrument[rows]
    und = m.underlying[opt]
    years = m.years[opt]
    days_to_expiry = 365.0 * years
    power = np.where(days_to_expiry < p.pivot_days, p.short_power, p.long_power)
    term = (p.pivot_days / np.maximum(days_to_expiry, 1.0)) ** power
    factors = np.stack([1.0 + p.vol_up[und] * term, np.ones_like(term), 1.0 - p.vol_down[und] * term], axis=1)
    vols = np.maximum(p.min_vol, m.iv[opt, None] * factors[:, grid.vol_move])
    forward = spot[rows, None] * (1.0 + grid.price_move[und])
    shifted_years = np.maximum(years - p.lookahead_days / 365.0, 0.0)[:, None]
    revalued = black76_price(forward, m.strike[opt, None], vols, shifted_years, m.is_call[opt, None], p.rate)
    return price, delta * spot, revalued - price[rows, None]


def _price_delta(forward, strike, vol, years, is_call, rate: float) -> tuple[np.ndarray, np.ndarray]:
    """Black-76 price and delta per unit ``(n,)`` exactly as ``black76`` gives them (spec section
    2), without the Greeks foresight does not need."""
    d1, d2, std_dev, _ = _d1_d2(forward, strike, vol, years)
    discount = np.exp(-rate * np.maximum(years, 0.0))
    sign = np.where(is_call, 1.0, -1.0)
    n_d1 = ndtr(sign * d1)
    live = std_dev > 0.0
    price = np.where(
        live, discount * (sign * (forward * n_d1 - strike * ndtr(sign * d2))),
        np.maximum(sign * (forward - strike), 0.0),
    )  # fmt: skip
    in_the_money = np.where(is_call, forward > strike, forward < strike)
    delta = np.where(live, sign * (discount * n_d1), np.where(in_the_money, sign, 0.0))
    return price, delta


def evaluate_pairs(
    book: Book, pair: np.ndarray, move: np.ndarray, *, grid: tuple[np.ndarray, np.ndarray] | None = None
) -> PairFigures:
    """The figures of pairs ``pair`` ``(n_rows,)`` with their underlying moved by the fraction
    ``move`` ``(n_rows,)`` (a pair may appear in several rows). ``grid``: ``(moves, index)`` when
    the rows' moves are a few shared ones, ``move == moves[index]``; options are then revalued
    once per (instrument, move), otherwise once per row's entry."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return _evaluate_pairs(book, pair, move, grid)


def _evaluate_pairs(book: Book, pair: np.ndarray, move: np.ndarray, grid) -> PairFigures:
    p = book.margin_input.parameters
    n_rows = pair.size
    factor = 1.0 + move
    spot = book.pair_spot[pair] * factor
    und = book.pair_underlying[pair]
    mode = book.pair_mode[pair]
    portfolio_rows = np.flatnonzero(mode == PORTFOLIO)

    # Option entries of the rows (the pair's option positions summed per instrument).
    counts = np.diff(book.entry_indptr)[pair]
    entry_row = np.repeat(np.arange(n_rows), counts)
    entry = _ranges(book.entry_indptr[pair], counts)
    entry_offset = np.cumsum(counts) - counts  # where each row's entries start in ``entry``
    instrument = book.entry_instrument[entry]
    units = book.entry_units[entry]
    market = book.margin_input.market
    if grid is not None:
        # A few moves shared by many rows (the grid): each instrument revalued once per move.
        moves, move_of_row = grid
        distinct, instrument_of_entry = np.unique(instrument, return_inverse=True)
        unique_instrument = np.repeat(distinct, moves.size)
        unique_move = np.tile(moves, distinct.size)
        inverse = instrument_of_entry.reshape(-1) * moves.size + move_of_row[entry_row]
    else:
        # Moves of their own (inside the cells): hardly two rows share one; no sorting.
        unique_instrument, inverse, unique_move = instrument, np.arange(instrument.size), move[entry_row]
    inverse = inverse.reshape(-1)
    unique_spot = market.underlying_price[market.underlying[unique_instrument]] * (1.0 + unique_move)
    scan_entry = mode[entry_row] == PORTFOLIO
    scan_unique = np.zeros(unique_instrument.size, dtype=bool)
    scan_unique[inverse[scan_entry]] = True
    price, delta_usd, scenarios = _option_rows(book, unique_instrument, unique_spot, scan_unique)

    option_value = np.bincount(entry_row, weights=units * price[inverse], minlength=n_rows)
    equity = option_value + book.linear_units[pair] * spot - book.linear_cost[pair]
    with_linked = np.flatnonzero(np.isin(pair, book.has_linked))
    if with_linked.size:
        amounts = book.linked_amount[pair[with_linked]] * factor[with_linked, None]
        asset_price = book.margin_input.market.asset_price
        equity[with_linked] += haircut_values(p, asset_price, amounts).sum(axis=1)
    maintenance = book.maintenance0[pair] * factor

    directional = np.zeros(n_rows)
    rest = np.zeros(n_rows)
    if portfolio_rows.size:
        row_of = np.full(n_rows, -1)
        row_of[portfolio_rows] = np.arange(portfolio_rows.size)
        scan_of = np.cumsum(scan_unique) - 1
        n_port_rows, n_s = portfolio_rows.size, book.grid.price_move.shape[1]
        selected = np.flatnonzero(scan_entry)
        weights = sp.csr_matrix(
            (units[selected], (row_of[entry_row[selected]], scan_of[inverse[selected]])),
            shape=(n_port_rows, scenarios.shape[0]),
        )
        scenario = np.asarray(weights @ scenarios).reshape(n_port_rows, n_s)
        rows_pair, rows_und, rows_spot = pair[portfolio_rows], und[portfolio_rows], spot[portfolio_rows]
        scenario += (book.linear_units[rows_pair] * rows_spot)[:, None] * book.grid.price_move[rows_und]
        linked_delta = book.linked_units[rows_pair] * rows_spot
        _, scan = pair_scan(book.grid, rows_und, scenario, linked_delta)
        option_delta = np.bincount(
            row_of[entry_row[selected]], weights=units[selected] * delta_usd[inverse[selected]],
            minlength=n_port_rows,
        )  # fmt: skip
        delta = option_delta + book.linear_units[rows_pair] * rows_spot + linked_delta
        d = np.sign(delta) * np.minimum(scan, np.abs(delta) * p.psr[rows_und])
        som = p.som_rate[rows_und] * rows_spot * book.short_units[rows_pair]
        concentration = p.conc_rate[rows_und] * np.maximum(0.0, np.abs(delta) - p.conc_threshold[rows_und])
        directional[portfolio_rows] = d
        rest[portfolio_rows] = (
            (scan - np.abs(d)) + book.basis0[rows_pair] * factor[portfolio_rows]
            + np.maximum(0.0, som - scan) + concentration
        )  # fmt: skip

    isolated = np.full(n_rows, np.inf)
    position = np.full(n_rows, -1, dtype=np.int64)
    iso_counts = np.diff(book.iso_indptr)[pair]
    if iso_counts.any():
        iso_row = np.repeat(np.arange(n_rows), iso_counts)
        iso = _ranges(book.iso_indptr[pair], iso_counts)
        own_entry = book.iso_entry[iso]
        is_option = own_entry >= 0
        unit_value = spot[iso_row] - book.iso_entry_price[iso]
        gathered = entry_offset[iso_row] + own_entry - book.entry_indptr[pair[iso_row]]
        unit_value[is_option] = price[inverse[gathered[is_option]]]
        health = (
            book.iso_allocated[iso] + book.iso_units[iso] * unit_value
            - book.iso_maintenance0[iso] * factor[iso_row]
        )  # fmt: skip
        health = np.where(np.isfinite(health), health, np.nan)
        present = np.flatnonzero(iso_counts)
        starts = np.cumsum(iso_counts) - iso_counts
        isolated[present] = np.minimum.reduceat(health, starts[present])
        # NaN-safe "first position at the minimum": order by (row, health) and take each first.
        order = np.lexsort((np.where(np.isnan(health), -np.inf, health), iso_row))
        first = order[np.searchsorted(iso_row[order], present)]
        position[present] = book.iso_position[iso[first]]
    # Fail closed: a figure that is not finite (an overflow at the moved price) is NaN, and every
    # health test is written so that NaN is liquidation.
    finite = np.isfinite(equity) & np.isfinite(maintenance) & np.isfinite(directional) & np.isfinite(rest)
    equity = np.where(finite, equity, np.nan)
    return PairFigures(equity, maintenance, directional, rest, isolated, position)


def _portfolio_margin(book: Book, abs_directional, quadratic, rest):
    """Portfolio-mode MM from the directional sums and the other charges (spec section 4b.7, 11)."""
    p = book.margin_input.parameters
    aggregated = np.minimum(np.sqrt(np.maximum(0.0, quadratic)), abs_directional)
    scan_dir = abs_directional - p.offset_cap * (abs_directional - aggregated)
    return p.mm_ratio * (scan_dir + rest)


def single_health(book: Book, pair: np.ndarray, figures: PairFigures) -> np.ndarray:
    """Health ``(n_rows,)`` USD of the account of each pair ``pair`` ``(n_rows,)`` when only that
    pair has ``figures`` (its underlying moved): updated from the account's totals, O(1) a row."""
    with np.errstate(over="ignore", invalid="ignore"):
        b, k = book.base, book.pair_portfolio[pair]
        equity = book.equity[k] + (figures.equity - b.equity[pair])
        cross = equity - (book.maintenance[k] + (figures.maintenance - b.maintenance[pair]))
        change = figures.directional - b.directional[pair]
        abs_directional = book.abs_directional[k] + (
            np.abs(figures.directional) - np.abs(b.directional[pair])
        )
        quadratic = (
            book.quadratic[k]
            + 2.0 * change * book.rho_directional[pair]
            + change**2 * book.rho_diagonal[pair]
        )
        rest = book.rest[k] + (figures.rest - b.rest[pair])
        portfolio = equity - _portfolio_margin(book, abs_directional, quadratic, rest)
        mode = book.pair_mode[pair]
        return _fail_closed(mode, figures.isolated, cross, portfolio)


def account_health(book: Book, account: np.ndarray, figures: PairFigures) -> np.ndarray:
    """Health ``(n_trials,)`` USD of trials of accounts ``account`` ``(n_trials,)`` with every one of
    their pairs moved: ``figures`` has one row per pair, trial after trial, each trial's pairs in
    the account's order (``_ranges(book.pair_indptr[account], counts)``)."""
    with np.errstate(over="ignore", invalid="ignore"):
        n = account.size
        counts = np.diff(book.pair_indptr)[account]
        trial = np.repeat(np.arange(n), counts)
        pairs = _ranges(book.pair_indptr[account], counts)
        b = book.base

        def per_trial(values: np.ndarray) -> np.ndarray:
            return np.bincount(trial, weights=values, minlength=n)

        equity = book.equity[account] + per_trial(figures.equity - b.equity[pairs])
        cross = equity - (book.maintenance[account] + per_trial(figures.maintenance - b.maintenance[pairs]))
        combo_counts = np.diff(book.combo_indptr)[account]
        combo = _ranges(book.combo_indptr[account], combo_counts)
        combo_trial = np.repeat(np.arange(n), combo_counts)
        start = (np.cumsum(counts) - counts)[combo_trial]
        d = figures.directional
        products = d[start + book.combo_i[combo]] * book.combo_rho[combo] * d[start + book.combo_j[combo]]
        quadratic = np.bincount(combo_trial, weights=products, minlength=n)
        margin = _portfolio_margin(book, per_trial(np.abs(d)), quadratic, per_trial(figures.rest))
        portfolio = equity - margin
        isolated = np.full(n, np.inf)
        present = np.flatnonzero(counts)
        if present.size:
            isolated[present] = np.minimum.reduceat(figures.isolated, (np.cumsum(counts) - counts)[present])
        mode = book.margin_input.portfolios.mode[account]
        return _fail_closed(mode, isolated, cross, portfolio)


def _fail_closed(
    mode: np.ndarray, isolated: np.ndarray, cross: np.ndarray, portfolio: np.ndarray
) -> np.ndarray:
    """The health of each row's own mode; in cross and portfolio mode NaN unless finite (an
    overflow is liquidation, never "healthy"); isolated health is +inf only with no position."""
    pooled = np.where(mode == CROSS, cross, portfolio)
    return np.where(mode == ISOLATED, isolated, np.where(np.isfinite(pooled), pooled, np.nan))


@dataclass(frozen=True, eq=False)
class Distances:
    """Distances to liquidation (spec section 9) for ``n_port`` portfolios and their ``n_pairs``
    pairs (``book`` as built). Moves are fractions ``x`` (price ``S·(1 + x)``), NaN when none in
    range, 0 for an account in liquidation now. Per pair ``(n_pairs,)``: ``down``, ``up``,
    ``down_price``, ``up_price`` USD, ``down_position``, ``up_position`` (isolated accounts: the
    first position to reach liquidation, input index; −1 otherwise). Per portfolio
    ``(n_port,)``: ``joint_down``, ``joint_up`` (every underlying moved by the same ``x``);
    ``rows`` the pair rows evaluated in all (the work done)."""

    book: Book
    down: np.ndarray
    up: np.ndarray
    down_price: np.ndarray
    up_price: np.ndarray
    down_position: np.ndarray
    up_position: np.ndarray
    joint_down: np.ndarray
    joint_up: np.ndarray
    rows: int


def distances(margin_input: MarginInput, *, book: Book | None = None, block_rows: int = 40_000) -> Distances:
    """Distances to liquidation of every portfolio of ``margin_input`` (see the module doc).
    ``block_rows``: about how many pair rows one grid evaluation takes (see ``_grid_stage``)."""
    book = book if book is not None else Book(margin_input)
    alive = book.result.status != LIQUIDATION
    counts = np.diff(book.pair_indptr)
    n_pairs, n_port = book.n_pairs, book.n_port
    pair_alive = alive[book.pair_portfolio]
    # Searches: down then up, per pair (single) and per portfolio (joint).
    single = _Brackets(np.tile(pair_alive, 2), np.tile(single_health(book, np.arange(n_pairs), book.base), 2))
    joint_h0 = account_health(book, np.arange(n_port), book.base)
    joint = _Brackets(np.tile(alive, 2), np.tile(joint_h0, 2), searched=np.tile(alive & (counts > 0), 2))
    # Option-free searches skip the grid, unless the whole grid is one evaluation anyway.
    small = _grid_pairs(book, single, joint, (0, 1)).size * GRID.size <= block_rows
    rows = 0 if small else _linear_ends(book, single, joint)
    rows += _grid_stage(book, single, joint, block_rows)
    while True:
        # Points per open search and round: two (around the false-position guess) across the
        # venue; more for a few searches (one account), where a round costs its call more than
        # its rows: ``k`` evenly spaced points cut the bracket ``k + 1`` times.
        open_rows = single.open_count() + int(counts[joint.open_index() % max(n_port, 1)].sum())
        if open_rows == 0:
            break
        k = int(min(MAX_POINTS, max(2, SMALL_ROUND_ROWS // open_rows)))
        ones, points = single.candidates(k)
        searches, joint_points = joint.candidates(k)
        # All points in one evaluation: single rows first (point after point), then every pair of
        # each joint search's account at each of its points.
        pairs, accounts = ones % n_pairs, searches % n_port
        members = _ranges(book.pair_indptr[accounts], counts[accounts])
        figures = evaluate_pairs(
            book, np.concatenate([np.tile(pairs, k), np.tile(members, k)]),
            np.concatenate([
                points.T.reshape(-1), np.repeat(joint_points.T.reshape(-1), np.tile(counts[accounts], k))
            ]),
        )  # fmt: skip
        n, m = ones.size, members.size
        rows += k * (n + m)
        health = single_health(book, np.tile(pairs, k), figures.take(np.arange(k * n)))
        single.update(ones, points, health.reshape(k, n).T, figures.position[: k * n].reshape(k, n).T)
        joint_health = account_health(book, np.tile(accounts, k), figures.take(np.arange(k * n, k * (n + m))))
        joint.update(searches, joint_points, joint_health.reshape(k, accounts.size).T, None)
    down, up = single.hi[:n_pairs], single.hi[n_pairs:]
    return Distances(
        book=book, down=down, up=up, down_price=book.pair_spot * (1.0 + down),
        up_price=book.pair_spot * (1.0 + up), down_position=single.position[:n_pairs],
        up_position=single.position[n_pairs:], joint_down=joint.hi[:n_port], joint_up=joint.hi[n_port:],
        rows=rows,
    )  # fmt: skip


def _linear_ends(book: Book, single: _Brackets, joint: _Brackets) -> int:
    """The searches of pairs without options, and the joint searches of accounts without options,
    skip the grid. Their health is concave in the move: linear values and margins (``∝ S'``),
    collateral whose haircut brackets only grow, ``E`` less a margin convex in the directional
    parts (``sqrt(DᵀρD)``, ``max(0, ·)``); an isolated account's is a minimum of affine ones. With
    ``h(0) ≥ 0`` the moves in liquidation in a direction are then the part of the range from one
    boundary to its end: none when the end of the range is safe, otherwise the bracket is the
    whole range (and false position closes it at once on a straight line). Returns the rows."""
    n_pairs, n_port = book.n_pairs, book.n_port
    linear = np.diff(book.entry_indptr) == 0
    linear_accounts = np.bincount(book.pair_portfolio, weights=~linear, minlength=n_port) == 0
    singles = np.flatnonzero(linear & single.on_grid[:n_pairs])
    accounts = np.flatnonzero(linear_accounts & joint.on_grid[:n_port])
    counts = np.diff(book.pair_indptr)
    pairs = np.union1d(singles, _ranges(book.pair_indptr[accounts], counts[accounts]))
    if pairs.size == 0:
        return 0
    ends = np.array([DOWN_LIMIT, UP_LIMIT])
    point = np.tile(np.arange(2), pairs.size)
    figures = evaluate_pairs(book, np.repeat(pairs, 2), ends[point], grid=(ends, point))
    row_of = np.full(n_pairs, -1)
    row_of[pairs] = np.arange(pairs.size)
    rows = 2 * row_of[singles]
    health = (
        single_health(book, singles, figures.take(rows)),
        single_health(book, singles, figures.take(rows + 1)),
    )
    position = figures.position[rows], figures.position[rows + 1]
    trial = np.repeat(accounts, counts[accounts])
    member_rows = 2 * row_of[_ranges(book.pair_indptr[accounts], counts[accounts])]
    joint_health = (
        account_health(book, accounts, figures.take(member_rows)),
        account_health(book, accounts, figures.take(member_rows + 1)),
    )
    del trial
    for direction in (0, 1):
        single.grid(singles + direction * n_pairs, ends[direction : direction + 1],
                    health[direction][:, None], position[direction][:, None])  # fmt: skip
        single.on_grid[singles + direction * n_pairs] = False
        joint.grid(
            accounts + direction * n_port,
            ends[direction : direction + 1],
            joint_health[direction][:, None],
            None,
        )
        joint.on_grid[accounts + direction * n_port] = False
    return int(point.size)


def _grid_stage(book: Book, single: _Brackets, joint: _Brackets, block_rows: int) -> int:
    """Every search along its direction's grid points (outward from 0), a block of points at a
    time: each block is one evaluation of the pairs some search still needs at those points
    (about ``block_rows`` rows: one point at a time across the venue, every point of both
    directions at once for one account), and a search stops at its first point in liquidation.
    Returns the rows evaluated."""
    needed = _grid_pairs(book, single, joint, (0, 1))
    if needed.size * GRID.size <= block_rows:
        rows = _grid_block(book, single, joint, needed, np.arange(GRID.size))
    else:
        rows = 0
        for direction, columns in enumerate((DOWN_COLUMNS, UP_COLUMNS)):
            start = 0
            while start < columns.size:
                pairs = _grid_pairs(book, single, joint, (direction,))
                if pairs.size == 0:
                    break
                size = int(min(columns.size - start, max(1, block_rows // pairs.size)))
                rows += _grid_block(book, single, joint, pairs, columns[start : start + size])
                start += size
    single.on_grid[:] = False
    joint.on_grid[:] = False
    return rows


def _grid_pairs(book: Book, single: _Brackets, joint: _Brackets, directions) -> np.ndarray:
    """The pairs a search of ``directions`` still on the grid needs (its own, or its account's)."""
    n_pairs, n_port = book.n_pairs, book.n_port
    need = np.zeros(n_pairs, dtype=bool)
    for d in directions:
        need |= single.on_grid[d * n_pairs : (d + 1) * n_pairs]
        need |= joint.on_grid[d * n_port : (d + 1) * n_port][book.pair_portfolio]
    return np.flatnonzero(need)


def _grid_block(
    book: Book, single: _Brackets, joint: _Brackets, pairs: np.ndarray, columns: np.ndarray
) -> int:
    """One evaluation of ``pairs`` at the grid points ``GRID[columns]``; each search still on the
    grid takes the points of its own direction (in order). Returns the rows evaluated."""
    n_pairs, n_port, size = book.n_pairs, book.n_port, columns.size
    counts = np.diff(book.pair_indptr)
    points = GRID[columns]
    point = np.tile(np.arange(size), pairs.size)
    pair_rows = np.repeat(pairs, size)
    figures = evaluate_pairs(book, pair_rows, points[point], grid=(points, point))
    health = single_health(book, pair_rows, figures).reshape(pairs.size, size)
    position = figures.position.reshape(pairs.size, size)
    accounts = np.flatnonzero(joint.on_grid[:n_port] | joint.on_grid[n_port:])
    if accounts.size:
        row_of = np.full(n_pairs, -1)
        row_of[pairs] = np.arange(pairs.size)
        trial_account = np.repeat(accounts, size)
        trial_point = np.tile(np.arange(size), accounts.size)
        members = _ranges(book.pair_indptr[trial_account], counts[trial_account])
        member_rows = row_of[members] * size + np.repeat(trial_point, counts[trial_account])
        joint_health = account_health(book, trial_account, figures.take(member_rows)).reshape(
            accounts.size, size
        )
    for direction, own in enumerate((DOWN_COLUMNS, UP_COLUMNS)):
        mine = np.flatnonzero(np.isin(columns, own))
        if mine.size == 0:
            continue
        index = pairs + direction * n_pairs
        on = np.flatnonzero(single.on_grid[index])
        single.grid(index[on], points[mine], health[np.ix_(on, mine)], position[np.ix_(on, mine)])
        if accounts.size:
            searches = accounts + direction * n_port
            on = np.flatnonzero(joint.on_grid[searches])
            joint.grid(searches[on], points[mine], joint_health[np.ix_(on, mine)], None)
    return int(point.size)


class _Brackets:
    """The searches of one direction, ``(n,)`` each: ``lo`` the safe end of the bracket and
    ``h_lo`` the health there, ``hi`` the end in liquidation (NaN: none found; 0: in liquidation
    now) and ``h_hi``, ``on_grid`` still stepping along the grid, ``position`` (isolated: the
    position found in liquidation at ``hi``), ``halved`` whether the last step at least halved the
    bracket.

    Inside a grid cell, each round evaluates two points ``0.9·PRECISION`` apart around a guess of
    the boundary: the false-position (secant) point of the bracket's two healths when the last
    round halved the bracket or better, its middle otherwise (bisection). The bracket becomes the
    part between two points of different status: the pair itself when it straddles the boundary
    (done: narrower than ``PRECISION``), else the part beside it. A smooth health is closed in one
    or two rounds; a kinked or non-finite one falls back to halving, one halving a round at worst.
    """

    def __init__(self, alive: np.ndarray, h0: np.ndarray, searched: np.ndarray | None = None) -> None:
        """``alive``: not in liquidation now (else at distance 0); ``searched`` (default
        ``alive``): to be searched (an account with nothing that moves is alive and never
        searched: no distance)."""
        n = alive.size
        self.lo, self.h_lo = np.zeros(n), h0.copy()
        self.hi, self.h_hi = np.where(alive, np.nan, 0.0), np.full(n, np.nan)
        self.on_grid = (alive if searched is None else searched).copy()
        self.position = np.full(n, -1, dtype=np.int64)
        self.halved = np.ones(n, dtype=bool)

    def grid(self, index, points, health, position) -> None:
        """Searches ``index`` (on the grid) at their next grid points ``points`` ``(n_points,)``
        (outward) with the healths ``(n, n_points)`` there: a search in liquidation at one stops
        with the bracket from the point before (or its last safe point) to it; the others move
        their safe end to the last point."""
        in_liquidation = ~(health >= 0.0)
        found = in_liquidation.any(axis=1)
        first = np.argmax(in_liquidation, axis=1)
        rows, cells = np.flatnonzero(found), first[found]
        hit = index[rows]
        self.hi[hit], self.h_hi[hit] = points[cells], health[rows, cells]
        self.on_grid[hit] = False
        if position is not None:
            self.position[hit] = position[rows, cells]
        inner = np.flatnonzero(cells > 0)
        self.lo[hit[inner]] = points[cells[inner] - 1]
        self.h_lo[hit[inner]] = health[rows[inner], cells[inner] - 1]
        safe = np.flatnonzero(~found)
        self.lo[index[safe]], self.h_lo[index[safe]] = points[-1], health[safe, -1]

    def open_index(self) -> np.ndarray:
        """The searches whose bracket is still wider than ``PRECISION``."""
        return np.flatnonzero(np.isfinite(self.hi) & (np.abs(self.hi - self.lo) > PRECISION))

    def open_count(self) -> int:
        return int(self.open_index().size)

    def candidates(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The open searches and their ``k`` points ``(n_open, k)`` in the direction of the search
        (the first nearer the safe end): for ``k = 2`` two points ``0.9·PRECISION`` apart around
        the false-position guess (the middle after a round that did not halve the bracket), else
        ``k`` points evenly inside the bracket."""
        index = self.open_index()
        lo, hi, h_lo, h_hi = self.lo[index], self.hi[index], self.h_lo[index], self.h_hi[index]
        width = hi - lo
        if k > 2:
            fractions = np.arange(1, k + 1) / (k + 1)
            return index, lo[:, None] + width[:, None] * fractions[None, :]
        secant = self.halved[index] & np.isfinite(h_lo) & np.isfinite(h_hi) & (h_lo > h_hi)
        with np.errstate(invalid="ignore", divide="ignore"):
            fraction = np.where(secant, h_lo / (h_lo - h_hi), 0.5)
        half_gap = 0.45 * PRECISION * np.sign(width)
        margin = np.abs(1.1 * half_gap / width)
        fraction = np.where(margin < 0.5, np.clip(fraction, margin, 1.0 - margin), 0.5)
        guess = lo + fraction * width
        return index, np.stack([guess - half_gap, guess + half_gap], axis=1)

    def update(self, index, points, health, position) -> None:
        """Narrow the brackets ``index`` from the healths ``(n, k)`` at their ``points``
        ``(n, k)``: the liquidation end moves to the first point in liquidation, the safe end to
        the point before it (all points, when none is in liquidation)."""
        before = np.abs(self.hi[index] - self.lo[index])
        in_liquidation = ~(health >= 0.0)
        found = in_liquidation.any(axis=1)
        first = np.where(found, np.argmax(in_liquidation, axis=1), points.shape[1])
        rows = np.arange(index.size)
        hit = np.flatnonzero(found)
        self.hi[index[hit]], self.h_hi[index[hit]] = points[hit, first[hit]], health[hit, first[hit]]
        if position is not None:
            self.position[index[hit]] = position[hit, first[hit]]
        moved = np.flatnonzero(first > 0)
        safe = first[moved] - 1
        self.lo[index[moved]], self.h_lo[index[moved]] = points[rows[moved], safe], health[rows[moved], safe]
        self.halved[index] = np.abs(self.hi[index] - self.lo[index]) <= 0.5 * before


# --- probability of liquidation within a horizon -------------------------------------------------

PATHS = 4096
STEPS = 32
SEED = 20261124
PROFILE_POINTS = 201
PROFILE_WIDTH = 10.0  # standard deviations of the horizon's log move each side
LOG_FLOOR, LOG_CAP = math.log(1.0 + DOWN_LIMIT), math.log(1.0 + UP_LIMIT)
GRADIENT_STEP = 1e-4


@functools.lru_cache(maxsize=4)
def scenario_normals(paths: int, steps: int, n_underlyings: int, seed: int) -> np.ndarray:
    """The fixed joint scenarios: standard normals ``(paths, steps, n_underlyings)`` from
    ``numpy.random.default_rng(seed)``, the second half the negatives of the first (antithetic).
    The same numbers for every account and every run (reproducible; read only)."""
    half = np.random.default_rng(seed).standard_normal((paths // 2, steps, n_underlyings))
    normals = np.concatenate([half, -half])
    normals.setflags(write=False)
    return normals


def correlation_root(correlation: np.ndarray) -> np.ndarray:
    """``L`` ``(n, n)`` with ``L·Lᵀ = ρ`` (symmetric square root by eigenvalues: ρ may be singular)."""
    values, vectors = np.linalg.eigh(correlation)
    return vectors * np.sqrt(np.maximum(values, 0.0))[None, :]


def liquidation_probability(
    book: Book,
    *,
    vols: np.ndarray,
    horizon_days: float,
    accounts: np.ndarray | None = None,
    paths: int = PATHS,
    steps: int = STEPS,
    seed: int = SEED,
    chunk: int = 8,
) -> np.ndarray:
    """Probability ``(n_accounts,)`` that each of ``accounts`` (default: all) reaches liquidation
    within ``horizon_days`` (calendar days, τ = days/365), from annualised ``vols`` ``(n_und,)`` and
    the parameter set's correlation matrix.

    Scenarios: ``paths`` joint log-price paths of ``steps`` equal steps, driftless in log price
    (``ln S_u(t)/S_u = σ_u·W_u(t)``, ``W`` Brownian with correlation ρ), from the fixed normals of
    ``scenario_normals``. Each account's pairs are tabulated once on a log-move grid of
    ``PROFILE_POINTS`` points (±``PROFILE_WIDTH``·σ_u√τ, within the section 9 ranges) with the exact
    engine figures (``evaluate_pairs``), interpolated linearly at the path points, and put together
    with ``account_health`` at every point. A path in liquidation at a point counts 1; otherwise
    between two points the Brownian bridge crossing probability ``exp(−2·h₀·h₁/(v·Δt))`` is
    applied, with ``v = gᵀΣg`` the variance rate of the health (``g`` its gradient in the log
    moves, ``Σ`` the annual covariance), and the path counts ``1 − Π(1 − p)``; isolated accounts
    do it per pair (a position liquidates on its own underlying's path). The probability is the
    mean over paths (0 when the account holds nothing that moves; 1 when in liquidation now).
    """
    p = book.margin_input.parameters
    accounts = np.arange(book.n_port) if accounts is None else np.asarray(accounts, dtype=np.int64)
    vols = np.asarray(vols, dtype=np.float64)
    tau = horizon_days / 365.0
    normals = scenario_normals(paths, steps, len(p.underlyings), seed)
    increments = normals @ correlation_root(p.correlation).T  # (paths, steps, n_und), unit variance
    log_paths = np.cumsum(increments, axis=1) * (vols * math.sqrt(tau / steps))[None, None, :]
    covariance = p.correlation * np.outer(vols, vols)
    out = np.ones(accounts.size)
    alive = book.result.status[accounts] != LIQUIDATION
    for start in range(0, accounts.size, chunk):
        part = np.flatnonzero(alive[start : start + chunk]) + start
        if part.size:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
                out[part] = _probability(book, accounts[part], log_paths, vols, covariance, tau / steps)
    return out


def _probability(book, accounts, log_paths, vols, covariance, dt) -> np.ndarray:
    p = book.margin_input.parameters
    n_paths, n_steps, _ = log_paths.shape
    counts = np.diff(book.pair_indptr)[accounts]
    pairs = _ranges(book.pair_indptr[accounts], counts)
    if pairs.size == 0:
        return np.zeros(accounts.size)
    und = book.pair_underlying[pairs]
    horizon_sd = vols[und] * math.sqrt(dt * n_steps)
    half = (PROFILE_POINTS - 1) // 2
    spacing = np.maximum(PROFILE_WIDTH * horizon_sd / half, 1e-12)
    below = np.minimum(half, np.floor(-LOG_FLOOR / spacing)).astype(np.int64)
    above = np.minimum(half, np.floor(LOG_CAP / spacing)).astype(np.int64)
    nodes = (np.arange(-half, half + 1)[None, :]) * spacing[:, None]  # (n_pairs, P)
    nodes = np.clip(nodes, (-below * spacing)[:, None], (above * spacing)[:, None])
    profile = evaluate_pairs(book, np.repeat(pairs, PROFILE_POINTS), np.expm1(nodes).reshape(-1))
    tables = {name: getattr(profile, name).reshape(pairs.size, PROFILE_POINTS) for name in FIGURES}

    # Log move of each pair's underlying at every point (n_points, n_pairs); point 0 is the start.
    moves = np.concatenate([np.zeros((n_paths, 1, pairs.size)), log_paths[:, :, und]], axis=1)
    moves = np.clip(moves.reshape(-1, pairs.size), -below * spacing, above * spacing)
    cell = np.clip(np.floor(moves / spacing) + half, 0, PROFILE_POINTS - 2).astype(np.int64)
    weight = (moves - nodes[np.arange(pairs.size), cell]) / spacing
    column = np.arange(pairs.size)
    modes = set(book.margin_input.portfolios.mode[accounts].tolist())
    needed = {"equity"} | ({"maintenance"} if CROSS in modes else set())
    needed |= {"directional", "rest"} if PORTFOLIO in modes else set()
    needed |= {"isolated"} if ISOLATED in modes else set()
    values, slopes = {}, {}
    for name, table in tables.items():
        if name not in needed:  # no account of the chunk reads it
            values[name] = slopes[name] = np.zeros(cell.shape)
            continue
        left, right = table[column, cell], table[column, cell + 1]
        same = left == right  # also +inf on both sides (no isolated position): stays +inf
        values[name] = np.where(same, left, left + weight * (right - left))
        slopes[name] = np.where(
            same | ~np.isfinite(left) | ~np.isfinite(right), 0.0, (right - left) / spacing
        )

    # The accounts' health from their pairs (dense over the chunk: membership, block correlation).
    pair_account = np.repeat(np.arange(accounts.size), counts)
    member = np.zeros((pairs.size, accounts.size))
    member[np.arange(pairs.size), pair_account] = 1.0
    same_account = pair_account[:, None] == pair_account[None, :]
    rho = np.where(same_account, p.correlation[und[:, None], und[None, :]], 0.0)
    cov = np.where(same_account, covariance[und[:, None], und[None, :]], 0.0)
    equity = book.equity_rest[accounts] + values["equity"] @ member
    d = values["directional"]
    rho_d = d @ rho
    abs_directional = np.abs(d) @ member
    root = np.sqrt(np.maximum(0.0, (d * rho_d) @ member))
    aggregated = np.minimum(root, abs_directional)
    scan_dir = abs_directional - p.offset_cap * (abs_directional - aggregated)
    mode = book.margin_input.portfolios.mode[accounts]
    h = np.where(
        mode == CROSS, equity - values["maintenance"] @ member,
        np.where(mode == PORTFOLIO, equity - p.mm_ratio * (scan_dir + values["rest"] @ member), np.inf),
    )  # fmt: skip
    h = np.where(np.isfinite(h) | (mode == ISOLATED), h, np.nan)  # fail closed
    # Gradient of the health in each pair's log move, and its variance rate g'Σg per account.
    sign = np.sign(d)
    on_root = (root < abs_directional)[:, pair_account]
    root_pair = root[:, pair_account]
    d_aggregated = np.where(on_root, np.where(root_pair > 0.0, rho_d / root_pair, 0.0), sign)
    d_scan = (1.0 - p.offset_cap) * sign + p.offset_cap * d_aggregated
    portfolio_gradient = slopes["equity"] - p.mm_ratio * (d_scan * slopes["directional"] + slopes["rest"])
    cross_gradient = slopes["equity"] - slopes["maintenance"]
    gradient = np.where((mode == CROSS)[pair_account], cross_gradient, portfolio_gradient)
    variance = ((gradient @ cov) * gradient) @ member

    shape = (n_paths, n_steps + 1, -1)
    survive = _survival(h.reshape(shape), variance.reshape(shape), dt)
    # Isolated accounts: per pair, each position on its own underlying's path.
    isolated = mode == ISOLATED
    if isolated.any():
        iso_pairs = np.flatnonzero(isolated[pair_account])
        iso_h = values["isolated"][:, iso_pairs]
        iso_v = (slopes["isolated"][:, iso_pairs] * vols[und[iso_pairs]]) ** 2
        pair_survive = _survival(iso_h.reshape(shape), iso_v.reshape(shape), dt)
        iso_member = member[iso_pairs][:, isolated]
        survive[:, isolated] = np.exp(np.log(np.maximum(pair_survive, 1e-300)) @ iso_member)
    return 1.0 - survive.mean(axis=0)


def _survival(h: np.ndarray, variance: np.ndarray, dt: float) -> np.ndarray:
    """Per path ``(n_paths, n)``: the probability of no liquidation along it, from the health ``h``
    and its variance rate ``variance`` ``(n_paths, n_steps + 1, n)`` at each point (point 0 the
    start): 0 once a point is in liquidation, else the product over steps of one minus the bridge
    crossing probability."""
    safe = h >= 0.0
    rate = 0.5 * (variance[:, 1:] + variance[:, :-1])
    exponent = np.where(rate > 0.0, -2.0 * h[:, 1:] * h[:, :-1] / (rate * dt), -np.inf)
    crossing = np.where(safe[:, 1:] & safe[:, :-1], np.exp(exponent), 1.0)
    return np.prod(1.0 - crossing, axis=1)


def barrier_probability(move: float, vol: float, horizon_days: float) -> float:
    """The zero-drift barrier probability of section 9 for a move ``x`` (down ``x < 0``:
    ``2·N(ln(1 + x)/(σ√τ))``; up: ``2·N(−ln(1 + x)/(σ√τ))``), τ in years (days/365)."""
    z = math.log1p(move) / (vol * math.sqrt(horizon_days / 365.0))
    return float(2.0 * ndtr(-abs(z)))

"""Fixed portfolios at many markets at once: initial margin and value changes along a price path.

The backtest (``riskengine.core.backtest``) margins every portfolio of a document at the closes of
every day of a history, and the stress test (``riskengine.core.stress``) revalues them under every
scenario. Both hold the portfolios fixed and change the market, so the work is organised around a
leading *market axis* of ``n`` markets (days or scenarios); nothing loops over portfolios,
positions or markets in Python.

Instrument axis: only the ``n_held`` instruments some position refers to are valued
(``held_instruments``). Markets share the document's instrument table (kind, strike, multiplier,
time to expiry ``T``, iv); a market changes the underlyings' prices, and optionally moves time on
(``T - elapsed``) and scales ivs.

**Value changes** (``wealth_change``): ``W = sum_a b_a * P_a + sum_i value_i`` (collateral at market
value, no haircut; spec sections 7 and 8). Per unit, an instrument is worth ``S`` (linear; the
entry price cancels in any change of ``W``) or its Black-76 price (options), so with ``U``
``(n_port, n_held)`` the summed units ``q*m`` and ``B`` ``(n_port, n_assets)`` the balances,
``dW = dV @ U.T + dP @ B.T``: two sparse products give every (market, portfolio); USD.

**Initial margin** (``daily_initial_margin``), each portfolio in its own mode:

- ``isolated`` and ``cross``: ``IM = sum_i IM_i`` (spec 4a). Per unit, a linear position needs
  ``S*imf`` either way, a short option ``max(option_imf*S - otm, option_min*S)``, a long option 0,
  so ``IM = IM_long_unit @ L.T + IM_short_unit @ S.T`` with ``L`` and ``S`` the gross long and short
  units of each portfolio (positions are never merged: a long and a short of one instrument both
  count).
- ``portfolio``: the spec 4b scan, computed with the engine's own steps (``instrument_table``,
  ``pair_scan``, ``pair_charges``, ``portfolio_risk`` of ``riskengine.core.margin``) on an
  *expanded* market whose underlyings are the pairs (market, underlying) and whose instruments are
  the pairs (held instrument, market): every market gets its own prices and its own psr (the backtest's
  ``calibrated`` mode recomputes psr every day). The (portfolio, underlying) pairs are found once;
  one sparse product ``W (n_pairs, n_held) @ table (n_held, markets x (n_scenarios + 4))`` gives
  every pair's scenario P&L and dollar delta in every market. Basis is ``S`` times a per-pair
  constant (the net units of each expiry bucket do not change), the short option units do not
  change either. The correlation step runs on the base underlyings (each expanded pair keeps its
  underlying's row of rho), so its dense matrix is ``(markets x portfolios, n_und)``, never
  ``n_und x markets`` wide.

Markets are taken in chunks whose arrays stay under ``chunk_bytes`` (default 64 MiB): a loop over
blocks of markets bounds memory for 10^4 portfolios x 10^3 days; one account's whole history is one
chunk. ``tests/riskengine/test_backtest.py`` checks every figure against ``compute_margin`` run on
one market at a time.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .black76 import black76_price
from .document import PORTFOLIO, MarginInput
from .margin import basis_buckets, instrument_table, pair_charges, pair_scan, portfolio_risk
from .market import OPTION
from .params import UNDERLYING_FIELDS, Parameters

CHUNK_BYTES = 64 * 2**20
_PER_UNDERLYING = (*UNDERLYING_FIELDS, "extreme_multiple", "extreme_coverage", "extreme_valid")


def held_instruments(margin_input: MarginInput) -> tuple[np.ndarray, np.ndarray]:
    """``(held, local)``: ``held`` ``(n_held,)`` the sorted instrument indices some position refers
    to, ``local`` ``(n_pos,)`` each position's index into ``held``."""
    held, local = np.unique(margin_input.portfolios.position_instrument, return_inverse=True)
    return held, local.reshape(-1)


def unit_values(
    margin_input: MarginInput,
    held: np.ndarray,
    underlying_price: np.ndarray,
    *,
    elapsed_years: float = 0.0,
    iv_factor: np.ndarray | float = 1.0,
) -> np.ndarray:
    """Value per unit ``(n, n_held)`` USD of the ``held`` instruments in ``n`` markets:
    ``underlying_price`` ``(n, n_und)`` USD; options at ``T - elapsed_years`` (intrinsic at or past
    expiry) and ``iv * iv_factor`` (``iv_factor`` a float or ``(n,)``); linear instruments ``S``."""
    m, p = margin_input.market, margin_input.parameters
    spot = underlying_price[:, m.underlying[held]]
    values = spot.copy()
    option = np.flatnonzero(m.kind[held] == OPTION)
    if option.size:
        inst = held[option]
        vol = m.iv[inst][None, :] * np.reshape(np.asarray(iv_factor, dtype=np.float64), (-1, 1))
        values[:, option] = black76_price(
            spot[:, option], m.strike[inst][None, :], vol, (m.years[inst] - elapsed_years)[None, :],
            m.is_call[inst][None, :], p.rate,
        )  # fmt: skip
    return values


def unit_matrices(margin_input: MarginInput, local: np.ndarray, n_held: int) -> tuple[sp.csr_matrix, ...]:
    """``(units, long_units, short_units)`` CSR ``(n_port, n_held)``: each portfolio's summed signed
    units ``q*m`` of each held instrument, and its gross long and short units (``|q*m|``)."""
    f, m = margin_input.portfolios, margin_input.market
    units = f.position_quantity * m.multiplier[f.position_instrument]
    shape = (f.n_portfolios, n_held)

    def matrix(values: np.ndarray) -> sp.csr_matrix:
        out = sp.csr_matrix((values, (f.position_portfolio, local)), shape=shape)
        out.sum_duplicates()
        return out

    return matrix(units), matrix(np.maximum(units, 0.0)), matrix(np.maximum(-units, 0.0))


def balance_matrix(margin_input: MarginInput) -> sp.csr_matrix:
    """Balances ``(n_port, n_assets)`` CSR, units of each asset (several entries added)."""
    f = margin_input.portfolios
    shape = (f.n_portfolios, len(margin_input.parameters.assets))
    out = sp.csr_matrix((f.balance_amount, (f.balance_portfolio, f.balance_asset)), shape=shape)
    out.sum_duplicates()
    return out


@dataclass(frozen=True, eq=False)
class WealthChange:
    """``W_after - W_before`` over ``n`` pairs of markets, kept by instrument and asset.

    ``held`` ``(n_held,)`` instrument indices; ``units`` CSR ``(n_port, n_held)`` summed ``q*m``;
    ``balances`` CSR ``(n_port, n_assets)``; ``unit_change`` ``(n, n_held)`` USD the change of
    value per unit of each held instrument; ``asset_change`` ``(n, n_assets)`` USD per unit.
    """

    margin_input: MarginInput
    held: np.ndarray
    units: sp.csr_matrix
    balances: sp.csr_matrix
    unit_change: np.ndarray
    asset_change: np.ndarray

    def total(self) -> np.ndarray:
        """``(n, n_port)`` USD: every portfolio's change in every market (two sparse products)."""
        change = self.units @ self.unit_change.T + self.balances @ self.asset_change.T
        return np.ascontiguousarray(np.asarray(change).T)

    def split(self, market: np.ndarray, portfolio: np.ndarray) -> np.ndarray:
        """``(k, n_und + 1)`` USD: the change of ``portfolio[j]`` in ``market[j]`` (``(k,)`` each)
        by underlying (its positions and linked collateral), the last column the other
        collateral; each row adds up to the change. Work in the entries of those portfolios."""
        p, m = self.margin_input.parameters, self.margin_input.market
        n_und, k = len(p.underlyings), portfolio.size
        out = np.zeros(k * (n_und + 1))
        for matrix, change, column in (
            (self.units, self.unit_change, m.underlying[self.held]),
            (self.balances, self.asset_change, np.where(p.asset_underlying >= 0, p.asset_underlying, n_und)),
        ):
            rows = matrix[portfolio]
            owner = np.repeat(np.arange(k), np.diff(rows.indptr))
            values = rows.data * change[market[owner], rows.indices]
            out += np.bincount(owner * (n_und + 1) + column[rows.indices], weights=values, minlength=out.size)
        return out.reshape(k, n_und + 1)


def wealth_change(
    margin_input: MarginInput,
    before: tuple[np.ndarray, np.ndarray],
    after: tuple[np.ndarray, np.ndarray],
    *,
    elapsed_years: float,
    iv_factor: np.ndarray | float = 1.0,
) -> WealthChange:
    """``W_after - W_before`` over ``n`` pairs of markets (``.total()`` ``(n, n_port)`` USD).

    ``before`` and ``after`` are ``(underlying_price (n, n_und), asset_price (n, n_assets))`` USD.
    ``before`` values options at ``T`` and their marked iv; ``after`` at ``T - elapsed_years`` and
    ``iv * iv_factor``. ``W`` is collateral at market value (no haircut) plus position values.
    """
    held, local = held_instruments(margin_input)
    units, _, _ = unit_matrices(margin_input, local, held.size)
    unit_change = unit_values(
        margin_input, held, after[0], elapsed_years=elapsed_years, iv_factor=iv_factor
    ) - unit_values(margin_input, held, before[0])
    return WealthChange(
        margin_input=margin_input, held=held, units=units, balances=balance_matrix(margin_input),
        unit_change=unit_change, asset_change=after[1] - before[1],
    )  # fmt: skip


def daily_initial_margin(
    margin_input: MarginInput,
    underlying_price: np.ndarray,
    psr: np.ndarray | None = None,
    *,
    chunk_bytes: int = CHUNK_BYTES,
) -> np.ndarray:
    """Initial margin ``(n, n_port)`` USD of every portfolio, in its own mode, in ``n`` markets.

    ``underlying_price`` ``(n, n_und)`` USD (every underlying priced, > 0); ``psr`` ``(n, n_und)``
    the scan range of each market (default: the parameter set's). Options keep the document's ``T``
    and iv. Equal (to rounding) to ``compute_margin(...).initial_margin`` at each market.
    """
    p, m, f = margin_input.parameters, margin_input.market, margin_input.portfolios
    if psr is None:
        psr = np.broadcast_to(p.psr, underlying_price.shape)
    held, local = held_instruments(margin_input)
    _, long_units, short_units = unit_matrices(margin_input, local, held.size)
    # Figures that overflow come out as inf/NaN without a warning, as in ``compute_margin``.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        # Standard rules (isolated, cross): per unit IM of each held instrument in each market.
        spot = underlying_price[:, m.underlying[held]]  # (n, n_held)
        is_option = m.kind[held] == OPTION
        strike, is_call = m.strike[held], m.is_call[held]
        otm = np.where(is_call, np.maximum(0.0, strike - spot), np.maximum(0.0, spot - strike))
        linear_im = spot * p.imf[m.underlying[held]]
        short_option_im = np.maximum(p.option_imf * spot - otm, p.option_min * spot)
        im_long = np.where(is_option, 0.0, linear_im)
        im_short = np.where(is_option, short_option_im, linear_im)
        initial_margin = np.asarray(long_units @ im_long.T + short_units @ im_short.T).T.copy()
        in_portfolio_mode = np.flatnonzero(f.mode == PORTFOLIO)
        if in_portfolio_mode.size:
            initial_margin[:, in_portfolio_mode] = _portfolio_rules(
                margin_input, in_portfolio_mode, underlying_price, np.asarray(psr, dtype=np.float64),
                chunk_bytes=chunk_bytes,
            )  # fmt: skip
    return initial_margin


def _portfolio_rules(
    margin_input: MarginInput,
    portfolios: np.ndarray,
    underlying_price: np.ndarray,
    psr: np.ndarray,
    *,
    chunk_bytes: int,
) -> np.ndarray:
    """Portfolio-mode IM ``(n, len(portfolios))`` of the portfolios ``portfolios`` (indices)."""
    p, m, f = margin_input.parameters, margin_input.market, margin_input.portfolios
    n, n_und = underlying_price.shape
    n_sel = portfolios.size
    selected = np.full(f.n_portfolios, -1, dtype=np.int64)
    selected[portfolios] = np.arange(n_sel)

    # Positions and balances of the selected portfolios, with portfolio indices 0..n_sel-1.
    pos = np.flatnonzero(selected[f.position_portfolio] >= 0)
    pos_port = selected[f.position_portfolio[pos]]
    held, pos_local = np.unique(f.position_instrument[pos], return_inverse=True)
    pos_local = pos_local.reshape(-1)
    n_held = held.size
    held_und = m.underlying[held]
    bal = np.flatnonzero(
        (selected[f.balance_portfolio] >= 0)
        & (p.asset_underlying[f.balance_asset] >= 0)
        & (f.balance_amount != 0.0)
    )  # linked balances: in the scan like a spot position of their underlying
    bal_port = selected[f.balance_portfolio[bal]]
    bal_und = p.asset_underlying[f.balance_asset[bal]]

    # (portfolio, underlying) pairs, once for every market.
    pos_key = pos_port * n_und + held_und[pos_local]
    bal_key = bal_port * n_und + bal_und
    pair_key = np.unique(np.concatenate([pos_key, bal_key]))
    n_pairs = pair_key.size
    pair_port, pair_und = np.divmod(pair_key, n_und)
    units = f.position_quantity[pos] * m.multiplier[held[pos_local]]
    weights = sp.csr_matrix((units, (np.searchsorted(pair_key, pos_key), pos_local)), shape=(n_pairs, n_held))
    weights.sum_duplicates()
    linked_units = np.bincount(
        np.searchsorted(pair_key, bal_key), weights=f.balance_amount[bal], minlength=n_pairs
    )
    option = m.kind[held] == OPTION
    short_units = np.bincount(
        np.repeat(np.arange(n_pairs), np.diff(weights.indptr)),
        weights=np.where(option[weights.indices], np.maximum(-weights.data, 0.0), 0.0),
        minlength=n_pairs,
    )  # net short option units per instrument, as the engine counts them (spec 4b.9)
    # Basis per unit of the underlying's price: sum over expiry buckets of |net units| * rate.
    bucket, bucket_rate = basis_buckets(margin_input)
    held_bucket = bucket[held]
    linear = np.flatnonzero(held_bucket >= 0)
    basis_per_price = np.zeros(n_pairs)
    if linear.size:
        to_bucket = sp.csr_matrix(
            (np.ones(linear.size), (linear, held_bucket[linear])), shape=(n_held, bucket_rate.size)
        )
        net = (weights @ to_bucket).tocsr()
        rows = np.repeat(np.arange(n_pairs), np.diff(net.indptr))
        basis_per_price = np.bincount(
            rows, weights=np.abs(net.data) * bucket_rate[net.indices], minlength=n_pairs
        )

    n_s = p.n_scenarios
    columns = n_s + 4
    per_market = 8 * columns * (n_held + 4 * n_pairs) + 8 * n_sel * (n_und + 8)
    step = max(1, int(chunk_bytes // per_market))
    out = np.empty((n, n_sel))
    for start in range(0, n, step):  # blocks of markets, to bound memory (module doc)
        stop = min(n, start + step)
        out[start:stop] = _portfolio_rules_block(
            margin_input, held, weights, underlying_price[start:stop], psr[start:stop],
            pair_port=pair_port, pair_und=pair_und, linked_units=linked_units,
            short_units=short_units, basis_per_price=basis_per_price, n_sel=n_sel,
        )  # fmt: skip
    return out


def _expanded_parameters(p: Parameters, psr: np.ndarray) -> Parameters:
    """``p`` with one underlying per (market, underlying): ``psr`` ``(d, n_und)`` flattened,
    every other per-underlying array repeated ``d`` times. The correlation is not expanded (the
    correlation step runs on the base underlyings)."""
    d = psr.shape[0]
    changes = {name: np.tile(getattr(p, name), (d,) + (1,) * (getattr(p, name).ndim - 1))
               for name in _PER_UNDERLYING}  # fmt: skip
    changes["psr"] = psr.reshape(-1)
    return dataclasses.replace(p, underlyings=p.underlyings * d, **changes)


def _portfolio_rules_block(
    margin_input: MarginInput,
    held: np.ndarray,
    weights: sp.csr_matrix,
    underlying_price: np.ndarray,
    psr: np.ndarray,
    *,
    pair_port: np.ndarray,
    pair_und: np.ndarray,
    linked_units: np.ndarray,
    short_units: np.ndarray,
    basis_per_price: np.ndarray,
    n_sel: int,
) -> np.ndarray:
    """Portfolio-mode IM ``(d, n_sel)`` in ``d`` markets (see ``_portfolio_rules``)."""
    p, m = margin_input.parameters, margin_input.market
    d, n_und = underlying_price.shape
    n_held, n_pairs = held.size, pair_und.size
    expanded_p = _expanded_parameters(p, psr)
    # Expanded instruments in (held instrument, market) order and expanded underlyings in
    # (market, underlying) order: instrument (i, t) has row i * d + t and underlying t * n_und + u.
    shift = np.arange(d) * n_und
    names = tuple(name for i in held.tolist() for name in (m.instruments[i],) * d)
    expanded_m = dataclasses.replace(
        m,
        underlying_price=underlying_price.reshape(-1),
        instruments=names,
        kind=np.repeat(m.kind[held], d),
        underlying=(m.underlying[held][:, None] + shift[None, :]).reshape(-1),
        multiplier=np.repeat(m.multiplier[held], d),
        years=np.repeat(m.years[held], d),
        strike=np.repeat(m.strike[held], d),
        is_call=np.repeat(m.is_call[held], d),
        iv=np.repeat(m.iv[held], d),
    )
    expanded = dataclasses.replace(margin_input, parameters=expanded_p, market=expanded_m)
    grid, _, table = instrument_table(expanded)
    n_s = grid.price_move.shape[1]
    columns = n_s + 4
    # table (n_held * d, columns) is (n_held, d * columns) as it stands: one sparse product gives
    # every pair in every market, (n_pairs, d * columns), whose rows are (pair, market) pairs.
    aggregated = np.asarray(weights @ table.reshape(n_held, d * columns)).reshape(n_pairs * d, columns)
    pair_underlying = (pair_und[:, None] + shift[None, :]).reshape(-1)  # expanded underlying of each row
    spot = underlying_price.reshape(-1)
    linked_delta = np.repeat(linked_units, d) * spot[pair_underlying]
    scenario = aggregated[:, :n_s]  # a view: pair_scan changes it in place, aggregated is not needed after
    delta_usd = aggregated[:, n_s] + linked_delta
    _, scan_risk = pair_scan(grid, pair_underlying, scenario, linked_delta)
    directional, non_directional, pair_som, pair_conc = pair_charges(
        expanded_p, pair_underlying, scan_risk, delta_usd, np.repeat(short_units, d), spot
    )
    market_portfolio = (np.arange(d)[None, :] * n_sel + pair_port[:, None]).reshape(-1)  # of each row
    risk = portfolio_risk(
        p, market_portfolio, np.repeat(pair_und, d), d * n_sel,
        directional=directional, non_directional=non_directional,
        basis=np.repeat(basis_per_price, d) * spot[pair_underlying], som=pair_som, concentration=pair_conc,
    )  # fmt: skip
    return risk["im"].reshape(d, n_sel)

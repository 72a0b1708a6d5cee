"""Engine results as the JSON-ready dicts of spec section 5 (field names are the contract)."""

from __future__ import annotations

import math

import numpy as np

from .document import MODES
from .margin import STATUSES, VOL_MOVES, MarginResult


def _money(value) -> float:
    """A Python float; outputs are not rounded (replays must reproduce the exact figures)."""
    return float(value) + 0.0  # + 0.0 turns -0.0 into 0.0


def result_dicts(result: MarginResult, indices=None) -> list[dict]:
    """One dict per portfolio in ``indices`` (default all, in portfolio order)."""
    inp = result.margin_input
    p, m, f = inp.parameters, inp.market, inp.portfolios
    n_port = f.n_portfolios
    indices = range(n_port) if indices is None else indices
    # Positions grouped by portfolio, keeping their input order within each portfolio.
    order = np.argsort(f.position_portfolio, kind="stable")
    pos_indptr = np.searchsorted(f.position_portfolio[order], np.arange(n_port + 1))
    grid = result.grid
    out = []
    for k in indices:
        k = int(k)
        ratio = result.margin_ratio[k]
        by_underlying = []
        for r in range(result.pair_indptr[k], result.pair_indptr[k + 1]):
            u, s = int(result.pair_underlying[r]), int(result.worst_scenario[r])
            by_underlying.append(
                {
                    "underlying": p.underlyings[u],
                    "scan_risk": _money(result.scan_risk[r]),
                    "directional": _money(result.directional[r]),
                    "delta_usd": _money(result.delta_usd[r]),
                    "gamma_usd": _money(result.gamma_usd[r]),
                    "vega_usd": _money(result.vega_usd[r]),
                    "theta_usd": _money(result.theta_usd[r]),
                    "worst_scenario": {
                        "price_move": float(grid.price_move[u, s]),
                        "vol_move": VOL_MOVES[grid.vol_move[s]],
                        "kind": "extreme" if grid.is_extreme[s] else "standard",
                    },
                }
            )
        positions = [
            {
                "instrument": m.instruments[f.position_instrument[j]],
                "quantity": float(f.position_quantity[j]),
                "price": _money(result.position_price[j]),
                "value": _money(result.position_value[j]),
                "delta_usd": _money(result.position_delta_usd[j]),
                "initial_margin": _money(result.position_initial_margin[j]),
            }
            for j in order[pos_indptr[k] : pos_indptr[k + 1]]
        ]
        out.append(
            {
                "id": f.ids[k],
                "mode": MODES[result.mode[k]],
                "status": STATUSES[result.status[k]],
                "equity": _money(result.equity[k]),
                "collateral_value": _money(result.collateral_value[k]),
                "initial_margin": _money(result.initial_margin[k]),
                "maintenance_margin": _money(result.maintenance_margin[k]),
                "excess": _money(result.excess[k]),
                "margin_ratio": None if math.isnan(ratio) else float(ratio),
                "components": {
                    "scan_directional": _money(result.scan_directional[k]),
                    "scan_non_directional": _money(result.scan_non_directional[k]),
                    "correlation_credit": _money(result.correlation_credit[k]),
                    "basis": _money(result.basis[k]),
                    "short_option_minimum": _money(result.short_option_minimum[k]),
                    "concentration": _money(result.concentration[k]),
                },
                "by_underlying": by_underlying,
                "positions": positions,
                "comparison": {
                    "isolated": _money(result.required_isolated[k]),
                    "cross": _money(result.required_cross[k]),
                    "portfolio": _money(result.required_portfolio[k]),
                },
            }
        )
    return out

"""Engine results as the JSON-ready dicts of spec section 5 (field names are the contract)."""

from __future__ import annotations

import math
from json.encoder import encode_basestring_ascii

import numpy as np
import orjson

from .document import ISOLATED, MODES
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
        isolated = result.mode[k] == ISOLATED
        positions = [
            {
                "instrument": m.instruments[f.position_instrument[j]],
                "quantity": float(f.position_quantity[j]),
                "price": _money(result.position_price[j]),
                "value": _money(result.position_value[j]),
                "delta_usd": _money(result.position_delta_usd[j]),
                "initial_margin": _money(result.position_initial_margin[j]),
                "maintenance_margin": _money(result.position_maintenance_margin[j]),
                "allocated_margin": _money(result.position_allocated_margin[j]) if isolated else None,
                "equity": _money(result.position_equity[j]) if isolated else None,
                "status": STATUSES[result.position_status[j]] if isolated else None,
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
                "free_collateral": _money(result.free_collateral[k]) if isolated else None,
                "comparison": {
                    "isolated": _money(result.required_isolated[k]),
                    "cross": _money(result.required_cross[k]),
                    "portfolio": _money(result.required_portfolio[k]),
                },
            }
        )
    return out


def _texts(values: np.ndarray, *, money: bool = True) -> list[str]:
    """JSON texts of a float array, exactly as ``json.dumps`` writes them (``float.__repr__``);
    ``money`` turns -0.0 into 0.0 like ``_money``. The whole array goes through one
    ``orjson.dumps`` (its digits are ``repr``'s: the shortest that read back to the same float64,
    ~6x faster than ``repr`` of a list); orjson spells the figures below 1e-4 in size differently
    (``0.00001``, ``1.5e-7`` where ``repr`` writes ``1e-05``, ``1.5e-07``): those few go through
    ``float.__repr__``."""
    values = np.ascontiguousarray(values + 0.0 if money else values, dtype=np.float64)
    if not values.size:
        return []
    texts = orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1].decode().split(",")
    for k in np.flatnonzero((np.abs(values) < 1e-4) & (values != 0.0)).tolist():
        texts[k] = float.__repr__(float(values[k]))
    return texts


def _texts_by(values: np.ndarray, key: np.ndarray) -> list[str]:
    """``_texts(values)`` when ``values`` depends on ``key`` only (a position's price on its
    instrument): each distinct key's value is formatted once."""
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    texts = _texts(values[first])
    return [texts[k] for k in inverse.reshape(-1).tolist()]


_PAIR = (
    '{"underlying":%s,"scan_risk":%s,"directional":%s,"delta_usd":%s,"gamma_usd":%s,"vega_usd":%s,'
    '"theta_usd":%s,"worst_scenario":%s}'
)
_POSITION = (
    '{"instrument":%s,"quantity":%s,"price":%s,"value":%s,"delta_usd":%s,"initial_margin":%s,'
    '"maintenance_margin":%s,"allocated_margin":%s,"equity":%s,"status":%s}'
)
_PORTFOLIO = (
    '{"id":%s,"mode":%s,"status":%s,"equity":%s,"collateral_value":%s,"initial_margin":%s,'
    '"maintenance_margin":%s,"excess":%s,"margin_ratio":%s,"components":{"scan_directional":%s,'
    '"scan_non_directional":%s,"correlation_credit":%s,"basis":%s,"short_option_minimum":%s,'
    '"concentration":%s},"by_underlying":[%s],"positions":[%s],"free_collateral":%s,'
    '"comparison":{"isolated":%s,"cross":%s,"portfolio":%s}}'
)


def _only_isolated(texts: list[str], isolated: np.ndarray) -> list[str]:
    """``texts`` with ``null`` wherever ``isolated`` ``(len(texts),)`` is False (spec section 5:
    the isolated fields are null outside isolated mode)."""
    column = np.array(texts, dtype=object)
    column[~isolated] = "null"
    return column.tolist()


def _rows(template: str, columns: list[list[str]], seps: list[str]) -> str:
    """``"".join(template % row + sep for row, sep in zip(zip(*columns), seps))``, without a
    Python-level step per row: the template's literal pieces and the columns are interleaved by
    slice assignment into one list, which is joined once (both loops run in C)."""
    literals = template.split("%s")
    n = len(seps)
    width = len(literals) + len(columns) + 1
    parts: list = [None] * (n * width)
    for c, column in enumerate(columns):
        parts[2 * c + 1 :: width] = column
    for c, literal in enumerate(literals):
        parts[2 * c :: width] = [literal] * n
    parts[width - 1 :: width] = seps
    return "".join(parts)


_SEP = "\x00"  # never in the text: encode_basestring_ascii writes a NUL as \u0000


def _grouped(template: str, columns: list[list[str]], owner: np.ndarray, n_groups: int) -> list[str]:
    """Per group (``owner``: each row's group, 0 ≤ owner < n_groups, non-decreasing), its rows'
    ``template`` texts joined by commas, ``""`` for a group without rows. One ``_rows`` for all:
    a row is followed by a comma, or by one NUL per group boundary crossed, then split on NUL."""
    if not owner.size:
        return [""] * n_groups
    crossed = np.diff(owner, append=n_groups).tolist()
    seps = ["," if c == 0 else _SEP * c for c in crossed]
    return (_SEP * int(owner[0]) + _rows(template, columns, seps)).split(_SEP)[:n_groups]


def write_json(result: MarginResult, stream, *, chunk: int = 2000) -> None:
    """Write ``result_dicts(result)`` to ``stream`` as compact JSON (``separators=(",", ":")``,
    ``ensure_ascii``), byte for byte what ``json.dumps`` would write.

    Built for the CLI, streaming: ``chunk`` portfolios at a time, each chunk's float arrays (its
    portfolios', pairs' and positions') are turned into text in one pass each, rows are templates
    filled by ``_rows`` (no per-row Python step), no result dict is built, and memory stays bounded
    by the chunk. The caller checks that the result is finite first (``require_finite``): a NaN
    would be written as ``NaN``, which is not JSON.
    """
    inp = result.margin_input
    p, m, f = inp.parameters, inp.market, inp.portfolios
    n_port = f.n_portfolios
    text = encode_basestring_ascii
    grid = result.grid
    kinds = ["extreme" if extreme else "standard" for extreme in grid.is_extreme.tolist()]
    vols = [VOL_MOVES[v] for v in grid.vol_move.tolist()]
    scenario_text = [
        [
            f'{{"price_move":{move!r},"vol_move":"{vol}","kind":"{kind}"}}'
            for move, vol, kind in zip(moves, vols, kinds, strict=True)
        ]
        for moves in grid.price_move.tolist()
    ]
    underlying_text = [text(name) for name in p.underlyings]
    instrument_text = [text(name) for name in m.instruments]
    mode_text = [text(name) for name in MODES]
    status_text = [text(name) for name in STATUSES]
    order = np.argsort(f.position_portfolio, kind="stable")
    sorted_portfolio = f.position_portfolio[order]
    pos_indptr = np.searchsorted(sorted_portfolio, np.arange(n_port + 1))
    pair_indptr = result.pair_indptr
    pair_portfolio = np.repeat(np.arange(n_port), np.diff(pair_indptr))
    # Each position's price depends on its instrument only: formatted once per instrument.
    price_text = _texts_by(result.position_price, f.position_instrument)

    stream.write("[")
    for k0 in range(0, n_port, chunk):
        k1 = min(k0 + chunk, n_port)
        r = slice(int(pair_indptr[k0]), int(pair_indptr[k1]))
        pair_underlying = result.pair_underlying[r].tolist()
        worst = [
            scenario_text[u][s]
            for u, s in zip(pair_underlying, result.worst_scenario[r].tolist(), strict=True)
        ]
        pairs = _grouped(_PAIR, [
            [underlying_text[u] for u in pair_underlying],
            _texts(result.scan_risk[r]), _texts(result.directional[r]), _texts(result.delta_usd[r]),
            _texts(result.gamma_usd[r]), _texts(result.vega_usd[r]), _texts(result.theta_usd[r]), worst,
        ], pair_portfolio[r] - k0, k1 - k0)  # fmt: skip
        q = slice(int(pos_indptr[k0]), int(pos_indptr[k1]))
        j = order[q]
        in_isolated = result.mode[sorted_portfolio[q]] == ISOLATED
        positions = _grouped(_POSITION, [
            [instrument_text[i] for i in f.position_instrument[j].tolist()],
            _texts(f.position_quantity[j], money=False), [price_text[i] for i in j.tolist()],
            _texts(result.position_value[j]), _texts(result.position_delta_usd[j]),
            _texts(result.position_initial_margin[j]), _texts(result.position_maintenance_margin[j]),
            _only_isolated(_texts(result.position_allocated_margin[j]), in_isolated),
            _only_isolated(_texts(result.position_equity[j]), in_isolated),
            _only_isolated([status_text[c] for c in result.position_status[j].tolist()], in_isolated),
        ], sorted_portfolio[q] - k0, k1 - k0)  # fmt: skip
        k = slice(k0, k1)
        ratio = ["null" if math.isnan(x) else float.__repr__(x) for x in result.margin_ratio[k].tolist()]
        columns = [
            [text(name) for name in f.ids[k0:k1]], [mode_text[c] for c in result.mode[k].tolist()],
            [status_text[c] for c in result.status[k].tolist()],
            _texts(result.equity[k]), _texts(result.collateral_value[k]), _texts(result.initial_margin[k]),
            _texts(result.maintenance_margin[k]), _texts(result.excess[k]), ratio,
            _texts(result.scan_directional[k]), _texts(result.scan_non_directional[k]),
            _texts(result.correlation_credit[k]), _texts(result.basis[k]),
            _texts(result.short_option_minimum[k]), _texts(result.concentration[k]), pairs, positions,
            _only_isolated(_texts(result.free_collateral[k]), result.mode[k] == ISOLATED),
            _texts(result.required_isolated[k]), _texts(result.required_cross[k]),
            _texts(result.required_portfolio[k]),
        ]  # fmt: skip
        seps = [","] * (k1 - k0 - 1) + [""]
        stream.write(("," if k0 else "") + _rows(_PORTFOLIO, columns, seps))
    stream.write("]")

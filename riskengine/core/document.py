"""The margin document (spec section 5) and the array-level input the engine computes from.

``parse_document(doc)`` validates a whole document and returns a ``MarginInput``. The Django sweep
builds the same ``MarginInput`` straight from arrays (``Portfolios(...)``) and calls
``check_input`` once, so both paths reach ``compute_margin`` with identical data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import DocumentError
from .market import OPTION, Market, parse_market
from .params import Parameters, parse_parameters
from .parsing import read_list, read_number, read_object, read_string, read_time, required, shown

ISOLATED, CROSS, PORTFOLIO = 0, 1, 2
MODES = ("isolated", "cross", "portfolio")


@dataclass(frozen=True, eq=False)
class Portfolios:
    """``n_port`` portfolios with ``n_pos`` positions and ``n_bal`` collateral balances, as arrays.

    - ``ids`` ``n_port`` strings; ``mode`` ``(n_port,)`` int8 (``ISOLATED``, ``CROSS``, ``PORTFOLIO``)
    - ``position_portfolio`` ``(n_pos,)`` int64 portfolio index; ``position_instrument`` ``(n_pos,)``
      int64 index into ``Market.instruments``; ``position_quantity`` ``(n_pos,)`` signed units of
      the instrument; ``position_entry`` ``(n_pos,)`` USD average entry (ignored, may be NaN, for
      options). Positions are never merged; within a portfolio they are reported in array order.
    - ``position_allocated_margin`` ``(n_pos,)`` USD ``a_i >= 0``, the collateral committed to each
      position (spec section 4a); only meaningful in ``isolated`` portfolios, ignored in the others.
      ``None`` (the default) means no allocation anywhere: zeros.
    - ``balance_portfolio`` ``(n_bal,)`` int64; ``balance_asset`` ``(n_bal,)`` int64 index into
      ``Parameters.assets``; ``balance_amount`` ``(n_bal,)`` units of the asset (negative =
      borrowed). Several entries for one (portfolio, asset) are added up before haircuts.
    """

    ids: tuple[str, ...]
    mode: np.ndarray
    position_portfolio: np.ndarray
    position_instrument: np.ndarray
    position_quantity: np.ndarray
    position_entry: np.ndarray
    balance_portfolio: np.ndarray
    balance_asset: np.ndarray
    balance_amount: np.ndarray
    position_allocated_margin: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.position_allocated_margin is None:
            # Frozen dataclass: the default is filled in once here, so every reader sees an array.
            object.__setattr__(self, "position_allocated_margin", np.zeros(self.position_quantity.shape))

    @property
    def n_portfolios(self) -> int:
        return len(self.ids)


@dataclass(frozen=True, eq=False)
class MarginInput:
    """Everything one engine run needs: a parameter set, the market and the portfolios."""

    parameters: Parameters
    market: Market
    portfolios: Portfolios


@dataclass(frozen=True)
class DocumentLimits:
    """Upper bounds on a document's size, so that one request's work is bounded (the API's
    ``margin/simulate``; the CLI, a trusted local tool, has none). ``None`` means no bound.

    Counts: ``portfolios``; ``positions`` over the whole document; ``market.instruments``;
    ``parameters.underlyings`` (the correlation check is cubic in it); ``parameters.assets``;
    haircut brackets per asset and extreme moves per underlying (the collateral and scenario arrays
    grow with them). ``price_steps`` is bounded by the methodology itself (``MAX_PRICE_STEPS``).
    """

    portfolios: int | None = None
    positions: int | None = None
    instruments: int | None = None
    underlyings: int | None = None
    assets: int | None = None
    haircut_brackets: int | None = None
    extreme_moves: int | None = None


def check_limits(doc: Any, limits: DocumentLimits) -> None:
    """Refuse a document larger than ``limits``, naming the field, before any parsing work.

    Only sizes are looked at; a part of the wrong type is left for ``parse_document`` to name.
    """

    def size(container: Any, kind: type) -> int:
        return len(container) if isinstance(container, kind) else 0

    def over(count: int, bound: int | None, field: str, what: str) -> None:
        if bound is not None and count > bound:
            raise DocumentError(field, f"too large: {count:,} {what}, at most {bound:,} accepted")

    if not isinstance(doc, dict):
        return
    parameters = doc.get("parameters") if isinstance(doc.get("parameters"), dict) else {}
    underlyings = parameters.get("underlyings")
    over(size(underlyings, dict), limits.underlyings, "parameters.underlyings", "underlyings")
    for name, entry in underlyings.items() if isinstance(underlyings, dict) else ():
        if isinstance(entry, dict):
            over(size(entry.get("extreme"), list), limits.extreme_moves,
                 f"parameters.underlyings.{name}.extreme", "extreme moves")  # fmt: skip
    assets = parameters.get("assets")
    over(size(assets, dict), limits.assets, "parameters.assets", "assets")
    for name, entry in assets.items() if isinstance(assets, dict) else ():
        if isinstance(entry, dict):
            over(size(entry.get("haircuts"), list), limits.haircut_brackets,
                 f"parameters.assets.{name}.haircuts", "haircut brackets")  # fmt: skip
    market = doc.get("market") if isinstance(doc.get("market"), dict) else {}
    over(size(market.get("instruments"), dict), limits.instruments, "market.instruments", "instruments")
    portfolios = doc.get("portfolios")
    over(size(portfolios, list), limits.portfolios, "portfolios", "portfolios")
    if limits.positions is not None and isinstance(portfolios, list):
        total = 0
        for k, portfolio in enumerate(portfolios):
            if isinstance(portfolio, dict):
                total += size(portfolio.get("positions"), list)
                over(total, limits.positions, f"portfolios[{k}].positions", "positions in the document")


_MISSING = object()


def parse_document(doc: Any, *, limits: DocumentLimits | None = None) -> MarginInput:
    """Validate a margin document (a ``dict`` as loaded from JSON) and return a ``MarginInput``.

    Raises ``DocumentError`` naming the first offending field; nothing is computed from a
    malformed document. ``limits`` bounds its size first (``check_limits``).

    The portfolio loop is the one place that runs per position: it takes the common case (a JSON
    number, a known instrument) without building field names, and goes through the named readers
    of ``parsing`` for anything else, so an error names its field exactly as they do.
    """
    if limits is not None:
        check_limits(doc, limits)
    doc = read_object(doc, "document")
    valuation_time = read_time(required(doc, "valuation_time", "document"), "valuation_time")
    parameters = parse_parameters(required(doc, "parameters", "document"))
    market = parse_market(required(doc, "market", "document"), parameters, valuation_time)
    instrument_index = {name: i for i, name in enumerate(market.instruments)}
    is_option = (market.kind == OPTION).tolist()
    asset_index = {name: a for a, name in enumerate(parameters.assets)}
    mode_index = {name: code for code, name in enumerate(MODES)}
    isfinite = math.isfinite

    ids: list[str] = []
    seen: set[str] = set()
    modes: list[int] = []
    pos_port: list[int] = []
    pos_inst: list[int] = []
    pos_qty: list[float] = []
    pos_entry: list[float] = []
    pos_allocated: list[float] = []
    bal_port: list[int] = []
    bal_asset: list[int] = []
    bal_amount: list[float] = []
    for k, portfolio in enumerate(read_list(required(doc, "portfolios", "document"), "portfolios")):
        where = f"portfolios[{k}]"
        read_object(portfolio, where)
        portfolio_id = read_string(required(portfolio, "id", where), f"{where}.id")
        if portfolio_id in seen:
            raise DocumentError(f"{where}.id", f"duplicate portfolio id {shown(portfolio_id)}")
        seen.add(portfolio_id)
        ids.append(portfolio_id)
        mode = required(portfolio, "mode", where)
        code = mode_index.get(mode) if isinstance(mode, str) else None
        if code is None:
            raise DocumentError(f"{where}.mode", f"must be one of {', '.join(MODES)}, got {shown(mode)}")
        modes.append(code)
        for asset, amount in read_object(portfolio.get("collateral", {}), f"{where}.collateral").items():
            if asset not in asset_index:
                raise DocumentError(f"{where}.collateral.{asset}", f"unknown asset {shown(asset)}")
            bal_port.append(k)
            bal_asset.append(asset_index[asset])
            bal_amount.append(read_number(amount, f"{where}.collateral.{asset}"))
        positions = read_list(portfolio.get("positions", []), f"{where}.positions")
        for j, position in enumerate(positions):
            # The common case, inline; any doubt goes to the named readers below.
            name = position.get("instrument") if type(position) is dict else None
            i = instrument_index.get(name) if type(name) is str else None
            quantity = position.get("quantity", _MISSING) if i is not None else _MISSING
            if type(quantity) is not float or not isfinite(quantity):
                i, quantity = _position_head(position, f"{where}.positions[{j}]", instrument_index)
            if is_option[i]:
                entry = math.nan  # an option is valued at its mark; its entry premium is not needed
            else:
                entry = position.get("entry_price", _MISSING)
                if type(entry) is not float or not (isfinite(entry) and entry > 0.0):
                    pos_where = f"{where}.positions[{j}]"
                    entry_value = required(position, "entry_price", pos_where)
                    entry = read_number(entry_value, f"{pos_where}.entry_price", positive=True)
            # Validated in every mode (a document is malformed or not whatever its modes), used
            # only in isolated portfolios.
            allocated = position.get("allocated_margin", 0.0)
            if type(allocated) is not float or not (isfinite(allocated) and allocated >= 0.0):
                allocated = read_number(
                    allocated, f"{where}.positions[{j}].allocated_margin", non_negative=True
                )
            pos_port.append(k)
            pos_inst.append(i)
            pos_qty.append(quantity)
            pos_entry.append(entry)
            pos_allocated.append(allocated)
    portfolios = Portfolios(
        ids=tuple(ids),
        mode=np.asarray(modes, dtype=np.int8),
        position_portfolio=np.asarray(pos_port, dtype=np.int64),
        position_instrument=np.asarray(pos_inst, dtype=np.int64),
        position_quantity=np.asarray(pos_qty, dtype=np.float64),
        position_entry=np.asarray(pos_entry, dtype=np.float64),
        position_allocated_margin=np.asarray(pos_allocated, dtype=np.float64),
        balance_portfolio=np.asarray(bal_port, dtype=np.int64),
        balance_asset=np.asarray(bal_asset, dtype=np.int64),
        balance_amount=np.asarray(bal_amount, dtype=np.float64),
    )
    return MarginInput(parameters=parameters, market=market, portfolios=portfolios)


def _position_head(position: Any, where: str, instrument_index: dict[str, int]) -> tuple[int, float]:
    """A position entry's instrument index and quantity, through the named readers."""
    read_object(position, where)
    name = read_string(required(position, "instrument", where), f"{where}.instrument")
    if name not in instrument_index:
        raise DocumentError(f"{where}.instrument", f"unknown instrument {shown(name)}")
    quantity = read_number(required(position, "quantity", where), f"{where}.quantity")
    return instrument_index[name], quantity


def _first_bad(mask: np.ndarray) -> int | None:
    bad = np.flatnonzero(mask)
    return int(bad[0]) if bad.size else None


def check_input(margin_input: MarginInput) -> None:
    """Vectorised validation of an array-built ``MarginInput`` (what ``parse_document`` checks).

    Field paths name array positions, e.g. ``market.instruments[12].strike`` or
    ``positions[40311].instrument``. Costs a few passes over the arrays.
    """
    p, m, f = margin_input.parameters, margin_input.market, margin_input.portfolios
    n_und, n_assets, n_instr, n_port = len(p.underlyings), len(p.assets), m.n_instruments, f.n_portfolios
    checks = [
        ("market.underlyings", m.underlying_price.shape != (n_und,), "must have one price per underlying"),
        ("market.assets", m.asset_price.shape != (n_assets,), "must have one price per asset"),
    ]
    for field, bad, message in checks:
        if bad:
            raise DocumentError(field, message)
    for name, array in (("multiplier", m.multiplier), ("kind", m.kind), ("underlying", m.underlying)):
        if array.shape != (n_instr,):
            raise DocumentError(f"market.instruments.{name}", f"must have shape ({n_instr},)")
    i = _first_bad((m.underlying < 0) | (m.underlying >= n_und))
    if i is not None:
        raise DocumentError(f"market.instruments[{i}].underlying", "missing underlying")
    i = _first_bad(~(m.underlying_price[m.underlying] > 0))
    if i is not None:
        raise DocumentError(f"market.instruments[{i}].underlying", "missing underlying: no positive price")
    i = _first_bad(~(m.asset_price > 0))
    if i is not None:
        raise DocumentError(f"market.assets.{p.assets[i]}.price", "must be positive")
    i = _first_bad(~(m.multiplier > 0))
    if i is not None:
        raise DocumentError(f"market.instruments[{i}].multiplier", "must be positive")
    option = m.kind == OPTION
    for name, array in (("strike", m.strike), ("iv", m.iv)):
        i = _first_bad(option & ~(array > 0))
        if i is not None:
            raise DocumentError(f"market.instruments[{i}].{name}", "must be positive")
    for name, array, size in (
        ("positions", f.position_instrument, n_instr),
        ("positions", f.position_portfolio, n_port),
        ("collateral", f.balance_asset, n_assets),
        ("collateral", f.balance_portfolio, n_port),
    ):
        i = _first_bad((array < 0) | (array >= size))
        if i is not None:
            raise DocumentError(f"{name}[{i}]", "index out of range (unknown instrument, asset or portfolio)")
    i = _first_bad(~np.isfinite(f.position_quantity))
    if i is not None:
        raise DocumentError(f"positions[{i}].quantity", "must be finite")
    i = _first_bad((m.kind[f.position_instrument] != OPTION) & ~(f.position_entry > 0))
    if i is not None:
        raise DocumentError(f"positions[{i}].entry_price", "must be positive")
    if f.position_allocated_margin.shape != f.position_quantity.shape:
        raise DocumentError("positions.allocated_margin", f"must have shape {f.position_quantity.shape}")
    i = _first_bad(~(np.isfinite(f.position_allocated_margin) & (f.position_allocated_margin >= 0.0)))
    if i is not None:
        raise DocumentError(f"positions[{i}].allocated_margin", "must be a finite number, not negative")
    i = _first_bad(~np.isfinite(f.balance_amount))
    if i is not None:
        raise DocumentError(f"collateral[{i}].amount", "must be finite")
    i = _first_bad((f.mode < 0) | (f.mode > PORTFOLIO))
    if i is not None:
        raise DocumentError(f"portfolios[{i}].mode", "unknown mode")

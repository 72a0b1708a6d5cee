"""Market data (spec section 5 ``market``): index prices, asset prices and the instrument table."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from .errors import DocumentError
from .params import Parameters
from .parsing import read_number, read_object, read_string, read_time, required, years_between

FUTURE, PERPETUAL, OPTION = 0, 1, 2
KINDS = ("future", "perpetual", "option")
# ``vol``: the annualised volatility liquidation foresight may use (spec section 9); optional.
UNDERLYING_KEYS = ("price", "vol")


@dataclass(frozen=True, eq=False)
class Market:
    """Market state at ``valuation_time``; ``n_instr`` instruments.

    - ``underlying_price`` ``(n_und,)`` USD, index ``S_u`` in ``Parameters.underlyings`` order; NaN
      for an underlying nothing refers to.
    - ``asset_price`` ``(n_assets,)`` USD per unit, in ``Parameters.assets`` order; linked assets
      carry their underlying's price, unpriced unlinked assets 1.0.
    - ``instruments`` names; ``kind`` ``(n_instr,)`` int8 (``FUTURE``, ``PERPETUAL``, ``OPTION``);
      ``underlying`` ``(n_instr,)`` int64 index; ``multiplier`` ``(n_instr,)``;
      ``years`` ``(n_instr,)`` T in years ACT/365 to expiry (0 for perpetuals);
      ``strike`` ``(n_instr,)`` USD (NaN for linear); ``is_call`` ``(n_instr,)`` bool;
      ``iv`` ``(n_instr,)`` annualised (NaN for linear).
    - ``underlying_vol`` ``(n_und,)`` annualised volatility of each underlying's price when the
      document gives one (``market.underlyings.<u>.vol``, used only by liquidation foresight, spec
      section 9), NaN otherwise; ``None`` for a market built from arrays without it.
    """

    valuation_time: datetime | None
    underlying_price: np.ndarray
    asset_price: np.ndarray
    instruments: tuple[str, ...]
    kind: np.ndarray
    underlying: np.ndarray
    multiplier: np.ndarray
    years: np.ndarray
    strike: np.ndarray
    is_call: np.ndarray
    iv: np.ndarray
    underlying_vol: np.ndarray | None = None

    @property
    def n_instruments(self) -> int:
        return len(self.instruments)


def parse_market(
    form: Any, parameters: Parameters, valuation_time: datetime, field: str = "market"
) -> Market:
    """Validate the ``market`` object against ``parameters`` and return a ``Market``."""
    form = read_object(form, field)
    names = parameters.underlyings
    und_field = f"{field}.underlyings"
    prices = np.full(len(names), np.nan)
    vols = np.full(len(names), np.nan)
    for name, entry in read_object(form.get("underlyings", {}), und_field).items():
        where = f"{und_field}.{name}"
        if name not in names:
            raise DocumentError(where, f"unknown underlying {name!r} (not in parameters.underlyings)")
        read_object(entry, where)
        for key in entry:
            if key not in UNDERLYING_KEYS:
                raise DocumentError(
                    f"{where}.{key}", f"unknown key (an underlying's market has {', '.join(UNDERLYING_KEYS)})"
                )
        prices[names.index(name)] = read_number(
            required(entry, "price", where), f"{where}.price", positive=True
        )
        if "vol" in entry:
            vols[names.index(name)] = read_number(entry["vol"], f"{where}.vol", positive=True)

    def need_price(u: int, where: str) -> None:
        if np.isnan(prices[u]):
            raise DocumentError(where, f"missing underlying: no market.underlyings.{names[u]}.price")

    asset_field = f"{field}.assets"
    asset_price = np.ones(len(parameters.assets))
    for name, entry in read_object(form.get("assets", {}), asset_field).items():
        where = f"{asset_field}.{name}"
        if name not in parameters.assets:
            raise DocumentError(where, f"unknown asset {name!r} (not in parameters.assets)")
        read_object(entry, where)
        asset_price[parameters.assets.index(name)] = read_number(
            required(entry, "price", where), f"{where}.price", positive=True
        )
    for a, u in enumerate(parameters.asset_underlying):
        if u >= 0:
            need_price(int(u), f"parameters.assets.{parameters.assets[a]}.underlying")
            asset_price[a] = prices[u]  # a linked asset takes its price from its underlying

    inst_field = f"{field}.instruments"
    instruments = read_object(required(form, "instruments", field), inst_field)
    n = len(instruments)
    kind = np.zeros(n, dtype=np.int8)
    underlying = np.zeros(n, dtype=np.int64)
    multiplier, years = np.zeros(n), np.zeros(n)
    strike, iv = np.full(n, np.nan), np.full(n, np.nan)
    is_call = np.zeros(n, dtype=bool)
    for i, (name, entry) in enumerate(instruments.items()):
        where = f"{inst_field}.{name}"
        read_object(entry, where)
        kind_name = required(entry, "kind", where)
        if kind_name not in KINDS:
            raise DocumentError(f"{where}.kind", f"must be one of {', '.join(KINDS)}, got {kind_name!r}")
        kind[i] = KINDS.index(kind_name)
        und_name = read_string(required(entry, "underlying", where), f"{where}.underlying")
        if und_name not in names:
            raise DocumentError(f"{where}.underlying", f"missing underlying {und_name!r}")
        underlying[i] = names.index(und_name)
        need_price(int(underlying[i]), f"{where}.underlying")
        multiplier[i] = read_number(
            required(entry, "multiplier", where), f"{where}.multiplier", positive=True
        )
        if kind[i] != PERPETUAL:
            expiry = read_time(required(entry, "expiry", where), f"{where}.expiry")
            years[i] = years_between(valuation_time, expiry)
        if kind[i] == OPTION:
            strike[i] = read_number(required(entry, "strike", where), f"{where}.strike", positive=True)
            right = required(entry, "right", where)
            if right not in ("call", "put"):
                raise DocumentError(f"{where}.right", f"must be call or put, got {right!r}")
            is_call[i] = right == "call"
            iv[i] = read_number(required(entry, "iv", where), f"{where}.iv", positive=True)
    return Market(
        valuation_time=valuation_time, underlying_price=prices, asset_price=asset_price,
        instruments=tuple(instruments), kind=kind, underlying=underlying, multiplier=multiplier,
        years=years, strike=strike, is_call=is_call, iv=iv, underlying_vol=vols,
    )  # fmt: skip

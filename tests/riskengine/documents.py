"""Documents for the engine tests: the spec's example parameters and small builders."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from riskengine.core.history import align_history

EXTREME = [{"multiple": -2, "coverage": 0.35}, {"multiple": 2, "coverage": 0.35}]


def underlying_params(psr: float) -> dict:
    return {
        "psr": psr, "vol_up": 0.5, "vol_down": 0.25, "extreme": copy.deepcopy(EXTREME),
        "min_basis": 0.01, "basis_rate": 0.075, "som_rate": 0.01,
        "conc_threshold": 20000000, "conc_rate": 0.05, "imf": 0.10, "mmf": 0.05,
    }  # fmt: skip


def spec_parameters() -> dict:
    """The parameter set of spec section 5 (BTC psr 0.15, ETH psr 0.18, rho 0.8, ...)."""
    return {
        "version": "2026-11-24.1", "mm_ratio": 0.8, "offset_cap": 0.8, "lookahead_days": 1, "rate": 0.0,
        "price_steps": 4, "min_vol": 0.01,
        "vol_term": {"pivot_days": 30, "short_power": 0.30, "long_power": 0.13},
        "standard": {"option_imf": 0.15, "option_min": 0.10, "option_mmf": 0.075},
        "underlyings": {"BTC": underlying_params(0.15), "ETH": underlying_params(0.18)},
        "correlation": {"underlyings": ["BTC", "ETH"], "matrix": [[1.0, 0.8], [0.8, 1.0]]},
        "assets": {
            "USDC": {"underlying": None, "liability_addon": 0.05,
                     "haircuts": [{"up_to": 10000000, "haircut": 0.0}, {"up_to": None, "haircut": 0.02}]},
            "BTC": {"underlying": "BTC", "liability_addon": 0.10,
                    "haircuts": [{"up_to": 1000000, "haircut": 0.05}, {"up_to": None, "haircut": 0.10}]},
        },
    }  # fmt: skip


def spec_market() -> dict:
    return {
        "underlyings": {"BTC": {"price": 60000.0}, "ETH": {"price": 3000.0}},
        "assets": {"USDC": {"price": 1.0}},
        "instruments": {
            "BTC-PERP": {"kind": "perpetual", "underlying": "BTC", "multiplier": 1},
            "ETH-PERP": {"kind": "perpetual", "underlying": "ETH", "multiplier": 1},
            "BTC-26MAR27": {"kind": "future", "underlying": "BTC", "multiplier": 1,
                            "expiry": "2027-03-26T08:00:00Z"},
            "BTC-26MAR27-70000-C": {"kind": "option", "underlying": "BTC", "multiplier": 1,
                                    "expiry": "2027-03-26T08:00:00Z", "strike": 70000, "right": "call",
                                    "iv": 0.55},
            "BTC-26MAR27-50000-P": {"kind": "option", "underlying": "BTC", "multiplier": 1,
                                    "expiry": "2027-03-26T08:00:00Z", "strike": 50000, "right": "put",
                                    "iv": 0.60},
            "ETH-25DEC26-3000-C": {"kind": "option", "underlying": "ETH", "multiplier": 1,
                                   "expiry": "2026-12-25T08:00:00Z", "strike": 3000, "right": "call",
                                   "iv": 0.70},
        },
    }  # fmt: skip


def make_document(*portfolios: dict, parameters: dict | None = None, market: dict | None = None) -> dict:
    return {
        "valuation_time": "2026-11-24T00:00:00Z",
        "parameters": parameters or spec_parameters(),
        "market": market or spec_market(),
        "portfolios": list(portfolios),
    }


def perp(name: str, quantity, entry) -> dict:
    return {"instrument": name, "quantity": quantity, "entry_price": entry}


def hand_example_document() -> dict:
    """The issue's hand example: long 1 BTC-PERP, short 15 ETH-PERP at mark, 20,000 USDC."""
    return make_document(
        {"id": "HAND-1", "mode": "portfolio", "collateral": {"USDC": "20000"},
         "positions": [perp("BTC-PERP", "1", "60000"), perp("ETH-PERP", "-15", "3000")]},
    )  # fmt: skip


def daily_days(start: str, count: int) -> np.ndarray:
    """``count`` consecutive calendar days from ``start`` (datetime64[D])."""
    return np.datetime64(start, "D") + np.arange(count)


def price_history(parameters, closes: dict[str, list[float]], *, start: str = "2021-01-01", days=None):
    """A ``PriceHistory`` for the parsed ``parameters`` from ``closes`` (symbol -> one close per day
    from ``start``, or on ``days``)."""
    return align_history(
        parameters,
        {
            symbol: (daily_days(start, len(values)) if days is None else np.asarray(days, "datetime64[D]"),
                     np.asarray(values, dtype=np.float64))
            for symbol, values in closes.items()
        },
    )  # fmt: skip


def write_prices(directory, closes: dict[str, list[float]], *, start: str = "2021-01-01") -> None:
    """``<SYMBOL>-USD.csv`` files in ``directory`` in the shape of clearing/data/prices/ (the closes
    repeated as open, high, low and adjusted close; a volume of 0)."""
    for symbol, values in closes.items():
        rows = ["Date,Open,High,Low,Close,Adj Close,Volume"]
        for day, close in zip(daily_days(start, len(values)).tolist(), values, strict=True):
            rows.append(f"{day},{close!r},{close!r},{close!r},{close!r},{close!r},0")
        (directory / f"{symbol}-USD.csv").write_text("\n".join(rows) + "\n")


def two_perpetuals(*, mode: str, short_allocation: float, long_allocation: float = 0.0) -> dict:
    """The issue's first case: 5,000 USDC; long 1 BTC-PERP from 50,000 (value +10,000) and short
    1 BTC-PERP from 56,000 (value -4,000), each IM 6,000 and MM 3,000."""
    return make_document(
        {"id": "TWO", "mode": mode, "collateral": {"USDC": "5000"},
         "positions": [perp("BTC-PERP", 1, 50000) | {"allocated_margin": long_allocation},
                       perp("BTC-PERP", -1, 56000) | {"allocated_margin": short_allocation}]},
    )  # fmt: skip


def set_path(doc: dict, path: tuple, value) -> dict:
    """``doc`` with the value at ``path`` (keys and indexes) replaced by ``value``."""
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


def wide_market() -> dict:
    """The spec market plus short-dated, expired and put options so every branch is exercised."""
    market = spec_market()
    market["instruments"].update(
        {
            "ETH-PERP2": {"kind": "perpetual", "underlying": "ETH", "multiplier": 0.1},
            "ETH-27NOV26-2800-P": {"kind": "option", "underlying": "ETH", "multiplier": 1,
                                   "expiry": "2026-11-27T08:00:00Z", "strike": 2800, "right": "put",
                                   "iv": 0.9},
            "BTC-20NOV26-58000-C": {"kind": "option", "underlying": "BTC", "multiplier": 0.01,
                                    "expiry": "2026-11-20T08:00:00Z", "strike": 58000, "right": "call",
                                    "iv": 0.5},
            "ETH-26JUN27": {"kind": "future", "underlying": "ETH", "multiplier": 1,
                            "expiry": "2027-06-26T08:00:00Z"},
        }
    )  # fmt: skip
    return market


REAL_PRICES = Path(__file__).resolve().parents[2] / "clearing" / "data" / "prices"


def real_document() -> dict:
    """A small document on the demo's underlyings and stablecoins (clearing/data/prices)."""
    parameters = spec_parameters()
    parameters["underlyings"]["SOL"] = copy.deepcopy(parameters["underlyings"]["BTC"]) | {"psr": 0.25}
    parameters["correlation"] = {
        "underlyings": ["BTC", "ETH", "SOL"], "matrix": [[1.0, 0.8, 0.7], [0.8, 1.0, 0.7], [0.7, 0.7, 1.0]],
    }  # fmt: skip
    parameters["assets"]["USDT"] = copy.deepcopy(parameters["assets"]["USDC"])
    parameters["assets"]["USD"] = {"haircuts": [{"up_to": None, "haircut": 0.0}]}
    market = {
        "underlyings": {"BTC": {"price": 26000.0}, "ETH": {"price": 1650.0}, "SOL": {"price": 20.0}},
        "instruments": {
            "BTC-PERP": {"kind": "perpetual", "underlying": "BTC", "multiplier": 1},
            "SOL-PERP": {"kind": "perpetual", "underlying": "SOL", "multiplier": 1},
            "ETH-C": {"kind": "option", "underlying": "ETH", "multiplier": 1,
                      "expiry": "2026-12-25T08:00:00Z", "strike": 1800, "right": "call", "iv": 0.6},
        },
    }  # fmt: skip
    return make_document(
        {"id": "BTC-LONG", "mode": "cross", "member": "M1", "collateral": {"USDC": "20000"},
         "positions": [perp("BTC-PERP", "1", "26000")]},
        {"id": "SHORT-VOL", "mode": "portfolio", "member": "M2", "collateral": {"USDT": "5000", "BTC": "0.2"},
         "positions": [perp("SOL-PERP", "-300", "20"), {"instrument": "ETH-C", "quantity": "-3"}]},
        {"id": "ISO", "mode": "isolated", "member": "M1", "collateral": {"USD": "3000"},
         "positions": [perp("BTC-PERP", "-0.5", "26000") | {"allocated_margin": 1500}]},
        parameters=parameters, market=market,
    )  # fmt: skip

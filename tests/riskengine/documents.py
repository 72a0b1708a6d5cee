"""Documents for the engine tests: the spec's example parameters and small builders."""

from __future__ import annotations

import copy

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

"""A deterministic synthetic venue for the engine benchmark, built straight into engine arrays.

``make_venue(n_accounts=100_000, n_positions=1_000_000, n_underlyings=20, n_instruments=2_000)``
returns a validated ``MarginInput``: 20 underlyings (BTC, ETH, SOL at their last real close from
/work/shared/data/prices when present, the rest synthetic), half the instruments options (5 expiries x
5 strikes x call/put per underlying, a smile on iv), the other half perpetuals and dated futures.
Accounts hold 1-4 underlyings (skewed to BTC/ETH) and follow one of three books: directional
(linear, one side), hedged (perpetual vs future plus option spreads) or short-option (short strangles
with a delta hedge). Collateral is USDC for all, USDT for some, and BTC/ETH linked collateral (some
of it borrowed) for others. ``to_document(venue, indices)`` writes a sub-venue as a margin document.
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from riskengine.core import (
    FUTURE,
    KINDS,
    MODES,
    OPTION,
    PERPETUAL,
    MarginInput,
    Market,
    Portfolios,
    check_input,
    parse_parameters,
)

PRICES = Path("/work/shared/data/prices")
VALUATION = datetime(2026, 11, 24, tzinfo=UTC)
REAL = {"BTC": 0.15, "ETH": 0.18, "SOL": 0.25}  # psr of the real underlyings


def _last_close(name: str, fallback: float) -> float:
    path = PRICES / f"{name}-USD.csv"
    if not path.exists():
        return fallback
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    return float(rows[-1]["Close"])


def venue_parameters(names: list[str], seed: int = 20261124) -> dict:
    rng = np.random.default_rng(seed + 1)  # its own stream, so to_document rebuilds the same form
    underlyings = {}
    for name in names:
        psr = REAL.get(name, float(np.round(rng.uniform(0.2, 0.35), 3)))
        underlyings[name] = {
            "psr": psr,
            "vol_up": 0.5,
            "vol_down": 0.25,
            "extreme": [{"multiple": -2, "coverage": 0.35}, {"multiple": 2, "coverage": 0.35}],
            "min_basis": 0.01,
            "basis_rate": 0.075,
            "som_rate": 0.01,
            "conc_threshold": 20_000_000,
            "conc_rate": 0.05,
            "imf": round(psr * 2 / 3, 4),
            "mmf": round(psr / 3, 4),
        }
    n = len(names)
    # A one-factor correlation (crypto beta) is PSD by construction: rho_ij = b_i*b_j, unit diagonal.
    beta = np.concatenate([[0.95, 0.9], rng.uniform(0.5, 0.85, n - 2)])
    rho = np.outer(beta, beta)
    np.fill_diagonal(rho, 1.0)
    usd = [{"up_to": 10_000_000, "haircut": 0.0}, {"up_to": None, "haircut": 0.02}]
    return {
        "version": "bench.1",
        "mm_ratio": 0.8,
        "offset_cap": 0.8,
        "lookahead_days": 1,
        "rate": 0.0,
        "price_steps": 4,
        "min_vol": 0.01,
        "vol_term": {"pivot_days": 30, "short_power": 0.30, "long_power": 0.13},
        "standard": {"option_imf": 0.15, "option_min": 0.10, "option_mmf": 0.075},
        "underlyings": underlyings,
        "correlation": {"underlyings": names, "matrix": rho.round(6).tolist()},
        "assets": {
            "USDC": {"underlying": None, "liability_addon": 0.05, "haircuts": usd},
            "USDT": {
                "underlying": None,
                "liability_addon": 0.05,
                "haircuts": [{"up_to": 5_000_000, "haircut": 0.01}, {"up_to": None, "haircut": 0.05}],
            },
            "BTC": {
                "underlying": "BTC",
                "liability_addon": 0.10,
                "haircuts": [{"up_to": 1_000_000, "haircut": 0.05}, {"up_to": None, "haircut": 0.10}],
            },
            "ETH": {
                "underlying": "ETH",
                "liability_addon": 0.10,
                "haircuts": [{"up_to": 1_000_000, "haircut": 0.07}, {"up_to": None, "haircut": 0.12}],
            },
        },
    }


def make_venue(
    *,
    n_accounts: int = 100_000,
    n_positions: int = 1_000_000,
    n_underlyings: int = 20,
    n_instruments: int = 2_000,
    seed: int = 20261124,
) -> MarginInput:
    rng = np.random.default_rng(seed)
    names = ["BTC", "ETH", "SOL"] + [f"ALT{k:02d}" for k in range(n_underlyings - 3)]
    names = names[:n_underlyings]
    spot = np.array([_last_close("BTC", 60000.0), _last_close("ETH", 3000.0), _last_close("SOL", 20.0)])
    spot = np.concatenate([spot, np.exp(rng.uniform(np.log(0.5), np.log(500.0), n_underlyings - 3))])
    spot = spot[:n_underlyings]
    parameters = parse_parameters(venue_parameters(names, seed))

    # Instruments: per underlying half linear (perpetuals and futures), half options.
    per_und = n_instruments // n_underlyings
    n_lin, n_opt = per_und // 2, per_und - per_und // 2
    expiries_days = np.array([3.0, 10.0, 38.0, 94.0, 185.0])
    kind, und, mult, years, strike, is_call, iv, inst_names = [], [], [], [], [], [], [], []
    for u, name in enumerate(names):
        for k in range(n_lin):
            perpetual = k < max(1, n_lin // 10)
            kind.append(PERPETUAL if perpetual else FUTURE)
            days = 0.0 if perpetual else expiries_days[k % 5] + 0.33
            years.append(days / 365.0)
            mult.append([1.0, 0.1, 0.01][k % 3])
            inst_names.append(f"{name}-{'PERP' if perpetual else f'F{days:.0f}'}-{k}")
        for k in range(n_opt):
            days = expiries_days[k % 5] + 0.33
            moneyness = np.exp(0.25 * np.sqrt(days / 365.0) * ((k // 10) % 5 - 2) * 1.2)
            kind.append(OPTION)
            years.append(days / 365.0)
            mult.append(1.0)
            strike.append((len(kind) - 1, spot[u] * moneyness))
            is_call.append((len(kind) - 1, (k // 5) % 2 == 0))
            iv.append((len(kind) - 1, 0.55 + 0.15 * abs(np.log(moneyness)) * 4 + 0.1 * (days < 30)))
            inst_names.append(f"{name}-O{days:.0f}-{k}")
        und += [u] * per_und
    n_instr = len(kind)
    strike_arr, iv_arr, call_arr = np.full(n_instr, np.nan), np.full(n_instr, np.nan), np.zeros(n_instr, bool)
    for i, v in strike:
        strike_arr[i] = v
    for i, v in iv:
        iv_arr[i] = v
    for i, v in is_call:
        call_arr[i] = v
    kind_arr, und_arr = np.asarray(kind, dtype=np.int8), np.asarray(und, dtype=np.int64)
    asset_price = np.ones(len(parameters.assets))
    linked = parameters.asset_underlying >= 0
    asset_price[linked] = spot[parameters.asset_underlying[linked]]
    market = Market(
        valuation_time=VALUATION,
        underlying_price=spot,
        asset_price=asset_price,
        instruments=tuple(inst_names),
        kind=kind_arr,
        underlying=und_arr,
        multiplier=np.asarray(mult),
        years=np.asarray(years),
        strike=strike_arr,
        is_call=call_arr,
        iv=iv_arr,
    )

    # Accounts: book type, 3 favourite underlyings (skewed to the big ones), then positions.
    book = rng.choice(3, size=n_accounts, p=[0.5, 0.3, 0.2])  # directional, hedged, short-option
    popularity = 1.0 / np.arange(1, n_underlyings + 1) ** 1.1
    favourites = rng.choice(n_underlyings, size=(n_accounts, 3), p=popularity / popularity.sum())
    pos_port = np.sort(rng.integers(0, n_accounts, n_positions))
    pos_book = book[pos_port]
    pos_und = favourites[pos_port, rng.choice(3, size=n_positions, p=[0.6, 0.3, 0.1])]
    # True where the position is an option, by book type.
    lin_or_opt = np.where(
        pos_book == 0,
        rng.random(n_positions) < 0.1,
        np.where(pos_book == 1, rng.random(n_positions) < 0.5, rng.random(n_positions) < 0.8),
    )
    offset = np.where(
        lin_or_opt, n_lin + rng.integers(0, n_opt, n_positions), rng.integers(0, n_lin, n_positions)
    )
    pos_inst = pos_und * per_und + offset
    account_side = np.where(rng.random(n_accounts) < 0.55, 1.0, -1.0)
    side = np.where(
        pos_book == 0,
        account_side[pos_port],
        np.where(
            pos_book == 1,
            np.where(rng.random(n_positions) < 0.5, 1.0, -1.0),
            np.where(lin_or_opt, -1.0, account_side[pos_port]),
        ),
    )
    notional = np.exp(rng.normal(np.log(40_000.0), 1.2, n_positions))
    qty = np.round(side * notional / (spot[pos_und] * market.multiplier[pos_inst]), 4)
    qty[qty == 0.0] = side[qty == 0.0] * 1e-4
    entry = spot[pos_und] * np.exp(rng.normal(0.0, 0.06, n_positions))

    # Collateral: USDC for everybody, plus USDT / linked BTC / ETH (some borrowed) for others.
    gross = np.bincount(pos_port, weights=notional, minlength=n_accounts)
    usdc = np.round(gross * np.exp(rng.normal(np.log(0.25), 0.8, n_accounts)), 2)
    extra = rng.random(n_accounts)
    bal_port = [np.arange(n_accounts)]
    bal_asset = [np.full(n_accounts, parameters.asset_index("USDC"))]
    bal_amount = [usdc]
    for asset, share, scale in (("USDT", 0.2, 0.1), ("BTC", 0.3, 0.2), ("ETH", 0.15, 0.2)):
        holders = np.flatnonzero(extra < share)
        extra = rng.random(n_accounts)
        price = asset_price[parameters.asset_index(asset)]
        amount = gross[holders] * scale / price * np.where(rng.random(holders.size) < 0.1, -0.5, 1.0)
        bal_port.append(holders)
        bal_asset.append(np.full(holders.size, parameters.asset_index(asset)))
        bal_amount.append(np.round(amount, 6))
    portfolios = Portfolios(
        ids=tuple(f"ACC-{k:06d}" for k in range(n_accounts)),
        mode=rng.choice(3, size=n_accounts, p=[0.15, 0.45, 0.4]).astype(np.int8),
        position_portfolio=pos_port,
        position_instrument=pos_inst,
        position_quantity=qty,
        position_entry=entry,
        balance_portfolio=np.concatenate(bal_port),
        balance_asset=np.concatenate(bal_asset),
        balance_amount=np.concatenate(bal_amount),
    )
    venue = MarginInput(parameters=parameters, market=market, portfolios=portfolios)
    check_input(venue)
    return venue


def to_document(venue: MarginInput, indices, parameters_form: dict | None = None) -> dict:
    """The sub-venue of portfolios ``indices`` as a margin document (for the reference and the CLI)."""
    p, m, f = venue.parameters, venue.market, venue.portfolios
    form = parameters_form or venue_parameters(list(p.underlyings))
    instruments = {}
    for i, name in enumerate(m.instruments):
        entry = {
            "kind": KINDS[m.kind[i]],
            "underlying": p.underlyings[m.underlying[i]],
            "multiplier": float(m.multiplier[i]),
        }
        if m.kind[i] != PERPETUAL:
            expiry = VALUATION + timedelta(seconds=float(m.years[i]) * 365 * 86400)
            entry["expiry"] = expiry.isoformat()
        if m.kind[i] == OPTION:
            entry.update(
                strike=float(m.strike[i]), right="call" if m.is_call[i] else "put", iv=float(m.iv[i])
            )
        instruments[name] = entry
    portfolios = []
    for k in indices:
        pos = np.flatnonzero(f.position_portfolio == k)
        bal = np.flatnonzero(f.balance_portfolio == k)
        portfolios.append(
            {
                "id": f.ids[k],
                "mode": MODES[f.mode[k]],
                "collateral": {p.assets[f.balance_asset[b]]: float(f.balance_amount[b]) for b in bal},
                "positions": [
                    {
                        "instrument": m.instruments[f.position_instrument[j]],
                        "quantity": float(f.position_quantity[j]),
                        "entry_price": float(f.position_entry[j]),
                    }
                    for j in pos
                ],
            }
        )
    return {
        "valuation_time": VALUATION.isoformat(),
        "parameters": form,
        "market": {
            "underlyings": {
                name: {"price": float(m.underlying_price[u])} for u, name in enumerate(p.underlyings)
            },
            "assets": {},
            "instruments": instruments,
        },
        "portfolios": portfolios,
    }

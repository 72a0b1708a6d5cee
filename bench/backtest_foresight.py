"""Backtest of the foresight probability on the real history: forecast against what happened.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.backtest_foresight [--prices DIR] [--start 365] [--every 1]

Demo-like books, one underlying each: a long and a short perpetual of 100,000 USD notional on
BTC, ETH and SOL in cross mode, held with USDC for leverage 6, 10 and 15 (the demo's imf 0.10, mmf
0.05), opened at each day's close. Each day ``t`` from ``--start`` on: the market is day ``t``'s
closes, each underlying's vol the EWMA (λ = 0.94) forecast from the closes up to ``t`` (annualised,
as the CLI's ``--prices``), and the platform computes every book's liquidation price and its
probability of liquidation within one day (``riskengine.core.foresight``, default scenarios). What
happened: the book was liquidated within the day when day ``t + 1``'s low (long) or high (short)
reached its liquidation price (the daily bars cover the 24 hours after the close). Prints the
calibration table (forecast bins: count, mean forecast, observed frequency), the Brier score, the
Brier score of the base rate (one constant forecast, the observed frequency) and the same per
underlying and leverage.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from bench.venue import venue_parameters
from riskengine.core import parse_document
from riskengine.core.foresight import Book, distances, liquidation_probability
from riskengine.core.volatility import annualised, ewma_volatility

PRICES = Path("/work/shared/data/prices")
UNDERLYINGS = ("BTC", "ETH", "SOL")
LEVERAGES = (6, 10, 15)
NOTIONAL = 100_000.0
BINS = (0.0, 0.001, 0.01, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0000001)


def history(directory: Path, name: str) -> dict[str, np.ndarray]:
    with (directory / f"{name}-USD.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    return {key: np.array([float(row[key]) for row in rows]) for key in ("Low", "High", "Close")}


def parameters() -> dict:
    form = venue_parameters(list(UNDERLYINGS))
    for entry in form["underlyings"].values():
        entry.update(imf=0.10, mmf=0.05)
    return form


def document(form: dict, prices: dict[str, float]) -> dict:
    portfolios = []
    for name in UNDERLYINGS:
        quantity = NOTIONAL / prices[name]
        for leverage in LEVERAGES:
            for side, sign in (("long", 1.0), ("short", -1.0)):
                portfolios.append({
                    "id": f"{name}-{side}-{leverage}x", "mode": "cross",
                    "collateral": {"USDC": NOTIONAL / leverage},
                    "positions": [{"instrument": f"{name}-PERP", "quantity": sign * quantity,
                                   "entry_price": prices[name]}],
                })  # fmt: skip
    return {
        "valuation_time": "2026-11-24T00:00:00Z",
        "parameters": form,
        "market": {
            "underlyings": {name: {"price": prices[name]} for name in UNDERLYINGS},
            "assets": {},
            "instruments": {
                f"{name}-PERP": {"kind": "perpetual", "underlying": name, "multiplier": 1}
                for name in UNDERLYINGS
            },
        },
        "portfolios": portfolios,
    }


def brier(forecast: np.ndarray, outcome: np.ndarray) -> tuple[float, float]:
    base_rate = outcome.mean()
    return float(np.mean((forecast - outcome) ** 2)), float(np.mean((base_rate - outcome) ** 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prices", type=Path, default=PRICES)
    parser.add_argument("--start", type=int, default=365, help="first day (its EWMA uses the days before)")
    parser.add_argument("--every", type=int, default=1, help="take every n-th day")
    args = parser.parse_args()
    data = {name: history(args.prices, name) for name in UNDERLYINGS}
    n_days = min(d["Close"].size for d in data.values())
    form = parameters()
    forecasts, outcomes, labels = [], [], []
    for t in range(args.start, n_days - 1, args.every):
        prices = {name: float(data[name]["Close"][t]) for name in UNDERLYINGS}
        margin_input = parse_document(document(form, prices))
        names = margin_input.parameters.underlyings
        vols = np.array([annualised(ewma_volatility(data[name]["Close"][: t + 1])) for name in names])
        book = Book(margin_input)
        found = distances(margin_input, book=book)
        probability = liquidation_probability(book, vols=vols, horizon_days=1.0)
        for k, portfolio_id in enumerate(margin_input.portfolios.ids):
            name, side, leverage = portfolio_id.split("-")
            r = int(book.pair_indptr[k])  # one pair: the book's underlying
            if side == "long":
                price = found.down_price[r]
                happened = bool(np.isfinite(price) and data[name]["Low"][t + 1] <= price)
            else:
                price = found.up_price[r]
                happened = bool(np.isfinite(price) and data[name]["High"][t + 1] >= price)
            forecasts.append(float(probability[k]))
            outcomes.append(float(happened))
            labels.append((name, side, leverage))
    forecast, outcome = np.array(forecasts), np.array(outcomes)
    days = len(range(args.start, n_days - 1, args.every))
    print(f"{days} days x {len(LEVERAGES) * 2 * len(UNDERLYINGS)} books = {forecast.size} forecasts, "
          f"{int(outcome.sum())} liquidations")  # fmt: skip
    print("\n| forecast bin | books | mean forecast | observed |\n| --- | --- | --- | --- |")
    which = np.digitize(forecast, BINS) - 1
    for b in range(len(BINS) - 1):
        chosen = which == b
        if chosen.any():
            print(f"| [{BINS[b]:.3f}, {min(BINS[b + 1], 1.0):.3f}) | {int(chosen.sum())} | "
                  f"{forecast[chosen].mean():.4f} | {outcome[chosen].mean():.4f} |")  # fmt: skip
    score, base = brier(forecast, outcome)
    print(f"\nBrier score {score:.5f}; base rate {outcome.mean():.4f}, its Brier score {base:.5f}; "
          f"skill {1 - score / base:.3f}")  # fmt: skip
    print("\n| book | forecasts | mean forecast | observed | Brier |\n| --- | --- | --- | --- | --- |")
    for name in UNDERLYINGS:
        for leverage in LEVERAGES:
            for side in ("long", "short"):
                chosen = np.array([label == (name, side, f"{leverage}x") for label in labels])
                score, _ = brier(forecast[chosen], outcome[chosen])
                print(f"| {name} {side} {leverage}x | {int(chosen.sum())} | {forecast[chosen].mean():.4f} | "
                      f"{outcome[chosen].mean():.4f} | {score:.5f} |")  # fmt: skip


if __name__ == "__main__":
    main()

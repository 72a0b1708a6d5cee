"""Which volatility forecast the foresight probability uses: EWMA (λ = 0.94) or GARCH(1,1).

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.bench_vol_forecast [--prices DIR] [--start 365] [--refit 20]

Out of sample on the real daily closes (``/work/shared/data/prices``, BTC, ETH, SOL): for every
day ``t`` from ``--start`` on, each model forecasts the variance of day ``t``'s log return from the
returns before ``t`` only. EWMA is ``riskengine.core.volatility.ewma_variances``. GARCH(1,1) is
fitted with ``arch`` (zero mean, normal errors, returns in percent) on the returns before ``t``,
refitted every ``--refit`` days (its parameters are then held while its variance is filtered day
by day). Scores per underlying and pooled, over the same days: the mean Gaussian log-likelihood
of the returns (higher is better) and QLIKE ``r²/σ² − ln(r²/σ²) − 1`` (lower is better; days with
a zero return are left out of QLIKE only).
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import numpy as np
from arch import arch_model

from riskengine.core.volatility import ewma_variances, log_returns

PRICES = Path("/work/shared/data/prices")
UNDERLYINGS = ("BTC", "ETH", "SOL")


def closes(directory: Path, name: str) -> np.ndarray:
    with (directory / f"{name}-USD.csv").open() as handle:
        return np.array([float(row["Close"]) for row in csv.DictReader(handle)])


def garch_variances(returns: np.ndarray, start: int, refit: int) -> np.ndarray:
    """GARCH(1,1) one-day variance forecasts ``(n,)`` (NaN before ``start``) of ``returns``."""
    n = returns.size
    forecasts = np.full(n, np.nan)
    scaled = returns * 100.0
    for fit_day in range(start, n, refit):
        model = arch_model(scaled[:fit_day], mean="Zero", vol="GARCH", p=1, q=1, dist="normal")
        fitted = model.fit(disp="off")
        omega, alpha, beta = (float(fitted.params[k]) for k in ("omega", "alpha[1]", "beta[1]"))
        variance = float(np.var(scaled[:fit_day]))  # filtered from the start with these parameters
        for t in range(min(fit_day + refit, n)):
            if t >= fit_day:
                forecasts[t] = variance / 1e4
            variance = omega + alpha * scaled[t] ** 2 + beta * variance
    return forecasts


def scores(returns: np.ndarray, variances: np.ndarray) -> tuple[float, float]:
    loglik = float(np.mean(-0.5 * (math.log(2 * math.pi) + np.log(variances) + returns**2 / variances)))
    nonzero = returns != 0.0
    ratio = returns[nonzero] ** 2 / variances[nonzero]
    return loglik, float(np.mean(ratio - np.log(ratio) - 1.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prices", type=Path, default=PRICES)
    parser.add_argument("--start", type=int, default=365, help="first forecast day (returns before it train)")
    parser.add_argument("--refit", type=int, default=20, help="GARCH refit interval in days")
    args = parser.parse_args()
    pooled: dict[str, list[np.ndarray]] = {"ewma": [], "garch": [], "returns": []}
    print(f"{'underlying':<10} {'days':>5} {'model':<6} {'loglik':>9} {'QLIKE':>8}")
    for name in UNDERLYINGS:
        returns = log_returns(closes(args.prices, name))
        ewma = ewma_variances(returns)[:-1]  # ewma[t] forecasts returns[t]
        garch = garch_variances(returns, args.start, args.refit)
        test = slice(args.start, returns.size)
        pooled["returns"].append(returns[test])
        for model, variances in (("ewma", ewma[test]), ("garch", garch[test])):
            pooled[model].append(variances)
            loglik, qlike = scores(returns[test], variances)
            print(f"{name:<10} {returns[test].size:>5} {model:<6} {loglik:>9.4f} {qlike:>8.4f}")
    all_returns = np.concatenate(pooled["returns"])
    for model in ("ewma", "garch"):
        loglik, qlike = scores(all_returns, np.concatenate(pooled[model]))
        print(f"{'pooled':<10} {all_returns.size:>5} {model:<6} {loglik:>9.4f} {qlike:>8.4f}")
    # Diebold-Mariano style: the daily log-likelihood differences, their mean over its standard error.
    daily = [
        -0.5 * (np.log(np.concatenate(pooled[model])) + all_returns**2 / np.concatenate(pooled[model]))
        for model in ("garch", "ewma")
    ]
    difference = daily[0] - daily[1]
    t_stat = difference.mean() / (difference.std(ddof=1) / math.sqrt(difference.size))
    print(f"garch - ewma log-likelihood per day: {difference.mean():.4f} (t = {t_stat:.2f})")


if __name__ == "__main__":
    main()

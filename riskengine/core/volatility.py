"""Volatility forecasts from daily closes (methodology v1.1 section 9), pure numpy.

The forecast the platform uses for the probability of liquidation is the RiskMetrics EWMA
(λ = 0.94) of daily log returns, annualised with √365 (crypto trades every calendar day; the
horizon is in calendar days, ACT/365 like every time in the methodology). The comparison with
GARCH(1,1) that chose it is ``bench/bench_vol_forecast.py`` and docs/foresight.md.

- ``log_returns(closes)`` ``(n,)`` closes → ``(n − 1,)`` log returns, oldest first;
- ``ewma_variances(returns)`` ``(n,)`` → ``(n + 1,)``: the variance forecast for each day made
  the day before, the last one the forecast for the day after the last return;
- ``ewma_volatility(closes)`` → the daily volatility forecast for the next day (a float);
- ``annualised(daily)`` → ``daily · √365``;
- ``read_closes(path)`` → the ``Close`` column of a daily price CSV.
"""

from __future__ import annotations

import csv
import math
import os

import numpy as np

LAMBDA = 0.94
SEED_RETURNS = 30  # the recursion starts from the mean square of the first 30 returns
DAYS_PER_YEAR = 365.0
MIN_RETURNS = 2


def log_returns(closes: np.ndarray) -> np.ndarray:
    """Daily log returns ``(n − 1,)`` of closes ``(n,)`` USD (oldest first, all > 0)."""
    closes = np.asarray(closes, dtype=np.float64)
    return np.diff(np.log(closes))


def ewma_variances(
    returns: np.ndarray, *, lam: float = LAMBDA, seed_returns: int = SEED_RETURNS
) -> np.ndarray:
    """EWMA variance forecasts ``(n + 1,)`` (daily, squared log-return units) of ``returns`` ``(n,)``.

    ``v[0]`` is the seed, the mean of the first ``seed_returns`` squared returns;
    ``v[t + 1] = λ·v[t] + (1 − λ)·r[t]²``, so ``v[t]`` uses the returns before day ``t`` only
    (an out-of-sample forecast of ``r[t]``) and ``v[n]`` is the forecast for the next day.
    """
    returns = np.asarray(returns, dtype=np.float64)
    if returns.size < MIN_RETURNS:
        raise ValueError(f"at least {MIN_RETURNS} returns are needed, got {returns.size}")
    variances = np.empty(returns.size + 1)
    variances[0] = float(np.mean(returns[:seed_returns] ** 2))
    weight = 1.0 - lam
    # A first-order recursion: a loop over days (about a thousand), not over accounts.
    value = variances[0]
    for t, r in enumerate(returns.tolist()):
        value = lam * value + weight * r * r
        variances[t + 1] = value
    return variances


def ewma_volatility(closes: np.ndarray, *, lam: float = LAMBDA) -> float:
    """Daily volatility forecast for the day after the last of ``closes`` ``(n,)`` (EWMA, λ)."""
    return math.sqrt(float(ewma_variances(log_returns(closes), lam=lam)[-1]))


def annualised(daily: float | np.ndarray) -> float | np.ndarray:
    """A daily volatility as an annual one (ACT/365: ``· √365``)."""
    return daily * math.sqrt(DAYS_PER_YEAR)


def read_closes(path: str | os.PathLike) -> np.ndarray:
    """The ``Close`` column ``(n,)`` USD of a daily price file (``Date,...,Close,...`` CSV, oldest
    first, as in the shipped history ``<SYMBOL>-USD.csv``)."""
    with open(path, newline="", encoding="utf-8") as handle:
        closes = [float(row["Close"]) for row in csv.DictReader(handle)]
    values = np.asarray(closes, dtype=np.float64)
    if values.size < MIN_RETURNS + 1 or not np.all(np.isfinite(values) & (values > 0.0)):
        raise ValueError(f"{path}: needs at least {MIN_RETURNS + 1} positive closes")
    return values

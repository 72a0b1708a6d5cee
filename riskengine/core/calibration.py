"""The price scan range from price history (methodology v1.1 section 6), pure numpy.

``psr_u = max(psr_floor, z * sigma_u * sqrt(mpor_days) * (1 + apc_buffer))`` with ``sigma_u`` the
EWMA (RiskMetrics, lambda 0.94) volatility of daily log returns, ``z = 2.326`` (99 %),
``mpor_days = 2`` and ``apc_buffer = 0.25`` (EMIR art. 28 buffer). The venue's conventions, used
by the platform's calibration (``riskengine.calibration``, which proposes new sets) and by the
backtest's ``calibrated`` mode (``riskengine.core.backtest``), which recomputes psr every day:

- returns only between consecutive calendar days (a gap is never one giant return);
- the EWMA variance ``s2_t = lambda * s2_{t-1} + (1 - lambda) * r_t**2`` starts from the mean of the
  first ``SEED_RETURNS`` squared returns;
- an underlying with fewer than ``MIN_RETURNS`` returns keeps the psr it has;
- ``PSR_FLOOR`` (10 %) is a venue constant: the current psr as a floor would make psr a ratchet
  that never comes down;
- psr is capped at ``PSR_CAP_SHARE`` (99 %) of the bound ``1 / max(1, |multiple|)`` (section 5: no
  scenario may take a price to zero or below), and rounded to ``PSR_DECIMALS`` decimals as a
  proposed set stores it.
"""

from __future__ import annotations

import math

import numpy as np

from .params import psr_bound

LAMBDA = 0.94
Z_99 = 2.326
MPOR_DAYS = 2
APC_BUFFER = 0.25
PSR_FLOOR = 0.10
PSR_CAP_SHARE = 0.99
SEED_RETURNS = 30
MIN_RETURNS = 60
PSR_DECIMALS = 6
EWMA_BLOCK = 256


def ewma_volatility(returns: np.ndarray, *, lam: float = LAMBDA) -> float:
    """EWMA daily volatility after the last of ``returns`` ``(n,)`` (log returns, oldest first)."""
    return float(np.sqrt(ewma_variance_path(np.asarray(returns, dtype=np.float64)[:, None], lam=lam)[-1, 0]))


def ewma_variance_path(returns: np.ndarray, *, lam: float = LAMBDA) -> np.ndarray:
    """EWMA variance after each return: ``(n, k)`` from ``returns`` ``(n, k)`` (one column per
    series, oldest first; per day squared): ``s2_t = lam * s2_{t-1} + (1 - lam) * r_t**2``,
    ``s2_{-1}`` the mean of the first ``SEED_RETURNS`` squared returns of each column.

    No loop per day: within a block of ``EWMA_BLOCK`` returns the recursion is the closed form
    ``s2_j = lam^(j+1) * s2_start + (1 - lam) * lam^j * cumsum(lam^-i * r_i**2)``; blocks keep
    ``lam^-i`` small (< 10^7 for lambda 0.94) so the cumulative sum loses no precision.
    """
    squared = returns * returns
    state = squared[:SEED_RETURNS].mean(axis=0)
    variance = np.empty_like(squared)
    for start in range(0, squared.shape[0], EWMA_BLOCK):
        block = squared[start : start + EWMA_BLOCK]
        power = lam ** np.arange(block.shape[0], dtype=np.float64)[:, None]  # lam^j
        variance[start : start + block.shape[0]] = lam * power * state + (1.0 - lam) * power * np.cumsum(
            block / power, axis=0
        )
        state = variance[start + block.shape[0] - 1]
    return variance


def psr_from_vol(vol, *, floor: float = PSR_FLOOR):
    """``max(floor, z * vol * sqrt(MPOR_DAYS) * (1 + APC_BUFFER))`` for a daily ``vol`` (a float or
    an array of any shape), before the cap and the rounding."""
    return np.maximum(floor, Z_99 * np.asarray(vol) * math.sqrt(MPOR_DAYS) * (1 + APC_BUFFER))


def psr_cap(multiples) -> float:
    """The largest psr a calibration proposes with these extreme ``multiples``: ``PSR_CAP_SHARE``
    of ``1 / max(1, |multiple|)``, rounded down to ``PSR_DECIMALS`` decimals."""
    return math.floor(PSR_CAP_SHARE * psr_bound(multiples) * 10**PSR_DECIMALS) / 10**PSR_DECIMALS


def psr_path(
    days: np.ndarray,
    closes: np.ndarray,
    current: np.ndarray,
    cap: np.ndarray,
    *,
    floor: float = PSR_FLOOR,
    lam: float = LAMBDA,
) -> np.ndarray:
    """The psr each day would have been calibrated to from the history up to and including it.

    ``days`` ``(n_days,)`` datetime64[D], increasing; ``closes`` ``(n_days, n_und)`` USD > 0;
    ``current`` ``(n_und,)`` the set's psr (kept while fewer than ``MIN_RETURNS`` returns are
    known); ``cap`` ``(n_und,)`` (``psr_cap`` of each underlying's extreme moves). Returns
    ``(n_days, n_und)``. Vectorised over days and underlyings (one filter per history).
    """
    n_days, n_und = closes.shape
    psr = np.broadcast_to(np.asarray(current, dtype=np.float64), (n_days, n_und)).copy()
    if n_days < 2:
        return psr
    consecutive = np.diff(days).astype(np.int64) == 1  # (n_days - 1,): a return ends on day k + 1
    returns = np.log(closes[1:][consecutive] / closes[:-1][consecutive])  # (n_returns, n_und)
    count = np.concatenate([[0], np.cumsum(consecutive)])  # returns known up to each day
    if returns.shape[0] < MIN_RETURNS:
        return psr
    variance = ewma_variance_path(returns, lam=lam)
    calibrated = np.minimum(np.round(psr_from_vol(np.sqrt(variance), floor=floor), PSR_DECIMALS), cap)
    enough = count >= MIN_RETURNS
    psr[enough] = calibrated[count[enough] - 1]
    return psr

"""Black-76 prices and Greeks on the underlying index (spec section 2), vectorised.

All inputs broadcast together (numpy rules) and are float64:

- ``forward``  F, USD per unit of underlying (the index price ``S_u``; futures mark at it in v1)
- ``strike``   K, USD
- ``vol``      sigma, annualised (0.55 = 55 %)
- ``years``    T, years ACT/365 from the valuation time; ``T <= 0`` means expired (intrinsic value)
- ``is_call``  bool, True for calls
- ``rate``     r, continuously compounded, annual

Outputs have the broadcast shape and are per unit of underlying:

- price  USD
- delta  dV/dF (dimensionless)
- gamma  d2V/dF2, 1/USD
- vega   dV/dsigma per 1.00 of vol, USD (divide by 100 for a vol point)
- theta  USD per calendar day: ``(r*price - D*F*phi(d1)*sigma/(2*sqrt T)) / 365``

At ``T <= 0`` the value is intrinsic (undiscounted), delta is +1/-1 strictly in the money and 0
otherwise (at the money counts as out), gamma, vega and theta are 0.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.special import ndtr

_INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)


class Greeks(NamedTuple):
    """Black-76 outputs, each an array of the broadcast input shape (units in the module doc)."""

    price: np.ndarray
    delta: np.ndarray
    gamma: np.ndarray
    vega: np.ndarray
    theta: np.ndarray


def _d1_d2(forward, strike, vol, years):
    """d1, d2 and sigma*sqrt(T) with T clipped at 0 (the caller masks expired entries)."""
    sqrt_t = np.sqrt(np.maximum(years, 0.0))
    std_dev = vol * sqrt_t
    # Expired entries get a dummy std-dev of 1 so no division by zero happens; they are masked later.
    safe_std = np.where(std_dev > 0.0, std_dev, 1.0)
    d1 = (np.log(forward / strike) + 0.5 * std_dev * std_dev) / safe_std
    return d1, d1 - std_dev, std_dev, sqrt_t


def black76_price(forward, strike, vol, years, is_call, rate: float = 0.0) -> np.ndarray:
    """Black-76 value per unit of underlying, USD; intrinsic at ``T <= 0`` (shape: broadcast)."""
    forward = np.asarray(forward, dtype=np.float64)
    strike = np.asarray(strike, dtype=np.float64)
    years = np.asarray(years, dtype=np.float64)
    d1, d2, std_dev, _ = _d1_d2(forward, strike, vol, years)
    discount = np.exp(-rate * np.maximum(years, 0.0)) if rate else 1.0
    # call F·N(d1) − K·N(d2); put K·N(−d2) − F·N(−d1), the same figure as −(F·N(−d1) − K·N(−d2))
    # (negation is exact): one pair of normal CDFs per entry instead of computing both and choosing.
    sign = np.where(is_call, 1.0, -1.0)
    live = discount * (sign * (forward * ndtr(sign * d1) - strike * ndtr(sign * d2)))
    intrinsic = np.where(is_call, np.maximum(forward - strike, 0.0), np.maximum(strike - forward, 0.0))
    return np.where(std_dev > 0.0, live, intrinsic)


def black76(forward, strike, vol, years, is_call, rate: float = 0.0) -> Greeks:
    """Black-76 price and Greeks per unit of underlying (units and shapes in the module doc)."""
    forward = np.asarray(forward, dtype=np.float64)
    strike = np.asarray(strike, dtype=np.float64)
    vol = np.asarray(vol, dtype=np.float64)
    years = np.asarray(years, dtype=np.float64)
    is_call = np.asarray(is_call, dtype=bool)
    d1, d2, std_dev, sqrt_t = _d1_d2(forward, strike, vol, years)
    live = std_dev > 0.0
    discount = np.exp(-rate * np.maximum(years, 0.0))
    n_d1, n_d2 = ndtr(d1), ndtr(d2)
    call = discount * (forward * n_d1 - strike * n_d2)
    # N(-x) is computed directly rather than 1 - N(x) to keep deep out-of-the-money puts accurate.
    put = discount * (strike * ndtr(-d2) - forward * ndtr(-d1))
    price_live = np.where(is_call, call, put)
    pdf_d1 = _INV_SQRT_2PI * np.exp(-0.5 * d1 * d1)
    delta_live = np.where(is_call, discount * n_d1, -discount * ndtr(-d1))
    safe_std = np.where(live, std_dev, 1.0)
    safe_sqrt_t = np.where(live, sqrt_t, 1.0)
    gamma_live = discount * pdf_d1 / (forward * safe_std)
    vega_live = discount * forward * pdf_d1 * sqrt_t
    theta_live = (rate * price_live - discount * forward * pdf_d1 * vol / (2.0 * safe_sqrt_t)) / 365.0

    intrinsic = np.where(is_call, np.maximum(forward - strike, 0.0), np.maximum(strike - forward, 0.0))
    in_the_money = np.where(is_call, forward > strike, forward < strike)
    delta_expired = np.where(in_the_money, np.where(is_call, 1.0, -1.0), 0.0)
    zero = np.zeros_like(price_live)
    return Greeks(
        price=np.where(live, price_live, intrinsic),
        delta=np.where(live, delta_live, delta_expired),
        gamma=np.where(live, gamma_live, zero),
        vega=np.where(live, vega_live, zero),
        theta=np.where(live, theta_live, zero),
    )

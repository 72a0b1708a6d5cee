"""How many units of a collateral asset move a holding's value by a given amount (spec section 3,
inverted). The band policies of ``agents`` use it to size the transfers that bring an account's
equity to a target; the engine then checks the result like any other book.

A holding of ``b`` units of asset ``a`` at price ``P`` (USD per unit) has the market value
``V = b·P``; its haircut value ``f(V)`` is ``V·(1 + liability_addon)`` below zero and, from zero
up, each bracket's slice of ``V`` times ``1 − haircut`` (tax brackets). ``f`` is continuous,
piecewise linear in ``V`` and increasing while no haircut reaches 1, so the value a number of
units adds (or removes) is found by walking its pieces from the holding, breakpoint by
breakpoint: exact, no iteration. Units: units of the asset, USD for values and prices.
"""

from __future__ import annotations

import math

import numpy as np

from .margin import haircut_values
from .params import Parameters


def _values(parameters: Parameters, asset: int, market_values: np.ndarray) -> np.ndarray:
    """``f`` at each of ``market_values`` ``(k,)`` USD for asset index ``asset`` (the engine's own
    ``haircut_values`` on a one-column book at price 1)."""
    n_assets = len(parameters.assets)
    amounts = np.zeros((market_values.size, n_assets))
    amounts[:, asset] = market_values
    return haircut_values(parameters, np.ones(n_assets), amounts)[:, asset]


def _breakpoints(parameters: Parameters, asset: int) -> np.ndarray:
    """The market values (USD, ascending, ``>= 0``) where ``f``'s slope may change: zero and the
    finite bracket bounds."""
    bounds = np.concatenate([parameters.haircut_lower[asset], parameters.haircut_upper[asset]])
    return np.unique(np.concatenate([[0.0], bounds[np.isfinite(bounds) & (bounds >= 0.0)]]))


def units_for_value(parameters: Parameters, *, asset: int, price: float, held: float, value: float) -> float:
    """The units ``u >= 0`` of asset index ``asset`` (of ``parameters.assets``) at ``price`` USD
    per unit that change the haircut value of a holding of ``held`` units (negative: a liability)
    by ``value`` USD: added to the holding when ``value > 0``, taken from it when ``value < 0``.

    A removal never takes the holding below zero units (a transfer out never makes an account
    borrow): ``inf`` when even the whole holding is not worth ``|value|``, as when an addition
    cannot reach ``value`` (haircuts of 100 % from some size on). ``0`` for a ``value`` of 0; NaN
    when an input is not a finite number or the price is not positive (callers then move nothing).
    """
    if not all(math.isfinite(x) for x in (price, held, value)) or price <= 0:
        return math.nan
    if value == 0:
        return 0.0
    start = held * price
    knots = _breakpoints(parameters, asset)
    if value > 0:
        points = np.concatenate([[start], knots[knots > start]])
    else:
        if start <= 0:
            return math.inf
        points = np.concatenate([[start], knots[(knots < start)][::-1]])
    worth = _values(parameters, asset, points)
    goal = worth[0] + value
    for k in range(1, points.size):
        a, b, fa, fb = points[k - 1], points[k], worth[k - 1], worth[k]
        if (fb < goal) if value > 0 else (fb > goal):
            continue
        if fb == fa:
            return math.inf  # a flat piece (a 100 % haircut): nothing further adds value
        return float(abs(a + (goal - fa) * (b - a) / (fb - fa) - start) / price)
    if value < 0:
        return math.inf  # the whole holding is worth less than asked
    # Beyond the last breakpoint: the open bracket, whose slope is read off its haircut (not
    # measured from two large values of f, which would lose digits).
    open_bracket = np.isfinite(parameters.haircut_lower[asset]) & np.isinf(parameters.haircut_upper[asset])
    slope = 1.0 - float(parameters.haircut_rate[asset][open_bracket][0])
    if slope <= 0:
        return math.inf
    return float((points[-1] + (goal - worth[-1]) / slope - start) / price)

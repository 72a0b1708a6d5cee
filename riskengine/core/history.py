"""A daily price history aligned to a parameter set's underlyings and assets (pure: no file IO).

The CLI (``riskengine.core.history_cli``) reads ``<SYMBOL>-USD.csv`` files and hands their
``(days, closes)`` here; the platform can hand the oracle's daily closes the same way.

Which series a parameter set needs (``needed_series``): every underlying of
``parameters.underlyings``, and every asset of ``parameters.assets`` that is neither linked to an
underlying (it takes its underlying's closes, spec section 1) nor the settlement currency ``USD``
(always 1). Stablecoins are assets like any other, priced from their own series.

Alignment: the days every needed series has (their intersection), in increasing order. A gap in
that calendar is kept as a gap: returns and loss horizons are measured in calendar days, never
across a missing day as if it were one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import DocumentError
from .params import Parameters

SETTLEMENT = "USD"


@dataclass(frozen=True, eq=False)
class PriceHistory:
    """Daily closes on ``n_days`` days.

    ``days`` ``(n_days,)`` datetime64[D], strictly increasing; ``underlying_close``
    ``(n_days, n_und)`` USD in ``Parameters.underlyings`` order; ``asset_close``
    ``(n_days, n_assets)`` USD per unit in ``Parameters.assets`` order (linked assets carry their
    underlying's close, ``USD`` 1.0). Every close is finite and > 0.
    """

    days: np.ndarray
    underlying_close: np.ndarray
    asset_close: np.ndarray

    @property
    def n_days(self) -> int:
        return int(self.days.size)

    def index_of(self, days: np.ndarray) -> np.ndarray:
        """Row of each of ``days`` (datetime64[D]) in the history, -1 where the day is missing."""
        days = np.asarray(days, dtype="datetime64[D]")
        row = np.searchsorted(self.days, days)
        found = row < self.days.size
        found[found] = self.days[row[found]] == days[found]
        return np.where(found, row, -1)


def needed_series(parameters: Parameters) -> list[tuple[str, str]]:
    """``[(symbol, why)]`` of the series a history for ``parameters`` needs, underlyings first
    (``why`` is ``"underlying"`` or ``"asset"``)."""
    needed = [(name, "underlying") for name in parameters.underlyings]
    needed += [
        (name, "asset")
        for name, linked in zip(parameters.assets, parameters.asset_underlying.tolist(), strict=True)
        if linked < 0 and name != SETTLEMENT
    ]
    return needed


def align_history(parameters: Parameters, series: dict[str, tuple[np.ndarray, np.ndarray]]) -> PriceHistory:
    """A ``PriceHistory`` for ``parameters`` from ``series``: symbol -> ``(days (n,) datetime64[D]
    strictly increasing, closes (n,) USD)``, one per ``needed_series`` symbol (others are ignored).

    Raises ``DocumentError`` naming ``prices.<SYMBOL>`` for a missing series, days that do not
    increase, or a close that is not a finite positive number; and naming ``prices`` when the
    series share no day.
    """
    needed = needed_series(parameters)
    for symbol, why in needed:
        if symbol not in series:
            raise DocumentError(f"prices.{symbol}", f"missing: the {why} {symbol} needs a price history")
        days, closes = series[symbol]
        days = np.asarray(days, dtype="datetime64[D]")
        closes = np.asarray(closes, dtype=np.float64)
        if days.ndim != 1 or days.shape != closes.shape:
            raise DocumentError(f"prices.{symbol}", "days and closes must be two arrays of one length")
        if days.size and not np.all(np.diff(days).astype(np.int64) > 0):
            raise DocumentError(f"prices.{symbol}", "days must increase strictly")
        if not np.all(np.isfinite(closes) & (closes > 0.0)):
            raise DocumentError(f"prices.{symbol}", "every close must be a finite positive number")
    common = None
    for symbol, _ in needed:
        days = np.asarray(series[symbol][0], dtype="datetime64[D]")
        common = days if common is None else np.intersect1d(common, days, assume_unique=True)
    if common is None or common.size == 0:
        raise DocumentError("prices", "the price series have no day in common")

    def on_common(symbol: str) -> np.ndarray:
        days = np.asarray(series[symbol][0], dtype="datetime64[D]")
        return np.asarray(series[symbol][1], dtype=np.float64)[np.searchsorted(days, common)]

    underlying_close = np.stack([on_common(name) for name in parameters.underlyings], axis=1)
    asset_close = np.ones((common.size, len(parameters.assets)))
    links = parameters.asset_underlying.tolist()
    for a, (name, linked) in enumerate(zip(parameters.assets, links, strict=True)):
        if linked >= 0:
            asset_close[:, a] = underlying_close[:, linked]
        elif name != SETTLEMENT:
            asset_close[:, a] = on_common(name)
    return PriceHistory(days=common, underlying_close=underlying_close, asset_close=asset_close)

"""The market inputs of a margin computation, as the oracle hands them to the risk engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class MarketQuotes:
    """One consistent view of the market at ``valuation_time``.

    Prices are the oracle's *last good* index prices (the price a sweep must use even when the
    current status is not ``ok``); ``statuses`` says how each symbol's oracle stands (``ok``,
    ``degraded``, ``stale`` or ``unconfirmed``) so that liquidation can be suspended where the price
    is not trustworthy; ``index_price_ids`` references the stored index rows used, so a margin
    snapshot can point at the exact prices it was computed from.
    """

    valuation_time: datetime
    underlying_prices: dict[str, float]  # underlying symbol -> USD per unit
    asset_prices: dict[str, float]  # unlinked collateral asset symbol -> USD per unit
    option_ivs: dict[str, float]  # option instrument symbol -> mark implied volatility (0.55 = 55 %)
    statuses: dict[str, str] = field(default_factory=dict)  # underlying or asset symbol -> oracle status
    index_price_ids: dict[str, int] = field(default_factory=dict)  # symbol -> stored index price row id
    # symbol -> the latest price the oracle observed: a move the circuit breaker holds, else what
    # the fresh sources say now (equal to the last good price while the status is ok). Withdrawals
    # value an account at the worse of the two (``riskengine.withdrawals``); absent = no other view.
    observed_prices: dict[str, float] = field(default_factory=dict)

    def unsafe_for_liquidation(self) -> set[str]:
        """Symbols whose price must not trigger a liquidation: every status but ``ok``. ``stale``
        (no fresh source), ``unconfirmed`` (a sudden move held by the circuit breaker), and
        ``degraded``: fewer fresh sources than the quorum (``min_sources``) agree, possibly one, and
        one feed — wrong or compromised — must not be able to liquidate members on its own."""
        return {symbol for symbol, status in self.statuses.items() if status != "ok"}

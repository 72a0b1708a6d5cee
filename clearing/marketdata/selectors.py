"""Reads of the oracle. ``market_quotes_current`` is the oracle's read of its market; every consumer
reads it through ``riskengine.reference.quotes_current`` (cached while the oracle writes nothing)."""

from __future__ import annotations

from datetime import date, datetime

from django.conf import settings
from django.utils import timezone

from clearing.marketdata.aggregation import DEGRADED, OK, STALE
from clearing.marketdata.models import IndexClose, IndexState, SymbolKind, VolMark
from clearing.marketdata.quotes import MarketQuotes


def market_quotes_current(*, at: datetime | None = None) -> MarketQuotes:
    """The oracle's current market, valued at ``at`` (default now), in two queries.

    Prices are each symbol's *last good* price. A symbol whose freshest contributing source is
    older than its ``max_age`` at ``at`` reads ``stale``, and an ``ok`` symbol with fewer than its
    ``min_sources`` contributing sources still fresh at ``at`` reads ``degraded``, even before the
    next aggregation records it. The settlement asset is always 1.0 with status ``ok``.
    ``index_price_ids`` points at the row of each last good price; ``observed_prices`` holds each
    symbol's latest observed price (a move the circuit breaker holds, else what the fresh sources
    say now).
    """
    at = at or timezone.now()
    underlyings: dict[str, float] = {}
    assets: dict[str, float] = {settings.SETTLEMENT_ASSET: 1.0}
    statuses: dict[str, str] = {settings.SETTLEMENT_ASSET: OK}
    ids: dict[str, int] = {}
    observed: dict[str, float] = {}
    for state in IndexState.objects.all():
        status = state.status
        if status in (OK, DEGRADED) and (state.fresh_until is None or state.fresh_until < at):
            status = STALE
        elif status == OK and (state.quorum_until is None or state.quorum_until < at):
            status = DEGRADED
        statuses[state.symbol] = status
        latest = state.pending_price if state.pending_price is not None else state.price
        if latest is not None:
            observed[state.symbol] = float(latest)
        if state.last_good_price is None:
            continue
        target = underlyings if state.kind == SymbolKind.UNDERLYING else assets
        target[state.symbol] = float(state.last_good_price)
        if state.last_good_index_price_id is not None:
            ids[state.symbol] = state.last_good_index_price_id
    ivs = {
        symbol: float(iv)
        for symbol, iv in VolMark.objects.filter(instrument__is_active=True).values_list(
            "instrument__symbol", "iv"
        )
    }
    return MarketQuotes(
        valuation_time=at,
        underlying_prices=underlyings,
        asset_prices=assets,
        option_ivs=ivs,
        statuses=statuses,
        index_price_ids=ids,
        observed_prices=observed,
    )


def index_closes(*, symbols: list[str], until: date | None = None) -> dict[str, list[tuple[date, float]]]:
    """Daily closes per symbol in date order (one query), up to ``until`` inclusive."""
    rows = IndexClose.objects.filter(symbol__in=symbols)
    if until is not None:
        rows = rows.filter(day__lte=until)
    closes: dict[str, list[tuple[date, float]]] = {symbol: [] for symbol in symbols}
    for symbol, day, price in rows.order_by("symbol", "day").values_list("symbol", "day", "price"):
        closes[symbol].append((day, float(price)))
    return closes

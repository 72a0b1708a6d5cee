"""The oracle's panel of the ops dashboard: health of every priced symbol and the open ops alerts.

Reads in a fixed number of queries (asserted in ``tests/dashboard``) whatever the number of
symbols, sources or alerts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.utils import timezone

from accounts.models import Asset
from clearing.dashboard import DashboardPanel, dashboard_panel_register, duration_text
from clearing.marketdata.aggregation import UNCONFIRMED
from clearing.marketdata.models import IndexState, SymbolKind
from clearing.marketdata.selectors import market_quotes_current
from clearing.marketdata.services import oracle_rules
from clearing.models import Underlying
from clearing.ops.alerts import ops_alerts_open
from clearing.ops.models import OpsAlert


def price_text(price: Decimal | float | None) -> str:
    """Enough digits to see a stablecoin's depeg (1.000300) and none wasted on BTC (86,512.34)."""
    if price is None:
        return "—"
    value = float(price)
    return f"{value:,.6f}" if abs(value) < 10 else f"{value:,.2f}"


@dataclass
class SymbolHealth:
    symbol: str
    kind: str
    status: str  # as readers see it now (``stale`` once the freshest source is too old)
    recorded_status: str  # as the last aggregation stored it
    last_good_price: str
    last_good_at: datetime | None
    age: timedelta | None
    max_age: timedelta | None
    min_sources: int | None
    sources: list[str] = field(default_factory=list)
    exclusions: list[dict] = field(default_factory=list)
    pending_price: str = ""
    pending_since: datetime | None = None
    alerts: list[OpsAlert] = field(default_factory=list)

    @property
    def can_confirm(self) -> bool:
        return self.recorded_status == UNCONFIRMED and self.pending_price != ""

    @property
    def too_old(self) -> bool:
        return self.age is not None and self.max_age is not None and self.age > self.max_age


def oracle_health(*, now: datetime | None = None, alerts: list[OpsAlert] | None = None) -> list[SymbolHealth]:
    """Every symbol the oracle must price — active underlyings of the active parameter set and
    unlinked collateral assets (not the settlement asset) — plus any it has a state for, in
    symbol order, with what the last aggregation saw and the open alerts keyed by the symbol
    (8 queries; 7 when the open ``alerts`` are given)."""
    now = now or timezone.now()
    quotes = market_quotes_current(at=now)
    states = {s.symbol: s for s in IndexState.objects.select_related("last_index_price")}
    candidates = set(Underlying.objects.filter(is_active=True).values_list("symbol", flat=True))
    candidates |= set(
        Asset.objects.filter(is_active=True, underlying__isnull=True)
        .exclude(symbol=settings.SETTLEMENT_ASSET)
        .values_list("symbol", flat=True)
    )
    rules = oracle_rules(symbols=candidates | set(states))
    by_key: dict[str, list[OpsAlert]] = {}
    for alert in ops_alerts_open() if alerts is None else alerts:
        by_key.setdefault(alert.key, []).append(alert)
    rows = []
    for symbol in sorted(candidates | set(states)):
        state = states.get(symbol)
        kind, rule = rules.get(symbol, (state.kind if state else SymbolKind.UNDERLYING, None))
        row = SymbolHealth(
            symbol=symbol,
            kind=kind,
            status=quotes.statuses.get(symbol, "unpriced"),
            recorded_status=state.status if state else "",
            last_good_price=price_text(state.last_good_price if state else None),
            last_good_at=state.last_good_at if state else None,
            age=(now - state.last_good_at) if state and state.last_good_at else None,
            max_age=rule.max_age if rule else None,
            min_sources=rule.min_sources if rule else None,
            alerts=by_key.get(symbol, []),
        )
        if state is not None:
            if state.last_index_price is not None:
                row.sources = list(state.last_index_price.sources)
                row.exclusions = list(state.last_index_price.exclusions)
            if state.pending_price is not None:
                row.pending_price = price_text(state.pending_price)
                row.pending_since = state.pending_since
        rows.append(row)
    return rows


def oracle_panel_context() -> dict:
    now = timezone.now()
    alerts = ops_alerts_open()
    rows = oracle_health(now=now, alerts=alerts)
    for row in rows:
        row.age_text = duration_text(row.age) if row.age is not None else "never priced"
    symbols = {row.symbol for row in rows}
    return {
        "rows": rows,
        "now": now,
        "other_alerts": [a for a in alerts if a.key not in symbols],
        "problems": sum(1 for row in rows if row.status != "ok"),
    }


def register() -> None:
    dashboard_panel_register(
        DashboardPanel(
            key="oracle",
            title="Oracle health",
            template="marketdata/dashboard/oracle.html",
            context=oracle_panel_context,
            order=50,
        )
    )

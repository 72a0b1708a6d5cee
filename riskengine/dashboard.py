"""The ops dashboard (``/admin/dashboard/``): a page of panels, each a template fed by a selector.

Other apps add their panels — margin calls, liquidations, oracle health, sweeps — by registering
them in their ``AppConfig.ready()``::

    from riskengine.dashboard import DashboardPanel, dashboard_panel_register

    dashboard_panel_register(DashboardPanel(
        key="oracle", title="Oracle health", order=30,
        template="marketdata/dashboard_oracle.html", context=oracle_health_context,
    ))

``context`` is called with no argument on every page view and returns the template's context; it
must read in a bounded number of queries (the page is refreshed often).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from accounts.models import AccountKind, CollateralBalance, MarginAccount
from clearing.validation import decimal_from_float
from riskengine.models import ParameterSet, ParameterSetEvent, ParameterStatus
from riskengine.reference import quotes_current
from riskengine.selectors import parameter_sets_pending


@dataclass(frozen=True)
class DashboardPanel:
    key: str
    title: str
    template: str
    context: Callable[[], dict]
    order: int = 100


_PANELS: dict[str, DashboardPanel] = {}


def dashboard_panel_register(panel: DashboardPanel) -> None:
    """Add (or, with the same ``key``, replace) a panel."""
    _PANELS[panel.key] = panel


def dashboard_panels() -> list[DashboardPanel]:
    return sorted(_PANELS.values(), key=lambda panel: (panel.order, panel.key))


def duration_text(delta: timedelta | None) -> str:
    """``1 h 05 min``, ``4 min 07 s``, ``2.31 s``; the sign is left to the caller."""
    if delta is None:
        return ""
    seconds = abs(delta.total_seconds())
    if seconds < 60:
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def parameters_panel_context() -> dict:
    """The active set, sets awaiting a decision or their effective time, recent governance events."""
    return {
        "active": ParameterSet.objects.filter(status=ParameterStatus.ACTIVE)
        .select_related("decided_by")
        .first(),
        "pending": list(parameter_sets_pending()),
        "events": list(
            ParameterSetEvent.objects.select_related("parameter_set", "actor").order_by("-at", "-pk")[:10]
        ),
    }


def insurance_fund_panel_context() -> dict:
    """The insurance fund account's balances, per asset, in asset units and valued in USD at the
    oracle's last good prices (at most 5 queries: 3 when the cached quotes are current). An asset
    without a price is shown and left out of the total, which is then marked incomplete; a price
    that is not ``ok`` is flagged."""
    fund = MarginAccount.objects.filter(kind=AccountKind.INSURANCE_FUND).first()
    balances = []
    total = Decimal(0)
    complete = True
    if fund is not None:
        balances = list(
            CollateralBalance.objects.filter(account=fund)
            .select_related("asset__underlying")
            .order_by("asset__symbol")
        )
        quotes = quotes_current()
        for balance in balances:
            asset = balance.asset
            symbol = asset.underlying.symbol if asset.underlying_id else asset.symbol
            prices = quotes.underlying_prices if asset.underlying_id else quotes.asset_prices
            price = prices.get(symbol)
            balance.price_status = quotes.statuses.get(symbol, "unpriced")
            if price is None:
                balance.price = balance.usd = None
                complete = complete and balance.amount == 0
                continue
            balance.price = decimal_from_float(price)
            balance.usd = balance.amount * balance.price
            total += balance.usd
    return {"fund": fund, "balances": balances, "total_usd": total, "complete": complete}


dashboard_panel_register(
    DashboardPanel(
        key="parameters",
        title="Risk parameters",
        template="riskengine/dashboard/parameters.html",
        context=parameters_panel_context,
        order=10,
    )
)
dashboard_panel_register(
    DashboardPanel(
        key="insurance_fund",
        title="Insurance fund",
        template="riskengine/dashboard/insurance_fund.html",
        context=insurance_fund_panel_context,
        order=90,
    )
)

"""The risk engine's panels on the ops dashboard (``clearing.dashboard``): the risk parameters and
the insurance fund."""

from __future__ import annotations

from decimal import Decimal

from accounts.models import AccountKind, CollateralBalance, MarginAccount
from clearing.dashboard import DashboardPanel, dashboard_panel_register
from clearing.validation import decimal_from_float
from riskengine.models import ParameterSet, ParameterSetEvent, ParameterStatus
from riskengine.reference import quotes_current
from riskengine.selectors import parameter_sets_pending


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


def register() -> None:
    """Add the risk engine's panels (called by ``RiskEngineConfig.ready``)."""
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

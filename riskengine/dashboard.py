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

from accounts.models import AccountKind, CollateralBalance, MarginAccount
from riskengine.models import ParameterSet, ParameterSetEvent, ParameterStatus
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
    """The insurance fund account's balances, per asset, in asset units."""
    fund = MarginAccount.objects.filter(kind=AccountKind.INSURANCE_FUND).first()
    balances = []
    if fund is not None:
        balances = list(
            CollateralBalance.objects.filter(account=fund).select_related("asset").order_by("asset__symbol")
        )
    return {"fund": fund, "balances": balances}


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

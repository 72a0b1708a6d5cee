"""The ops dashboard's registry (``/admin/dashboard/``, the page is ``riskengine.views``): a page
of panels, each a template fed by a selector. The kernel owns only the registry; each app adds its
panels — risk parameters, margin calls, liquidations, oracle health, sweeps — by registering them
in its ``AppConfig.ready()``::

    from clearing.dashboard import DashboardPanel, dashboard_panel_register

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

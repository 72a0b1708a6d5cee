"""Model validation's panels on the ops dashboard (``clearing.dashboard``): the backtest of the
active set (venue coverage and traffic light, accounts in yellow and red, exceptions with their
day and the underlying that caused them, IM against the realised loss of the aggregate book, and
procyclicality ``fixed`` against ``calibrated``) and the stress test (Cover-1 and Cover-2 against
the insurance fund, with the scenario and members that set them). Each reads a fixed number of
queries whatever the size of the venue; the chart is drawn with the kernel's SVG helpers."""

from __future__ import annotations

from clearing.charts import line_chart
from clearing.dashboard import DashboardPanel, dashboard_panel_register
from riskengine.validation.models import Light, ValidationKind, ValidationRun
from riskengine.validation.selectors import (
    EXCEPTIONS_SHOWN,
    latest_runs,
    run_series,
    worst_account_backtests,
    worst_account_stresses,
)

HORIZONS = ("1", "5", "30")
WORST_SHOWN = 10


def _latest_attempt() -> ValidationRun | None:
    """The newest nightly or on-demand run, whatever its state (one query): shows a run still
    going or one that failed."""
    return (
        ValidationRun.objects.filter(kind__in=[ValidationKind.NIGHTLY, ValidationKind.ON_DEMAND])
        .select_related("parameter_set")
        .only("kind", "mode", "status", "error", "started_at", "finished_at", "parameter_set__version")
        .order_by("-pk")
        .first()
    )


def _procyclicality(runs: dict) -> list[dict]:
    """Rows ``{"mode", "view", "peak_to_trough", "increases": [...]}`` for each completed mode."""
    rows = []
    for mode, run in runs.items():
        if run is None:
            continue
        for view, key in (("accounts' total IM", "pooled"), ("aggregate book", "aggregate")):
            section = run.report.get(key)
            if section is None:
                continue
            cyclic = section["procyclicality"]
            rows.append(
                {
                    "mode": mode,
                    "view": view,
                    "peak_to_trough": cyclic["peak_to_trough"],
                    "increases": [cyclic["max_increase"][h] for h in HORIZONS],
                }
            )
    return rows


def backtest_panel_context() -> dict:
    """The active set's latest completed backtest (``fixed``; ``calibrated`` beside it for
    procyclicality): 6 queries."""
    runs = latest_runs()
    run = runs["fixed"]
    context = {"run": run, "latest": _latest_attempt(), "procyclicality": _procyclicality(runs)}
    if run is None:
        return context
    # Every account of a run has the same observations: most exceptions first is worst light first.
    rows = worst_account_backtests(run=run, limit=EXCEPTIONS_SHOWN)
    worst = [row for row in rows if row.light != Light.GREEN][:WORST_SHOWN]
    exceptions = sorted(
        ({"account": row.account, **exception} for row in rows for exception in row.exception_days),
        key=lambda e: (e["day"], e["account"].code),
        reverse=True,
    )[:EXCEPTIONS_SHOWN]
    series = run_series(run=run)
    aggregate = run.report.get("aggregate")
    chart = None
    if aggregate is not None:
        chart = line_chart(
            series["days"],
            [
                ("IM (aggregate book)", "#2456a6", series["aggregate_im"]),
                ("2-day loss", "#c62828", series["aggregate_loss"]),
            ],
            title="Aggregate book: initial margin against the realised two-day loss",
            time_format="%d %b %Y",
        )
    drivers = aggregate.get("exception_underlyings", {}) if aggregate else {}
    context.update(
        pooled=run.report.get("pooled"),
        aggregate=aggregate,
        aggregate_exceptions=sorted(drivers.items(), reverse=True)[:EXCEPTIONS_SHOWN],
        lights=run.report.get("lights", {}),
        worst=worst,
        exceptions=exceptions,
        chart=chart,
    )
    return context


def stress_panel_context() -> dict:
    """Cover-1 and Cover-2 of the active set's latest completed ``fixed`` run against the fund it
    held at that run's prices, and the accounts with the largest uncovered losses (4 queries)."""
    run = latest_runs()["fixed"]
    if run is None:
        return {"run": None}
    fund = None if run.fund_value is None else float(run.fund_value)
    cover_2 = run.report["cover_2"]
    return {
        "run": run,
        "fund": fund,
        "cover_1": run.report["cover_1"],
        "cover_2": cover_2,
        "short": fund is None or bool(run.fund_unpriced) or fund < cover_2["amount"],
        "scenarios": run.report.get("scenarios", []),
        "stressed": worst_account_stresses(run=run),
    }


def register() -> None:
    """Add the validation panels (called by ``RiskEngineConfig.ready``)."""
    dashboard_panel_register(
        DashboardPanel(
            key="validation_backtest",
            title="Model validation: backtest of the active set",
            template="riskengine/dashboard/validation_backtest.html",
            context=backtest_panel_context,
            order=70,
        )
    )
    dashboard_panel_register(
        DashboardPanel(
            key="validation_stress",
            title="Model validation: stress, Cover-1 and Cover-2",
            template="riskengine/dashboard/validation_stress.html",
            context=stress_panel_context,
            order=80,
        )
    )

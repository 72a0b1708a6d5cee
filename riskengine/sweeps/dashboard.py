"""The sweeps' panels of the ops dashboard: accounts by status, open margin calls, liquidations,
recent sweeps, the accounts most likely to be liquidated (liquidation foresight). Each panel reads
in a fixed number of queries whatever the size of the venue (asserted in ``tests/dashboard``): the
page refreshes every 30 s on several ops screens.
"""

from __future__ import annotations

from datetime import datetime

from django.db.models import Count, F, FloatField, Q
from django.db.models.functions import Cast
from django.utils import timezone

from accounts.models import AccountKind, MarginAccount
from clearing.dashboard import DashboardPanel, dashboard_panel_register, duration_text
from riskengine.sweeps.models import (
    AccountForesight,
    AccountMargin,
    CallStatus,
    Liquidation,
    LiquidationStatus,
    MarginCall,
    MarginStatus,
    Sweep,
    WarningLevel,
)

WORST_ACCOUNTS = 10
CALLS_SHOWN = 50
LIQUIDATIONS_SHOWN = 20
FINISHED_LIQUIDATIONS_SHOWN = 10
SWEEPS_SHOWN = 15
FORESIGHT_SHOWN = 15


def account_status_counts() -> dict:
    """Member accounts by their current margin status, and how many were never swept (2 queries)."""
    by_status = dict(
        AccountMargin.objects.filter(account__kind=AccountKind.MEMBER)
        .values_list("status")
        .annotate(n=Count("pk"))
        .values_list("status", "n")
    )
    total = MarginAccount.objects.filter(kind=AccountKind.MEMBER).count()
    counts = {status: by_status.get(status, 0) for status in MarginStatus.values}
    return {"counts": counts, "total": total, "never_swept": total - sum(counts.values())}


def account_margins_worst(*, limit: int = WORST_ACCOUNTS) -> list[AccountMargin]:
    """The member accounts closest to liquidation: lowest margin ratio (equity / MM) first, among
    accounts with a maintenance requirement (one query). ``ratio`` is annotated."""
    return list(
        AccountMargin.objects.filter(account__kind=AccountKind.MEMBER, maintenance_margin__gt=0)
        .annotate(ratio=Cast(F("equity"), FloatField()) / F("maintenance_margin"))
        .select_related("account__member")
        .order_by("ratio", "account_id")[:limit]
    )


def accounts_panel_context() -> dict:
    worst = account_margins_worst()
    for margin in worst:
        margin.excess = margin.equity - margin.initial_margin
    return {**account_status_counts(), "worst": worst, "now": timezone.now()}


def margin_calls_open(*, now: datetime, limit: int = CALLS_SHOWN) -> dict:
    """Open margin calls, earliest deadline first, each with ``time_left`` (negative: overdue),
    and how many are open in all (2 queries)."""
    base = MarginCall.objects.filter(status=CallStatus.OPEN)
    calls = list(base.select_related("account__member").order_by("deadline", "pk")[:limit])
    for call in calls:
        call.time_left = call.deadline - now
        call.overdue = call.time_left.total_seconds() < 0
        call.time_left_text = duration_text(call.time_left)
    stats = base.aggregate(total=Count("pk"), overdue=Count("pk", filter=Q(deadline__lt=now)))
    return {"calls": calls, **stats}


def calls_panel_context() -> dict:
    now = timezone.now()
    return {**margin_calls_open(now=now), "now": now}


def liquidations_recent(
    *, now: datetime, limit: int = LIQUIDATIONS_SHOWN, finished: int = FINISHED_LIQUIDATIONS_SHOWN
) -> dict:
    """Liquidations in progress (oldest first) and the last ``finished`` ones (2 queries)."""
    related = ("account__member", "call")
    running = list(
        Liquidation.objects.filter(status=LiquidationStatus.IN_PROGRESS)
        .select_related(*related)
        .order_by("started_at", "pk")[:limit]
    )
    done = list(
        Liquidation.objects.filter(status=LiquidationStatus.DONE)
        .select_related(*related)
        .order_by("-finished_at", "-pk")[:finished]
    )
    for liquidation in running:
        liquidation.running_for = duration_text(now - liquidation.started_at)
    for liquidation in done:
        liquidation.took = duration_text(liquidation.finished_at - liquidation.started_at)
    return {"running": running, "finished": done}


def liquidations_panel_context() -> dict:
    now = timezone.now()
    return {**liquidations_recent(now=now), "now": now}


def sweeps_recent(*, now: datetime, limit: int = SWEEPS_SHOWN) -> list[Sweep]:
    """The last sweeps, newest first, each with its ``duration`` (running ones: so far) (1 query).

    The large JSON columns (the market, statuses) are deferred: the panel does not show them."""
    sweeps = list(
        Sweep.objects.select_related("parameter_set")
        .only(
            "kind",
            "cause",
            "status",
            "shard_count",
            "shards_done",
            "accounts",
            "started_at",
            "finished_at",
            "parameter_set__version",
        )
        .order_by("-pk")[:limit]
    )
    for sweep in sweeps:
        end = sweep.finished_at or now
        sweep.duration = end - sweep.started_at
        sweep.duration_text = duration_text(sweep.duration)
    return sweeps


def sweeps_panel_context() -> dict:
    now = timezone.now()
    return {"sweeps": sweeps_recent(now=now), "now": now}


def foresight_most_likely(*, limit: int = FORESIGHT_SHOWN) -> dict:
    """The member accounts most likely to be liquidated within the horizon (stored foresight,
    highest probability first; those without a forecast after them), each with its distance,
    driving underlying and liquidation price; and the graded accounts by level (2 queries)."""
    rows = list(
        AccountForesight.objects.filter(account__kind=AccountKind.MEMBER)
        .select_related("account__member")
        .order_by(F("probability").desc(nulls_last=True), "distance_sigmas", "account_id")[:limit]
    )
    for row in rows:
        row.percent = None if row.probability is None else 100.0 * row.probability
        row.liquidation_price = None
        for entry in row.by_underlying:
            if entry["underlying"] == row.driver:
                sides = [entry[d] for d in ("down", "up") if entry[d] and entry[d]["sigmas"] is not None]
                if sides:
                    row.liquidation_price = min(sides, key=lambda side: side["sigmas"])["price"]
    by_level = dict(
        AccountForesight.objects.filter(account__kind=AccountKind.MEMBER)
        .values_list("level")
        .annotate(n=Count("pk"))
        .values_list("level", "n")
    )
    return {"rows": rows, "levels": {level: by_level.get(level, 0) for level in WarningLevel.values}}


def foresight_panel_context() -> dict:
    return {**foresight_most_likely(), "now": timezone.now()}


def register() -> None:
    for panel in (
        DashboardPanel(
            key="accounts",
            title="Accounts by margin status",
            template="sweeps/dashboard/accounts.html",
            context=accounts_panel_context,
            order=20,
        ),
        DashboardPanel(
            key="margin_calls",
            title="Open margin calls",
            template="sweeps/dashboard/margin_calls.html",
            context=calls_panel_context,
            order=30,
        ),
        DashboardPanel(
            key="liquidations",
            title="Liquidations",
            template="sweeps/dashboard/liquidations.html",
            context=liquidations_panel_context,
            order=40,
        ),
        DashboardPanel(
            key="foresight",
            title="Most likely to be liquidated",
            template="sweeps/dashboard/foresight.html",
            context=foresight_panel_context,
            order=35,
        ),
        DashboardPanel(
            key="sweeps",
            title="Recent sweeps",
            template="sweeps/dashboard/sweeps.html",
            context=sweeps_panel_context,
            order=60,
        ),
    ):
        dashboard_panel_register(panel)

"""What the sweeps add to each metrics scrape (``clearing.ops.metrics``, registered in
``SweepsConfig.ready``): the event-sweep backlog, the last full sweep's duration and phases, stuck
and failed shards, liquidations in progress and stuck, the insurance fund against its floor."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Q
from prometheus_client.core import GaugeMetricFamily, Metric

from clearing.ops.metrics import metric_age, metric_gauge
from riskengine.fund import insurance_fund_value
from riskengine.sweeps.models import (
    Liquidation,
    LiquidationStatus,
    ShardStatus,
    Sweep,
    SweepKind,
    SweepRequest,
    SweepShard,
    SweepStatus,
)


def sweeps_state_metrics(now: datetime) -> Iterator[Metric]:
    stuck_after = now - timedelta(seconds=settings.BROKER_VISIBILITY_TIMEOUT)
    recent = now - timedelta(hours=1)
    day = now - timedelta(days=1)

    requests = SweepRequest.objects.order_by("requested_at").values_list("requested_at", flat=True)
    yield metric_gauge(
        "clearing_sweep_requests_pending", "Accounts waiting for an event sweep.", requests.count()
    )
    yield metric_gauge(
        "clearing_sweep_requests_oldest_age_seconds",
        "Age of the oldest pending event-sweep request (0 when none).",
        metric_age(now, requests.first()),
    )

    last = (
        Sweep.objects.filter(kind=SweepKind.FULL, status=SweepStatus.DONE, started_at__gte=day)
        .order_by("-finished_at")
        .values_list("pk", "started_at", "finished_at")
        .first()
    )
    duration = GaugeMetricFamily(
        "clearing_sweep_last_duration_seconds",
        "The last completed full sweep, from creation to its last shard stored.",
    )
    age = GaugeMetricFamily(
        "clearing_sweep_last_finished_age_seconds",
        "Time since the last full sweep completed (absent: none in the last day).",
    )
    phases = GaugeMetricFamily(
        "clearing_sweep_last_phase_seconds",
        "The last completed full sweep's time in each phase, summed over its shards.",
        labels=["phase"],
    )
    if last is not None:
        pk, started, finished = last
        duration.add_metric([], (finished - started).total_seconds())
        age.add_metric([], metric_age(now, finished))
        totals: dict[str, float] = {}
        for timings in SweepShard.objects.filter(sweep_id=pk).values_list("timings", flat=True):
            for phase, seconds in (timings or {}).items():
                totals[phase] = totals.get(phase, 0.0) + float(seconds)
        for phase, seconds in sorted(totals.items()):
            phases.add_metric([phase], seconds)
    yield from (duration, age, phases)

    shards = dict(
        SweepShard.objects.filter(sweep__started_at__gte=day)
        .filter(
            Q(status=ShardStatus.PENDING, sweep__started_at__lt=stuck_after)
            | Q(status=ShardStatus.FAILED, sweep__started_at__gte=recent)
        )
        .values_list("status")
        .annotate(n=Count("pk"))
        .values_list("status", "n")
    )
    yield metric_gauge(
        "clearing_sweep_shards_stuck",
        "Shards still pending longer than the broker's visibility timeout after their sweep began.",
        shards.get(ShardStatus.PENDING, 0),
    )
    yield metric_gauge(
        "clearing_sweep_shards_failed",
        "Shards of the last hour's sweeps that failed (and were not retried successfully).",
        shards.get(ShardStatus.FAILED, 0),
    )
    yield metric_gauge(
        "clearing_sweeps_running",
        "Sweeps of the last day still running.",
        Sweep.objects.filter(status=SweepStatus.RUNNING, started_at__gte=day).count(),
    )
    liquidations = Liquidation.objects.filter(status=LiquidationStatus.IN_PROGRESS)
    yield metric_gauge("clearing_liquidations_in_progress", "Liquidations in progress.", liquidations.count())
    yield metric_gauge(
        "clearing_liquidations_stuck",
        "Liquidations in progress for longer than the broker's visibility timeout.",
        liquidations.filter(started_at__lt=stuck_after).count(),
    )

    fund = insurance_fund_value()
    if fund is not None:
        yield metric_gauge(
            "clearing_insurance_fund_value_usd",
            "The insurance fund's balances at the oracle's last good prices (unpriced assets left out).",
            float(fund.value),
        )
        yield metric_gauge(
            "clearing_insurance_fund_floor_usd",
            "The active parameter set's insurance fund floor.",
            float(fund.floor),
        )

"""What the oracle adds to each metrics scrape (``clearing.ops.metrics``, registered in
``MarketDataConfig.ready``): each symbol's status and the age of its last good price."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from prometheus_client.core import GaugeMetricFamily, Metric

from clearing.marketdata.models import IndexState
from clearing.ops.metrics import metric_age

ORACLE_STATUSES = ("ok", "degraded", "stale", "unconfirmed")


def oracle_state_metrics(now: datetime) -> Iterator[Metric]:
    status = GaugeMetricFamily(
        "clearing_oracle_status",
        "1 for each symbol's current oracle status (a fresh price past fresh_until reads stale).",
        labels=["symbol", "status"],
    )
    good_age = GaugeMetricFamily(
        "clearing_oracle_last_good_age_seconds",
        "Age of each symbol's last good price.",
        labels=["symbol"],
    )
    for symbol, current, last_good_at, fresh_until in IndexState.objects.values_list(
        "symbol", "status", "last_good_at", "fresh_until"
    ):
        if current in ("ok", "degraded") and fresh_until is not None and fresh_until < now:
            current = "stale"
        for name in ORACLE_STATUSES:
            status.add_metric([symbol, name], 1.0 if name == current else 0.0)
        if last_good_at is not None:
            good_age.add_metric([symbol], metric_age(now, last_good_at))
    yield from (status, good_age)

"""Model validation benchmark on PostgreSQL: the full venue backtest and stress of the 100,000-account
benchmark venue over the whole shipped history, on real Celery workers (issue #16 item 6: ≤ 10
minutes on two).

    createdb -h 127.0.0.1 -U postgres clearing_validation_bench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/clearing_validation_bench \\
      REDIS_URL=redis://127.0.0.1:6379/3 .venv/bin/python -m bench.bench_validation --workers 2 \\
      [--modes fixed calibrated] [--shard-size 5000]

The venue is ``bench.bench_sweep``'s (built on the first run: the demo's reference data, parameter
set and daily history, then 100,000 accounts of 10 positions written with COPY). Each run is
timed from its creation (shards enqueued on commit) until its last shard has reduced it; the
shards' own timings (read, compute, store) are summed from the database afterwards.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clearing.config.settings")

import django

django.setup()

from django.db import connection, transaction  # noqa: E402
from django.db.models import Sum  # noqa: E402

from accounts.models import MarginAccount  # noqa: E402
from bench.bench_sweep import CeleryWorkers, quotes, venue_build  # noqa: E402
from clearing.models import Position  # noqa: E402
from riskengine.selectors import parameter_set_active  # noqa: E402
from riskengine.validation.models import (  # noqa: E402
    AccountBacktest,
    ValidationKind,
    ValidationRun,
    ValidationShard,
    ValidationStatus,
)
from riskengine.validation.services import validation_run_create  # noqa: E402

TIMEOUT = 1800


def run_distributed(mode: str, shard_size: int, workers: CeleryWorkers) -> ValidationRun:
    started = time.perf_counter()
    with transaction.atomic():
        run = validation_run_create(
            kind=ValidationKind.ON_DEMAND,
            mode=mode,
            parameter_set=parameter_set_active(),
            cause="bench (workers)",
            quotes=quotes(),
            shard_size=shard_size,
        )
    created = time.perf_counter() - started
    while (
        ValidationRun.objects.filter(pk=run.pk).values_list("status", flat=True).get()
        == ValidationStatus.RUNNING
    ):
        time.sleep(0.5)
        if time.perf_counter() - started > TIMEOUT:
            raise RuntimeError(f"validation run {run.pk} did not finish in {TIMEOUT} s")
    wall = time.perf_counter() - started
    run.refresh_from_db()
    shards = ValidationShard.objects.filter(run=run)
    finished = shards.order_by("finished_at").values_list("finished_at", flat=True)
    sums = dict.fromkeys(("read", "compute", "store"), 0.0)
    for timings in shards.values_list("timings", flat=True):
        for key in sums:
            sums[key] += timings.get(key, 0.0)
    pooled = run.report.get("pooled") or {}
    print(
        f"{mode}: run {run.pk} {run.status} {run.error} in {wall:.1f} s wall ({created:.1f} s to create) for "
        f"{run.accounts:,} accounts ({run.backtested:,} backtested) x {run.observations} days, "
        f"{run.shard_count} shards of {shard_size} on {len(workers.names)} workers; shard time summed: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in sums.items())
        + f"; last shard stored {(finished.last() - run.started_at).total_seconds():.1f} s after the start, "
        f"the run reduced at {(run.finished_at - run.started_at).total_seconds():.1f} s"
    )
    aggregate = run.report.get("aggregate") or {}
    print(
        f"  pooled {pooled.get('exceptions')} exceptions / {pooled.get('observations')} "
        f"({pooled.get('traffic_light')}), aggregate {aggregate.get('exceptions')}, light {run.light}, "
        f"Cover-2 {run.report['cover_2']['amount']:,.0f} USD"
    )
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--modes", nargs="+", default=["fixed"], choices=["fixed", "calibrated"])
    parser.add_argument("--shard-size", type=int, default=5000)
    args = parser.parse_args()
    assert connection.vendor == "postgresql", "set DATABASE_URL to a PostgreSQL database"
    print(f"load average before: {os.getloadavg()}")
    venue_build()
    print(
        f"accounts {MarginAccount.objects.count():,}, open positions "
        f"{Position.objects.exclude(quantity=0).count():,}"
    )
    workers = CeleryWorkers(args.workers)
    try:
        workers.wait_ready()
        for mode in args.modes:
            run = run_distributed(mode, args.shard_size, workers)
            size = AccountBacktest.objects.filter(run=run).aggregate(n=Sum("observations"))["n"]
            print(f"  account-days backtested: {size:,}; load average now {os.getloadavg()}")
    finally:
        workers.stop()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_size_pretty(pg_total_relation_size('riskengine_accountbacktest')),"
            " pg_size_pretty(pg_total_relation_size('riskengine_accountstress'))"
        )
        backtests, stresses = cursor.fetchone()
        print(f"storage (every run so far): account backtests {backtests}, account stresses {stresses}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()

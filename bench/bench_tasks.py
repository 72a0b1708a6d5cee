"""How long each Celery task of the sweeps takes, run in this process the way a worker runs it:
the figures the time limits and the broker's visibility timeout in ``clearing/config/settings.py`` are
sized from (docs/operations.md, "Time limits").

    createdb -h 127.0.0.1 -U postgres clearing_tasks_bench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/clearing_tasks_bench \\
      OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 .venv/bin/python -m bench.bench_tasks --accounts 20000

The venue is ``bench.bench_sweep``'s (10 positions per account, ~12 % unhealthy) with ``--accounts``
accounts. Timed, each the body of one task:

- ``sweeps.full``: create a full sweep and its shards (``sweep_full_create``);
- ``sweeps.shard``: every shard of ``CLEARING_SWEEP_SHARD_SIZE`` accounts, in the first sweep
  (every unhealthy account opens a call, the worst case) and in a second one (steady state);
- ``sweeps.liquidation_execute``: the liquidations the first sweep started (a sample);
- ``sweeps.requests_drain``: one drain of a full batch (5,000 pending event-sweep requests);
- ``marketdata.calibrate``: the daily calibration over the demo's price history;
- ``ops.margin_snapshots_prune``: with ``--retention-sweeps N``, N more full sweeps, then the
  retention run that deletes all their snapshots but the last (as it would two hours later),
  with the time per batch of 10,000 rows and the table's size before and after.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from unittest import mock

import numpy as np

import bench.bench_sweep as venue  # sets up Django
from clearing.ops.retention import BATCH, margin_snapshots_prune
from riskengine.calibration import calibration_propose
from riskengine.sweeps import liquidation as liquidation_module
from riskengine.sweeps import services
from riskengine.sweeps.models import Liquidation, LiquidationStatus


def timed(label: str, seconds: list[float]) -> None:
    values = np.array(seconds)
    median, p99, top = np.median(values), np.percentile(values, 99), values.max()
    print(f"{label}: n={values.size} median {median:.3f} s, p99 {p99:.3f} s, max {top:.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accounts", type=int, default=20_000)
    parser.add_argument("--shard-size", type=int, default=5_000)
    parser.add_argument("--liquidations", type=int, default=100)
    parser.add_argument("--retention-sweeps", type=int, default=0)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    venue.N_ACCOUNTS = args.accounts
    venue.venue_build()
    venue.sweeps_reset()
    market = venue.quotes()
    with mock.patch.object(services, "_liquidations_enqueue"), mock.patch.object(services, "_drain_enqueue"):
        for label in ("first sweep (every call opened)", "second sweep (steady state)"):
            started = time.perf_counter()
            sweep = services.sweep_full_create(
                cause="bench", quotes=market, shard_size=args.shard_size, enqueue=False
            )
            timed(f"sweeps.full, {label}", [time.perf_counter() - started])
            shards = []
            for shard_id in sweep.shards.order_by("number").values_list("pk", flat=True):
                started = time.perf_counter()
                services.sweep_shard_run(shard_id=shard_id)
                shards.append(time.perf_counter() - started)
            timed(f"sweeps.shard of {args.shard_size:,} accounts, {label}", shards)

        pending = list(
            Liquidation.objects.filter(status=LiquidationStatus.IN_PROGRESS).values_list("pk", flat=True)
        )
        sample = random.Random(1).sample(pending, min(args.liquidations, len(pending)))
        took = []
        for liquidation_id in sample:
            started = time.perf_counter()
            liquidation_module.liquidation_execute(liquidation_id=liquidation_id)
            took.append(time.perf_counter() - started)
        if took:
            timed(f"sweeps.liquidation_execute ({len(pending):,} started)", took)

        bench_accounts = venue.MarginAccount.objects.filter(code__startswith="BENCH-")
        accounts = list(bench_accounts.values_list("pk", flat=True))
        services.sweep_requests_add(account_ids=accounts[:5000], cause="bench")
        started = time.perf_counter()
        services.sweep_requests_drain(quotes=market)
        timed("sweeps.requests_drain, a batch of 5,000 accounts", [time.perf_counter() - started])

    started = time.perf_counter()
    try:
        calibration_propose()
        timed("marketdata.calibrate", [time.perf_counter() - started])
    except Exception as error:  # the demo history may be too short on a fresh database
        print(f"marketdata.calibrate: not timed ({error})")
    if args.retention_sweeps:
        retention(args.retention_sweeps, market, args.shard_size)
    print(f"load average after: {os.getloadavg()}")


def table_size() -> tuple[int, int]:
    with venue.connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), pg_total_relation_size('sweeps_marginsnapshot') FROM sweeps_marginsnapshot"
        )
        return cursor.fetchone()


def retention(sweeps: int, market, shard_size: int) -> None:
    from datetime import timedelta

    from django.utils import timezone

    with mock.patch.object(services, "_liquidations_enqueue"):
        for _ in range(sweeps):
            services.sweep_full_run(cause="bench retention", quotes=market, shard_size=shard_size)
    rows, size = table_size()
    print(f"snapshots before retention: {rows:,} rows, {size / 2**20:.0f} MiB with indexes "
          f"({size / rows:.0f} B a row)")  # fmt: skip
    now = timezone.now()
    margin_snapshots_prune(now=now, batches=0)  # the checkpoint the run two hours later uses
    later = now + timedelta(hours=2, minutes=1)
    started = time.perf_counter()
    outcome = margin_snapshots_prune(now=later, batches=10**6)
    took = time.perf_counter() - started
    per_batch = took / max(1, outcome.snapshots / BATCH)
    print(f"ops.margin_snapshots_prune: {outcome.snapshots:,} snapshots and {outcome.sweeps} sweeps deleted "
          f"in {took:.2f} s, {per_batch:.3f} s per batch of {BATCH:,}")  # fmt: skip
    rows, size = table_size()
    print(f"snapshots after: {rows:,} rows (table not vacuumed: {size / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()

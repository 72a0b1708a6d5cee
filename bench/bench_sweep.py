"""Margin sweep benchmark on PostgreSQL: a full sweep of 100,000 accounts and 1,000,000 positions
end to end, against a bare COPY round trip of the same rows; and event sweeps of one account.

    createdb -h 127.0.0.1 -U postgres clearing_sweep_bench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/clearing_sweep_bench .venv/bin/python -m bench.bench_sweep
    ... -m bench.bench_sweep --workers 2   # also on two real Celery workers (needs REDIS_URL)

The first run migrates, seeds the demo reference data and parameter set, then writes the synthetic
accounts, positions (10 distinct demo instruments each, a third of them options) and USD balances
straight into PostgreSQL with COPY. Later runs reuse them.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from unittest import mock

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clearing.config.settings")

import django

django.setup()

import numpy as np  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from accounts.models import Asset, CollateralBalance, MarginAccount, Member  # noqa: E402
from clearing.marketdata.demo import UNDERLYINGS, spot_prices  # noqa: E402
from clearing.marketdata.quotes import MarketQuotes  # noqa: E402
from clearing.models import Instrument, InstrumentKind, Position  # noqa: E402
from riskengine.core import compute_margin  # noqa: E402
from riskengine.loading import margin_book_load  # noqa: E402
from riskengine.selectors import parameter_set_active  # noqa: E402
from riskengine.sweeps import services  # noqa: E402
from riskengine.sweeps.models import MarginSnapshot, Sweep, SweepStatus  # noqa: E402

N_ACCOUNTS, PER_ACCOUNT = 100_000, 10


def quotes() -> MarketQuotes:
    return MarketQuotes(
        valuation_time=datetime.now(UTC),
        underlying_prices={s: float(p) for s, p in spot_prices().items()},
        asset_prices={"USD": 1.0, "USDC": 1.0, "USDT": 1.0, "DAI": 1.0},
        option_ivs={
            i.symbol: UNDERLYINGS[i.underlying.symbol][2]
            for i in Instrument.objects.filter(kind=InstrumentKind.OPTION).select_related("underlying")
        },
    )


def copy_in(table: str, columns: list[str], lines: list[str]) -> None:
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy,
    ):
        copy.write("".join(lines))


def venue_build() -> None:
    call_command("migrate", verbosity=0)
    call_command("seed_demo", stdout=io.StringIO())
    if MarginAccount.objects.filter(code__startswith="BENCH-").exists():
        return
    started = time.perf_counter()
    member = Member.objects.create(code="BENCH", name="Benchmark member")
    now = datetime.now(UTC).isoformat()
    copy_in(
        "accounts_marginaccount",
        ["member_id", "code", "name", "mode", "kind", "created_at"],
        [
            f"{member.pk}\tBENCH-{i:06d}\t\t{('portfolio', 'cross', 'isolated')[i % 3]}\tmember\t{now}\n"
            for i in range(N_ACCOUNTS)
        ],
    )
    ids = np.array(MarginAccount.objects.filter(member=member).order_by("pk").values_list("pk", flat=True))
    instruments = list(Instrument.objects.select_related("underlying").filter(is_active=True))
    spots = {s: float(p) for s, p in spot_prices().items()}
    rng = np.random.default_rng(20261124)
    n = len(instruments)
    chosen = np.argsort(rng.random((N_ACCOUNTS, n)), axis=1)[:, :PER_ACCOUNT]
    spot = np.array([spots[i.underlying.symbol] for i in instruments])
    mult = np.array([float(i.multiplier) for i in instruments])
    notional = rng.uniform(5_000, 100_000, chosen.shape)
    quantity = np.round(np.sign(rng.random(chosen.shape) - 0.5) * notional / (mult[chosen] * spot[chosen]), 6)
    entry = np.round(spot[chosen] * (1 + rng.normal(0, 0.02, chosen.shape)), 4)
    lines = [
        f"{a}\t{instruments[k].pk}\t{q!r}\t{e!r}\t0\t0\t{now}\n"
        for a, ks, qs, es in zip(ids, chosen.tolist(), quantity.tolist(), entry.tolist(), strict=True)
        for k, q, e in zip(ks, qs, es, strict=True)
    ]
    copy_in(
        "clearing_position",
        [
            "account_id",
            "instrument_id",
            "quantity",
            "entry_price",
            "realised_pnl",
            "allocated_margin",
            "updated_at",
        ],
        lines,
    )
    usd = Asset.objects.get(symbol="USD").pk
    cash = np.round(notional.sum(axis=1) * rng.uniform(0.03, 0.6, N_ACCOUNTS), 2)
    # Isolated accounts (every third) hold allocations, as booking would have given them.
    cash[2::3] = np.maximum(cash[2::3], isolated_allocations_write(account_ids=ids[2::3]))
    balances = [f"{a}\t{usd}\t{c!r}\t{now}\n" for a, c in zip(ids.tolist(), cash.tolist(), strict=True)]
    copy_in("accounts_collateralbalance", ["account_id", "asset_id", "amount", "updated_at"], balances)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    print(f"venue written in {time.perf_counter() - started:.1f} s")


def isolated_allocations_write(*, account_ids: np.ndarray) -> np.ndarray:
    """Give each position of the isolated accounts ``account_ids`` 1.25 × what makes it stand at
    its initial margin, ``max(0, IM_i − value_i)`` (the engine's, at the bench's quotes; methodology
    v1.1 section 4a), in one UPDATE; returns per account the cash that keeps 10 % of it free, so
    the isolated third of the venue sweeps healthy in its steady state as before. Written with
    SQL like the rest of the venue (no ledger rows: a benchmark's positions have no trades)."""
    book = margin_book_load(
        parameters_form=parameter_set_active().to_parameters_form(),
        quotes=quotes(),
        account_ids=account_ids.tolist(),
    )
    result = compute_margin(book.margin_input)
    allocated = (
        np.ceil(1.25 * np.maximum(0.0, result.position_initial_margin - result.position_value) * 100) / 100
    )
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE bench_allocation (id bigint, allocated numeric)")
        with cursor.cursor.copy("COPY bench_allocation (id, allocated) FROM STDIN") as copy:
            copy.write(
                "".join(
                    f"{i}\t{a!r}\n"
                    for i, a in zip(book.rows.position_ids.tolist(), allocated.tolist(), strict=True)
                )
            )
        cursor.execute(
            "UPDATE clearing_position p SET allocated_margin = b.allocated"
            " FROM bench_allocation b WHERE p.id = b.id"
        )
        cursor.execute("DROP TABLE bench_allocation")
    owner = np.searchsorted(book.rows.account_ids, book.rows.position_account)
    per_account = np.bincount(owner, weights=allocated, minlength=book.rows.account_ids.size)
    return np.round(1.1 * per_account, 2)


def bare_round_trip(sweep_id: int) -> float:
    """COPY the input rows out (accounts, positions, balances) and the sweep's snapshot rows back
    in (into a scratch table of the same shape): the I/O floor with no compute."""
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TEMP TABLE scratch (LIKE {MarginSnapshot._meta.db_table})")
        payload = io.BytesIO()
        with cursor.cursor.copy(
            f"COPY (SELECT * FROM {MarginSnapshot._meta.db_table} WHERE sweep_id = %s) TO STDOUT", [sweep_id]
        ) as copy:
            for block in copy:
                payload.write(block)
        started = time.perf_counter()
        for sql in (
            "COPY (SELECT id, code, mode FROM accounts_marginaccount) TO STDOUT (FORMAT binary)",
            "COPY (SELECT id, account_id, instrument_id, quantity::float8, entry_price::float8 "
            "FROM clearing_position WHERE quantity <> 0) TO STDOUT (FORMAT binary)",
            "COPY (SELECT account_id, asset_id, amount::float8 FROM accounts_collateralbalance "
            "WHERE amount <> 0) TO STDOUT (FORMAT binary)",
        ):
            with cursor.cursor.copy(sql) as copy:
                b"".join(bytes(block) for block in copy)
        with cursor.cursor.copy("COPY scratch FROM STDIN") as copy:
            copy.write(payload.getvalue())
        elapsed = time.perf_counter() - started
        cursor.execute("DROP TABLE scratch")
    return elapsed


def sweeps_reset() -> None:
    """Forget every earlier sweep (this scratch database only), so the first sweep timed is the
    worst case: no current margins, every unhealthy account opening a call at once."""
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE sweeps_sweep, sweeps_sweepshard, sweeps_marginsnapshot, sweeps_accountmargin, "
            "sweeps_margincall, sweeps_margincallevent, sweeps_liquidation, sweeps_liquidation_trades, "
            "sweeps_sweeprequest, frontend_outboxevent, ops_uncovereddeficit"
        )
        cursor.execute("DELETE FROM marketdata_opsalert WHERE kind = 'liquidation_suspended'")


def full_sweep(label: str, market: MarketQuotes) -> tuple[float, int]:
    with mock.patch.object(services, "_liquidations_enqueue"):
        started = time.perf_counter()
        sweep, outcome = services.sweep_full_run(cause="bench", quotes=market, shard_size=25_000)
        full = time.perf_counter() - started
    timings = outcome.timings
    print(f"{label}: {full:.2f} s for {outcome.accounts:,} accounts in {sweep.shard_count} shards; "
          + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()))  # fmt: skip
    print(f"  statuses {outcome.statuses}; calls opened {outcome.opened}, escalated {outcome.escalated}, "
          f"cured {outcome.cured}")  # fmt: skip
    return full, sweep.pk


class CeleryWorkers:
    """``count`` real ``celery worker`` processes (one process each) on a queue of their own, the
    shards routed to it: the production path of a full sweep (broker, acks late, one shard a task)."""

    def __init__(self, count: int) -> None:
        from clearing.config.celery import app

        self.app = app
        token = uuid.uuid4().hex[:8]
        self.queue = f"bench-sweeps-{token}"
        self.names = [f"bench-{i}-{token}@{socket.gethostname()}" for i in range(count)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        self.processes = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "clearing.config",
                    "worker",
                    "-c",
                    "1",
                    "-n",
                    name,
                    "-Q",
                    self.queue,
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    "-l",
                    "warning",
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for name in self.names
        ]
        self.default_queue = app.conf.task_default_queue
        app.conf.task_default_queue = self.queue
        # The liquidations a sweep starts (and the tasks that send them on) wait on a queue no
        # worker reads (purged at the end): the benchmark times the sweep, and executing them
        # would trade, changing the venue for the next run (and queue the next sweep's shards
        # behind thousands of liquidations).
        self.routes = app.conf.task_routes
        self.parked = f"{self.queue}-liquidations"
        app.conf.task_routes = {
            "sweeps.liquidation_execute": {"queue": self.parked},
            "sweeps.liquidations_send": {"queue": self.parked},
        }

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            replies = self.app.control.ping(destination=self.names, timeout=1.0) or []
            if len(replies) == len(self.names):
                return
        raise RuntimeError("the Celery workers did not start")

    def stop(self) -> None:
        self.app.conf.task_default_queue = self.default_queue
        self.app.conf.task_routes = self.routes
        with self.app.connection_for_write() as conn:
            for queue in (self.queue, self.parked):
                conn.default_channel.queue_purge(queue)
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def full_sweep_distributed(label: str, market: MarketQuotes, workers: CeleryWorkers) -> tuple[float, int]:
    """Wall time from creating the sweep (shards enqueued on commit) until its last shard is stored."""
    from django.db import transaction

    started = time.perf_counter()
    with transaction.atomic():
        sweep = services.sweep_full_create(cause="bench (workers)", quotes=market, shard_size=20_000)
    while Sweep.objects.filter(pk=sweep.pk).values_list("status", flat=True).get() != SweepStatus.DONE:
        time.sleep(0.02)
        if time.perf_counter() - started > 600:
            raise RuntimeError("the distributed sweep did not finish in 10 minutes")
    full = time.perf_counter() - started
    print(f"{label}: {full:.2f} s for {sweep.accounts:,} accounts in {sweep.shard_count} shards "
          f"on {len(workers.names)} Celery workers")  # fmt: skip
    return full, sweep.pk


def event_sweeps(market: MarketQuotes) -> None:
    accounts = MarginAccount.objects.filter(code__startswith="BENCH-").values_list("pk", flat=True)
    sample = random.Random(1).sample(list(accounts), 200)
    latencies = []
    with mock.patch.object(services, "_drain_enqueue"), mock.patch.object(services, "_liquidations_enqueue"):
        for account_id in sample:
            started = time.perf_counter()
            services.sweep_requests_add(account_ids=[account_id], cause="bench trade")
            services.sweep_requests_drain(quotes=market)
            latencies.append(time.perf_counter() - started)
    ms = np.array(latencies) * 1000
    print(f"event sweep (request → stored snapshot), 200 accounts: p50 {np.percentile(ms, 50):.1f} ms, "
          f"p99 {np.percentile(ms, 99):.1f} ms, max {ms.max():.1f} ms")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=0, help="also sweep on N real Celery workers")
    parser.add_argument(
        "--workers-only", action="store_true", help="with --workers: only the sweeps on the workers"
    )
    args = parser.parse_args()
    assert connection.vendor == "postgresql", "set DATABASE_URL to a PostgreSQL database"
    print(f"load average before: {os.getloadavg()}")
    venue_build()
    sweeps_reset()
    positions = Position.objects.exclude(quantity=0).count()
    balances = CollateralBalance.objects.exclude(amount=0).count()
    print(f"accounts {MarginAccount.objects.count():,}, open positions {positions:,}, balances {balances:,}")
    market = quotes()
    bare = None
    if not args.workers_only:
        full, sweep_id = full_sweep("first full sweep (every call opened)", market)
        bare = bare_round_trip(sweep_id)
        print(f"bare COPY round trip: {bare:.2f} s; ratio {full / bare:.2f}x")
        again, _ = full_sweep("second full sweep (steady state)", market)
        print(f"  ratio {again / bare:.2f}x")
        event_sweeps(market)
    if args.workers:
        workers = CeleryWorkers(args.workers)
        try:
            workers.wait_ready()
            sweeps_reset()
            first, sweep_id = full_sweep_distributed(
                "first full sweep on workers (every call opened)", market, workers
            )
            bare = bare or bare_round_trip(sweep_id)
            print(f"  bare COPY round trip {bare:.2f} s; ratio {first / bare:.2f}x")
            again, _ = full_sweep_distributed("second full sweep on workers (steady state)", market, workers)
            print(f"  ratio {again / bare:.2f}x")
        finally:
            workers.stop()
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()

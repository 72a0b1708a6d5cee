"""Benchmark of liquidation foresight on the synthetic venue (not a test: run it by hand).

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 .venv/bin/python -m bench.bench_foresight [--accounts 100000]

Prints: the venue, the distances of every account (per underlying and direction, and the joint
move; ``Book`` built from one ``compute_margin`` run, then ``distances``), best and median of
``--repeat`` runs, the pair rows evaluated; then one account at a time as the API would do it
(``--sample`` accounts drawn with a fixed seed, each its own ``MarginInput``: engine run, book,
distances), p50/p99/max; and the probability of liquidation within a day (``--probability``
accounts, one at a time and in one call), and how many accounts are below each equity / MM level.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from bench.venue import make_venue
from riskengine.core import MarginInput, Portfolios
from riskengine.core.foresight import Book, distances, liquidation_probability


def one_account(venue: MarginInput, k: int) -> MarginInput:
    """Portfolio ``k`` of the venue alone, as the API builds one account's input."""
    f = venue.portfolios
    pos = np.flatnonzero(f.position_portfolio == k)
    bal = np.flatnonzero(f.balance_portfolio == k)
    portfolios = Portfolios(
        ids=(f.ids[k],), mode=f.mode[k : k + 1],
        position_portfolio=np.zeros(pos.size, dtype=np.int64), position_instrument=f.position_instrument[pos],
        position_quantity=f.position_quantity[pos], position_entry=f.position_entry[pos],
        position_allocated_margin=f.position_allocated_margin[pos],
        balance_portfolio=np.zeros(bal.size, dtype=np.int64), balance_asset=f.balance_asset[bal],
        balance_amount=f.balance_amount[bal],
    )  # fmt: skip
    return MarginInput(venue.parameters, venue.market, portfolios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sample", type=int, default=1000)
    parser.add_argument("--probability", type=int, default=200)
    args = parser.parse_args()
    n_positions = args.accounts * 10
    venue = make_venue(n_accounts=args.accounts, n_positions=n_positions)
    f = venue.portfolios
    print(
        f"venue: {f.n_portfolios:,} accounts, {f.position_quantity.size:,} positions, "
        f"{len(venue.parameters.underlyings)} underlyings, {venue.market.n_instruments:,} instruments"
    )

    times, cpu, found = [], [], None
    for _ in range(args.repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        found = distances(venue)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    book = found.book
    status = np.bincount(book.result.status, minlength=3)
    print(f"pairs {book.n_pairs:,}; accounts healthy / margin call / liquidation: {status.tolist()}")
    # The accounts the platform grades after a full sweep: equity / MM below the governed level.
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = book.result.equity / book.result.maintenance_margin
    for level in (2.0, 3.0, 4.0, 6.0):
        below = ~(ratio >= level)
        healthy = int((below & (book.result.status == 0)).sum())
        print(f"  equity / MM below {level:g}: {int(below.sum()):,} accounts ({healthy:,} healthy)")
    print(
        f"all distances (engine run + book + search): wall best {min(times):.2f} s, median "
        f"{statistics.median(times):.2f} s; CPU best {min(cpu):.2f} s, median {statistics.median(cpu):.2f} s "
        f"of {args.repeat}; {found.rows:,} pair rows evaluated"
    )
    alive = book.result.status[book.pair_portfolio] != 2
    for name, moves in (("down", found.down), ("up", found.up)):
        share = np.isfinite(moves[alive]).mean()
        print(f"  {name}: {share:.1%} of the live pairs liquidate within the range; "
              f"median |x| {np.nanmedian(np.abs(moves[alive])):.4f}")  # fmt: skip

    rng = np.random.default_rng(17)
    sample = rng.choice(f.n_portfolios, size=min(args.sample, f.n_portfolios), replace=False)
    inputs = [one_account(venue, int(k)) for k in sample]
    distances(inputs[0])  # warm caches
    single, single_cpu = [], []
    for margin_input in inputs:
        start, start_cpu = time.perf_counter(), time.process_time()
        distances(margin_input)
        single.append(time.perf_counter() - start)
        single_cpu.append(time.process_time() - start_cpu)
    for name, values in (("wall", single), ("CPU", single_cpu)):
        ms = np.array(values) * 1e3
        print(
            f"one account (engine run + book + distances), {len(values)} accounts, {name}: "
            f"p50 {np.percentile(ms, 50):.2f} ms, p99 {np.percentile(ms, 99):.2f} ms, max {ms.max():.2f} ms"
        )

    vols = np.full(len(venue.parameters.underlyings), 0.8)
    chosen = inputs[: args.probability]
    per_account = []
    for margin_input in chosen:
        one = Book(margin_input)
        start = time.perf_counter()
        liquidation_probability(one, vols=vols, horizon_days=1.0)
        per_account.append(time.perf_counter() - start)
    per_ms = np.array(per_account) * 1e3
    print(f"probability within 1 day, one account at a time ({len(chosen)}): "
          f"p50 {np.percentile(per_ms, 50):.1f} ms, p99 {np.percentile(per_ms, 99):.1f} ms")  # fmt: skip
    start = time.perf_counter()
    liquidation_probability(book, vols=vols, horizon_days=1.0, accounts=sample[: args.probability])
    elapsed = time.perf_counter() - start
    print(f"probability within 1 day, {args.probability} accounts in one call: {elapsed:.2f} s "
          f"({elapsed / args.probability * 1e3:.1f} ms each)")  # fmt: skip


if __name__ == "__main__":
    main()

"""Benchmark of the margin engine on a synthetic venue (not a test: run it by hand).

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 .venv/bin/python -m bench.bench_engine

Prints a table: venue size, engine time (best of 3 and median) and peak memory, option
revaluations per second, the speed ratio against the per-portfolio reference implementation on a
sample (results compared to 1e-9), and the SPAN scan-risk step against the ``marginism`` package.
"""

from __future__ import annotations

import argparse
import math
import resource
import statistics
import time
import tracemalloc

import numpy as np
import scipy.sparse as sp

from bench.venue import make_venue, to_document
from riskengine.core import compute_margin
from riskengine.core.black76 import black76_price
from riskengine.core.margin import ScenarioGrid, instrument_scenario_pnl
from riskengine.core.market import OPTION
from riskengine.core.reference import ReferenceContext, reference_portfolio


def timed(function, repeat: int):
    times, value = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        value = function()
        times.append(time.perf_counter() - start)
    return value, times


def revaluation_throughput(n: int = 5_000_000) -> float:
    rng = np.random.default_rng(1)
    forward = 60000.0 * np.exp(rng.normal(0, 0.2, n))
    strike = 60000.0 * np.exp(rng.normal(0, 0.2, n))
    vol = rng.uniform(0.3, 1.2, n)
    years = rng.uniform(1 / 365, 1.0, n)
    call = rng.random(n) < 0.5
    _, times = timed(lambda: black76_price(forward, strike, vol, years, call), 3)
    return n / min(times)


def close(a, b) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)


def compare(a, b, path="") -> list[str]:
    if isinstance(a, dict):
        return [d for key in a for d in compare(a[key], b[key], f"{path}.{key}")]
    if isinstance(a, list):
        if len(a) != len(b):
            return [f"{path}: length"]
        return [d for k, (x, y) in enumerate(zip(a, b, strict=True)) for d in compare(x, y, f"{path}[{k}]")]
    if isinstance(a, float) and isinstance(b, float):
        return [] if close(a, b) else [f"{path}: {a!r} != {b!r}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def span_grid(venue) -> tuple[ScenarioGrid, np.ndarray]:
    """SPAN's 16 scenarios in marginism's order, as an engine grid (price in thirds of psr, vol up/down,
    then the two extreme moves +-2 psr at vol up with coverage 0.35 folded into the array)."""
    from marginism import SCENARIO_LABELS

    p = venue.parameters
    moves, vols = [], []
    for label in SCENARIO_LABELS[:14]:
        price_part, vol_part = label.split(" / ")
        fraction = 0.0 if "unch" in price_part else float(eval(price_part.split()[1]))
        moves.append(fraction)
        vols.append(0 if vol_part == "vol up" else 2)
    moves += [2.0, -2.0]
    vols += [0, 0]
    psr = p.psr[:, None]
    coverage = np.concatenate([np.ones(14), [0.35, 0.35]])
    n_und = len(p.underlyings)
    grid = ScenarioGrid(
        price_move=np.asarray(moves)[None, :] * psr,
        vol_move=np.asarray(vols, dtype=np.int8),
        is_extreme=np.arange(16) >= 14,
        coverage=np.tile(coverage, (n_und, 1)),
        valid=np.ones((n_und, 16), bool),
    )
    return grid, coverage


def span_comparison(venue, sample: int) -> dict:
    """Scan risk per (portfolio, underlying) from the same 16 risk arrays: vectorised vs marginism."""
    from marginism import compute_commodity
    from marginism.model import CombinedCommodity, Contract, RiskArray

    from riskengine.core.black76 import black76

    m, f = venue.market, venue.portfolios
    grid, coverage = span_grid(venue)
    spot = m.underlying_price[m.underlying]
    price = spot.copy()
    opt = np.flatnonzero(m.kind == OPTION)
    price[opt] = black76(spot[opt], m.strike[opt], m.iv[opt], m.years[opt], m.is_call[opt]).price
    # SPAN risk arrays are per-unit losses (positive = loss) with the extreme cover already applied.
    risk_arrays = -instrument_scenario_pnl(venue, grid, price) * coverage[None, :] * m.multiplier[:, None]

    def vectorised():
        n_und = len(venue.parameters.underlyings)
        key = f.position_portfolio * n_und + m.underlying[f.position_instrument]
        pairs, pair_of_pos = np.unique(key, return_inverse=True)
        weights = sp.csr_matrix(
            (f.position_quantity, (pair_of_pos.reshape(-1), f.position_instrument)),
            shape=(pairs.size, m.n_instruments),
        )
        losses = weights @ risk_arrays
        return pairs, np.maximum(0.0, losses.max(axis=1))

    (pairs, ours), times = timed(vectorised, 3)

    contracts = [
        Contract(
            cc=m.underlying[i],
            pf_id=0,
            pf_type="OOP" if m.kind[i] == OPTION else "FUT",
            contract_id=i,
            expiry="20270101",
            price=float(price[i]),
            delta=0.0,
            volatility=0.0,
            cvf=1.0,
            risk_array=RiskArray(values=risk_arrays[i].tolist()),
        )
        for i in range(m.n_instruments)
    ]
    commodities = {u: CombinedCommodity(cc=name) for u, name in enumerate(venue.parameters.underlyings)}
    rng = np.random.default_rng(3)
    chosen = np.sort(rng.choice(f.n_portfolios, size=sample, replace=False))
    from marginism.algorithm import ResolvedPosition

    order = np.argsort(f.position_portfolio, kind="stable")
    indptr = np.searchsorted(f.position_portfolio[order], np.arange(f.n_portfolios + 1))
    books = []
    for k in chosen:
        groups: dict[int, list] = {}
        for j in order[indptr[k] : indptr[k + 1]]:
            i = int(f.position_instrument[j])
            groups.setdefault(int(m.underlying[i]), []).append(
                ResolvedPosition(contract=contracts[i], quantity=float(f.position_quantity[j]))
            )
        books.append((k, groups))
    start = time.perf_counter()
    theirs = {}
    for k, groups in books:
        for u, resolved in groups.items():
            theirs[int(k) * len(commodities) + u] = compute_commodity(commodities[u], resolved).scan_risk
    marginism_seconds = time.perf_counter() - start
    ours_by_key = dict(zip(pairs.tolist(), ours.tolist(), strict=True))
    mismatches = sum(not close(ours_by_key[key], value) for key, value in theirs.items())
    per_portfolio = marginism_seconds / sample
    return {
        "vectorised_all": min(times),
        "pairs_all": int(pairs.size),
        "marginism_sample_seconds": marginism_seconds,
        "marginism_sample": sample,
        "marginism_pairs": len(theirs),
        "marginism_extrapolated": per_portfolio * f.n_portfolios,
        "ratio": per_portfolio * f.n_portfolios / min(times),
        "mismatches": mismatches,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--positions", type=int, default=1_000_000)
    parser.add_argument("--reference-sample", type=int, default=500)
    parser.add_argument("--span-sample", type=int, default=5_000)
    args = parser.parse_args()

    start = time.perf_counter()
    venue = make_venue(n_accounts=args.accounts, n_positions=args.positions)
    generation = time.perf_counter() - start
    m = venue.market
    print(
        f"venue: {venue.portfolios.n_portfolios:,} accounts, {venue.portfolios.position_portfolio.size:,} "
        f"positions, {len(venue.parameters.underlyings)} underlyings, {m.n_instruments:,} instruments "
        f"({int((m.kind == OPTION).sum()):,} options); generated in {generation:.2f} s"
    )

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result, times = timed(lambda: compute_margin(venue), 5)
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tracemalloc.start()
    compute_margin(venue)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    n_s = result.grid.price_move.shape[1]
    print(
        f"engine, all portfolio margins: best {min(times):.3f} s, median {statistics.median(times):.3f} s "
        f"(5 runs); peak RSS {rss_after:.0f} MiB (venue alone {rss_before:.0f} MiB); "
        f"engine peak allocations {traced_peak / 2**20:.0f} MiB"
    )
    status = np.bincount(result.status, minlength=3)
    print(
        f"  {result.pair_portfolio.size:,} (account, underlying) pairs, {n_s} scenarios; "
        f"healthy {status[0]:,}, "
        f"margin call {status[1]:,}, liquidation {status[2]:,}"
    )

    throughput = revaluation_throughput()
    print(
        f"option revaluations: {throughput / 1e6:.1f} million per second "
        "(Black-76 price, 5M options, one core)"
    )

    rng = np.random.default_rng(11)
    sample = np.sort(rng.choice(venue.portfolios.n_portfolios, size=args.reference_sample, replace=False))
    doc = to_document(venue, sample)
    context = ReferenceContext(doc)
    start = time.perf_counter()
    reference = [reference_portfolio(context, portfolio) for portfolio in doc["portfolios"]]
    reference_seconds = time.perf_counter() - start
    differences = [d for a, b in zip(result.to_dicts(sample), reference, strict=True) for d in compare(a, b)]
    per_portfolio = reference_seconds / len(sample)
    extrapolated = per_portfolio * venue.portfolios.n_portfolios
    print(
        f"reference (per-portfolio Python): {len(sample)} portfolios in {reference_seconds:.2f} s "
        f"-> {extrapolated:.0f} s for all; engine is {extrapolated / min(times):,.0f}x faster; "
        f"{len(differences)} differences beyond 1e-9"
    )
    for line in differences[:5]:
        print("   ", line)

    span = span_comparison(venue, args.span_sample)
    print(
        "SPAN scan-risk step (16 scenarios, same risk arrays): "
        f"vectorised all {span['pairs_all']:,} pairs in "
        f"{span['vectorised_all']:.3f} s; marginism {span['marginism_sample']:,} accounts "
        f"({span['marginism_pairs']:,} pairs) in {span['marginism_sample_seconds']:.2f} s -> "
        f"{span['marginism_extrapolated']:.1f} s for all; ratio {span['ratio']:,.0f}x; "
        f"{span['mismatches']} scan values differ beyond 1e-9"
    )


if __name__ == "__main__":
    main()

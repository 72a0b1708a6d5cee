"""Benchmark of the backtest and stress engine over the real history (not a test: run it by hand).

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 .venv/bin/python -m bench.bench_backtest

The venue is ``bench/venue.py``'s, on the three underlyings that have a real history (BTC, ETH,
SOL; ``--instruments`` instruments, half of them options; USDC, USDT and linked BTC/ETH
collateral; modes mixed 15 % isolated, 45 % cross, 40 % portfolio), replayed over the daily closes
of ``clearing/data/prices`` (2021-01-01 to 2023-08-29, 969 observations with h = 2). Prints:

- one account over the whole history: ``backtest`` + ``backtest_report`` for each of ``--sample``
  accounts per mode, in ``fixed`` and ``calibrated`` mode (median and worst), and the whole
  ``python -m riskengine backtest`` process for the slowest one (median of ``--runs``);
- ``--accounts`` (10,000) accounts: the backtest and its report in both modes, the stress test
  (historical windows and the default hypothetical scenarios), and the peak RSS of the process.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.venue import make_venue, to_document
from riskengine.core import MODES, MarginInput, Portfolios
from riskengine.core.backtest import backtest, backtest_report
from riskengine.core.history_cli import read_history
from riskengine.core.stress import historical_scenarios, hypothetical_scenarios, stress, stress_report

REPO = Path(__file__).resolve().parents[1]
PRICES = REPO / "clearing" / "data" / "prices"


def sub_venue(venue: MarginInput, indices: np.ndarray) -> MarginInput:
    """The portfolios ``indices`` of ``venue`` (every instrument kept), renumbered from 0."""
    f = venue.portfolios
    new = np.full(f.n_portfolios, -1)
    new[indices] = np.arange(indices.size)
    pos = np.flatnonzero(new[f.position_portfolio] >= 0)
    bal = np.flatnonzero(new[f.balance_portfolio] >= 0)
    portfolios = Portfolios(
        ids=tuple(f.ids[k] for k in indices.tolist()), mode=f.mode[indices],
        position_portfolio=new[f.position_portfolio[pos]], position_instrument=f.position_instrument[pos],
        position_quantity=f.position_quantity[pos], position_entry=f.position_entry[pos],
        balance_portfolio=new[f.balance_portfolio[bal]], balance_asset=f.balance_asset[bal],
        balance_amount=f.balance_amount[bal],
    )  # fmt: skip
    return MarginInput(parameters=venue.parameters, market=venue.market, portfolios=portfolios)


def timed(function) -> tuple[object, float]:
    start = time.perf_counter()
    value = function()
    return value, time.perf_counter() - start


def one_account(venue: MarginInput, history, sample: int) -> int:
    """Time every sampled account alone; return the slowest one's index."""
    rng = np.random.default_rng(16)
    slowest, slowest_time = 0, 0.0
    for code, mode in enumerate(MODES):
        candidates = np.flatnonzero(venue.portfolios.mode == code)
        chosen = rng.choice(candidates, size=min(sample, candidates.size), replace=False)
        for calibration in ("fixed", "calibrated"):
            times, positions = [], []
            for k in chosen.tolist():
                single = sub_venue(venue, np.array([k]))
                _, seconds = timed(
                    lambda single=single, mode=calibration: backtest_report(
                        backtest(single, history, mode=mode)
                    )
                )
                times.append(seconds)
                positions.append(single.portfolios.position_portfolio.size)
                if seconds > slowest_time:
                    slowest, slowest_time = k, seconds
            print(
                f"  one {mode:9} account, {calibration:10}: median {statistics.median(times) * 1e3:6.1f} ms, "
                f"worst {max(times) * 1e3:6.1f} ms ({len(times)} accounts, {statistics.mean(positions):.1f} "
                "positions on average)"
            )  # fmt: skip
    return slowest


def cli_process(venue: MarginInput, k: int, runs: int, workdir: Path) -> None:
    doc = to_document(venue, [k])
    for portfolio in doc["portfolios"]:
        for position in portfolio["positions"]:
            if math.isnan(position["entry_price"]):
                del position["entry_price"]  # options carry none (and NaN is not JSON)
    path = workdir / "one_account.json"
    path.write_text(json.dumps(doc))
    command = [sys.executable, "-m", "riskengine", "backtest", str(path), "--prices", str(PRICES)]
    subprocess.run(command, check=True, capture_output=True, cwd=REPO)  # warm-up: caches
    walls = []
    for _ in range(runs):
        _, wall = timed(lambda: subprocess.run(command, check=True, capture_output=True, cwd=REPO))
        walls.append(wall)
    positions = len(doc["portfolios"][0]["positions"])
    print(
        f"  the whole process, python -m riskengine backtest (the slowest account, {positions} positions, "
        f"{len(doc['market']['instruments'])} instruments in the document): "
        f"median {statistics.median(walls):.2f} s (min {min(walls):.2f}, max {max(walls):.2f}, {runs} runs)"
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--positions-per-account", type=int, default=10)
    parser.add_argument("--instruments", type=int, default=300)
    parser.add_argument("--sample", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_backtest"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)

    venue = make_venue(
        n_accounts=args.accounts, n_positions=args.accounts * args.positions_per_account, n_underlyings=3,
        n_instruments=args.instruments,
    )  # fmt: skip
    history = read_history(str(PRICES), venue)
    f = venue.portfolios
    print(
        f"venue: {f.n_portfolios:,} accounts, {f.position_portfolio.size:,} positions, "
        f"{venue.market.n_instruments} instruments on BTC, ETH, SOL; history {history.days[0]} to "
        f"{history.days[-1]} ({history.n_days} days)"
    )

    print("one account over the whole history (backtest + report):")
    slowest = one_account(venue, history, args.sample)
    cli_process(venue, slowest, args.runs, args.workdir)

    print(f"{f.n_portfolios:,} accounts over the whole history:")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for calibration in ("fixed", "calibrated"):
        result, seconds = timed(lambda calibration=calibration: backtest(venue, history, mode=calibration))
        report, report_seconds = timed(lambda result=result: backtest_report(result))
        pooled, aggregate = report["venue"]["pooled"], report["venue"]["aggregate"]
        print(
            f"  backtest {calibration:10}: {seconds:.2f} s + report {report_seconds:.2f} s; pooled "
            f"{pooled['exceptions']:,} exceptions in {pooled['observations']:,} account-days "
            f"(coverage {pooled['coverage']:.4f}, {pooled['traffic_light']}); aggregate book "
            f"{aggregate['exceptions']} exceptions ({aggregate['traffic_light']})"
        )
        del result, report
    scenarios = historical_scenarios(venue, history) + hypothetical_scenarios(venue)
    (result, seconds) = timed(lambda: stress(venue, scenarios))
    report = stress_report(venue, result)
    print(
        f"  stress, {scenarios.n_scenarios} scenarios: {seconds:.2f} s; "
        f"Cover-1 {report['cover_1']['amount']:,.0f} ({report['cover_1']['scenario']}), "
        f"Cover-2 {report['cover_2']['amount']:,.0f} "
        f"({report['cover_2']['scenario']})"
    )  # fmt: skip
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  peak RSS {rss:.0f} MiB (before the venue runs {rss_before:.0f} MiB)")


if __name__ == "__main__":
    main()

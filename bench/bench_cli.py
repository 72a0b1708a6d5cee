"""The margin CLI against the plain-Python reference, each timed as a whole process (not a test).

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 .venv/bin/python -m bench.bench_cli

Writes a margin document of ``--portfolios`` (10,000) portfolios sampled from the synthetic venue of
``bench/venue.py`` (seeded: the same document every time), then runs, in turn, ``--runs`` times each:

- A: ``python -m riskengine margin DOC.json > out`` (the CLI: start-up, numpy/scipy imports, JSON
  in, validation, the engine, JSON out);
- B: ``python riskengine/core/reference.py DOC.json > out`` (the per-portfolio plain-Python
  implementation run by path, so no numpy is imported: ``json.load``, one portfolio at a time,
  ``json.dump`` to stdout with the same compact separators, as the CLI wrote its output before);
- A0, with ``--baseline DIR`` (another checkout, e.g. ``/work/main``): that checkout's CLI, in the same
  rounds, for a before/after from one run (its output is compared byte for byte with A's).

Both run twice over: with ``PYTHONUNBUFFERED=1``, as the production image sets it
(``docker/Dockerfile``), where every small write of ``json.dump`` is a system call; and with
buffered output. Both use a bytecode cache (``PYTHONPYCACHEPREFIX`` in ``--workdir``), as an
installed package has (the image's ``PYTHONDONTWRITEBYTECODE=1`` would otherwise make a checkout
recompile the project's modules on every run).

Wall seconds of each run are read around ``subprocess.run`` (start to exit), CPU seconds (user +
system) from the kernel's accounting of the finished child; the ratio is B / A pair by pair (A and
B alternate, so a drift of the shared machine's speed hits both), and the median is printed with
the medians of each. Both outputs are then compared: every figure equal to 1e-9 relative (a worst
scenario's label may differ where two scenarios tie to rounding). The document is kept in
``--workdir`` for replays by hand.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.bench_engine import compare
from bench.venue import make_venue, to_document

REPO = Path(__file__).resolve().parents[1]


def document(n_portfolios: int) -> dict:
    """``n_portfolios`` accounts of the benchmark venue (mean 10 positions, half of them options)."""
    venue = make_venue(n_accounts=100_000, n_positions=1_000_000)
    rng = np.random.default_rng(20261124)
    sample = np.sort(rng.choice(venue.portfolios.n_portfolios, size=n_portfolios, replace=False))
    doc = to_document(venue, sample)
    for portfolio in doc["portfolios"]:
        for position in portfolio["positions"]:
            if math.isnan(position["entry_price"]):
                del position["entry_price"]  # options carry none (and NaN is not JSON)
    return doc


def run(command: list[str], output: Path, env: dict[str, str], cwd: Path = REPO) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system, the kernel's accounting of the finished child)
    of one whole run of ``command``, its standard output written to ``output``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with output.open("w") as handle:
        start = time.perf_counter()
        subprocess.run(command, stdout=handle, check=True, cwd=cwd, env=env)
        wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--portfolios", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_cli"))
    parser.add_argument(
        "--baseline", type=Path, default=None,
        help="another checkout (e.g. the main branch): its CLI is timed too, as A0, in the same rounds",
    )  # fmt: skip
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    path = args.workdir / f"doc{args.portfolios}.json"
    doc = document(args.portfolios)
    path.write_text(json.dumps(doc, separators=(",", ":"), allow_nan=False))
    positions = sum(len(p["positions"]) for p in doc["portfolios"])
    print(
        f"document: {args.portfolios:,} portfolios, {positions:,} positions, "
        f"{len(doc['market']['instruments']):,} instruments, {path.stat().st_size / 1e6:.1f} MB"
    )
    cli = [sys.executable, "-m", "riskengine", "margin", str(path)]
    reference = [sys.executable, str(REPO / "riskengine/core/reference.py"), str(path)]
    cli_out, reference_out = args.workdir / "cli.json", args.workdir / "reference.json"
    baseline_out = args.workdir / "baseline.json"
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE")}
    base |= {"PYTHONPATH": str(REPO), "PYTHONPYCACHEPREFIX": str(args.workdir / "pycache")}
    for setting, env in (
        ("PYTHONUNBUFFERED=1", base | {"PYTHONUNBUFFERED": "1"}),
        ("buffered stdout", base),
    ):
        base_env = env | {"PYTHONPATH": str(args.baseline)}
        run(cli, cli_out, env)  # warm-up: file cache, bytecode cache
        run(reference, reference_out, env)
        if args.baseline:
            run(cli, baseline_out, base_env, cwd=args.baseline)
        a_runs, b_runs, a0_runs = [], [], []
        for _ in range(args.runs):
            a_runs.append(run(cli, cli_out, env))
            b_runs.append(run(reference, reference_out, env))
            if args.baseline:
                a0_runs.append(run(cli, baseline_out, base_env, cwd=args.baseline))
        print(f"--- {setting}")
        for label, index in (("wall", 0), ("cpu", 1)) if args.baseline else ():
            a0, b = [r[index] for r in a0_runs], [r[index] for r in b_runs]
            ratios = [y / x for x, y in zip(a0, b, strict=True)]
            print(f"{label:4}  A0 baseline CLI ({args.baseline}): median {statistics.median(a0):.2f} s "
                  f"(min {min(a0):.2f}, max {max(a0):.2f}); B / A0 per pair: median "
                  f"{statistics.median(ratios):.1f}x (min {min(ratios):.1f}x, "
                  f"max {max(ratios):.1f}x)")  # fmt: skip
        for label, index in (("wall", 0), ("cpu", 1)):
            a, b = [r[index] for r in a_runs], [r[index] for r in b_runs]
            ratios = [y / x for x, y in zip(a, b, strict=True)]
            print(f"{label:4}  A python -m riskengine margin DOC: median {statistics.median(a):.2f} s "
                  f"(min {min(a):.2f}, max {max(a):.2f})")  # fmt: skip
            print(f"{label:4}  B reference.py DOC (plain Python): median {statistics.median(b):.2f} s "
                  f"(min {min(b):.2f}, max {max(b):.2f})")  # fmt: skip
            print(f"{label:4}  B / A per pair: median {statistics.median(ratios):.1f}x "
                  f"(min {min(ratios):.1f}x, max {max(ratios):.1f}x), {args.runs} pairs")  # fmt: skip
    ours, theirs = json.loads(cli_out.read_text()), json.loads(reference_out.read_text())
    differences = [d for a, b in zip(ours, theirs, strict=True) for d in compare(b, a)]
    print(f"outputs: {len(ours):,} results each, {len(differences)} figures differ beyond 1e-9")
    for line in differences[:5]:
        print("   ", line)
    if args.baseline:
        same = baseline_out.read_bytes() == cli_out.read_bytes()
        print(f"A and A0 outputs {'byte for byte identical' if same else 'DIFFER'}")


if __name__ == "__main__":
    main()

"""Load benchmark of the REST API's what-if on loopback (not a test: run it by hand).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/clearing_api_bench REDIS_URL=redis://127.0.0.1:6379/11 \\
      .venv/bin/python -m bench.bench_api --mode open --rate 50,100,150,200 --clients 50 --seconds 20
    ... --mode closed --clients 50 --seconds 20
    ... --mode inprocess --requests 300

Prepares the database (migrate, ``seed_demo`` with the oracle's market, then one extra account
holding 50 positions — perpetuals, futures and options on BTC, ETH and SOL — and a trader with an
API token), starts ``docker/bin/web`` (``--workers`` processes of ``--threads`` request threads
each, persistent database connections) on 127.0.0.1, and drives
``POST /api/v1/accounts/{id}/what-if/`` (one hypothetical trade and one collateral change, the
whole 50-position portfolio re-margined before and after) from ``--clients`` concurrent keep-alive
connections, measuring ``--seconds`` after a short warm-up:

- ``open``: each client sends at a fixed pace (``--rate`` req/s offered in all), on a schedule
  that does not depend on the answers; latency runs from the *scheduled* send time, so a late
  answer that delays the next send on that connection is charged to it (no coordinated
  omission). A list of rates runs one step each against the same server (new connections per
  step) and reports the highest rate whose p99 meets the goal (60 ms).
- ``closed``: each client sends its next request as soon as it has the answer. This measures
  saturation: throughput is the server's capacity and latency = clients / throughput (Little's law).
- ``inprocess``: no server; the cost of one what-if through Django's full request cycle
  (middleware, authentication, throttling, view, engine, JSON), wall and CPU time.

Prints, per step, p50, p90, p99, max, throughput, the machine's CPU use during the step (all
cores, from /proc/stat, so the load of other jobs on a shared machine shows), the server's own
CPU and its CPU per request.

The client is a few lines of asyncio over raw HTTP/1.1 in this process (the server runs in its own
processes) so that it costs as little CPU as possible on the machine it shares with the server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POSITIONS = 50


def prepare() -> tuple[int, str]:
    """Seed the venue and a 50-position account; return its id and a trader's token."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clearing.config.settings")
    django.setup()
    from django.core.management import call_command

    from accounts.models import Asset, MarginAccount, Member, Role, User
    from accounts.services import api_token_issue, collateral_deposit, user_create
    from accounts.trading import Fill, trades_book
    from clearing.models import Instrument, InstrumentKind

    call_command("migrate", verbosity=0)
    call_command("seed_demo", "--if-empty", verbosity=0)
    member = Member.objects.order_by("code").first()
    account, created = MarginAccount.objects.get_or_create(
        code="BENCH-50", defaults={"member": member, "mode": "portfolio", "name": "API benchmark"}
    )
    if created:
        rng = random.Random(50)
        instruments = list(
            Instrument.objects.filter(is_active=True).select_related("underlying").order_by("symbol")
        )
        options = [i for i in instruments if i.kind == InstrumentKind.OPTION]
        linear = [i for i in instruments if i.kind != InstrumentKind.OPTION]
        chosen = linear[:10] + rng.sample(options, POSITIONS - min(10, len(linear)))
        from clearing.marketdata.selectors import market_quotes_current

        spot = market_quotes_current().underlying_prices
        fills = []
        for instrument in chosen:
            s = Decimal(str(spot[instrument.underlying.symbol]))
            price = (
                s
                if instrument.kind != InstrumentKind.OPTION
                else (s * Decimal("0.02")).quantize(Decimal("0.01"))
            )
            fills.append(Fill(account, instrument, Decimal(rng.choice([-3, -2, -1, 1, 2, 3])), price))
        trades_book(fills=fills)
        collateral_deposit(
            account=account, asset=Asset.objects.get(symbol="USDC"), amount=Decimal(50_000_000)
        )
    user = User.objects.filter(username="bench-trader").first() or user_create(
        username="bench-trader", password=None, role=Role.TRADER, member=account.member
    )
    _, token = api_token_issue(user=user, name="bench")
    held = account.positions.exclude(quantity=0).count()
    print(f"account {account.code} (id {account.pk}) holds {held} positions")
    return account.pk, token


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request_bytes(account_id: int, token: str) -> bytes:
    body = json.dumps(
        {
            "trades": [{"instrument": "BTC-PERP", "quantity": "-1"}],
            "collateral": [{"asset": "USDC", "amount": "-100000"}],
        }
    ).encode()
    head = (
        f"POST /api/v1/accounts/{account_id}/what-if/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> int:
    status_line = await reader.readline()
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    await reader.readexactly(length)
    return int(status_line.split()[1])


async def closed_client(port: int, payload: bytes, stop_at: float, record_from: float, out: list):
    """Send, wait for the answer, send again: latency from the actual send."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            writer.write(payload)
            await writer.drain()
            status = await read_response(reader)
            done = time.perf_counter()
            out.append((done - start, status, done, start >= record_from))
    finally:
        writer.close()


async def open_client(
    port: int, payload: bytes, first: float, interval: float, stop_at: float, record_from: float, out: list
):
    """Send at ``first + k × interval`` whatever the answers; latency from the scheduled time."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        scheduled = first
        while scheduled < stop_at:
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            # If the previous answer came late this send is late too: that wait counts.
            writer.write(payload)
            await writer.drain()
            status = await read_response(reader)
            done = time.perf_counter()
            out.append((done - scheduled, status, done, scheduled >= record_from))
            scheduled += interval
    finally:
        writer.close()


async def drive(args, port: int, payload: bytes, rate: float) -> list:
    now = time.perf_counter()
    record_from, stop_at = now + args.warmup, now + args.warmup + args.seconds
    out: list = []
    if args.mode == "closed":
        clients = [closed_client(port, payload, stop_at, record_from, out) for _ in range(args.clients)]
    else:
        interval = args.clients / rate  # each client's period; clients are spread evenly over it
        clients = [
            open_client(
                port, payload, now + 0.5 + interval * k / args.clients, interval, stop_at, record_from, out
            )
            for k in range(args.clients)
        ]
    await asyncio.gather(*clients)
    return out, record_from


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of all cores since boot."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def process_tree_cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its descendants (still running)."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except FileNotFoundError:
            continue
    return total


def in_process(account_id: int, token: str, requests: int) -> None:
    """One what-if at a time through Django's test client: the cost of one request."""
    from django.test import Client

    client = Client()
    body = request_bytes(account_id, token).split(b"\r\n\r\n", 1)[1]

    def once():
        response = client.post(
            f"/api/v1/accounts/{account_id}/what-if/",
            body,
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )
        assert response.status_code == 200, response.content[:300]

    for _ in range(20):
        once()
    busy0, total0 = cpu_times()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(requests):
        once()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    busy1, total1 = cpu_times()
    print(f"what-if in process, {POSITIONS}-position portfolio, {requests} requests one at a time")
    print(
        f"{wall / requests * 1000:.2f} ms wall, {cpu / requests * 1000:.2f} ms CPU per request; "
        f"machine CPU busy {100 * (busy1 - busy0) / max(1, total1 - total0):.0f} %, "
        f"load average {os.getloadavg()[0]:.1f}"
    )


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["closed", "open", "inprocess"], default="closed")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument(
        "--rate", default="50", help="open mode: requests per second in all; a list (50,100) runs a step each"
    )
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4, help="request threads per worker (WEB_THREADS)")
    parser.add_argument("--requests", type=int, default=300, help="inprocess mode")
    parser.add_argument(
        "--baseline",
        help="a git ref or a checkout's directory: its web server runs beside this tree's and takes turns "
        "at each step",
    )
    parser.add_argument(
        "--baseline-env", action="append", default=[], metavar="NAME=VALUE", help="the baseline's environment"
    )
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        sys.exit("Set DATABASE_URL to a PostgreSQL database for the benchmark.")
    os.environ.setdefault("DJANGO_DEBUG", "0")
    # Each of a web process's request threads keeps its connection (clearing.server.asgi_handler).
    os.environ.setdefault("DATABASE_CONN_MAX_AGE", "60")

    account_id, token = prepare()
    if args.mode == "inprocess":
        in_process(account_id, token, args.requests)
        return
    rates = [float(rate) for rate in args.rate.split(",")] if args.mode == "open" else [0.0]
    shape = "open loop" if args.mode == "open" else "closed loop"
    print(
        f"what-if, {POSITIONS}-position portfolio, {args.clients} clients ({shape}), {args.workers} web "
        f"workers x {args.threads} threads, {args.seconds:g} s measured per step after {args.warmup:g} s"
    )
    print(
        f"{'server':<10} {'offered':>8} {'answered':>9} {'ok':>6} {'p50':>8} {'p90':>8} {'p99':>8} "
        f"{'max':>8} {'machine CPU':>12} {'server CPU':>11} {'per request':>12}"
    )
    with contextlib.ExitStack() as stack:
        servers = [("current", stack.enter_context(web_server(ROOT, args, {})))]
        if args.baseline:
            tree = stack.enter_context(git_worktree(args.baseline))
            overrides = dict(item.split("=", 1) for item in args.baseline_env)
            name = Path(args.baseline).name if Path(args.baseline).is_dir() else args.baseline
            servers.append((name[:10], stack.enter_context(web_server(tree, args, overrides))))
        payload = request_bytes(account_id, token)
        meeting_goal: dict[str, list[float]] = {name: [] for name, _ in servers}
        for rate in rates:
            # Servers take turns at each step, so a change in the machine's load hits both alike.
            for name, (port, pid) in servers:
                step = measure(args, port, payload, rate, pid)
                print(f"{name:<10} {step.line(rate if args.mode == 'open' else None)}", flush=True)
                if args.mode == "open" and step.ok and step.p99 <= GOAL_P99_MS and not step.failed:
                    meeting_goal[name].append(rate)
    if args.mode == "open":
        for name, rates_met in meeting_goal.items():
            best = f"{max(rates_met):g} req/s" if rates_met else "none of the rates"
            print(f"{name}: highest offered rate with p99 <= {GOAL_P99_MS:g} ms: {best}")
    print(f"load average {os.getloadavg()[0]:.1f}")


@contextlib.contextmanager
def web_server(root: Path, args, overrides: dict[str, str]):
    """``docker/bin/web`` of the tree at ``root`` on a free port; yields (port, pid)."""
    port = free_port()
    env = dict(
        os.environ,
        HOST="127.0.0.1",
        PORT=str(port),
        WEB_CONCURRENCY=str(args.workers),
        WEB_THREADS=str(args.threads),
        UVICORN_LOG_LEVEL="warning",
        DJANGO_LOG_LEVEL="WARNING",
        # The benchmark measures the work, not the throttles (what-if is also a "compute" request).
        API_THROTTLE_RATE="1000000/min",
        API_COMPUTE_THROTTLE_RATE="1000000/min",
        PYTHON_BIN=sys.executable,
        PYTHONPATH=str(root),  # that tree's code, not the installed one
        **overrides,
    )
    server = subprocess.Popen([str(root / "docker" / "bin" / "web")], env=env, cwd=root)
    try:
        for _ in range(150):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.2)
        time.sleep(3.0)  # every worker up (each may bind its own socket)
        yield port, server.pid
    finally:
        server.terminate()
        server.wait(timeout=40)


@contextlib.contextmanager
def git_worktree(ref: str):
    """A temporary checkout of ``ref`` beside this one (the benchmark's baseline), or ``ref`` itself
    when it is a directory (a checkout made by other means, e.g. ``git archive``)."""
    if Path(ref).is_dir():
        yield Path(ref).resolve()
        return
    path = Path(tempfile.mkdtemp(prefix="bench-baseline-"))
    subprocess.run(["git", "worktree", "add", "--detach", str(path), ref], cwd=ROOT, check=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=False)


GOAL_P99_MS = 60.0


@dataclass
class Step:
    ok: list[float]
    failed: int
    statuses: list[int]
    throughput: float
    machine_cpu: float  # % of all cores
    server_cpu: float  # % of one core
    per_request_ms: float

    @property
    def p99(self) -> float:
        return percentile(self.ok, 0.99)

    def line(self, rate: float | None) -> str:
        offered = f"{rate:g}/s" if rate is not None else "closed"
        if not self.ok:
            return f"{offered:>8} no successful answers {self.statuses}"
        return (
            f"{offered:>8} {self.throughput:>7.1f}/s {len(self.ok):>6} {statistics.median(self.ok):>6.1f}ms "
            f"{percentile(self.ok, 0.9):>6.1f}ms {self.p99:>6.1f}ms {max(self.ok):>6.1f}ms "
            f"{self.machine_cpu:>11.0f}% {self.server_cpu:>10.0f}% {self.per_request_ms:>10.2f}ms"
            + (f"  {self.failed} not 200: {self.statuses}" if self.failed else "")
        )


def measure(args, port: int, payload: bytes, rate: float, server_pid: int) -> Step:
    """One load step; the server's CPU per request covers the whole step, warm-up included."""
    server_cpu0, (busy0, total0) = process_tree_cpu(server_pid), cpu_times()
    started = time.perf_counter()
    every, record_from = asyncio.run(drive(args, port, payload, rate))
    elapsed = time.perf_counter() - started
    server_cpu, (busy1, total1) = process_tree_cpu(server_pid) - server_cpu0, cpu_times()
    results = [(seconds, status, done) for seconds, status, done, measured in every if measured]
    ok = [seconds * 1000 for seconds, status, _ in results if status == 200]
    # Answers per second over the time it took to answer the measured requests (in open mode the
    # last ones may be answered after the schedule's end when the server falls behind).
    span = max((done for _, _, done in results), default=record_from) - record_from
    return Step(
        ok=ok,
        failed=len(results) - len(ok),
        statuses=sorted({status for _, status, _ in results if status != 200}),
        throughput=len(ok) / max(span, 1e-9),
        machine_cpu=100 * (busy1 - busy0) / max(1, total1 - total0),
        server_cpu=server_cpu / elapsed * 100,
        per_request_ms=server_cpu / max(len(every), 1) * 1000,
    )


if __name__ == "__main__":
    main()

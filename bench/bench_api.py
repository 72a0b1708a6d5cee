"""Load benchmark of the REST API's what-if on loopback (not a test: run it by hand).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/clearing_api_bench \\
      .venv/bin/python -m bench.bench_api --clients 50 --seconds 20 --workers 2

Prepares the database (migrate, ``seed_demo`` with the oracle's market, then one extra account
holding 50 positions — perpetuals, futures and options on BTC, ETH and SOL — and a trader with an
API token), starts ``docker/bin/web`` (uvicorn, ``--workers``) on 127.0.0.1, and drives
``POST /api/v1/accounts/{id}/what-if/`` (one hypothetical trade and one collateral change, the
whole 50-position portfolio re-margined before and after) from ``--clients`` concurrent keep-alive
connections for ``--seconds`` after a short warm-up. Prints p50, p90, p99, max and throughput.

The client is a few lines of asyncio over raw HTTP/1.1 so that it costs as little CPU as possible on
the machine it shares with the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POSITIONS = 50


def prepare() -> tuple[int, str]:
    """Seed the venue and a 50-position account; return its id and a trader's token."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clearing.settings")
    django.setup()
    from django.core.management import call_command

    from accounts.models import Asset, MarginAccount, Member, Role, User
    from accounts.services import api_token_issue, collateral_deposit, user_create
    from clearing.models import Instrument, InstrumentKind
    from clearing.services import Fill, trades_book

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


async def one_client(port: int, payload: bytes, stop_at: float, record_from: float, out: list, errors: list):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            writer.write(payload)
            await writer.drain()
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
            end = time.perf_counter()
            status = int(status_line.split()[1])
            if start >= record_from:
                (out if status == 200 else errors).append((end - start, status))
    finally:
        writer.close()


async def drive(port: int, payload: bytes, clients: int, seconds: float, warmup: float):
    now = time.perf_counter()
    record_from, stop_at = now + warmup, now + warmup + seconds
    out: list = []
    errors: list = []
    await asyncio.gather(
        *(one_client(port, payload, stop_at, record_from, out, errors) for _ in range(clients))
    )
    return out, errors


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        sys.exit("Set DATABASE_URL to a PostgreSQL database for the benchmark.")

    account_id, token = prepare()
    port = free_port()
    env = dict(
        os.environ,
        HOST="127.0.0.1",
        PORT=str(port),
        WEB_CONCURRENCY=str(args.workers),
        UVICORN_LOG_LEVEL="warning",
        DJANGO_DEBUG="0",
        DJANGO_LOG_LEVEL="WARNING",
        API_THROTTLE_RATE="1000000/min",  # the benchmark measures the work, not the throttle
        DATABASE_CONN_MAX_AGE="0",  # persistent connections do not suit ASGI (Django docs)
        PYTHON_BIN=sys.executable,
    )
    server = subprocess.Popen([str(ROOT / "docker" / "bin" / "web")], env=env, cwd=ROOT)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.2)
        time.sleep(1.0)
        ok, errors = asyncio.run(
            drive(port, request_bytes(account_id, token), args.clients, args.seconds, args.warmup)
        )
    finally:
        server.terminate()
        server.wait(timeout=20)
    latencies = [seconds * 1000 for seconds, _ in ok]
    print(f"what-if, {POSITIONS}-position portfolio, {args.clients} clients, {args.workers} uvicorn workers")
    print(f"requests: {len(ok)} ok, {len(errors)} not 200 ({sorted({s for _, s in errors})})")
    if latencies:
        print(
            f"p50 {statistics.median(latencies):.1f} ms  p90 {percentile(latencies, 0.90):.1f} ms  "
            f"p99 {percentile(latencies, 0.99):.1f} ms  max {max(latencies):.1f} ms  "
            f"throughput {len(ok) / args.seconds:.1f} req/s"
        )


if __name__ == "__main__":
    main()

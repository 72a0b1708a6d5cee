"""Live margin benchmark: from a price observation accepted to the margin-call event received by
200 websocket clients, through the whole production path on loopback:

    price observation (oracle, committed) → index move signal → event-sweep request → Celery task
    (Redis broker) → worker: engine run, snapshot, margin call and outbox row in one transaction →
    outbox relay in the uvicorn web process → Redis channel layer → 200 sockets.

    createdb -h 127.0.0.1 -U postgres clearing_live_bench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/clearing_live_bench REDIS_URL=redis://127.0.0.1:6379/8 \
      .venv/bin/python -m bench.bench_live [--clients 200] [--rounds 15]

The first run migrates and seeds the demo venue. Each round creates a fresh ALPHA account long
10 BTC-PERP with equity 4 % above its initial margin, lets its sweeps settle, then has the three
demo price sources report BTC 3 % lower (one batch) and times, on every client, the arrival of
that account's ``margin_call.opened``; the price is then put back. The clock starts *before* the
observation is submitted, so the figures include the oracle's own write. Bounded: every wait has
a timeout and the run stops by itself; the server and the worker are stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clearing.config.settings")

import django

django.setup()

import websockets  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402

from accounts.models import Asset, MarginAccount, User  # noqa: E402
from accounts.services import collateral_deposit  # noqa: E402
from clearing.marketdata.models import IndexState  # noqa: E402
from tests.factories import btc_observe, thin_account_make  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONNECT_BATCH = 10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the web server exited")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the web server did not start")


def _prepare() -> None:
    if connection.vendor != "postgresql" or not settings.REDIS_URL:
        sys.exit("Run with DATABASE_URL (PostgreSQL) and REDIS_URL set: this measures the service stack.")
    call_command("migrate", verbosity=0)
    if not User.objects.filter(username="alice").exists():
        call_command("seed_demo", stdout=io.StringIO())


class Clients:
    """``n`` signed-in sockets; ``arrivals[(account, type)]`` collects each client's receive time."""

    def __init__(self, url: str, origin: str, cookies: list[str]) -> None:
        self.url, self.origin, self.cookies = url, origin, cookies
        self.arrivals: dict[tuple[int, str], list[float]] = {}
        self.tasks: list[asyncio.Task] = []
        self.ready = 0

    async def _client(self, cookie: str, connected: asyncio.Event) -> None:
        headers = {"Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}"}
        async with websockets.connect(
            self.url, origin=self.origin, additional_headers=headers, max_queue=None
        ) as ws:
            hello = json.loads(await ws.recv())
            assert hello["type"] == "hello", hello
            self.ready += 1
            if self.ready == len(self.cookies):
                connected.set()
            async for raw in ws:
                now = time.perf_counter()
                # Only the margin calls are timed; skip decoding the rest (the clients share a core).
                if '"margin_call.opened"' not in raw:
                    continue
                event = json.loads(raw)
                self.arrivals.setdefault((event.get("account"), event["type"]), []).append(now)

    async def start(self) -> None:
        # Each handshake loads the session and the member's accounts on its own short-lived
        # database connection; connecting in batches keeps a burst under PostgreSQL's
        # max_connections (see docs/performance.md, "Live margin").
        connected = asyncio.Event()
        self.tasks = []
        for first in range(0, len(self.cookies), CONNECT_BATCH):
            batch = self.cookies[first : first + CONNECT_BATCH]
            self.tasks += [asyncio.create_task(self._client(cookie, connected)) for cookie in batch]
            target = first + len(batch)
            deadline = time.monotonic() + 30
            while self.ready < target and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        await asyncio.wait_for(connected.wait(), timeout=60)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def _run(*, clients: int, rounds: int, port: int) -> list[float]:
    alice = await asyncio.to_thread(User.objects.get, username="alice")

    def sessions() -> list[str]:
        cookies = []
        for _ in range(clients):
            client = Client()
            client.force_login(alice)
            cookies.append(client.cookies[settings.SESSION_COOKIE_NAME].value)
        return cookies

    pool = Clients(
        f"ws://127.0.0.1:{port}/ws/margin/", f"http://127.0.0.1:{port}", await asyncio.to_thread(sessions)
    )
    await pool.start()
    print(f"{clients} clients connected")
    latencies: list[float] = []
    run_id = int(time.time())
    for r in range(rounds):
        # New accounts are joined on connect: reconnect the pool so it watches this round's account.
        account = await asyncio.to_thread(thin_account_make, code=f"LIVE-{run_id}-{r:03d}")
        await pool.stop()
        pool.ready = 0
        await pool.start()
        await asyncio.sleep(3.0)  # let the reconnections and the account's own event sweeps settle
        key = (account.pk, "margin_call.opened")
        reference = await asyncio.to_thread(lambda: IndexState.objects.get(symbol="BTC").last_good_price)
        started, wall_started = time.perf_counter(), time.time()
        await asyncio.to_thread(btc_observe, fraction=0.03)
        deadline = time.monotonic() + 10
        while len(pool.arrivals.get(key, [])) < clients and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        arrived = pool.arrivals.get(key, [])
        round_ms = [(t - started) * 1000 for t in arrived]
        latencies += round_ms
        first, last = min(round_ms, default=float("nan")), max(round_ms, default=float("nan"))
        stages = await asyncio.to_thread(_stages, account, wall_started)
        print(f"   stages (ms after the submit): {stages}")
        print(f"round {r + 1}/{rounds}: {len(arrived)}/{clients} received, {first:.0f}–{last:.0f} ms")
        # Retire the round's account (deposit enough that it is never called again, so later rounds
        # time one new call each) and put the price back for the next round's account.
        await asyncio.to_thread(_account_retire, account)
        await asyncio.to_thread(_price_restore, reference)
        await asyncio.sleep(0.5)
    await pool.stop()
    return latencies


def _stages(account, wall_started: float) -> dict[str, int]:
    """Where the time went, from the rows' own timestamps (same host clock)."""
    from clearing.models import OutboxEvent
    from riskengine.sweeps.models import MarginCall

    call = MarginCall.objects.filter(account=account).order_by("-id").first()
    event = (
        OutboxEvent.objects.filter(type="margin_call.opened", group=f"account-{account.pk}")
        .order_by("-id")
        .first()
    )
    sweep = call.opened_by.sweep if call else None

    def ms(moment) -> int:
        return round((moment.timestamp() - wall_started) * 1000) if moment else -1

    return {
        "sweep started": ms(sweep and sweep.started_at),
        "call stored": ms(event and event.created_at),
        "relayed": ms(event and event.relayed_at),
    }


def _account_retire(account) -> None:
    usd = Asset.objects.get(symbol="USD")
    collateral_deposit(account=account, asset=usd, amount=Decimal(10_000_000))


def _price_restore(reference) -> None:
    current = IndexState.objects.get(symbol="BTC").last_good_price
    btc_observe(fraction=float(1 - reference / current))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    _prepare()
    port = _free_port()
    env = {
        **os.environ,
        "PYTHON_BIN": sys.executable,
        "CELERY_LOG_LEVEL": "warning",
        "CELERY_CONCURRENCY": "1",
    }
    web = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "clearing.config.asgi:application", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning"],
        cwd=ROOT, env=env, start_new_session=True,
    )  # fmt: skip
    worker = subprocess.Popen(
        [str(ROOT / "docker" / "bin" / "worker")], cwd=ROOT, env=env, start_new_session=True
    )
    try:
        _wait_port(port, web)
        time.sleep(3)  # the worker connects to the broker
        latencies = asyncio.run(_run(clients=args.clients, rounds=args.rounds, port=port))
    finally:
        for process in (web, worker):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in (web, worker):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
    expected = args.clients * args.rounds
    if not latencies:
        sys.exit("no margin-call event arrived")
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    print(
        f"\n{len(latencies)}/{expected} deliveries, {args.clients} clients × {args.rounds} rounds: "
        f"p50 {q[49]:.0f} ms, p90 {q[89]:.0f} ms, p99 {q[98]:.0f} ms, max {max(latencies):.0f} ms"
    )
    print(f"accounts in the venue: {MarginAccount.objects.count()}")


if __name__ == "__main__":
    main()

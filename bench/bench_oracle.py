"""Benchmark of the oracle's aggregation throughput on PostgreSQL (not a test: run it by hand).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/clearing_bench_oracle \\
      .venv/bin/python -m bench.bench_oracle

Creates (and drops) the database ``test_<name>`` from ``DATABASE_URL``, migrates it, sets up 3
underlyings and 3 stablecoins with 5 price sources each, then times two ways in:

- ``price_observation_submit``: one observation per call (one transaction each);
- ``price_observations_submit``: batches (one transaction per batch, still one aggregation and one
  stored ``IndexPrice`` per observation);
- ``POST /api/v1/price-observations/`` with ``{"observations": [...]}`` batches (``--api-batched``):
  the same batch path behind Django's whole request cycle (bearer token, JSON, validation of every
  observation, the index prices serialised back), in process, each batch from one source's token.

Every observation is validated, stored, aggregated (median, exclusion, breaker, event check) and
gets its own index price row, exactly as in production; prices stay fresh and within the deviation
limit so every aggregation is a full one.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from decimal import Decimal

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clearing.config.settings")
django.setup()

from django.db import connection  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402
from django.utils import timezone  # noqa: E402

SYMBOLS = {"BTC": 60000.0, "ETH": 3000.0, "SOL": 150.0, "USDC": 1.0, "USDT": 1.0, "DAI": 1.0}


def venue_make(n_sources: int):
    from accounts.models import Asset, Role
    from accounts.services import user_create
    from clearing.marketdata.services import price_source_register
    from clearing.models import Underlying
    from riskengine.demo import DEMO_PARAMETERS
    from riskengine.services import parameter_set_bootstrap

    for symbol in ("BTC", "ETH", "SOL"):
        underlying = Underlying.objects.create(symbol=symbol, name=symbol)
        Asset.objects.create(symbol=symbol, name=symbol, underlying=underlying, decimals=8)
    for symbol in ("USD", "USDC", "USDT", "DAI"):
        Asset.objects.create(symbol=symbol, name=symbol, decimals=6)
    parameter_set_bootstrap(form=DEMO_PARAMETERS)
    users = []
    for k in range(n_sources):
        user = user_create(username=f"bench-source-{k}", password=None, role=Role.PRICE_SOURCE)
        price_source_register(user=user)
        users.append(user)
    return users


def observations(users, n: int, rng: random.Random):
    from clearing.marketdata.services import PriceIn

    now = timezone.now()
    names = list(SYMBOLS)
    return [
        PriceIn(
            users[i % len(users)],
            names[(i // len(users)) % len(names)],
            Decimal(f"{SYMBOLS[names[(i // len(users)) % len(names)]] * (1 + rng.gauss(0, 0.0005)):.8g}"),
            now,
        )
        for i in range(n)
    ]


def api_batches(users, args, rng: random.Random) -> int:
    """Batches through the REST API (Django's test client: the whole request cycle, no network)."""
    import json

    from django.test import Client

    from accounts.services import api_token_issue

    tokens = [api_token_issue(user=user, name="bench")[1] for user in users]
    client = Client()
    bodies = []
    for k in range(args.api_batched // args.batch_size):
        batch = observations([users[k % len(users)]], args.batch_size, rng)
        items = [
            {"symbol": o.symbol, "price": str(o.price), "source_time": o.source_time.isoformat()}
            for o in batch
        ]
        bodies.append((tokens[k % len(users)], json.dumps({"observations": items})))
    start = time.perf_counter()
    for token, body in bodies:
        response = client.post(
            "/api/v1/price-observations/",
            body,
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )
        assert response.status_code == 201, response.content[:300]
    elapsed = time.perf_counter() - start
    total = args.batch_size * len(bodies)
    rate = total / elapsed
    print(f"API batches of {args.batch_size}: {total:>7} observations in {elapsed:6.2f} s = {rate:8.0f} /s")
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--single", type=int, default=3000, help="observations for the one-by-one path")
    parser.add_argument("--batched", type=int, default=60000, help="observations for the batch path")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--sources", type=int, default=5)
    parser.add_argument("--api-batched", type=int, default=30000, help="observations for the API batches")
    args = parser.parse_args()

    from clearing.marketdata.models import IndexPrice
    from clearing.marketdata.services import price_observation_submit, price_observations_submit

    setup_test_environment()
    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        rng = random.Random(1)
        users = venue_make(args.sources)
        print(f"PostgreSQL {connection.pg_version}, {len(SYMBOLS)} symbols × {args.sources} sources")

        single = observations(users, args.single, rng)
        start = time.perf_counter()
        for item in single:
            price_observation_submit(
                source_user=item.source_user,
                symbol=item.symbol,
                price=item.price,
                source_time=item.source_time,
            )
        elapsed = time.perf_counter() - start
        print(
            f"one per call:   {args.single:>7} observations in {elapsed:6.2f} s"
            f" = {args.single / elapsed:8.0f} /s"
        )

        batches = [observations(users, args.batch_size, rng) for _ in range(args.batched // args.batch_size)]
        start = time.perf_counter()
        for batch in batches:
            price_observations_submit(observations=batch)
        elapsed = time.perf_counter() - start
        total = args.batch_size * len(batches)
        print(
            f"batches of {args.batch_size}: {total:>7} observations in {elapsed:6.2f} s"
            f" = {total / elapsed:8.0f} /s"
        )
        api_total = api_batches(users, args, rng)
        rows = IndexPrice.objects.count()
        assert rows == args.single + total + api_total, rows  # one index price per observation
        ok = IndexPrice.objects.filter(status="ok").count()
        print(f"index prices stored: {rows} ({ok} ok)")
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    main()

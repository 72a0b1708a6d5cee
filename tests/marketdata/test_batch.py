"""A batch of observations is exactly as good as the same observations submitted one by one."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from clearing.marketdata.models import (
    IndexClose,
    IndexPrice,
    IndexState,
    PriceObservation,
    SourceQuote,
)
from clearing.marketdata.services import (
    INDEX_PRICE_COLUMNS,
    OBSERVATION_COLUMNS,
    PriceIn,
    price_observation_submit,
    price_observations_submit,
)
from clearing.marketdata.signals import index_moved
from clearing.ops.models import OpsAlert


def scenario(oracle, now) -> list[PriceIn]:
    """Every rule in one sequence: quorum building up, two sources, a bad tick, a stablecoin, a jump
    held by the breaker and confirmed (with an event move), a late observation, a stale symbol."""
    a, b, c, d = oracle.sources
    earlier = now - timedelta(seconds=30)
    return [
        PriceIn(a, "BTC", "60000", now),
        PriceIn(b, "BTC", "60100", now),  # two sources: the one closest to the last good price
        PriceIn(c, "BTC", "59950", now),  # ok: the median of three
        PriceIn(d, "BTC", "6000", now),  # a bad tick, excluded with its reason
        PriceIn(a, "USDC", "1.0001", now),
        PriceIn(b, "USDC", "1.0", now),
        PriceIn(c, "USDC", "0.9999", now),
        PriceIn(d, "BTC", "60050", now),
        PriceIn(a, "BTC", "72000", now),
        PriceIn(b, "BTC", "72100", now),  # sources split: closest to the last good price
        PriceIn(c, "BTC", "71900", now),  # held unconfirmed by the breaker
        PriceIn(d, "BTC", "72050", now),  # confirms it: the event move fires
        PriceIn(a, "BTC", "50000", earlier),  # late: stored, but does not replace a's newer quote
        PriceIn(a, "ETH", "3000", now - timedelta(seconds=120)),  # older than max_age: stale
        PriceIn(b, "USDC", "1.2", now),  # a stablecoin's bad tick
    ]


def outcome(rows: list[IndexPrice], moves: list[dict]) -> dict:
    """What the oracle decided, with ids replaced by positions (the two runs draw different ids)."""
    position = {row.pk: i for i, row in enumerate(rows)}
    observations = dict(
        PriceObservation.objects.filter(pk__in=[r.observation_id for r in rows]).values_list("pk", "price")
    )
    stored = {row.pk: row for row in IndexPrice.objects.filter(pk__in=list(position))}
    return {
        "returned": [
            (
                r.symbol,
                r.status,
                r.price,
                r.last_good_price,
                r.sources,
                r.exclusions,
                r.note,
                observations[r.observation_id],
            )
            for r in rows
        ],
        "stored": [
            (
                s.symbol,
                s.status,
                s.price,
                s.last_good_price,
                s.sources,
                s.exclusions,
                s.note,
                s.observation_id == r.observation_id,
            )
            for r in rows
            for s in [stored[r.pk]]
        ],
        "states": sorted(
            (
                s.symbol,
                s.status,
                s.price,
                s.last_good_price,
                s.last_good_at,
                s.pending_price,
                s.pending_status,
                s.pending_since,
                s.fresh_until,
                position.get(s.last_index_price_id),
                position.get(s.last_good_index_price_id),
                s.reference_price,
                s.reference_at,
            )
            for s in IndexState.objects.all()
        ),
        "quotes": sorted(
            (q.symbol, q.source.name, q.price, q.source_time, observations.get(q.observation_id))
            for q in SourceQuote.objects.select_related("source")
        ),
        "closes": sorted(IndexClose.objects.values_list("symbol", "day", "price", "origin")),
        "open_alerts": sorted(OpsAlert.objects.filter(resolved_at=None).values_list("kind", "key")),
        "moves": [
            (m["underlying"], m["kind"], m["reference_price"], m["price"], position[m["index_price_id"]])
            for m in moves
        ],
        "ledger": PriceObservation.objects.count(),
    }


def run(oracle, clock, django_capture_on_commit_callbacks, *, batched: bool, repeat: int = 1) -> dict:
    """Submit the scenario (batched or one by one) in a savepoint that is rolled back afterwards."""
    moves: list[dict] = []

    def receiver(sender, **kwargs):
        moves.append(kwargs)

    index_moved.connect(receiver)
    try:
        with transaction.atomic():
            with django_capture_on_commit_callbacks(execute=True):
                items = scenario(oracle, clock.now) * repeat
                if batched:
                    rows = price_observations_submit(observations=items)
                else:
                    rows = [
                        price_observation_submit(
                            source_user=i.source_user,
                            symbol=i.symbol,
                            price=i.price,
                            source_time=i.source_time,
                        )
                        for i in items
                    ]
            result = outcome(rows, moves)
            transaction.set_rollback(True)
    finally:
        index_moved.disconnect(receiver)
    return result


def test_a_batch_gives_exactly_the_index_prices_of_the_same_observations_one_by_one(
    oracle, clock, django_capture_on_commit_callbacks
):
    one_by_one = run(oracle, clock, django_capture_on_commit_callbacks, batched=False)
    batched = run(oracle, clock, django_capture_on_commit_callbacks, batched=True)
    assert batched == one_by_one
    # The scenario really exercises the rules it claims to.
    statuses = [row[1] for row in batched["returned"]]
    assert {"ok", "degraded", "unconfirmed", "stale"} <= set(statuses)
    assert any(row[5] for row in batched["returned"])  # exclusions with reasons
    assert len(batched["moves"]) == 1
    assert batched["ledger"] == len(scenario(oracle, clock.now))


def test_a_large_batch_written_with_copy_matches_one_by_one(
    oracle, clock, django_capture_on_commit_callbacks
):
    # 15 × 3 observations: above the COPY threshold, so the batch takes the COPY path.
    one_by_one = run(oracle, clock, django_capture_on_commit_callbacks, batched=False, repeat=3)
    batched = run(oracle, clock, django_capture_on_commit_callbacks, batched=True, repeat=3)
    assert len(batched["returned"]) == 45
    assert batched == one_by_one


@pytest.mark.postgresql("psycopg's pipeline mode and sequences: SQLite draws ids by other statements")
def test_one_observation_costs_five_reads_and_one_pipelined_round_trip_of_writes(oracle, clock):
    price_observation_submit(
        source_user=oracle.sources[0], symbol="BTC", price="60000", source_time=clock.now
    )
    with CaptureQueriesContext(connection) as queries:
        price_observation_submit(
            source_user=oracle.sources[1], symbol="BTC", price="60010", source_time=clock.now
        )
    # (the test's own transaction turns BEGIN/COMMIT into a savepoint and its release)
    statements = [q["sql"] for q in queries.captured_queries if "SAVEPOINT" not in q["sql"]]
    reads = [s for s in statements if s.lstrip().startswith("SELECT")]
    writes = [s for s in statements if not s.lstrip().startswith("SELECT")]
    # sources, rules, the state lock, the latest quotes, the two ids
    assert len(reads) == 5, reads
    # observation, index price, quote, state, close: sent together in psycopg's pipeline mode
    assert len(writes) == 5, writes


def test_the_in_memory_rows_follow_the_models_column_order():
    assert tuple(f.attname for f in PriceObservation._meta.concrete_fields) == OBSERVATION_COLUMNS
    assert tuple(f.attname for f in IndexPrice._meta.concrete_fields) == INDEX_PRICE_COLUMNS

"""clearing.bulk: every operation does the same on PostgreSQL and on SQLite (CI runs this module on
both: ``make test`` and ``make test-sqlite``)."""

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import numpy as np
import pytest
from django.db import connection, transaction
from django.utils import timezone

from clearing import bulk
from clearing.marketdata.models import IndexClose
from clearing.models import OutboxEvent

pytestmark = pytest.mark.django_db

AT = datetime(2025, 3, 1, 12, 30, 15, 250_000, tzinfo=UTC)


def outbox_rows(count: int, *, at: datetime = AT) -> list[tuple]:
    return [
        (f"account-{i}", "margin.updated", json.dumps({"n": i, "equity": "1.5"}), at) for i in range(count)
    ]


@pytest.mark.parametrize("count", [1, bulk.COPY_MIN_ROWS + 5])
def test_rows_copy_appends_rows_that_read_back_through_the_orm_as_written(count):
    written = bulk.rows_copy(
        model=OutboxEvent, columns=("group", "type", "payload", "created_at"), rows=outbox_rows(count)
    )

    assert written == count
    events = list(OutboxEvent.objects.order_by("pk"))
    assert [e.group for e in events] == [f"account-{i}" for i in range(count)]
    assert events[-1].payload == {"n": count - 1, "equity": "1.5"}
    assert {e.created_at for e in events} == {AT}
    # Stored as the ORM stores it: lookups on the datetime column find the rows.
    assert OutboxEvent.objects.filter(created_at=AT).count() == count
    assert OutboxEvent.objects.filter(created_at__lt=AT + timedelta(microseconds=1)).count() == count


def test_rows_copy_of_no_rows_writes_nothing():
    assert bulk.rows_copy(model=OutboxEvent, columns=("group",), rows=[]) == 0
    assert not OutboxEvent.objects.exists()


def test_rows_copy_refuses_a_column_the_model_does_not_have():
    with pytest.raises(ValueError, match="no column 'colour'"):
        bulk.rows_copy(model=OutboxEvent, columns=("colour",), rows=[("red",)])


def test_rows_insert_returning_gives_every_new_rows_id_by_its_key():
    rows = outbox_rows(7)

    returned = bulk.rows_insert_returning(
        model=OutboxEvent,
        columns=("group", "type", "payload", "created_at"),
        rows=rows,
        returning=("id", "group"),
    )

    ids = {group: pk for pk, group in returned}
    assert set(ids) == {row[0] for row in rows}
    stored = dict(OutboxEvent.objects.values_list("group", "pk"))
    assert stored == ids
    assert OutboxEvent.objects.get(pk=ids["account-3"]).payload == {"n": 3, "equity": "1.5"}


def test_rows_insert_returning_casts_decimals_dates_and_nulls_to_their_columns():
    returned = bulk.rows_insert_returning(
        model=IndexClose,
        columns=("symbol", "day", "price", "origin", "updated_at"),
        rows=[("BTC", date(2025, 3, 1), Decimal("60000.1234567891"), "oracle", AT)],
        returning=("id", "symbol"),
    )

    ((pk, symbol),) = returned
    close = IndexClose.objects.get(pk=pk)
    assert (symbol, close.day, close.price, close.updated_at) == (
        "BTC",
        date(2025, 3, 1),
        Decimal("60000.1234567891"),
        AT,
    )


def test_rows_insert_returning_writes_more_rows_than_one_statement_may_carry_parameters():
    rows = outbox_rows(400)  # 1,600 values: SQLite's statements take 999 parameters at most

    returned = bulk.rows_insert_returning(
        model=OutboxEvent, columns=("group", "type", "payload", "created_at"), rows=rows, returning=("id",)
    )

    assert len({pk for (pk,) in returned}) == 400
    assert OutboxEvent.objects.count() == 400


def test_rows_upsert_inserts_new_keys_and_updates_existing_ones():
    IndexClose.objects.create(symbol="BTC", day=date(2025, 3, 1), price=Decimal("100"), origin="history")
    now = timezone.now()

    bulk.rows_upsert(
        model=IndexClose,
        columns=("symbol", "day", "price", "origin", "updated_at"),
        rows=[
            ("BTC", date(2025, 3, 1), Decimal("101.25"), "oracle", now),
            ("ETH", date(2025, 3, 1), Decimal("3.5"), "oracle", now),
        ],
        conflict=("symbol", "day"),
        update=("price", "origin", "updated_at"),
    )

    closes = {c.symbol: c for c in IndexClose.objects.all()}
    assert len(closes) == 2
    assert (closes["BTC"].price, closes["BTC"].origin) == (Decimal("101.25"), "oracle")
    assert closes["ETH"].price == Decimal("3.5")
    assert closes["BTC"].updated_at == now


def test_rows_update_sets_columns_by_primary_key_json_included():
    first, second = (
        OutboxEvent.objects.create(group="account-1", type="a", payload={}),
        OutboxEvent.objects.create(group="account-2", type="b", payload={}),
    )

    bulk.rows_update(
        model=OutboxEvent,
        columns=("payload", "relayed_at"),
        rows=[(json.dumps({"x": [1, 2]}), AT, first.pk)],
    )

    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.payload, first.relayed_at) == ({"x": [1, 2]}, AT)
    assert (second.payload, second.relayed_at) == ({}, None)
    assert OutboxEvent.objects.filter(relayed_at=AT).get() == first


def test_ids_draw_hands_out_fresh_ids_that_later_inserts_never_reuse():
    OutboxEvent.objects.create(group="account-0", type="a")
    with transaction.atomic():
        drawn = bulk.ids_draw(models=[OutboxEvent, IndexClose], count=3)
        assert len(drawn) == 3
        assert all(len(draw) == 2 for draw in drawn)
        event_ids = [draw[0] for draw in drawn]
        assert len(set(event_ids)) == 3
        assert min(event_ids) > OutboxEvent.objects.get().pk
        bulk.rows_copy(
            model=OutboxEvent,
            columns=("id", "group", "type", "payload", "created_at"),
            rows=[(pk, "account-1", "t", "{}", AT) for pk in event_ids],
        )
        again = bulk.ids_draw(models=[OutboxEvent], count=2)
    assert min(pk for (pk,) in again) > max(event_ids)
    later = OutboxEvent.objects.create(group="account-2", type="a")
    assert later.pk > max(pk for (pk,) in again)


def test_filter_any_matches_ids_and_text_with_one_parameter_however_many_values():
    events = [OutboxEvent.objects.create(group=f"account-{i}", type="t") for i in range(5)]
    many = [events[1].pk, events[3].pk, *range(10**9, 10**9 + 30_000)]  # beyond SQLite's 999

    by_id = bulk.filter_any(OutboxEvent.objects.all(), "id", many)
    by_group = bulk.filter_any(OutboxEvent.objects.all(), "group", ["account-2", "account-4", "nobody"])

    assert sorted(by_id.values_list("pk", flat=True)) == [events[1].pk, events[3].pk]
    assert sorted(by_group.values_list("group", flat=True)) == ["account-2", "account-4"]
    assert not bulk.filter_any(OutboxEvent.objects.all(), "id", []).exists()


def test_filter_any_refuses_text_values_holding_commas():
    with pytest.raises(ValueError, match="commas"):
        bulk.filter_any(OutboxEvent.objects.all(), "group", ["a,b"])


def test_skip_locked_claims_rows_in_one_statement_on_either_database():
    for i in range(3):
        OutboxEvent.objects.create(group=f"account-{i}", type="t")
    table = OutboxEvent._meta.db_table
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} ORDER BY id LIMIT %s"
            f"{bulk.skip_locked()}) RETURNING id",
            [2],
        )
        claimed = cursor.fetchall()
    assert len(claimed) == 2
    assert OutboxEvent.objects.count() == 1
    expected = " FOR UPDATE SKIP LOCKED" if connection.vendor == "postgresql" else ""
    assert bulk.skip_locked() == expected


def test_columns_arrays_reads_matching_rows_as_int64_and_float64_arrays():
    for symbol, price in (("BTC", "100.5"), ("ETH", "3.25"), ("SOL", "0.75")):
        IndexClose.objects.create(symbol=symbol, day=date(2025, 3, 1), price=Decimal(price))
    where, params = bulk.any_sql("symbol", ["BTC", "SOL"])

    arrays = bulk.columns_arrays(
        model=IndexClose,
        where=where,
        params=params,
        columns=[("id", "id", "int"), ("price", "price", "float")],
    )

    order = np.argsort(arrays["id"])
    assert arrays["id"].dtype == np.int64
    assert arrays["price"].dtype == np.float64
    assert arrays["price"][order].tolist() == [100.5, 0.75]
    empty = bulk.columns_arrays(model=IndexClose, where="1 = 0", params=[], columns=[("id", "id", "int")])
    assert empty["id"].shape == (0,)


def test_statement_time_is_an_aware_datetime_close_to_the_clock():
    moment = bulk.statement_time()
    assert abs(moment - timezone.now()) < timedelta(seconds=5)


@pytest.mark.django_db(transaction=True)
def test_atomic_snapshot_reads_one_snapshot_in_a_transaction():
    OutboxEvent.objects.create(group="account-1", type="t")
    with bulk.atomic_snapshot():
        assert connection.in_atomic_block
        assert OutboxEvent.objects.count() == 1
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SHOW transaction_isolation")
                assert cursor.fetchone()[0] == "repeatable read"
    assert not connection.in_atomic_block


def test_tables_size_reports_rows_of_existing_tables_only():
    OutboxEvent.objects.create(group="account-1", type="t")
    table = OutboxEvent._meta.db_table
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {table}")

    sizes = bulk.tables_size(tables=[table, "no_such_table"])

    assert set(sizes) == {table}
    assert sizes[table][0] == 1.0
    assert sizes[table][1] > 0

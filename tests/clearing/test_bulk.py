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
from riskengine.sweeps.models import MarginSnapshot
from tests import factories

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


AWKWARD_TEXTS = ['quote " and backslash \\', "comma, {braces}", "NULL", " padded ", "", "élan ✓"]


def test_rows_insert_returning_keeps_text_json_and_nulls_that_an_array_literal_must_quote():
    payloads = [{"text": text, "nested": ['a"b', "c\\d"]} for text in AWKWARD_TEXTS]
    rows = [
        (f"group-{i}", text, json.dumps(payload), AT, None if i % 2 else AT + timedelta(seconds=i))
        for i, (text, payload) in enumerate(zip(AWKWARD_TEXTS, payloads, strict=True))
    ]

    returned = bulk.rows_insert_returning(
        model=OutboxEvent,
        columns=("group", "type", "payload", "created_at", "relayed_at"),
        rows=rows,
        returning=("id", "group"),
    )

    stored = {e.pk: e for e in OutboxEvent.objects.all()}
    for pk, group in returned:
        i = int(group.removeprefix("group-"))
        event = stored[pk]
        assert (event.type, event.payload) == (AWKWARD_TEXTS[i], payloads[i])
        assert event.relayed_at == (None if i % 2 else AT + timedelta(seconds=i))


def test_rows_insert_returning_writes_constants_once_into_every_row():
    returned = bulk.rows_insert_returning(
        model=OutboxEvent,
        columns=("group", "payload"),
        rows=[(f"account-{i}", json.dumps({"n": i})) for i in range(30)],
        returning=("id", "group"),
        constants={"type": "margin.updated", "created_at": AT, "relayed_at": None},
    )

    assert len(returned) == 30
    events = list(OutboxEvent.objects.order_by("pk"))
    assert {(e.type, e.created_at, e.relayed_at) for e in events} == {("margin.updated", AT, None)}
    assert sorted(e.payload["n"] for e in events) == list(range(30))


def snapshot_row(account_id: int, **figures) -> dict:
    """Every column of a ``MarginSnapshot`` (its sweep, shard and parameter set carry no database
    constraint: ids alone do)."""
    row = {
        "sweep_id": 1, "shard_id": 1, "account_id": account_id, "parameter_set_id": 1, "read_at": AT,
        "mode": "portfolio", "status": "healthy", "margin_ratio": None,
        "by_underlying": b"", "positions": b"", "collateral": b"",
    }  # fmt: skip
    for field in MarginSnapshot._meta.concrete_fields:
        if field.get_internal_type() == "FloatField" and field.column not in row:
            row[field.column] = 0.0
    return {**row, **figures}


def test_rows_insert_returning_reads_floats_back_exactly_and_keeps_bytes():
    account = factories.account_make(member=factories.member_make())
    figures = [
        {"equity": 0.1, "initial_margin": 1e-300, "excess": -2.5e10, "margin_ratio": 1 / 3,
         "positions": b"\x00\\\"{,}NULL \xff"},
        {"equity": 123456.789012345, "initial_margin": 5e-324, "excess": 0.0, "margin_ratio": None,
         "positions": b""},
    ]  # fmt: skip
    rows = [snapshot_row(account.pk, sweep_id=sweep, **f) for sweep, f in enumerate(figures, start=1)]
    columns = list(rows[0])

    returned = bulk.rows_insert_returning(
        model=MarginSnapshot,
        columns=columns,
        rows=[tuple(row[c] for c in columns) for row in rows],
        returning=("id", "sweep_id"),
    )

    for pk, sweep in returned:
        snapshot = MarginSnapshot.objects.get(pk=pk)
        expected = figures[sweep - 1]
        assert (snapshot.equity, snapshot.initial_margin, snapshot.excess, snapshot.margin_ratio) == (
            expected["equity"],
            expected["initial_margin"],
            expected["excess"],
            expected["margin_ratio"],
        )
        assert bytes(snapshot.positions) == expected["positions"]
        assert snapshot.read_at == AT


@pytest.mark.postgresql("the array literal is PostgreSQL's; SQLite binds values one by one")
def test_rows_insert_returning_sends_each_column_to_postgresql_as_one_text_parameter():
    sent = []

    def spy(execute, sql, params, many, context):
        sent.append(params)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(spy):
        bulk.rows_insert_returning(
            model=IndexClose,
            columns=("symbol", "day", "price", "origin", "updated_at"),
            rows=[(f"S{i}", date(2025, 3, 1), Decimal(i + 1), "oracle", AT) for i in range(300)],
            returning=("id",),
        )

    (params,) = sent
    assert len(params) == 5
    assert all(isinstance(p, str) for p in params)  # no Python list for psycopg to adapt element-wise
    assert IndexClose.objects.count() == 300


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


def test_advisory_lock_is_taken_for_its_block_and_released_after():
    with bulk.advisory_lock(key="tests.bulk") as taken:
        assert taken is True
    with bulk.advisory_lock(key="tests.bulk") as again:
        assert again is True


@pytest.mark.postgresql("SQLite has no session locks: one writer at a time stands in for them")
def test_advisory_lock_is_refused_while_another_session_holds_it():
    other = connection.copy()
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(hashtext(%s))", ["tests.bulk.held"])
        with bulk.advisory_lock(key="tests.bulk.held") as taken:
            assert taken is False
        with other.cursor() as cursor:
            # Released here, not by closing: the server ends a closed session in its own time.
            cursor.execute("SELECT pg_advisory_unlock(hashtext(%s))", ["tests.bulk.held"])
    finally:
        other.close()
    with bulk.advisory_lock(key="tests.bulk.held") as taken:
        assert taken is True


def flag_raised(name: str) -> bool:
    """Whether the flag ``name`` is raised, read the way a trigger reads it on this database."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT coalesce(current_setting(%s, true), '') = 'on'", [name])
        else:
            cursor.execute(f"SELECT EXISTS (SELECT 1 FROM {bulk.FLAG_TABLE} WHERE name = %s)", [name])
        return bool(cursor.fetchone()[0])


def test_transaction_flag_is_raised_inside_its_block_only():
    with transaction.atomic():
        assert not flag_raised("clearing.test_flag")
        with bulk.transaction_flag("clearing.test_flag"):
            assert flag_raised("clearing.test_flag")
        assert not flag_raised("clearing.test_flag")


def test_transaction_flag_left_by_a_failing_block_goes_with_the_rollback():
    with pytest.raises(ZeroDivisionError), transaction.atomic(), bulk.transaction_flag("clearing.test_flag"):
        1 / 0  # noqa: B018
    assert not flag_raised("clearing.test_flag")


@pytest.mark.django_db(transaction=True)
def test_transaction_flag_refuses_to_be_raised_outside_a_transaction():
    with pytest.raises(RuntimeError, match="needs a transaction"), bulk.transaction_flag("clearing.flag"):
        pass


def test_utc_day_end_sql_bounds_a_datetime_column_by_its_next_utc_midnight():
    moments = [
        datetime(2025, 3, 1, 12, 30, tzinfo=UTC),  # the anchor
        datetime(2025, 3, 1, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2025, 3, 2, 0, 0, tzinfo=UTC),
        datetime(2025, 3, 2, 0, 0, 0, 500_000, tzinfo=UTC),
        datetime(2025, 3, 1, 0, 0, tzinfo=UTC),
    ]
    returned = bulk.rows_insert_returning(
        model=OutboxEvent,
        columns=("group", "type", "payload", "created_at"),
        rows=[(f"g{i}", "t", "{}", moment) for i, moment in enumerate(moments)],
        returning=("id", "group"),
    )
    ids = {group: pk for pk, group in returned}
    table = OutboxEvent._meta.db_table

    with connection.cursor() as cursor:
        cursor.execute(
            f'SELECT e."group" FROM {table} e, {table} anchor WHERE anchor.id = %s'
            f" AND e.created_at < {bulk.utc_day_end_sql('anchor.created_at')}",
            [ids["g0"]],
        )
        before = sorted(group for (group,) in cursor.fetchall())

    assert before == ["g0", "g1", "g4"]

"""clearing.ledger.FigureField: a stored risk-engine figure reads back bit for bit on both databases,
NaN and infinities included (CI runs this module on both: ``make test`` and ``make test-sqlite``)."""

import math
import struct
from datetime import UTC, datetime

import pytest
from django.db import connection

from clearing import bulk
from riskengine.sweeps.models import MarginSnapshot
from tests import factories

pytestmark = pytest.mark.django_db

AT = datetime(2025, 3, 1, 12, 30, tzinfo=UTC)
# NaN, both infinities, a sum that is not the decimal it prints as, the smallest subnormal. (-0.0
# reads back as a zero: SQLite stores an integral REAL as an integer, which has no sign.)
FIGURES = [math.nan, math.inf, -math.inf, 0.1 + 0.2, 5e-324, -12345.678901234567]
FIGURE_COLUMNS = [
    f.column for f in MarginSnapshot._meta.concrete_fields if f.get_internal_type() == "FloatField"
]


def bits(value: float) -> bytes:
    return struct.pack("<d", value)


def snapshot_values(*, account_id: int, figure: float) -> dict:
    """A snapshot's columns with every figure ``figure`` (sweep, shard and parameter set carry no
    database constraint: any id will do)."""
    return {
        "sweep_id": 1,
        "shard_id": 1,
        "account_id": account_id,
        "parameter_set_id": 1,
        "read_at": AT,
        "mode": "cross",
        "status": "liquidation",
        **dict.fromkeys(FIGURE_COLUMNS, figure),
        "by_underlying": b"",
        "positions": b"",
        "collateral": b"",
    }


@pytest.fixture
def account_ids(member_a):
    return [factories.account_make(member=member_a).pk for _ in FIGURES]


def test_every_figure_written_through_the_orm_reads_back_bit_for_bit(account_ids):
    for account_id, figure in zip(account_ids, FIGURES, strict=True):
        MarginSnapshot.objects.create(**snapshot_values(account_id=account_id, figure=figure))

    for account_id, figure in zip(account_ids, FIGURES, strict=True):
        stored = MarginSnapshot.objects.get(account_id=account_id)
        assert {bits(getattr(stored, c)) for c in FIGURE_COLUMNS} == {bits(figure)}
        (values,) = MarginSnapshot.objects.filter(account_id=account_id).values_list(*FIGURE_COLUMNS)
        assert {bits(v) for v in values} == {bits(figure)}


def test_every_figure_written_by_the_bulk_layer_reads_back_bit_for_bit(account_ids):
    rows = [snapshot_values(account_id=a, figure=f) for a, f in zip(account_ids, FIGURES, strict=True)]
    columns = list(rows[0])

    bulk.rows_copy(model=MarginSnapshot, columns=columns, rows=[tuple(r.values()) for r in rows])

    stored = dict(MarginSnapshot.objects.values_list("account_id", "equity"))
    assert {a: bits(stored[a]) for a in account_ids} == {
        a: bits(f) for a, f in zip(account_ids, FIGURES, strict=True)
    }


def test_a_nan_figure_is_not_null_and_compares_above_every_number_as_on_postgresql(account_ids):
    for account_id, figure in zip(account_ids, FIGURES, strict=True):
        MarginSnapshot.objects.create(**snapshot_values(account_id=account_id, figure=figure))
    nan_account = account_ids[0]

    assert not MarginSnapshot.objects.filter(equity__isnull=True).exists()
    above_infinity = MarginSnapshot.objects.filter(equity__gt=math.inf)
    assert list(above_infinity.values_list("account_id", flat=True)) == [nan_account]
    below = MarginSnapshot.objects.filter(equity__lt=0).values_list("account_id", flat=True)
    assert nan_account not in below
    # Raw SQL sees a NaN figure too, never a NULL one.
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*) FROM {MarginSnapshot._meta.db_table} WHERE equity IS NULL OR equity > %s",
            [1e308],
        )
        assert cursor.fetchone()[0] == 2  # NaN and +inf

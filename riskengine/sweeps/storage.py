"""Storage of margin sweeps: the bulk reads and writes of a shard, one small function each.

Every PostgreSQL-vs-SQLite branch of the sweeps lives here, inside the one function that needs it
(PostgreSQL: binary or text ``COPY``, ``INSERT … SELECT FROM unnest`` of column arrays, ``= ANY``
of one array parameter; SQLite, the test suite's fast path: the ORM's bulk paths). A shard's
writes take a number of statements that does not depend on how many accounts it holds.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal

import numpy as np
from django.db import connection
from django.db.models import BooleanField, QuerySet
from django.db.models.expressions import RawSQL
from django.utils import timezone

from riskengine.core import ISOLATED, MODES
from riskengine.core.margin import STATUSES
from riskengine.loading import LoadedBook
from riskengine.sweeps import codec
from riskengine.sweeps.models import (
    AccountMargin,
    CallStatus,
    Liquidation,
    LiquidationStatus,
    MarginCall,
    MarginCallEvent,
    MarginSnapshot,
    Sweep,
    SweepShard,
)


def decimal_texts(values: np.ndarray) -> list[str]:
    """Float figures ``(n,)`` as the decimal text of NUMERIC with 10 places (``1234.5600000000``),
    for many at once: a bulk insert's parameter and the same figure in its event's message."""
    return [f"{value:.10f}" for value in values.tolist()]


def array_text(values) -> str:
    """A PostgreSQL array literal of numbers (``{1,2,3}``; floats by ``repr``, which reads back
    exactly), sent as one text parameter and cast in SQL (``%s::int8[]``): psycopg adapts a Python
    list element by element, which costs more than the statement for a shard's 25,000 ids."""
    return "{" + ",".join(map(repr, values)) + "}"


def any_of(queryset: QuerySet, column: str, values: list[int]) -> QuerySet:
    """``column IN values`` for an integer column; on PostgreSQL as one array parameter
    (``= ANY(%s::int8[])``): a shard's lists hold up to 25,000 ids, and 25,000 placeholders cost
    more to format and split client-side than the query itself."""
    if connection.vendor == "postgresql":
        table = queryset.model._meta.db_table
        return queryset.filter(
            RawSQL(
                f'"{table}"."{column}" = ANY(%s::int8[])', (array_text(values),), output_field=BooleanField()
            )
        )
    return queryset.filter(**{f"{column}__in": values})


def read_at_now() -> datetime:
    """The database's time of the read (the statement's, inside the shard's read transaction)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT statement_timestamp()")
            return cursor.fetchone()[0]
    return timezone.now()


def snapshot_columns(book: LoadedBook, result, *, sweep: Sweep, shard: SweepShard, read_at: datetime) -> dict:
    """Every ``MarginSnapshot`` column as a list (one entry per account), built with numpy."""
    rows = book.rows
    n = rows.account_ids.size
    pos_indptr = np.searchsorted(rows.position_account, np.append(rows.account_ids, np.iinfo(np.int64).max))
    bal_indptr = np.searchsorted(rows.balance_account, np.append(rows.account_ids, np.iinfo(np.int64).max))
    positions = codec.records(
        codec.POSITION,
        instrument=rows.position_instrument,
        quantity=rows.position_quantity,
        entry=book.margin_input.portfolios.position_entry,
    )
    balances = codec.records(codec.BALANCE, asset=rows.balance_asset, amount=rows.balance_amount)
    pairs = codec.records(
        codec.PAIR,
        underlying=result.pair_underlying,
        worst=result.worst_scenario,
        scan_risk=result.scan_risk,
        directional=result.directional,
        delta_usd=result.delta_usd,
        gamma_usd=result.gamma_usd,
        vega_usd=result.vega_usd,
        theta_usd=result.theta_usd,
    )
    ratio = result.margin_ratio
    isolated = result.mode == ISOLATED
    # Allocations only where the engine uses them (isolated accounts with an allocation): a cross
    # or portfolio snapshot stores NULL, and its replay document carries none.
    allocating = isolated & (
        np.bincount(
            np.searchsorted(rows.account_ids, rows.position_account),
            weights=(rows.position_allocated != 0.0),
            minlength=n,
        )
        > 0
    )
    allocation_blobs = codec.split(rows.position_allocated.astype(codec.ALLOCATION), pos_indptr)
    free = result.free_collateral
    return {
        "sweep_id": [sweep.pk] * n,
        "shard_id": [shard.pk] * n,
        "account_id": rows.account_ids.tolist(),
        "parameter_set_id": [sweep.parameter_set_id] * n,
        "read_at": [read_at] * n,
        "mode": [MODES[m] for m in result.mode.tolist()],
        "status": [STATUSES[s] for s in result.status.tolist()],
        "equity": result.equity.tolist(),
        "collateral_value": result.collateral_value.tolist(),
        "initial_margin": result.initial_margin.tolist(),
        "maintenance_margin": result.maintenance_margin.tolist(),
        "excess": result.excess.tolist(),
        "margin_ratio": [None if np.isnan(r) else r for r in ratio.tolist()],
        "scan_directional": result.scan_directional.tolist(),
        "scan_non_directional": result.scan_non_directional.tolist(),
        "correlation_credit": result.correlation_credit.tolist(),
        "basis": result.basis.tolist(),
        "short_option_minimum": result.short_option_minimum.tolist(),
        "concentration": result.concentration.tolist(),
        "required_isolated": result.required_isolated.tolist(),
        "required_cross": result.required_cross.tolist(),
        "required_portfolio": result.required_portfolio.tolist(),
        "free_collateral": [f if i else None for f, i in zip(free.tolist(), isolated.tolist(), strict=True)],
        "by_underlying": codec.split(pairs, result.pair_indptr),
        "positions": codec.split(positions, pos_indptr),
        "collateral": codec.split(balances, bal_indptr),
        "position_allocations": [
            blob if keep else None
            for blob, keep in zip(allocation_blobs, allocating.tolist(), strict=True)
        ],
    }


# PostgreSQL types of the snapshot columns, for binary COPY (which needs them exactly).
_COPY_TYPES = {
    "sweep_id": "int8",
    "shard_id": "int8",
    "account_id": "int8",
    "parameter_set_id": "int8",
    "read_at": "timestamptz",
    "mode": "text",
    "status": "text",
    "by_underlying": "bytea",
    "positions": "bytea",
    "collateral": "bytea",
    "position_allocations": "bytea",
}


def snapshots_insert(columns: dict) -> None:
    """Write a shard's snapshots (``snapshot_columns``)."""
    names = list(columns)
    if connection.vendor == "postgresql":
        # Binary COPY: one round trip for the whole shard, rows encoded by psycopg's C dumpers
        # (no text formatting of 25 columns × thousands of rows in Python).
        sql = f"COPY {MarginSnapshot._meta.db_table} ({', '.join(names)}) FROM STDIN (FORMAT binary)"
        with connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
            copy.set_types([_COPY_TYPES.get(name, "float8") for name in names])
            for row in zip(*(columns[name] for name in names), strict=True):
                copy.write_row(row)
        return
    MarginSnapshot.objects.bulk_create(
        [MarginSnapshot(**dict(zip(names, row, strict=True))) for row in zip(*columns.values(), strict=True)],
        batch_size=500,
    )


def margins_previous(*, shard: SweepShard, account_ids: list[int]) -> dict[int, tuple]:
    """The shard's accounts' current margins before it stores: account id → (status, equity, IM,
    MM); a range scan for a full-sweep shard, the id list for an event sweep's."""
    margins = AccountMargin.objects.all()
    if shard.first_account_id is not None:
        margins = margins.filter(
            account_id__gte=shard.first_account_id, account_id__lte=shard.last_account_id
        )
    else:
        margins = margins.filter(account_id__in=account_ids)
    return {
        row[0]: row[1:]
        for row in margins.values_list(
            "account_id", "status", "equity", "initial_margin", "maintenance_margin"
        )
    }


def current_upsert(*, sweep: Sweep, shard: SweepShard) -> dict[int, int]:
    """Make this shard's snapshots current where their valuation is the newest, by
    ``(valued_at, sweep_id)``; returns those accounts with the id of their (now current) snapshot.
    Accounts whose current margin comes from a newer valuation are left alone (the database
    decides under the row's lock, so two shards racing for one account cannot both win)."""
    table = AccountMargin._meta.db_table
    sql = f"""
        INSERT INTO {table} (account_id, snapshot_id, read_at, valued_at, sweep_id, status, equity,
            initial_margin, maintenance_margin)
        SELECT account_id, id, read_at, %s, sweep_id, status, equity, initial_margin, maintenance_margin
        FROM {MarginSnapshot._meta.db_table} WHERE shard_id = %s ORDER BY account_id
        ON CONFLICT (account_id) DO UPDATE SET
            snapshot_id = excluded.snapshot_id, read_at = excluded.read_at,
            valued_at = excluded.valued_at, sweep_id = excluded.sweep_id, status = excluded.status,
            equity = excluded.equity, initial_margin = excluded.initial_margin,
            maintenance_margin = excluded.maintenance_margin
        WHERE ({table}.valued_at, {table}.sweep_id) < (excluded.valued_at, excluded.sweep_id)
        RETURNING account_id, snapshot_id
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [sweep.valuation_time, shard.pk])
        return dict(cursor.fetchall())


def calls_insert(
    *,
    account_ids: list[int],
    statuses: list[str],
    amounts: list[str],
    snapshot_ids: list[int],
    deadline: datetime,
    opened_at: datetime,
    positions: list[list[dict]] | None = None,
) -> list[int]:
    """Insert new calls (one per account, opened at ``opened_at`` with ``deadline``; a call opened
    and escalated by the same snapshot is inserted escalated, closed at ``opened_at``) and return
    their ids in input order. ``amounts`` are decimal texts (``decimal_texts``); ``statuses``
    ``CallStatus`` values. PostgreSQL: one ``INSERT … SELECT FROM unnest`` of column arrays (a
    call per account, so ids map back by account). ``positions``: per call, the positions an
    isolated account's call names (``MarginCall.positions``), empty lists by default."""
    if not account_ids:
        return []
    positions = positions if positions is not None else [[] for _ in account_ids]
    if connection.vendor != "postgresql":
        calls = MarginCall.objects.bulk_create(
            [
                MarginCall(
                    account_id=a, status=st, amount=Decimal(m), deadline=deadline, opened_at=opened_at,
                    opened_by_id=s, closed_at=None if st == CallStatus.OPEN else opened_at, positions=p,
                )
                for a, st, m, s, p in zip(
                    account_ids, statuses, amounts, snapshot_ids, positions, strict=True
                )
            ]
        )  # fmt: skip
        return [call.pk for call in calls]
    table = MarginCall._meta.db_table
    sql = f"""
        INSERT INTO {table} (account_id, status, amount, deadline, opened_at, opened_by_id, closed_at,
            positions)
        SELECT a, st, m, %s, %s, s, CASE WHEN st = %s THEN NULL ELSE %s::timestamptz END, p
        FROM ROWS FROM (
            unnest(%s::int8[], %s::text[], %s::numeric[], %s::int8[]), jsonb_array_elements(%s::jsonb)
        ) AS u(a, st, m, s, p)
        RETURNING id, account_id
    """
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            [
                deadline,
                opened_at,
                CallStatus.OPEN,
                opened_at,
                array_text(account_ids),
                # CallStatus values are plain words: no quoting needed in the literal.
                "{" + ",".join(statuses) + "}",
                "{" + ",".join(amounts) + "}",
                array_text(snapshot_ids),
                json.dumps(positions, allow_nan=False),
            ],
        )
        ids = {account: pk for pk, account in cursor.fetchall()}
    return [ids[a] for a in account_ids]


def calls_close(*, call_ids: list[int], status: str, at: datetime) -> None:
    """Close open calls (cured or escalated) in one statement."""
    if call_ids:
        any_of(MarginCall.objects.all(), "id", call_ids).update(status=status, closed_at=at)


def liquidations_insert(
    *,
    sweep_id: int,
    started_at: datetime,
    account_ids: list[int],
    call_ids: list[int],
    equity: list[float],
    initial_margin: list[float],
) -> list[int]:
    """Insert new liquidations, in progress, and return their ids in input order (one per
    account, as for calls)."""
    if not account_ids:
        return []
    if connection.vendor != "postgresql":
        liquidations = Liquidation.objects.bulk_create(
            [
                Liquidation(
                    account_id=a, call_id=c, sweep_id=sweep_id, started_at=started_at, equity_before=e,
                    initial_margin_before=m,
                )
                for a, c, e, m in zip(account_ids, call_ids, equity, initial_margin, strict=True)
            ]
        )  # fmt: skip
        return [liquidation.pk for liquidation in liquidations]
    table = Liquidation._meta.db_table
    sql = f"""
        INSERT INTO {table} (account_id, call_id, sweep_id, status, started_at, plan, equity_before,
            initial_margin_before, closed_notional, fee, deficit_covered)
        SELECT a, c, %s, %s, %s, '[]'::jsonb, e, m, 0, 0, 0
        FROM unnest(%s::int8[], %s::int8[], %s::float8[], %s::float8[]) AS u(a, c, e, m)
        RETURNING id, account_id
    """
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            [
                sweep_id,
                LiquidationStatus.IN_PROGRESS,
                started_at,
                account_ids,
                call_ids,
                equity,
                initial_margin,
            ],
        )
        ids = {account: pk for pk, account in cursor.fetchall()}
    return [ids[a] for a in account_ids]


def call_events_insert(rows: list[tuple[int, datetime, str, str, str, int]]) -> None:
    """Write call events, ``(call_id, at, from_status, to_status, cause, snapshot_id)`` rows
    (PostgreSQL: one text ``COPY``)."""
    if not rows:
        return
    if connection.vendor != "postgresql":
        MarginCallEvent.objects.bulk_create(
            [
                MarginCallEvent(call_id=c, at=at, from_status=fr, to_status=to, cause=cause, snapshot_id=s)
                for c, at, fr, to, cause, s in rows
            ]
        )
        return
    table = MarginCallEvent._meta.db_table
    sql = f"COPY {table} (call_id, at, from_status, to_status, cause, snapshot_id) FROM STDIN"
    with connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
        for row in rows:
            copy.write_row(row)

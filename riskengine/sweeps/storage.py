"""Storage of margin sweeps: the bulk reads and writes of a shard, one small function each.

Every write goes through ``clearing.bulk``, the one layer that knows both databases (PostgreSQL:
binary or text ``COPY``, ``INSERT … SELECT FROM unnest`` of column array literals, ``= ANY`` of one
parameter; SQLite, the embedded stack: ``executemany`` and chunked multi-row statements). A
shard's writes take a number of statements that does not depend on how many accounts it holds.
"""

from __future__ import annotations

import json
from datetime import datetime

import numpy as np
from django.db import connection
from django.db.models import QuerySet

from clearing import bulk
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


def any_of(queryset: QuerySet, column: str, values: list[int]) -> QuerySet:
    """``column IN values`` for an integer column, as one parameter however many values (a shard's
    lists hold up to 25,000 ids): ``clearing.bulk.filter_any``."""
    return bulk.filter_any(queryset, column, values)


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
            blob if keep else None for blob, keep in zip(allocation_blobs, allocating.tolist(), strict=True)
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
    """Write a shard's snapshots (``snapshot_columns``): on PostgreSQL one binary ``COPY`` for the
    whole shard, rows encoded by psycopg's C dumpers (no text formatting of 25 columns × thousands
    of rows in Python)."""
    names = list(columns)
    bulk.rows_copy(
        model=MarginSnapshot,
        columns=names,
        rows=list(zip(*(columns[name] for name in names), strict=True)),
        types=[_COPY_TYPES.get(name, "float8") for name in names],
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
        # The valuation time as the ORM stores it (SQLite: naive UTC text), compared with stored ones.
        cursor.execute(sql, [connection.ops.adapt_datetimefield_value(sweep.valuation_time), shard.pk])
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
    ``CallStatus`` values; ``positions``: per call, the positions an isolated account's call names
    (``MarginCall.positions``), empty lists by default. ``clearing.bulk.rows_insert_returning`` (a
    call per account, so ids map back by account)."""
    if not account_ids:
        return []
    # JSON columns take JSON text (clearing.bulk); most calls name no position: one text for them.
    named = ["[]"] * len(account_ids) if positions is None else [
        json.dumps(p, allow_nan=False) if p else "[]" for p in positions
    ]  # fmt: skip
    # Calls still open, then calls escalated at once (closed when opened): two statements whose
    # timestamps are sent once each, not once a row.
    open_, escalated = [], []
    still_open = CallStatus.OPEN.value  # a plain str: comparing with the enum member costs 5× more
    for row in zip(account_ids, statuses, amounts, snapshot_ids, named, strict=True):
        (open_ if row[1] == still_open else escalated).append(row)
    ids: dict[int, int] = {}
    for rows, closed_at in ((open_, None), (escalated, opened_at)):
        if rows:
            returned = bulk.rows_insert_returning(
                model=MarginCall,
                columns=("account_id", "status", "amount", "opened_by_id", "positions"),
                rows=rows,
                returning=("id", "account_id"),
                constants={"deadline": deadline, "opened_at": opened_at, "closed_at": closed_at},
            )
            ids.update((account, pk) for pk, account in returned)
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
    returned = bulk.rows_insert_returning(
        model=Liquidation,
        columns=("account_id", "call_id", "equity_before", "initial_margin_before"),
        rows=list(zip(account_ids, call_ids, equity, initial_margin, strict=True)),
        returning=("id", "account_id"),
        constants={
            "sweep_id": sweep_id, "status": LiquidationStatus.IN_PROGRESS.value, "started_at": started_at,
            "plan": "[]", "closed_notional": 0, "fee": 0, "deficit_covered": 0,
        },
    )  # fmt: skip
    ids = {account: pk for pk, account in returned}
    return [ids[a] for a in account_ids]


def call_events_insert(rows: list[tuple[int, datetime, str, str, str, int]]) -> None:
    """Write call events, ``(call_id, at, from_status, to_status, cause, snapshot_id)`` rows
    (PostgreSQL: one text ``COPY``)."""
    bulk.rows_copy(
        model=MarginCallEvent,
        columns=("call_id", "at", "from_status", "to_status", "cause", "snapshot_id"),
        rows=rows,
    )

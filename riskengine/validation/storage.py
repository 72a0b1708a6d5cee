"""Storage of validation runs: the compact series columns and a shard's bulk writes.

The bulk writes go through ``clearing.bulk.rows_copy`` (PostgreSQL: one ``COPY`` per table and
shard; SQLite: ``executemany``), so a shard's writes take a number of statements that does not
depend on how many accounts it holds. Series are little-endian numpy records (layouts in
``riskengine.validation.models``).
"""

from __future__ import annotations

import json

import numpy as np

from clearing.bulk import rows_copy
from riskengine.validation.models import AccountBacktest, AccountStress

ACCOUNT_SERIES = np.dtype([("initial_margin", "<f4"), ("loss", "<f4")])
RUN_SERIES = np.dtype(
    [("venue_im", "<f8"), ("aggregate_im", "<f8"), ("aggregate_loss", "<f8"), ("exceptions", "<i8")]
)
SHARD_PARTIAL = np.dtype([("venue_im", "<f8"), ("exceptions", "<i8")])


def records(dtype: np.dtype, **columns) -> np.ndarray:
    """A structured array of ``dtype`` from equal-length columns."""
    n = len(next(iter(columns.values())))
    out = np.empty(n, dtype=dtype)
    for name, values in columns.items():
        out[name] = values
    return out


def decode(dtype: np.dtype, blob: bytes | memoryview | None) -> np.ndarray:
    return np.frombuffer(bytes(blob or b""), dtype=dtype)


def finite_or_none(value: float) -> float | None:
    """A stored figure: ``None`` where it is undefined (NaN) or infinite."""
    return value + 0.0 if np.isfinite(value) else None


BACKTEST_COLUMNS = (
    "run_id",
    "account_id",
    "observations",
    "exceptions",
    "coverage",
    "light",
    "kupiec_lr",
    "kupiec_p_value",
    "lr_ind",
    "lr_cc",
    "p_value_cc",
    "peak_to_trough",
    "max_increase_1",
    "max_increase_5",
    "max_increase_30",
    "exception_days",
    "series",
)
STRESS_COLUMNS = (
    "run_id",
    "account_id",
    "member_id",
    "equity",
    "worst_scenario",
    "worst_loss",
    "worst_uncovered",
)


def account_backtests_insert(rows: list[tuple]) -> int:
    """Write a shard's ``AccountBacktest`` rows, tuples in ``BACKTEST_COLUMNS`` order with the
    exception days as a list (encoded here: JSON columns take JSON text)."""
    encoded = [(*row[:-2], json.dumps(row[-2], allow_nan=False), row[-1]) for row in rows]
    return rows_copy(model=AccountBacktest, columns=BACKTEST_COLUMNS, rows=encoded)


def account_stresses_insert(rows: list[tuple]) -> int:
    """Write a shard's ``AccountStress`` rows, tuples in ``STRESS_COLUMNS`` order."""
    return rows_copy(model=AccountStress, columns=STRESS_COLUMNS, rows=rows)

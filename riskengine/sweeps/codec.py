"""The compact array columns of ``MarginSnapshot`` (layouts in ``riskengine.sweeps.models``).

Little-endian records, written and read with numpy structured dtypes, so 1,000,000 positions cost
one ``tobytes`` and a slice per account instead of a million JSON objects.
"""

from __future__ import annotations

import itertools

import numpy as np

POSITION = np.dtype([("instrument", "<i8"), ("quantity", "<f8"), ("entry", "<f8")])
# An isolated account's allocated margin per position, USD, in the order of its POSITION records.
ALLOCATION = np.dtype("<f8")
BALANCE = np.dtype([("asset", "<i8"), ("amount", "<f8")])
PAIR = np.dtype(
    [
        ("underlying", "<i8"),
        ("worst", "<i8"),
        ("scan_risk", "<f8"),
        ("directional", "<f8"),
        ("delta_usd", "<f8"),
        ("gamma_usd", "<f8"),
        ("vega_usd", "<f8"),
        ("theta_usd", "<f8"),
    ]
)


def records(dtype: np.dtype, **columns: np.ndarray) -> np.ndarray:
    """A structured array of ``dtype`` from equal-length columns."""
    n = len(next(iter(columns.values()))) if columns else 0
    out = np.empty(n, dtype=dtype)
    for name, values in columns.items():
        out[name] = values
    return out


def split(data: np.ndarray, indptr: np.ndarray) -> list[bytes]:
    """``data[indptr[k]:indptr[k+1]]`` as bytes, for every k: one copy, then cheap slices."""
    raw = data.tobytes()
    size = data.dtype.itemsize
    bounds = (indptr * size).tolist()
    return [raw[a:b] for a, b in itertools.pairwise(bounds)]


def decode(dtype: np.dtype, blob: bytes | memoryview | None) -> np.ndarray:
    return np.frombuffer(bytes(blob or b""), dtype=dtype)

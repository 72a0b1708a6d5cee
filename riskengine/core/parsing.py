"""Small readers for document fields: each names the field it rejects (see ``DocumentError``)."""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any

from .errors import DocumentError

# A plain decimal string ("100000", "-2", "0.5", "1e6"): no underscores, no "nan"/"inf".
_DECIMAL = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")

SECONDS_PER_YEAR = 365.0 * 86400.0


def read_number(
    value: Any,
    field: str,
    *,
    positive: bool = False,
    non_negative: bool = False,
    at_most: float | None = None,
) -> float:
    """A JSON number or decimal string as a finite float64, with optional range checks."""
    if isinstance(value, bool) or value is None:
        raise DocumentError(field, f"expected a number, got {value!r}")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str) and _DECIMAL.match(value.strip()):
        number = float(value.strip())
    else:
        raise DocumentError(field, f"expected a number or a decimal string, got {value!r}")
    if not math.isfinite(number):
        raise DocumentError(field, f"expected a finite number, got {value!r}")
    if positive and not number > 0.0:
        raise DocumentError(field, f"must be positive, got {number!r}")
    if non_negative and number < 0.0:
        raise DocumentError(field, f"must not be negative, got {number!r}")
    if at_most is not None and number > at_most:
        raise DocumentError(field, f"must be at most {at_most!r}, got {number!r}")
    return number


def read_object(value: Any, field: str) -> dict:
    if not isinstance(value, dict):
        raise DocumentError(field, f"expected an object, got {type(value).__name__}")
    return value


def read_list(value: Any, field: str) -> list:
    if not isinstance(value, list):
        raise DocumentError(field, f"expected an array, got {type(value).__name__}")
    return value


def read_string(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise DocumentError(field, f"expected a non-empty string, got {value!r}")
    return value


def required(mapping: dict, key: str, field: str) -> Any:
    if key not in mapping:
        raise DocumentError(f"{field}.{key}", "missing")
    return mapping[key]


def read_time(value: Any, field: str) -> datetime:
    """An ISO-8601 time with an explicit time zone (naive times are ambiguous, so rejected)."""
    text = read_string(value, field)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise DocumentError(field, f"not an ISO-8601 time: {text!r}") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise DocumentError(field, f"time {text!r} has no time zone")
    return moment


def years_between(start: datetime, end: datetime) -> float:
    """ACT/365 year fraction from ``start`` to ``end`` (negative when ``end`` is earlier)."""
    return (end - start).total_seconds() / SECONDS_PER_YEAR

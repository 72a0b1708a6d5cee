"""Small readers for document fields: each names the field it rejects (see ``DocumentError``).

Numbers are JSON numbers or *plain* decimal strings: ASCII only, no spaces, no underscores, no
other scripts' digits, no ``nan``/``inf`` (``PLAIN_NUMBER``). ``clearing.validation`` parses API
decimals with the same grammar, so a document and an API body accept exactly the same numbers.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

from .errors import DocumentError

# A plain decimal string: "100000", "-2", "0.5", "1e6", "+.5". ASCII digits only (``re.ASCII``:
# "١٢٣" and "１２３" do not match), nothing around it (" 1 " does not match), no "1_000".
PLAIN_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
# Longer decimal strings are refused before any conversion (a float has 17 significant digits).
MAX_NUMBER_LENGTH = 100

SECONDS_PER_YEAR = 365.0 * 86400.0


def shown(value: Any) -> str:
    """``value`` for an error message: short scalars as ``repr``, long strings cut, containers by
    type (a message never repeats a large or deeply nested input)."""
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:40] + "…")
    if value is None or isinstance(value, bool | int | float):
        text = repr(value)
        return text if len(text) <= 40 else text[:40] + "…"
    if isinstance(value, dict):
        return "a JSON object"
    return "a JSON array" if isinstance(value, list) else f"a {type(value).__name__}"


def is_plain_number(text: str) -> bool:
    """Whether ``text`` is a plain ASCII decimal string (the grammar in the module doc)."""
    return len(text) <= MAX_NUMBER_LENGTH and PLAIN_NUMBER.fullmatch(text) is not None


def read_number(
    value: Any,
    field: str,
    *,
    positive: bool = False,
    non_negative: bool = False,
    at_most: float | None = None,
) -> float:
    """A JSON number or plain decimal string as a finite float64, with optional range checks."""
    if type(value) is float:  # the common case first: JSON numbers with a fraction or exponent
        number = value
    elif isinstance(value, bool) or value is None:
        raise DocumentError(field, f"expected a number, got {shown(value)}")
    elif isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:
            raise DocumentError(field, "expected a finite number, got one too large for float64") from None
    elif isinstance(value, str) and is_plain_number(value):
        number = float(value)
    else:
        raise DocumentError(
            field, f'expected a number or a plain ASCII decimal string ("-1.5", "2e3"), got {shown(value)}'
        )
    if not math.isfinite(number):
        raise DocumentError(field, f"expected a finite number, got {shown(value)}")
    if positive and not number > 0.0:
        raise DocumentError(field, f"must be positive, got {number!r}")
    if non_negative and not number >= 0.0:
        raise DocumentError(field, f"must not be negative, got {number!r}")
    if at_most is not None and not number <= at_most:
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
        raise DocumentError(field, f"expected a non-empty string, got {shown(value)}")
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
        raise DocumentError(field, f"not an ISO-8601 time: {shown(text)}") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise DocumentError(field, f"time {shown(text)} has no time zone")
    try:
        moment.astimezone(UTC)  # year 1 at +14:00 is before datetime.min in UTC
    except OverflowError:
        raise DocumentError(field, f"time {shown(text)} is out of range") from None
    return moment


def years_between(start: datetime, end: datetime) -> float:
    """ACT/365 year fraction from ``start`` to ``end`` (negative when ``end`` is earlier)."""
    return (end - start).total_seconds() / SECONDS_PER_YEAR

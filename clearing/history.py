"""The real daily price history shipped in ``clearing/data/prices`` (2021-01-01 to 2023-08-29)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import cache
from pathlib import Path

from django.conf import settings


@dataclass(frozen=True)
class DailyBar:
    day: date
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal


def history_path(symbol: str) -> Path:
    return Path(settings.PRICE_HISTORY_DIR) / f"{symbol}-USD.csv"


@cache
def daily_history(symbol: str) -> tuple[DailyBar, ...]:
    """Every day of ``symbol``'s history in date order (rows with a missing close are skipped)."""
    bars = []
    with history_path(symbol).open(newline="") as handle:
        for row in csv.DictReader(handle):
            if not row["Close"] or row["Close"] == "null":
                continue
            bars.append(
                DailyBar(
                    day=date.fromisoformat(row["Date"]),
                    open=Decimal(row["Open"]),
                    high=Decimal(row["High"]),
                    low=Decimal(row["Low"]),
                    close=Decimal(row["Close"]),
                )
            )
    return tuple(bars)


def last_close(symbol: str) -> Decimal:
    return daily_history(symbol)[-1].close

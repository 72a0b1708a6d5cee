from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from accounts.models import Role
from accounts.services import user_create
from clearing.marketdata.services import price_source_register
from riskengine.services import parameter_set_bootstrap


class Clock:
    """A controllable ``timezone.now`` for the oracle's time rules (freshness, breaker window)."""

    def __init__(self, start: datetime):
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs) -> datetime:
        self.now += timedelta(**kwargs)
        return self.now

    def set(self, moment: datetime) -> datetime:
        self.now = moment
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock(datetime(2026, 11, 24, 12, 0, tzinfo=UTC))
    monkeypatch.setattr(timezone, "now", clock)
    return clock


def small_form(assets: list[str]) -> dict:
    underlying = {
        "psr": 0.15, "vol_up": 0.5, "vol_down": 0.25,
        "extreme": [{"multiple": -2, "coverage": 0.35}, {"multiple": 2, "coverage": 0.35}],
        "min_basis": 0.01, "basis_rate": 0.075, "som_rate": 0.01,
        "conc_threshold": 20_000_000, "conc_rate": 0.05, "imf": 0.10, "mmf": 0.05,
    }  # fmt: skip
    return {
        "version": "test-1",
        "mm_ratio": 0.8,
        "offset_cap": 0.8,
        "lookahead_days": 1,
        "rate": 0.0,
        "price_steps": 4,
        "min_vol": 0.01,
        "vol_term": {"pivot_days": 30, "short_power": 0.30, "long_power": 0.13},
        "standard": {"option_imf": 0.15, "option_min": 0.10, "option_mmf": 0.075},
        "underlyings": {"BTC": underlying, "ETH": dict(underlying, psr=0.18)},
        "correlation": {"underlyings": ["BTC", "ETH"], "matrix": [[1.0, 0.8], [0.8, 1.0]]},
        "assets": {
            symbol: {
                "underlying": "BTC" if symbol == "BTC" else None,
                "liability_addon": 0.05,
                "haircuts": [{"up_to": None, "haircut": 0.0 if symbol != "BTC" else 0.05}],
            }
            for symbol in assets
        },
    }


@pytest.fixture
def oracle(db, venue, clock):
    """The small venue with an active parameter set (default oracle thresholds: max_age 60 s,
    max_deviation 2 %, min_sources 3, breaker 15 % within 300 s, event move 2 %) and four sources."""
    parameter_set_bootstrap(form=small_form(["USD", "USDC", "BTC"]))
    # System users without a password: hashing one is slow and sources use API tokens anyway.
    users = [user_create(username=f"src-{name}", password=None, role=Role.PRICE_SOURCE) for name in "abcd"]
    for user in users:
        price_source_register(user=user)
    venue.sources = users
    return venue

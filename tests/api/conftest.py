"""A small venue with two members, every role holding an API token, an active parameter set and
fixed market quotes (the what-if/withdrawal seam ``riskengine.whatif.quotes_current``)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import pytest
from django.core.cache.backends.locmem import LocMemCache
from django.utils import timezone

from accounts.models import AccountKind, MarginAccount, Member, Role
from accounts.services import collateral_deposit, user_create
from clearing.api.throttling import WindowRateThrottle
from clearing.marketdata.services import price_source_register
from riskengine import whatif
from riskengine.services import parameter_set_bootstrap
from tests import factories
from tests.factories import client_for, quotes_fixed, venue_parameters_form


@pytest.fixture(autouse=True)
def throttle_cache(monkeypatch):
    """Each test counts requests from zero (the default cache may be a Redis shared across runs)."""
    cache = LocMemCache(f"throttle-{id(monkeypatch)}", {})
    monkeypatch.setattr(WindowRateThrottle, "cache", cache)  # every throttle's counters
    return cache


@pytest.fixture
def fixed_quotes(monkeypatch):
    monkeypatch.setattr(whatif, "quotes_current", quotes_fixed)
    return quotes_fixed


@dataclass
class World:
    venue: factories.Venue
    account_a: MarginAccount
    account_a2: MarginAccount
    account_b: MarginAccount
    clients: dict[str, factories.Client]

    def __getitem__(self, name: str) -> factories.Client:
        return self.clients[name]

    def simulate_document(self) -> dict:
        """The margin document of account A buying one BTC-PERP: a ``/margin/simulate/`` body."""
        trades = [(self.venue.btc_perp, Decimal(1), None)]
        return whatif.margin_what_if(account=self.account_a, trades=trades).document


@pytest.fixture
def world(db, venue, member_a, member_b, fixed_quotes) -> World:
    parameter_set_bootstrap(form=venue_parameters_form("v1"))
    account_a = factories.account_make(member=member_a, code="AAA-01")
    account_a2 = factories.account_make(member=member_a, code="AAA-02", mode="cross")
    account_b = factories.account_make(member=member_b, code="BBB-01")
    for account in (account_a, account_a2, account_b):
        collateral_deposit(account=account, asset=venue.usdc, amount=Decimal(100_000))
    users = {
        "trader_a": user_create(username="trader-a", password=None, role=Role.TRADER, member=member_a),
        "viewer_a": user_create(username="viewer-a", password=None, role=Role.VIEWER, member=member_a),
        "trader_b": user_create(username="trader-b", password=None, role=Role.TRADER, member=member_b),
        "ops": user_create(username="ops", password=None, role=Role.OPS),
        "risk": user_create(username="risk", password=None, role=Role.RISK_APPROVER),
        "feed": user_create(username="feed", password=None, role=Role.PRICE_SOURCE),
        "venue": user_create(username="venue", password=None, role=Role.VENUE),
        "custodian": user_create(username="custody", password=None, role=Role.CUSTODIAN),
    }
    price_source_register(user=users["feed"])
    clients = {name: client_for(user) for name, user in users.items()}
    clients["anonymous"] = client_for(None)
    return World(venue, account_a, account_a2, account_b, clients)


@dataclass
class Swept:
    call: object
    liquidation: object


@pytest.fixture
def swept(world) -> Swept:
    """Account A is swept into a margin call (12 BTC long on 100k USDC: IM ≈ 108k, MM ≈ 86k);
    account B is swept healthy; a liquidation record exists for A's call."""
    from accounts.trading import trade_book
    from riskengine.sweeps.models import Liquidation, MarginCall
    from riskengine.sweeps.services import sweep_accounts_run

    trade_book(account=world.account_a, instrument="BTC-PERP", quantity=Decimal(12), price=Decimal(60_000))
    sweep = sweep_accounts_run(
        account_ids=[world.account_a.pk, world.account_b.pk], cause="test", quotes=quotes_fixed()
    )
    call = MarginCall.objects.get(account=world.account_a)
    liquidation = Liquidation.objects.create(
        account=world.account_a, call=call, sweep=sweep, started_at=timezone.now(), plan=[]
    )
    return Swept(call, liquidation)


@pytest.fixture
def fund(world) -> MarginAccount:
    """The venue's insurance fund holding 5m USD, and a trader of the venue's own member (a user
    ops could create by mistake): the one member user who sees the venue's accounts."""
    member = Member.objects.create(code="VENUE", name="The clearing venue")
    fund = MarginAccount.objects.create(
        member=member, code="VENUE-INSURANCE", kind=AccountKind.INSURANCE_FUND, mode="cross"
    )
    MarginAccount.objects.create(member=member, code="VENUE-HOUSE", kind=AccountKind.HOUSE, mode="cross")
    collateral_deposit(account=fund, asset=world.venue.usd, amount=Decimal(5_000_000))
    insider = user_create(username="insider", password=None, role=Role.TRADER, member=member)
    world.clients["venue_trader"] = client_for(insider)
    return fund

"""A small venue for the agents: member A with a funding account of 1,000,000 USDC and a cross
margin account long 10 BTC-PERP at 60,000 on 75,000 USDC (IM 60,000, MM 30,000: equity / MM 2.5,
a margin call below 2.0), a trader and a viewer, and market quotes the agents read through the
what-if seam (``riskengine.whatif.quotes_current``) that a test moves."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from unittest import mock

import pytest

from accounts.models import AccountKind, MarginAccount, Role
from accounts.services import collateral_deposit
from accounts.trading import trade_book
from agents import tasks as agents_tasks
from clearing.marketdata.quotes import MarketQuotes
from riskengine import whatif
from riskengine.sweeps import services as sweep_services
from riskengine.sweeps.services import sweep_accounts_run
from tests import factories
from tests.factories import moved, quotes_fixed


@dataclass
class AgentsWorld:
    venue: factories.Venue
    funding: MarginAccount
    margin: MarginAccount
    trader: object
    viewer: object
    market: dict

    @property
    def quotes(self) -> MarketQuotes:
        return self.market["quotes"]

    def move(self, **prices: float) -> MarketQuotes:
        """Move the oracle the agents read (``BTC=58_800.0``); returns the new quotes."""
        self.market["quotes"] = moved(quotes_fixed(), **prices)
        return self.market["quotes"]

    def statuses(self, **statuses: str) -> MarketQuotes:
        quotes = self.market["quotes"]
        self.market["quotes"] = MarketQuotes(
            valuation_time=quotes.valuation_time,
            underlying_prices=quotes.underlying_prices,
            asset_prices=quotes.asset_prices,
            option_ivs=quotes.option_ivs,
            statuses={**quotes.statuses, **statuses},
        )
        return self.market["quotes"]


def btc_long_account(*, member, venue, code: str, usdc: str = "75000", mode: str = "cross") -> MarginAccount:
    account = factories.account_make(member=member, code=code, mode=mode)
    collateral_deposit(account=account, asset=venue.usdc, amount=Decimal(usdc))
    trade_book(account=account, instrument="BTC-PERP", quantity=10, price=60_000)
    return account


@pytest.fixture
def agents_world(venue, member_a, active_set, monkeypatch) -> AgentsWorld:
    market = {"quotes": quotes_fixed()}
    monkeypatch.setattr(whatif, "quotes_current", lambda: market["quotes"])
    funding = MarginAccount.objects.create(member=member_a, code="AAA-FUND", kind=AccountKind.FUNDING)
    collateral_deposit(account=funding, asset=venue.usdc, amount=Decimal(1_000_000))
    margin = btc_long_account(member=member_a, venue=venue, code="AAA-01")
    trader = factories.user_make(username="trader-a", member=member_a)
    viewer = factories.user_make(username="viewer-a", member=member_a, role=Role.VIEWER)
    return AgentsWorld(venue, funding, margin, trader, viewer, market)


@dataclass
class SweepWithAgents:
    """An event sweep whose commit runs what it hands to the agents, as a worker would
    (``agents.accounts_act``); ``handed`` lists the account ids of each hand-over. The event sweeps
    that transfers request, liquidations and webhook deliveries are not sent (``deliveries``
    records the last)."""

    capture: object
    handed: list
    deliveries: list

    def __call__(self, *, account_ids, quotes):
        def act(ids):
            self.handed.append(ids)
            return agents_tasks.accounts_act.apply(args=[ids])

        with (
            mock.patch.object(agents_tasks.accounts_act, "delay", side_effect=act),
            mock.patch.object(sweep_services, "_drain_enqueue"),
            mock.patch.object(sweep_services, "_liquidations_enqueue"),
            mock.patch.object(agents_tasks.webhook_deliver, "delay", side_effect=self.deliveries.append),
            self.capture(execute=True),
        ):
            return sweep_accounts_run(account_ids=account_ids, cause="test", quotes=quotes)


@pytest.fixture
def sweep_with_agents(django_capture_on_commit_callbacks) -> SweepWithAgents:
    return SweepWithAgents(django_capture_on_commit_callbacks, [], [])

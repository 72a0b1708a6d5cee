"""No money leaves on prices the oracle does not trust (issue #12, attack 2), and a withdrawal is
judged at the worse, for the account, of each price's last good and latest observed values."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from accounts.models import CollateralBalance, CollateralMovement, Role, Withdrawal
from accounts.services import collateral_deposit, user_create
from accounts.trading import trade_book
from clearing.marketdata.models import IndexState
from clearing.marketdata.services import (
    PriceIn,
    index_price_confirm,
    index_prices_refresh,
    price_observations_submit,
    price_source_register,
)
from riskengine import reference, whatif, withdrawals
from riskengine.core import compute_document
from riskengine.loading import margin_book_load
from riskengine.selectors import parameter_set_active
from riskengine.withdrawals import (
    PricesUntrusted,
    margin_worst_case,
    price_corners_document,
    withdrawal_request,
)
from tests.factories import quotes_fixed

V1 = "/api/v1"


class Clock:
    def __init__(self, start: datetime):
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs) -> None:
        self.now += timedelta(**kwargs)


@pytest.fixture
def oracle(world, monkeypatch):
    """The world on the real oracle: three price sources, withdrawals reading the oracle's quotes
    (not the fixed ones), and a clock the test moves."""
    clock = Clock(datetime.now(UTC).replace(microsecond=0))
    monkeypatch.setattr(timezone, "now", clock)
    monkeypatch.setattr(whatif, "quotes_current", reference.quotes_current)
    reference.reference_clear()
    sources = [world["feed"].user] + [
        user_create(username=f"feed-{n}", password=None, role=Role.PRICE_SOURCE) for n in (2, 3)
    ]
    for user in sources[1:]:
        price_source_register(user=user)

    def quote(prices: dict[str, str], *, by: int = 3) -> None:
        price_observations_submit(
            observations=[
                PriceIn(source_user=user, symbol=symbol, price=Decimal(price), source_time=clock.now)
                for symbol, price in prices.items()
                for user in sources[:by]
            ]
        )

    return SimpleNamespace(clock=clock, quote=quote)


def usdc(account) -> Decimal:
    return CollateralBalance.objects.get(account=account, asset__symbol="USDC").amount


def nothing_written(account, *, movements: int) -> None:
    assert usdc(account) == Decimal(100_000)
    assert CollateralMovement.objects.count() == movements
    assert not Withdrawal.objects.exists()


def test_no_withdrawal_while_the_circuit_breaker_holds_a_move_it_depends_on(world, oracle):
    """The issue's attack: BTC held unconfirmed by the breaker (last good 19,000, sources at
    6,000) and a withdrawal that the last good price would allow. Refused with 409 naming BTC;
    once ops confirm the move, the same request is refused by the margin (it would be in
    liquidation)."""
    oracle.quote({"BTC": "19000", "ETH": "1000", "USDC": "1"})
    trade_book(account=world.account_a, instrument="BTC-PERP", quantity=Decimal(10), price=Decimal(19_000))
    # At the last good price the margin leaves room for it: the old check accepted it.
    at_last_good = whatif.margin_what_if(
        account=world.account_a, collateral=[(world.venue.usdc, Decimal(-60_000))]
    )
    assert at_last_good.after["equity"] > at_last_good.after["initial_margin"]

    oracle.clock.advance(seconds=5)
    # Two sources move to 6,000: the breaker holds the move (a third agreeing aggregation would
    # confirm it by itself).
    oracle.quote({"BTC": "6000"}, by=2)
    state = IndexState.objects.get(symbol="BTC")
    assert (state.status, state.last_good_price, state.pending_price) == ("unconfirmed", 19_000, 6_000)
    movements = CollateralMovement.objects.count()

    url = f"{V1}/accounts/{world.account_a.pk}/withdrawals/"
    response = world["trader_a"].post(url, {"asset": "USDC", "amount": "60000"})
    assert response.status_code == 409, response.json()
    assert "BTC is unconfirmed" in response.json()["detail"]
    assert "USDC" not in response.json()["detail"]
    nothing_written(world.account_a, movements=movements)

    # Ops confirm the move and the third source follows: BTC is trusted again, at 6,000.
    index_price_confirm(symbol="BTC", confirmed_by=world["ops"].user)
    oracle.quote({"BTC": "6000"})
    assert IndexState.objects.get(symbol="BTC").status == "ok"
    response = world["trader_a"].post(url, {"asset": "USDC", "amount": "60000"})
    assert response.status_code == 400
    assert "initial margin" in response.json()["amount"][0]
    nothing_written(world.account_a, movements=movements)


def test_no_withdrawal_while_every_index_is_stale(world, oracle):
    """After seeding, the sources went quiet: every index is stale. Even an account with no
    position cannot withdraw: its collateral's price is stale."""
    oracle.quote({"BTC": "60000", "ETH": "3000", "USDC": "1"})
    oracle.clock.advance(minutes=5)
    index_prices_refresh()
    assert set(IndexState.objects.values_list("status", flat=True)) == {"stale"}
    movements = CollateralMovement.objects.count()

    response = world["trader_a"].post(
        f"{V1}/accounts/{world.account_a.pk}/withdrawals/", {"asset": "USDC", "amount": "10"}
    )
    assert response.status_code == 409
    assert "USDC is stale" in response.json()["detail"]
    nothing_written(world.account_a, movements=movements)


def test_no_withdrawal_on_a_price_below_quorum(world, oracle):
    oracle.quote({"ETH": "3000", "USDC": "1"})
    oracle.quote({"BTC": "60000"}, by=2)  # two sources of the three required
    assert IndexState.objects.get(symbol="BTC").status == "degraded"
    trade_book(account=world.account_a, instrument="BTC-PERP", quantity=Decimal(1), price=Decimal(60_000))
    movements = CollateralMovement.objects.count()

    response = world["trader_a"].post(
        f"{V1}/accounts/{world.account_a.pk}/withdrawals/", {"asset": "USDC", "amount": "10"}
    )
    assert response.status_code == 409
    assert "BTC is below quorum" in response.json()["detail"]
    nothing_written(world.account_a, movements=movements)


def test_an_untrusted_price_the_account_does_not_depend_on_does_not_block_it(world, oracle):
    oracle.quote({"BTC": "60000", "USDC": "1"})
    oracle.quote({"ETH": "3000"}, by=1)  # degraded, and account A holds nothing on ETH
    response = world["trader_a"].post(
        f"{V1}/accounts/{world.account_a.pk}/withdrawals/", {"asset": "USDC", "amount": "10"}
    )
    assert response.status_code == 201, response.json()
    assert usdc(world.account_a) == Decimal(99_990)


def test_linked_collateral_depends_on_its_underlyings_price(world, oracle):
    oracle.quote({"BTC": "60000", "ETH": "3000", "USDC": "1"})
    collateral_deposit(account=world.account_a, asset=world.venue.btc_asset, amount=Decimal(1))
    oracle.clock.advance(seconds=5)
    oracle.quote({"BTC": "30000"}, by=2)
    assert IndexState.objects.get(symbol="BTC").status == "unconfirmed"
    response = world["trader_a"].post(
        f"{V1}/accounts/{world.account_a.pk}/withdrawals/", {"asset": "USDC", "amount": "10"}
    )
    assert response.status_code == 409
    assert "BTC is unconfirmed" in response.json()["detail"]
    assert not Withdrawal.objects.exists()


# --- The worst of last good and latest observed ---------------------------------------------------


def book_of(account, quotes):
    form = parameter_set_active().to_parameters_form()
    return margin_book_load(parameters_form=form, quotes=quotes, account_ids=[account.pk])


def test_each_corner_is_margined_exactly_as_if_the_market_quoted_its_prices(world):
    account = world.account_a
    trade_book(account=account, instrument="BTC-PERP", quantity=Decimal(3), price=Decimal(60_000))
    trade_book(account=account, instrument="ETH-PERP", quantity=Decimal(-40), price=Decimal(3_000))
    trade_book(account=account, instrument="BTC-70000-C", quantity=Decimal(-2), price=Decimal(1_500))
    collateral_deposit(account=account, asset=world.venue.btc_asset, amount=Decimal("0.5"))
    document = book_of(account, quotes_fixed()).document([0])
    switches = {"BTC": 52_000.0, "USDC": 0.97}

    corners_doc, corners = price_corners_document(document, switches)
    results = compute_document(corners_doc)

    assert corners == [{}, {"BTC": 52_000.0}, {"USDC": 0.97}, {"BTC": 52_000.0, "USDC": 0.97}]
    for result, corner in zip(results, corners, strict=True):
        quoted = {**document, "market": {**document["market"]}}
        quoted["market"]["underlyings"] = {
            s: {"price": corner.get(s, e["price"])} for s, e in document["market"]["underlyings"].items()
        }
        quoted["market"]["assets"] = {
            s: {"price": corner.get(s, e["price"])} for s, e in document["market"]["assets"].items()
        }
        (expected,) = compute_document(quoted)
        for figure in ("equity", "collateral_value", "initial_margin", "maintenance_margin"):
            assert result[figure] == pytest.approx(expected[figure], rel=1e-12, abs=1e-9), (corner, figure)
    # The corners differ: the check is not comparing a figure with itself.
    assert len({round(r["equity"], 6) for r in results}) == 4


def test_a_withdrawal_is_judged_at_the_worse_of_last_good_and_latest_observed(world):
    """While the oracle's price moved between its status and its price being read, a price reads
    ok at 19,000 but was last observed at 6,000: the request is judged at 6,000 for a long."""
    account = world.account_a
    trade_book(account=account, instrument="BTC-PERP", quantity=Decimal(10), price=Decimal(19_000))
    good = replace(quotes_fixed(), underlying_prices={"BTC": 19_000.0, "ETH": 3_000.0})
    moving = replace(good, observed_prices={"BTC": 6_000.0, "USDC": 1.0})
    movements = CollateralMovement.objects.count()

    with pytest.raises(ValidationError) as refused:
        withdrawal_request(
            account=account, asset=world.venue.usdc, amount=Decimal(60_000),
            requested_by=world["trader_a"].user, quotes=moving,
        )  # fmt: skip
    assert "BTC at its latest observed 6,000.00" in refused.value.message_dict["amount"][0]
    nothing_written(account, movements=movements)

    accepted = withdrawal_request(
        account=account, asset=world.venue.usdc, amount=Decimal(60_000),
        requested_by=world["trader_a"].user, quotes=good,
    )  # fmt: skip
    assert accepted.state == "requested"


def test_a_short_is_judged_at_the_higher_of_the_two(world):
    account = world.account_a
    trade_book(account=account, instrument="BTC-PERP", quantity=Decimal(-10), price=Decimal(19_000))
    quotes = replace(
        quotes_fixed(), underlying_prices={"BTC": 19_000.0, "ETH": 3_000.0}, observed_prices={"BTC": 15_000.0}
    )
    worst = margin_worst_case(book=book_of(account, quotes), quotes=quotes, symbols={"BTC", "USDC"})
    # The lower observed price helps a short: the worst corner is the last good one.
    assert worst.observed == {}
    assert worst.corners == 2


def test_more_diverging_prices_than_the_bound_refuse_rather_than_approximate(world, monkeypatch):
    monkeypatch.setattr(withdrawals, "MAX_PRICE_SWITCHES", 1)
    account = world.account_a
    trade_book(account=account, instrument="BTC-PERP", quantity=Decimal(1), price=Decimal(60_000))
    quotes = replace(quotes_fixed(), observed_prices={"BTC": 59_000.0, "USDC": 0.999})
    with pytest.raises(PricesUntrusted) as refused:
        margin_worst_case(book=book_of(account, quotes), quotes=quotes, symbols={"BTC", "USDC"})
    assert refused.value.symbols == ("BTC", "USDC")


# --- The guard refuses on NaN --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("equity", "initial"), [(np.nan, 0.0), (1e9, np.nan), (np.nan, np.nan)], ids=["equity", "im", "both"]
)
def test_a_margin_figure_that_is_not_a_number_refuses_the_withdrawal(world, monkeypatch, equity, initial):
    calls = []

    def not_a_number(margin_input):
        calls.append(margin_input.portfolios.n_portfolios)
        n = margin_input.portfolios.n_portfolios
        return SimpleNamespace(equity=np.full(n, equity), initial_margin=np.full(n, initial))

    monkeypatch.setattr(withdrawals, "compute_margin", not_a_number)
    movements = CollateralMovement.objects.count()
    equity_before = whatif.margin_what_if(account=world.account_a).before["equity"]

    response = world["trader_a"].post(
        f"{V1}/accounts/{world.account_a.pk}/withdrawals/", {"asset": "USDC", "amount": "1"}
    )

    assert calls == [1]  # the guard saw the NaN figure (one corner: every price trusted and settled)
    assert response.status_code == 400
    assert "Refused" in response.json()["amount"][0]
    nothing_written(world.account_a, movements=movements)
    assert whatif.margin_what_if(account=world.account_a).before["equity"] == equity_before

"""``POST /api/v1/accounts/{id}/positions/{position_id}/margin/``: a member's trader moves margin
between free collateral and one position of an isolated account (methodology v1.1 section 4a)."""

from dataclasses import replace
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from accounts.trading import trade_book
from clearing.models import AllocationKind, MarginAllocation, Position
from riskengine import whatif
from riskengine.withdrawals import withdrawal_request
from tests.factories import quotes_fixed

V1 = "/api/v1"


@pytest.fixture
def isolated(world):
    """AAA-02 made isolated holding 10,000 USDC of its 100,000 (the rest withdrawn would be
    ordinary), long 1 BTC-PERP booked at 60,000: 6,000 allocated, 94,000 free."""
    account = world.account_a2
    account.mode = "isolated"
    account.save(update_fields=["mode"])
    trade_book(account=account, instrument="BTC-PERP", quantity=Decimal(1), price=Decimal(60_000))
    position = Position.objects.get(account=account, instrument__symbol="BTC-PERP")
    assert position.allocated_margin == Decimal(6000)
    return account, position


def url(account, position_id) -> str:
    return f"{V1}/accounts/{account.pk}/positions/{position_id}/margin/"


def test_a_trader_moves_free_collateral_into_a_position_and_back(world, isolated):
    account, position = isolated

    moved_in = world["trader_a"].post(url(account, position.pk), {"amount": "2500.5"}, key="in-1")
    assert moved_in.status_code == 201, moved_in.json()
    assert moved_in.json()["allocated_after"] == "8500.5000000000"
    assert moved_in.json()["kind"] == AllocationKind.MEMBER

    moved_back = world["trader_a"].post(url(account, position.pk), {"amount": "-2500.5"}, key="back-1")
    assert moved_back.status_code == 201, moved_back.json()
    position.refresh_from_db()
    assert position.allocated_margin == Decimal(6000)
    amounts = list(
        MarginAllocation.objects.filter(position=position).order_by("pk").values_list("amount", flat=True)
    )
    assert amounts == [Decimal(6000), Decimal("2500.5"), Decimal("-2500.5")]


def test_the_same_idempotency_key_moves_once(world, isolated):
    account, position = isolated
    first = world["trader_a"].post(url(account, position.pk), {"amount": "100"}, key="once")
    again = world["trader_a"].post(url(account, position.pk), {"amount": "100"}, key="once")

    assert (first.status_code, again.status_code) == (201, 201)
    assert again.headers["Idempotent-Replayed"] == "true"
    position.refresh_from_db()
    assert position.allocated_margin == Decimal(6100)


def test_more_than_the_free_collateral_is_refused_naming_the_amount(world, isolated):
    account, position = isolated

    response = world["trader_a"].post(url(account, position.pk), {"amount": "94000.01"})

    assert response.status_code == 422
    assert "94000" in response.json()["amount"][0]
    position.refresh_from_db()
    assert position.allocated_margin == Decimal(6000)


def test_moving_back_below_the_positions_im_is_refused_naming_the_amount(world, isolated):
    account, position = isolated
    world["trader_a"].post(url(account, position.pk), {"amount": "1000"})

    too_much = world["trader_a"].post(url(account, position.pk), {"amount": "-1000.01"})
    assert too_much.status_code == 422
    assert "below its initial margin" in too_much.json()["amount"][0]
    exact = world["trader_a"].post(url(account, position.pk), {"amount": "-1000"})
    assert exact.status_code == 201


def test_moving_back_more_than_the_allocation_is_refused_naming_the_amount(world, isolated, monkeypatch):
    account, position = isolated
    # At 80,000 the long is worth +20,000: its equity covers its IM of 8,000 without any allocation,
    # so only the allocation itself limits what can move back.
    up = quotes_fixed()
    monkeypatch.setattr(
        whatif, "quotes_current", lambda: replace(up, underlying_prices={"BTC": 80_000.0, "ETH": 3_000.0})
    )

    response = world["trader_a"].post(url(account, position.pk), {"amount": "-6000.01"})

    assert response.status_code == 422
    assert "holds 6000" in response.json()["amount"][0]
    assert world["trader_a"].post(url(account, position.pk), {"amount": "-6000"}).status_code == 201


def test_no_margin_moves_on_prices_the_oracle_does_not_trust(world, isolated, monkeypatch):
    account, position = isolated
    stale = quotes_fixed()
    monkeypatch.setattr(
        whatif, "quotes_current", lambda: replace(stale, statuses={**stale.statuses, "BTC": "stale"})
    )

    response = world["trader_a"].post(url(account, position.pk), {"amount": "100"})

    assert response.status_code == 409
    assert "BTC" in response.json()["detail"]
    assert not MarginAllocation.objects.filter(kind=AllocationKind.MEMBER).exists()


def test_positions_of_accounts_that_are_not_isolated_hold_no_margin(world):
    trade_book(account=world.account_a, instrument="BTC-PERP", quantity=Decimal(1), price=Decimal(60_000))
    position = Position.objects.get(account=world.account_a)

    response = world["trader_a"].post(url(world.account_a, position.pk), {"amount": "100"})

    assert response.status_code == 422
    assert "portfolio mode" in response.json()["account"][0]


def test_a_position_of_another_account_is_refused_naming_the_position(world, isolated):
    account, _ = isolated
    trade_book(account=world.account_a, instrument="ETH-PERP", quantity=Decimal(1), price=Decimal(3_000))
    other = Position.objects.get(account=world.account_a)

    response = world["trader_a"].post(url(account, other.pk), {"amount": "100"})

    assert response.status_code == 422
    assert list(response.json()) == ["position"]


@pytest.mark.parametrize(
    ("body", "field"), [({"amount": "0"}, "amount"), ({}, "amount"), ({"amount": "ten"}, "amount")]
)
def test_a_malformed_amount_is_a_400_naming_it(world, isolated, body, field):
    account, position = isolated

    response = world["trader_a"].post(url(account, position.pk), body)

    assert response.status_code == 400
    assert field in response.json()


def test_viewers_staff_and_other_members_may_not_move_margin(world, isolated):
    account, position = isolated

    assert world["viewer_a"].post(url(account, position.pk), {"amount": "1"}).status_code == 403
    assert world["ops"].post(url(account, position.pk), {"amount": "1"}).status_code == 403
    assert world["trader_b"].post(url(account, position.pk), {"amount": "1"}).status_code == 404
    position.refresh_from_db()
    assert position.allocated_margin == Decimal(6000)


def test_positions_and_margin_results_show_the_isolated_fields(world, isolated):
    account, _ = isolated

    listed = world["viewer_a"].get(f"{V1}/accounts/{account.pk}/positions/").json()["results"]
    assert listed[0]["allocated_margin"] == "6000.0000000000"
    what_if = world["trader_a"].post(f"{V1}/accounts/{account.pk}/what-if/", {"trades": []}).json()
    (btc,) = what_if["before"]["positions"]
    assert (btc["allocated_margin"], btc["equity"], btc["status"]) == (6000.0, 6000.0, "healthy")
    assert btc["maintenance_margin"] == 3000.0
    assert what_if["before"]["free_collateral"] == 94_000.0


def test_an_isolated_account_withdraws_at_most_its_free_collateral_whatever_its_profits(world, isolated):
    account, _ = isolated
    # At 80,000 the long is worth +20,000: cross margining would let all 100,000 USDC go (equity
    # 120,000, IM 8,000); isolated, the position's profit pays nothing out and its 6,000 stay.
    up = replace(quotes_fixed(), underlying_prices={"BTC": 80_000.0, "ETH": 3_000.0})
    trader = world["trader_a"].user

    with pytest.raises(ValidationError, match=r"free collateral would be -1\.00 USD"):
        withdrawal_request(
            account=account, asset=world.venue.usdc, amount="94001", requested_by=trader, quotes=up
        )
    withdrawal = withdrawal_request(
        account=account, asset=world.venue.usdc, amount="94000", requested_by=trader, quotes=up
    )
    assert withdrawal.amount == Decimal(94_000)


def test_an_isolated_account_with_a_position_in_margin_call_withdraws_nothing(world, isolated):
    account, _ = isolated
    down = replace(
        quotes_fixed(), underlying_prices={"BTC": 58_000.0, "ETH": 3_000.0}
    )  # e = 4,000 < IM 5,800

    with pytest.raises(ValidationError, match="status margin call"):
        withdrawal_request(
            account=account,
            asset=world.venue.usdc,
            amount="1",
            requested_by=world["trader_a"].user,
            quotes=down,
        )

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from accounts.models import CollateralBalance, CollateralMovement, MovementKind
from accounts.trading import Fill, position_after_fill, trade_book, trades_book
from clearing.models import Position, Trade
from tests import factories


@pytest.fixture
def account(venue, member_a):
    return factories.account_make(member=member_a)


def balance(account, asset) -> Decimal:
    row = CollateralBalance.objects.filter(account=account, asset=asset).first()
    return row.amount if row else Decimal(0)


def test_a_trade_creates_the_position_with_its_entry_price(venue, account):
    trade_book(account=account, instrument=venue.btc_perp, quantity="2", price="60000")

    position = Position.objects.get(account=account, instrument=venue.btc_perp)
    assert position.quantity == Decimal(2)
    assert position.entry_price == Decimal(60000)


def test_adding_to_a_position_averages_the_entry_price(venue, account):
    trade_book(account=account, instrument="BTC-PERP", quantity="1", price="60000")
    trade_book(account=account, instrument="BTC-PERP", quantity="3", price="64000")

    position = Position.objects.get(account=account, instrument=venue.btc_perp)
    assert position.quantity == Decimal(4)
    assert position.entry_price == Decimal(63000)


def test_reducing_a_linear_position_realises_its_pnl_in_the_settlement_asset(venue, account):
    trade_book(account=account, instrument=venue.btc_perp, quantity="-2", price="60000")
    trade_book(account=account, instrument=venue.btc_perp, quantity="1", price="58000")

    position = Position.objects.get(account=account, instrument=venue.btc_perp)
    assert position.quantity == Decimal(-1)
    assert position.entry_price == Decimal(60000)  # the open remainder keeps its entry price
    assert position.realised_pnl == Decimal(2000)
    assert balance(account, venue.usd) == Decimal(2000)
    movement = CollateralMovement.objects.get(account=account, kind=MovementKind.REALISED_PNL)
    assert movement.trade.quantity == Decimal(1)


def test_a_fill_through_zero_opens_the_remainder_at_the_fill_price(venue, account):
    trade_book(account=account, instrument=venue.btc_perp, quantity="1", price="50000")
    trade_book(account=account, instrument=venue.btc_perp, quantity="-3", price="52000")

    position = Position.objects.get(account=account, instrument=venue.btc_perp)
    assert (position.quantity, position.entry_price) == (Decimal(-2), Decimal(52000))
    assert balance(account, venue.usd) == Decimal(2000)


def test_closing_a_position_leaves_it_flat_with_no_entry_price(venue, account):
    trade_book(account=account, instrument=venue.btc_perp, quantity="1", price="50000")
    trade_book(account=account, instrument=venue.btc_perp, quantity="-1", price="49000")

    position = Position.objects.get(account=account, instrument=venue.btc_perp)
    assert (position.quantity, position.entry_price) == (Decimal(0), Decimal(0))
    assert balance(account, venue.usd) == Decimal(-1000)


def test_buying_an_option_pays_its_premium_and_selling_receives_it(venue, account):
    trade_book(account=account, instrument=venue.btc_call, quantity="2", price="1500")
    assert balance(account, venue.usd) == Decimal(-3000)

    trade_book(account=account, instrument=venue.btc_call, quantity="-5", price="1600")
    assert balance(account, venue.usd) == Decimal(-3000 + 8000)
    assert Position.objects.get(account=account, instrument=venue.btc_call).quantity == Decimal(-3)


def test_a_batch_is_booked_atomically_and_an_error_names_the_item_and_field(venue, account):
    fills = [
        Fill(account=account, instrument="BTC-PERP", quantity="1", price="60000"),
        Fill(account=account, instrument="ETH-PERP", quantity="-10", price="0"),
    ]
    with pytest.raises(ValidationError) as error:
        trades_book(fills=fills)

    assert "fills[1].price" in error.value.message_dict
    assert not Trade.objects.exists()
    assert not Position.objects.exists()


def test_an_external_trade_id_can_be_booked_only_once(venue, account):
    trade_book(account=account, instrument=venue.btc_perp, quantity="1", price="60000", external_id="X-1")
    with pytest.raises(ValidationError) as error:
        trade_book(account=account, instrument=venue.btc_perp, quantity="1", price="60000", external_id="X-1")

    assert "external_id" in error.value.message_dict
    assert Trade.objects.count() == 1
    assert Position.objects.get().quantity == Decimal(1)


def test_a_batch_uses_a_constant_number_of_queries(venue, account, django_assert_max_num_queries):
    fills = [
        Fill(account=account, instrument="BTC-PERP", quantity="1", price=str(60000 + i)) for i in range(30)
    ]
    fills += [
        Fill(account=account, instrument="ETH-PERP", quantity="-1", price=str(3000 + i)) for i in range(30)
    ]
    with django_assert_max_num_queries(14):
        trades_book(fills=fills)
    assert Position.objects.get(account=account, instrument=venue.eth_perp).quantity == Decimal(-30)


def test_a_trade_on_an_expired_instrument_is_refused(venue, account):
    expired_at = venue.btc_future.expiry
    with pytest.raises(ValidationError) as error:
        trade_book(
            account=account, instrument=venue.btc_future, quantity="1", price="60000", executed_at=expired_at
        )
    assert "instrument" in error.value.message_dict
    assert not Trade.objects.exists()


@pytest.mark.parametrize(
    ("quantity", "entry", "fill", "price", "expected"),
    [
        ("0", "0", "2", "10", ("2", "10", "0")),
        ("2", "10", "2", "20", ("4", "15", "0")),
        ("-4", "10", "1", "8", ("-3", "10", "2")),
        ("-4", "10", "6", "8", ("2", "8", "8")),
        ("3", "10", "-3", "7", ("0", "0", "-9")),
    ],
)
def test_position_after_fill_follows_average_cost_accounting(quantity, entry, fill, price, expected):
    change = position_after_fill(
        quantity=Decimal(quantity),
        entry_price=Decimal(entry),
        fill_quantity=Decimal(fill),
        fill_price=Decimal(price),
    )
    assert (change.quantity, change.entry_price, change.realised) == tuple(Decimal(x) for x in expected)

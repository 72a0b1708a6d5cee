"""Impossible data is refused with a clear error, by validation and by the database, and each
refusal changes nothing."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.trading import trade_book
from clearing.models import Instrument, InstrumentKind, OptionRight, Position, Trade
from tests import factories


def refused_by_database(make):
    with pytest.raises(IntegrityError), transaction.atomic():
        make()


def test_a_non_positive_multiplier_is_refused(venue):
    instrument = Instrument(symbol="BTC-X", kind=InstrumentKind.PERPETUAL, underlying=venue.btc, multiplier=0)
    with pytest.raises(ValidationError) as error:
        instrument.full_clean()
    assert "multiplier" in error.value.message_dict
    refused_by_database(instrument.save)
    assert not Instrument.objects.filter(symbol="BTC-X").exists()


@pytest.mark.parametrize(
    ("terms", "missing"),
    [
        ({"strike": None}, "strike"),
        ({"strike": Decimal(-1)}, "strike"),
        ({"strike": Decimal(0)}, "strike"),
        ({"expiry": None}, "expiry"),
        ({"right": ""}, "right"),
    ],
)
def test_an_option_without_a_positive_strike_an_expiry_or_a_right_is_refused(venue, terms, missing):
    fields = {
        "symbol": "BTC-OPT",
        "kind": InstrumentKind.OPTION,
        "underlying": venue.btc,
        "expiry": timezone.now() + timedelta(days=30),
        "strike": Decimal(50000),
        "right": OptionRight.PUT,
    } | terms
    instrument = Instrument(**fields)
    with pytest.raises(ValidationError) as error:
        instrument.full_clean()
    assert missing in error.value.message_dict
    refused_by_database(instrument.save)
    assert not Instrument.objects.filter(symbol="BTC-OPT").exists()


def test_a_future_without_an_expiry_is_refused(venue):
    refused_by_database(
        lambda: Instrument.objects.create(symbol="BTC-F", kind=InstrumentKind.FUTURE, underlying=venue.btc)
    )


def test_a_second_position_row_for_the_same_account_and_instrument_is_refused(venue, member_a):
    account = factories.account_make(member=member_a)
    trade_book(account=account, instrument=venue.btc_perp, quantity="1", price="60000")

    refused_by_database(
        lambda: Position.objects.create(account=account, instrument=venue.btc_perp, quantity=1, entry_price=1)
    )
    assert Position.objects.get(account=account).quantity == Decimal(1)


@pytest.mark.parametrize("price", ["0", "-5", "NaN", "Infinity", "abc"])
def test_a_trade_at_an_impossible_price_is_refused_and_changes_nothing(venue, member_a, price):
    account = factories.account_make(member=member_a)
    with pytest.raises(ValidationError) as error:
        trade_book(account=account, instrument=venue.btc_perp, quantity="1", price=price)
    assert list(error.value.message_dict) == ["price"]
    assert not Trade.objects.exists()
    assert not Position.objects.exists()


def test_a_trade_on_an_unknown_instrument_is_refused_and_changes_nothing(venue, member_a):
    account = factories.account_make(member=member_a)
    with pytest.raises(ValidationError) as error:
        trade_book(account=account, instrument="DOGE-PERP", quantity="1", price="0.1")
    assert error.value.message_dict == {"instrument": ["Unknown instrument 'DOGE-PERP'."]}
    assert not Trade.objects.exists()
    assert not Position.objects.exists()


def test_the_database_refuses_a_trade_with_a_non_positive_price(venue, member_a):
    account = factories.account_make(member=member_a)
    refused_by_database(
        lambda: Trade.objects.create(
            account=account, instrument=venue.btc_perp, quantity=1, price=0, executed_at=timezone.now()
        )
    )
    assert not Trade.objects.exists()

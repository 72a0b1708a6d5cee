"""A hypothetical fill is checked and booked by the very rules of ``trades_book``
(``accounts.trading.fill_check`` and ``fill_cash``): the what-if refuses what booking refuses, with
the same message, and shows the figures that booking the same fills leaves."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from accounts.trading import Fill, trade_book, trades_book
from clearing.models import Instrument
from riskengine.whatif import margin_what_if
from tests.api.conftest import quotes_fixed

CASES = {
    "not open for clearing": ({"is_active": False}, Decimal(1), Decimal(60000)),
    "expired": ({"expiry": timezone.now() - timedelta(days=1)}, Decimal(1), Decimal(60000)),
    "zero quantity": ({}, Decimal(0), Decimal(60000)),
    "non-positive price": ({}, Decimal(1), Decimal(-5)),
}


@pytest.mark.parametrize("case", CASES)
def test_the_what_if_refuses_a_fill_with_the_message_booking_gives(world, case):
    changes, quantity, price = CASES[case]
    Instrument.objects.filter(pk=world.venue.btc_future.pk).update(**changes)
    instrument = Instrument.objects.select_related("underlying").get(pk=world.venue.btc_future.pk)

    with pytest.raises(ValidationError) as booked:
        trade_book(account=world.account_a, instrument=instrument, quantity=quantity, price=price)
    with pytest.raises(ValidationError) as hypothetical:
        margin_what_if(account=world.account_a, trades=[(instrument, quantity, price)])

    assert hypothetical.value.message_dict == {
        f"trades[0].{field}": messages for field, messages in booked.value.message_dict.items()
    }


def test_a_what_if_shows_the_figures_that_booking_the_same_fills_leaves(world):
    venue = world.venue
    fills = [
        (venue.btc_call, Decimal(2), Decimal(1500)),  # a premium paid
        (venue.btc_perp, Decimal(1), Decimal(60000)),
        (venue.btc_perp, Decimal("-0.5"), Decimal(61000)),  # P&L realised on the closed half
    ]
    quotes = quotes_fixed()  # one valuation time: the option's mark moves with the clock
    predicted = margin_what_if(account=world.account_a, trades=fills, quotes=quotes).after

    trades_book(fills=[Fill(world.account_a, instrument, q, p) for instrument, q, p in fills])
    booked = margin_what_if(account=world.account_a, quotes=quotes).before

    for figure in ("equity", "collateral_value", "initial_margin", "maintenance_margin"):
        assert predicted[figure] == pytest.approx(booked[figure], rel=1e-12), figure

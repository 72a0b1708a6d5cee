"""Booking into an isolated account allocates and releases margin (methodology v1.1 section 4a):
opening or increasing a position allocates the added initial margin, at the trade's price, from
free collateral as far as it goes; reducing releases in proportion; closing releases all. Every
change is a row of the append-only allocation ledger."""

from decimal import Decimal

import pytest
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import connection

from accounts.models import CollateralBalance
from accounts.services import collateral_deposit
from accounts.trading import Fill, trade_book, trades_book
from clearing.ledger import AppendOnlyError
from clearing.models import AllocationKind, MarginAllocation, Position
from clearing.signals import isolated_fills_booked
from riskengine import whatif
from riskengine.admin import MarginAccountAdminForm
from riskengine.allocations import (
    allocation_after_fill,
    isolated_carry_over_allocate,
    isolated_fills_receive,
    margin_account_mode_change,
)
from riskengine.services import parameter_set_bootstrap
from tests import factories
from tests.factories import quotes_fixed, venue_parameters_form


@pytest.fixture
def isolated(venue, member_a, monkeypatch):
    """An isolated account with 10,000 USDC; the active set charges 10 % IM on BTC and ETH."""
    monkeypatch.setattr(whatif, "quotes_current", quotes_fixed)
    parameter_set_bootstrap(form=venue_parameters_form("v1"))
    account = factories.account_make(member=member_a, code="AAA-ISO", mode="isolated")
    collateral_deposit(account=account, asset=venue.usdc, amount=Decimal(10_000))
    return account


def allocation(account, instrument) -> Decimal:
    return Position.objects.get(account=account, instrument=instrument).allocated_margin


def test_opening_an_isolated_position_allocates_its_im_at_the_trades_price(venue, isolated):
    trade = trade_book(account=isolated, instrument=venue.btc_perp, quantity="1", price="50000")

    # IM at the fill price (50,000 × 10 %), not at the index (60,000).
    assert allocation(isolated, venue.btc_perp) == Decimal(5000)
    (row,) = MarginAllocation.objects.filter(account=isolated)
    assert (row.kind, row.amount, row.allocated_after, row.trade_id) == (
        AllocationKind.TRADE, Decimal(5000), Decimal(5000), trade.pk,
    )  # fmt: skip


def test_an_allocation_takes_only_the_free_collateral_there_is(venue, isolated):
    trade_book(account=isolated, instrument=venue.btc_perp, quantity="1", price="60000")  # 6,000
    trade_book(account=isolated, instrument=venue.eth_perp, quantity="-20", price="3000")  # IM 6,000

    assert allocation(isolated, venue.btc_perp) == Decimal(6000)
    assert allocation(isolated, venue.eth_perp) == Decimal(4000)  # all that was left


def test_increasing_allocates_the_added_im_and_reducing_releases_in_proportion(venue, isolated):
    trade_book(account=isolated, instrument=venue.btc_perp, quantity="1", price="60000")
    trade_book(account=isolated, instrument=venue.btc_perp, quantity="0.5", price="40000")
    assert allocation(isolated, venue.btc_perp) == Decimal(8000)  # 6,000 + 0.5 × 40,000 × 10 %

    trade_book(account=isolated, instrument=venue.btc_perp, quantity="-0.6", price="61000")
    assert allocation(isolated, venue.btc_perp) == Decimal(4800)  # 0.9 / 1.5 of 8,000
    kinds = list(MarginAllocation.objects.order_by("pk").values_list("kind", "amount"))
    assert kinds[-1] == (AllocationKind.RELEASE, Decimal(-3200))


def test_closing_releases_everything_and_settles_the_pnl_in_cash(venue, isolated):
    trade_book(account=isolated, instrument=venue.btc_perp, quantity="1", price="60000")
    trade_book(account=isolated, instrument=venue.btc_perp, quantity="-1", price="61000")

    assert allocation(isolated, venue.btc_perp) == 0
    assert CollateralBalance.objects.get(account=isolated, asset=venue.usd).amount == Decimal(1000)
    assert sum(MarginAllocation.objects.filter(account=isolated).values_list("amount", flat=True)) == 0


def test_a_fill_through_zero_releases_all_then_allocates_the_new_sides_im(venue, isolated):
    trade_book(account=isolated, instrument=venue.btc_perp, quantity="1", price="60000")
    trade_book(account=isolated, instrument=venue.btc_perp, quantity="-2", price="55000")

    # The long's 6,000 released; its 5,000 loss is paid in USD (worth −5,250 with the liability
    # add-on), so 4,750 is free for the short 1 at 55,000, whose IM is 5,500.
    assert allocation(isolated, venue.btc_perp) == Decimal(4750)
    rows = list(MarginAllocation.objects.order_by("pk").values_list("kind", "amount"))
    assert rows[1:] == [(AllocationKind.RELEASE, Decimal(-6000)), (AllocationKind.TRADE, Decimal(4750))]


def test_a_batch_follows_free_collateral_from_fill_to_fill(venue, isolated):
    trades_book(
        fills=[
            Fill(isolated, "BTC-PERP", "1", "60000"),
            Fill(isolated, "ETH-PERP", "10", "3000"),
            Fill(isolated, "BTC-PERP", "-1", "60000"),
            Fill(isolated, "ETH-PERP", "10", "3000"),
        ]
    )

    # 6,000 + 3,000 taken, the BTC close gives back 6,000, the second ETH lot takes 3,000.
    assert allocation(isolated, venue.btc_perp) == 0
    assert allocation(isolated, venue.eth_perp) == Decimal(6000)


def test_fills_in_other_modes_allocate_nothing(venue, member_a, isolated):
    cross = factories.account_make(member=member_a, code="AAA-X", mode="cross")
    collateral_deposit(account=cross, asset=venue.usdc, amount=Decimal(10_000))
    trade_book(account=cross, instrument=venue.btc_perp, quantity="1", price="60000")

    assert allocation(cross, venue.btc_perp) == 0
    assert not MarginAllocation.objects.filter(account=cross).exists()


def test_a_long_option_needs_no_allocation_and_a_short_one_gets_its_im(venue, isolated):
    trade_book(account=isolated, instrument=venue.btc_call, quantity="1", price="1000")
    assert allocation(isolated, venue.btc_call) == 0

    trade_book(account=isolated, instrument=venue.btc_call, quantity="-2", price="1000")
    # Short 1 call at the index 60,000: max(15 % × 60,000 − 10,000 OTM, 10 % × 60,000) = 6,000.
    assert allocation(isolated, venue.btc_call) == Decimal(6000)


def test_the_allocation_ledger_is_append_only(venue, isolated):
    trade_book(account=isolated, instrument=venue.btc_perp, quantity="1", price="60000")
    row = MarginAllocation.objects.get()

    with pytest.raises(AppendOnlyError):
        row.save()
    with pytest.raises(Exception, match="append-only"), connection.cursor() as cursor:
        cursor.execute("UPDATE clearing_marginallocation SET amount = 1")


@pytest.mark.parametrize(
    ("quantity", "allocated", "fill", "expected"),
    [
        ("0", "0", "2", ("0", "2")),
        ("2", "100", "1", ("100", "1")),
        ("2", "100", "-0.5", ("75", "0")),
        ("2", "100", "-2", ("0", "0")),
        ("-2", "100", "3", ("0", "1")),
    ],
)
def test_a_fill_keeps_the_allocation_in_proportion_and_opens_what_it_adds(
    quantity, allocated, fill, expected
):
    kept, opened = allocation_after_fill(
        quantity=Decimal(quantity), allocated=Decimal(allocated), fill_quantity=Decimal(fill)
    )
    assert (kept, opened) == (Decimal(expected[0]), Decimal(expected[1]))


def test_positions_opened_before_allocations_existed_get_their_im_at_release(venue, member_a, isolated):
    # As before the upgrade: booked while the account was cross, then the account made isolated
    # directly in the database (what the old admin form did), with nothing allocated.
    legacy = factories.account_make(member=member_a, code="AAA-OLD", mode="cross")
    collateral_deposit(account=legacy, asset=venue.usdc, amount=Decimal(10_000))
    trade_book(account=legacy, instrument=venue.btc_perp, quantity="1", price="61000")  # −1,000 at 60,000
    trade_book(account=legacy, instrument=venue.eth_perp, quantity="-10", price="3000")
    type(legacy).objects.filter(pk=legacy.pk).update(mode="isolated")

    allocated = isolated_carry_over_allocate(quotes=quotes_fixed())

    # BTC: IM 6,000 plus its 1,000 loss; ETH: IM 3,000 (worth 0).
    assert allocation(legacy, venue.btc_perp) == Decimal(7000)
    assert allocation(legacy, venue.eth_perp) == Decimal(3000)
    assert allocated == {"AAA-OLD": Decimal(10_000)}
    assert isolated_carry_over_allocate(quotes=quotes_fixed()) == {}  # never twice


@pytest.fixture
def issue_book(venue, member_a, isolated):
    """The issue's book in a cross account: 5,000 USDC, long 1 BTC-PERP from 50,000 (+10,000 at
    60,000) and short 20 ETH-PERP from 2,800 (−4,000 at 3,000), each IM 6,000 / MM 3,000."""
    account = factories.account_make(member=member_a, code="AAA-MIX", mode="cross")
    collateral_deposit(account=account, asset=venue.usdc, amount=Decimal(5_000))
    trade_book(account=account, instrument=venue.btc_perp, quantity="1", price="50000")
    trade_book(account=account, instrument=venue.eth_perp, quantity="-20", price="2800")
    return account


def test_a_mode_change_that_would_worsen_the_status_is_refused(venue, issue_book):
    # Cross: a margin call (E 11,000 < IM 12,000). Isolated: the short needs 10,000 to stand
    # alone, gets the 5,000 there is, and is in liquidation on its own.
    with pytest.raises(ValidationError, match="liquidation, worse than margin call"):
        margin_account_mode_change(account=issue_book, mode="isolated", changed_by=None)

    issue_book.refresh_from_db()
    assert issue_book.mode == "cross"
    assert not MarginAllocation.objects.filter(account=issue_book).exists()


def test_to_isolated_allocates_what_makes_each_position_stand_and_back_releases_it(venue, issue_book):
    collateral_deposit(account=issue_book, asset=venue.usdc, amount=Decimal(10_000))

    plan = margin_account_mode_change(account=issue_book, mode="isolated", changed_by=None)

    # BTC's +10,000 covers its 6,000; ETH needs its 6,000 and its 4,000 loss.
    assert (plan.status_before, plan.status_after) == ("healthy", "healthy")
    assert allocation(issue_book, venue.btc_perp) == 0
    assert allocation(issue_book, venue.eth_perp) == Decimal(10_000)
    issue_book.refresh_from_db()
    assert issue_book.mode == "isolated"

    margin_account_mode_change(account=issue_book, mode="portfolio", changed_by=None)
    assert allocation(issue_book, venue.eth_perp) == 0
    kinds = MarginAllocation.objects.filter(account=issue_book).values_list("kind", "amount")
    assert sorted(kinds) == [
        (AllocationKind.MODE_CHANGE, Decimal(-10_000)),
        (AllocationKind.MODE_CHANGE, Decimal(10_000)),
    ]


def test_the_admin_form_refuses_a_mode_change_that_worsens_the_status(venue, issue_book):
    data = {
        "member": issue_book.member_id,
        "code": issue_book.code,
        "name": "",
        "mode": "isolated",
        "kind": "member",
    }

    form = MarginAccountAdminForm(data, instance=issue_book)

    assert not form.is_valid()
    assert "worse than margin call" in form.errors["mode"][0]


def test_a_what_if_fill_in_an_isolated_account_allocates_as_booking_it_does(venue, isolated):
    trade_book(account=isolated, instrument=venue.btc_perp, quantity="1", price="60000")  # 6,000 of 10,000
    preview = whatif.margin_what_if(
        account=isolated, trades=[(venue.eth_perp, Decimal(-20), Decimal(3000))], quotes=quotes_fixed()
    )
    (btc_after, eth_after) = preview.after["positions"]

    trade_book(account=isolated, instrument=venue.eth_perp, quantity="-20", price="3000")  # IM 6,000

    # The what-if's short took the 4,000 left, as the booking does; without the rule it would
    # stand on nothing, in liquidation.
    assert eth_after["allocated_margin"] == float(allocation(isolated, venue.eth_perp)) == 4_000.0
    assert btc_after["allocated_margin"] == float(allocation(isolated, venue.btc_perp)) == 6_000.0
    assert eth_after["status"] == "margin_call"


def test_an_isolated_fill_is_refused_rather_than_booked_unallocated_when_nothing_allocates(venue, isolated):
    assert isolated_fills_booked.disconnect(dispatch_uid="riskengine.allocations")
    try:
        with pytest.raises(ImproperlyConfigured, match="nothing allocates"):
            trade_book(account=isolated, instrument=venue.btc_perp, quantity="1", price="60000")
    finally:
        isolated_fills_booked.connect(isolated_fills_receive, dispatch_uid="riskengine.allocations")
    assert not Position.objects.filter(account=isolated).exclude(quantity=0).exists()

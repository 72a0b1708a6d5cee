"""Positions carry their isolated allocation from the database into the engine and into the
replay document (methodology v1.1 sections 4a and 5)."""

from decimal import Decimal

import pytest

from accounts.services import collateral_deposit
from accounts.trading import trade_book
from clearing.models import Position
from riskengine.core import compute_document, compute_margin
from riskengine.loading import account_rows_fetch, book_rows_fetch, margin_book_build, margin_book_load
from riskengine.services import parameter_set_bootstrap
from tests import factories
from tests.factories import quotes_fixed, venue_parameters_form


@pytest.fixture
def isolated(venue, member_a):
    """An isolated account with 10,000 USDC, long 1 BTC-PERP and short 1 ETH-PERP, whose
    allocations are then set to 7,000.5 and 250 USD (the ETH short under its IM of 300)."""
    form = venue_parameters_form("v1")
    parameter_set_bootstrap(form=form)
    account = factories.account_make(member=member_a, code="AAA-ISO", mode="cross")
    collateral_deposit(account=account, asset=venue.usdc, amount=Decimal(10_000))
    trade_book(account=account, instrument=venue.btc_perp, quantity="1", price="59000")
    trade_book(account=account, instrument=venue.eth_perp, quantity="-1", price="3000")
    account.mode = "isolated"
    account.save(update_fields=["mode"])
    Position.objects.filter(account=account, instrument=venue.btc_perp).update(
        allocated_margin=Decimal("7000.5")
    )
    Position.objects.filter(account=account, instrument=venue.eth_perp).update(allocated_margin=Decimal(250))
    return account, form


def test_every_loader_reads_each_positions_allocated_margin(isolated):
    account, _ = isolated

    for rows in (book_rows_fetch(account_ids=[account.pk]), account_rows_fetch(account=account)):
        assert rows.position_allocated.tolist() == [7000.5, 250.0]


def test_the_engine_margins_each_isolated_position_on_its_own_allocation(isolated):
    account, form = isolated
    book = margin_book_load(parameters_form=form, quotes=quotes_fixed(), account_ids=[account.pk])
    result = compute_margin(book.margin_input).to_dict(0)

    btc, eth = result["positions"]
    assert (btc["allocated_margin"], btc["equity"], btc["status"]) == (7000.5, 8000.5, "healthy")
    assert (eth["allocated_margin"], eth["equity"], eth["status"]) == (250.0, 250.0, "margin_call")
    assert result["free_collateral"] == pytest.approx(10_000 - 7250.5)
    assert result["status"] == "margin_call"


def test_the_replay_document_carries_the_allocations_and_replays_exactly(isolated):
    account, form = isolated
    book = margin_book_load(parameters_form=form, quotes=quotes_fixed(), account_ids=[account.pk])

    document = book.document()
    positions = document["portfolios"][0]["positions"]
    assert [p["allocated_margin"] for p in positions] == ["7000.5", "250.0"]
    assert compute_document(document) == compute_margin(book.margin_input).to_dicts()


def test_hypothetical_rows_carry_no_allocation(isolated, venue):
    account, form = isolated
    rows = book_rows_fetch(account_ids=[account.pk]).with_hypothetical(
        positions=[(account.pk, venue.btc_perp.pk, 1.0, 60_000.0)]
    )

    assert rows.position_allocated.tolist() == [7000.5, 250.0, 0.0]
    book = margin_book_build(rows=rows, parameters_form=form, quotes=quotes_fixed())
    assert compute_margin(book.margin_input).to_dict(0)["positions"][2]["status"] == "liquidation"

"""The account page of an isolated account: per position its allocation, equity, maintenance
margin, status and liquidation price, and a form that moves margin (traders only)."""

from decimal import Decimal

import pytest

from accounts.models import Role
from accounts.services import collateral_deposit
from accounts.trading import trade_book
from clearing.models import Position
from frontend import selectors
from riskengine import whatif
from riskengine.services import parameter_set_bootstrap
from tests import factories
from tests.factories import quotes_fixed, venue_parameters_form


@pytest.fixture
def isolated(venue, member_a, monkeypatch):
    """AAA-ISO, isolated, 10,000 USDC, long 1 BTC-PERP booked at 60,000 (6,000 allocated)."""
    monkeypatch.setattr(whatif, "quotes_current", quotes_fixed)
    monkeypatch.setattr(selectors, "quotes_current", quotes_fixed)
    parameter_set_bootstrap(form=venue_parameters_form("v1"))
    account = factories.account_make(member=member_a, code="AAA-ISO", mode="isolated")
    collateral_deposit(account=account, asset=venue.usdc, amount=Decimal(10_000))
    trade_book(account=account, instrument=venue.btc_perp, quantity="1", price="60000")
    return account, Position.objects.get(account=account)


def test_the_page_shows_each_isolated_positions_own_figures_and_the_form(client, member_a, isolated):
    account, position = isolated
    client.force_login(factories.user_make(username="alice", member=member_a))

    html = client.get(f"/accounts/{account.code}/").content.decode()

    row = html[html.index(f'data-position="{position.pk}"') :]
    row = row[: row.index("</tr>")]
    # MM 3,000; allocated 6,000; equity 6,000; healthy; liquidation at (60,000 − 6,000) / 0.95.
    for figure in ("3,000.00", "6,000.00", "status-healthy", "56,842.11"):
        assert figure in row
    assert f'action="/accounts/{account.code}/positions/{position.pk}/margin/"' in row
    assert 'data-field="free-collateral">4,000.00' in html


def test_a_trader_moves_margin_from_the_page(client, member_a, isolated):
    account, position = isolated
    client.force_login(factories.user_make(username="alice", member=member_a))

    page = client.post(
        f"/accounts/{account.code}/positions/{position.pk}/margin/", {"amount": "1500"}, follow=True
    )

    assert "Moved 1,500.00 USD into the position" in page.content.decode()
    position.refresh_from_db()
    assert position.allocated_margin == Decimal(7500)


def test_a_refused_move_says_why_and_changes_nothing(client, member_a, isolated):
    account, position = isolated
    client.force_login(factories.user_make(username="alice", member=member_a))

    page = client.post(
        f"/accounts/{account.code}/positions/{position.pk}/margin/", {"amount": "-1"}, follow=True
    )

    assert "below its initial margin" in page.content.decode()
    position.refresh_from_db()
    assert position.allocated_margin == Decimal(6000)


def test_a_viewer_sees_the_figures_without_the_form_and_cannot_post(client, member_a, isolated):
    account, position = isolated
    client.force_login(factories.user_make(username="vera", role=Role.VIEWER, member=member_a))

    html = client.get(f"/accounts/{account.code}/").content.decode()
    assert 'data-field="allocated"' in html
    assert "/margin/" not in html
    response = client.post(f"/accounts/{account.code}/positions/{position.pk}/margin/", {"amount": "1"})
    assert response.status_code == 403
    position.refresh_from_db()
    assert position.allocated_margin == Decimal(6000)

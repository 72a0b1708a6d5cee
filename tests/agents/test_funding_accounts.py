"""Funding accounts (issue #18 item 1): a member's account that margins nothing."""

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from accounts.custody import deposit_announce
from accounts.models import AccountKind, CollateralBalance, MarginAccount
from accounts.services import collateral_deposit
from accounts.trading import Fill, trade_book, trades_book
from clearing.models import Position
from riskengine.sweeps.models import AccountMargin, MarginCall
from riskengine.sweeps.services import sweep_accounts_run
from riskengine.withdrawals import withdrawal_request
from tests import factories
from tests.factories import quotes_fixed


@pytest.fixture
def funding(member_a, venue):
    account = MarginAccount.objects.create(member=member_a, code="AAA-FUND", kind=AccountKind.FUNDING)
    collateral_deposit(account=account, asset=venue.usdc, amount=Decimal(50_000))
    return account


def test_a_fill_into_a_funding_account_is_refused_naming_the_account(funding, active_set):
    with pytest.raises(ValidationError) as refused:
        trade_book(account=funding, instrument="BTC-PERP", quantity=1, price=60_000)
    assert "funding account" in refused.value.message_dict["account"][0]
    assert not Position.objects.filter(account=funding).exists()


def test_a_batch_naming_a_funding_account_books_nothing(funding, member_a, active_set, venue):
    margin = factories.account_make(member=member_a, code="AAA-01")
    collateral_deposit(account=margin, asset=venue.usdc, amount=Decimal(100_000))
    with pytest.raises(ValidationError) as refused:
        trades_book(fills=[Fill(margin, "BTC-PERP", 1, 60_000), Fill(funding, "BTC-PERP", -1, 60_000)])
    assert list(refused.value.message_dict) == ["fills[1].account"]
    assert not Position.objects.exists()


def test_a_member_holds_at_most_one_funding_account(funding, member_a):
    with pytest.raises(IntegrityError), transaction.atomic():
        MarginAccount.objects.create(member=member_a, code="AAA-FUND-2", kind=AccountKind.FUNDING)


def test_funding_accounts_of_different_members_coexist_with_the_venue_accounts(funding, member_b):
    MarginAccount.objects.create(member=member_b, code="BBB-FUND", kind=AccountKind.FUNDING)
    MarginAccount.objects.create(member=member_b, code="HOUSE", kind=AccountKind.HOUSE)
    with pytest.raises(IntegrityError), transaction.atomic():
        MarginAccount.objects.create(member=member_b, code="HOUSE-2", kind=AccountKind.HOUSE)
    assert MarginAccount.objects.filter(kind=AccountKind.FUNDING).count() == 2


def test_a_funding_account_takes_deposit_announcements_and_withdrawal_requests(
    funding, member_a, active_set, venue, monkeypatch
):
    from riskengine import whatif

    monkeypatch.setattr(whatif, "quotes_current", quotes_fixed)
    trader = factories.user_make(username="trader-a", member=member_a)
    deposit = deposit_announce(account=funding, asset=venue.usdc, amount=Decimal(10), announced_by=trader)
    withdrawal = withdrawal_request(
        account=funding, asset=venue.usdc, amount=Decimal(20_000), requested_by=trader
    )
    assert (deposit.state, withdrawal.state) == ("pending", "requested")
    assert CollateralBalance.objects.get(account=funding, asset=venue.usdc).amount == 30_000


def test_a_sweep_values_a_funding_account_as_collateral_only_and_never_calls_it(funding, active_set):
    sweep_accounts_run(account_ids=[funding.pk], cause="test", quotes=quotes_fixed())

    margin = AccountMargin.objects.get(account=funding)
    assert (margin.status, margin.initial_margin, margin.maintenance_margin) == ("healthy", 0, 0)
    assert margin.equity == 50_000
    assert not MarginCall.objects.filter(account=funding).exists()

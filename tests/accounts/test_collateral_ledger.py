from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import DatabaseError, connection, transaction

from accounts.models import CollateralBalance, CollateralMovement
from accounts.services import collateral_deposit, collateral_withdraw
from accounts.trading import trade_book
from clearing.ledger import AppendOnlyError
from clearing.models import Trade
from tests import factories


@pytest.fixture
def account(venue, member_a):
    return factories.account_make(member=member_a)


def test_a_deposit_appends_a_movement_and_raises_the_balance(venue, account):
    collateral_deposit(account=account, asset=venue.usdc, amount=Decimal("1000.5"))
    collateral_deposit(account=account, asset=venue.usdc, amount=Decimal("500"))

    assert CollateralBalance.objects.get(account=account, asset=venue.usdc).amount == Decimal("1500.5")
    assert CollateralMovement.objects.filter(account=account).count() == 2


def test_a_withdrawal_beyond_the_balance_is_refused_and_changes_nothing(venue, account):
    collateral_deposit(account=account, asset=venue.usdc, amount=Decimal(100))
    with pytest.raises(ValidationError) as error:
        collateral_withdraw(account=account, asset=venue.usdc, amount=Decimal("100.01"))

    assert "amount" in error.value.message_dict
    assert CollateralBalance.objects.get(account=account, asset=venue.usdc).amount == Decimal(100)
    assert CollateralMovement.objects.filter(account=account).count() == 1


@pytest.mark.parametrize("amount", ["0", "-1", "NaN", "1e400", "0.0000001"])
def test_an_impossible_deposit_amount_is_refused_with_the_field_named(venue, account, amount):
    with pytest.raises(ValidationError) as error:
        collateral_deposit(account=account, asset=venue.usdc, amount=amount)
    assert list(error.value.message_dict) == ["amount"]
    assert not CollateralMovement.objects.exists()


def test_the_models_refuse_to_change_or_delete_ledger_rows(venue, account):
    movement = collateral_deposit(account=account, asset=venue.usdc, amount=Decimal(10))
    trade = trade_book(account=account, instrument=venue.btc_perp, quantity="1", price="60000")
    for row in (movement, trade):
        with pytest.raises(AppendOnlyError):
            row.save()
        with pytest.raises(AppendOnlyError):
            row.delete()


@pytest.mark.parametrize("table", ["clearing_trade", "accounts_collateralmovement"])
def test_the_database_refuses_to_update_or_delete_ledger_rows(venue, account, table):
    collateral_deposit(account=account, asset=venue.usdc, amount=Decimal(10))
    trade_book(account=account, instrument=venue.btc_perp, quantity="1", price="60000")
    for statement in (f"UPDATE {table} SET id = id", f"DELETE FROM {table}"):
        with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement)
    assert Trade.objects.count() == 1
    assert CollateralMovement.objects.filter(account=account, kind="deposit").count() == 1

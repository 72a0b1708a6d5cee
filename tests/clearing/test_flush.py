"""``manage.py flush`` (every transactional test's teardown calls it) empties the append-only ledgers
on both databases, and they refuse deletions again afterwards (CI runs this module on both: ``make
test`` and ``make test-sqlite``)."""

from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction

from accounts.models import CollateralMovement, MarginAccount
from accounts.services import collateral_deposit
from clearing.bulk import delete_triggers_lifted
from tests import factories

MOVEMENTS = CollateralMovement._meta.db_table


def deposit() -> CollateralMovement:
    venue = factories.venue_make()
    account = factories.account_make(member=factories.member_make())
    collateral_deposit(account=account, asset=venue.usd, amount=Decimal("100"))
    return CollateralMovement.objects.get(account=account)


def assert_delete_refused() -> None:
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as c:
        c.execute(f"DELETE FROM {MOVEMENTS}")


def test_flush_empties_the_append_only_ledgers_and_leaves_them_refusing_deletions(transactional_db):
    deposit()
    assert_delete_refused()

    call_command("flush", interactive=False, verbosity=0)

    assert not CollateralMovement.objects.exists()
    assert not MarginAccount.objects.exists()
    deposit()
    assert_delete_refused()
    assert CollateralMovement.objects.count() == 1


def test_a_flush_that_fails_leaves_the_ledgers_refusing_deletions(db):
    deposit()

    with pytest.raises(RuntimeError, match="flush failed"), delete_triggers_lifted():
        raise RuntimeError("flush failed")

    assert_delete_refused()
    assert CollateralMovement.objects.count() == 1

"""Races on real PostgreSQL (threads, each with its own connection, committed transactions)."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest
from django.db import connection

from accounts.models import CollateralBalance, CollateralMovement, Deposit, Withdrawal
from accounts.trading import trade_book
from riskengine import withdrawals
from riskengine.whatif import margin_what_if
from tests.factories import client_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgresql("row-lock races between connections: SQLite serialises every writer"),
]

V1 = "/api/v1"


def run_together(*calls):
    """Start the calls at the same moment in threads; return their results in order."""
    barrier = threading.Barrier(len(calls))
    results = [None] * len(calls)

    def worker(index, call):
        try:
            barrier.wait()
            results[index] = call()
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def test_two_concurrent_withdrawals_can_never_together_breach_initial_margin(world, monkeypatch):
    trade_book(account=world.account_a, instrument="BTC-PERP", quantity=Decimal(10), price=Decimal(60_000))
    now = margin_what_if(account=world.account_a).before
    excess = now["equity"] - now["initial_margin"]
    assert excess > 1000
    # Each withdrawal alone is fine (60 % of the excess); both together are not.
    amount = f"{excess * 0.6:.2f}"

    # Widen the window between the lock and the margin check, so that without the lock both
    # requests would compute their check on the same starting balance.
    load = withdrawals.margin_book_load

    def slow_load(**kwargs):
        time.sleep(0.3)
        return load(**kwargs)

    monkeypatch.setattr(withdrawals, "margin_book_load", slow_load)
    url = f"{V1}/accounts/{world.account_a.pk}/withdrawals/"
    # The same trader from two back-office processes (two tokens, two connections).
    trader, other = world["trader_a"], client_for(world["trader_a"].user)
    responses = run_together(
        lambda: trader.post(url, {"asset": "USDC", "amount": amount}),
        lambda: other.post(url, {"asset": "USDC", "amount": amount}),
    )

    assert sorted(r.status_code for r in responses) == [201, 400]
    refused = next(r for r in responses if r.status_code == 400)
    assert "initial margin" in refused.json()["amount"][0]
    assert CollateralMovement.objects.filter(account=world.account_a, kind="withdrawal_reserve").count() == 1
    assert Withdrawal.objects.filter(account=world.account_a).count() == 1
    after = margin_what_if(account=world.account_a).before
    assert after["equity"] >= after["initial_margin"]
    assert CollateralBalance.objects.get(account=world.account_a, asset__symbol="USDC").amount == (
        Decimal(100_000) - Decimal(amount)
    )


def test_a_concurrent_duplicate_with_the_same_key_gets_409_and_runs_once(world, monkeypatch):
    from clearing.api import views

    deposit = views.deposit_announce

    def slow_deposit(**kwargs):
        time.sleep(0.5)
        return deposit(**kwargs)

    monkeypatch.setattr(views, "deposit_announce", slow_deposit)
    url = f"{V1}/accounts/{world.account_a.pk}/deposits/"
    trader = world["trader_a"]
    body = {"asset": "USDC", "amount": "7"}

    first, second = run_together(
        lambda: trader.post(url, body, key="same"),
        lambda: (time.sleep(0.1), trader.post(url, body, key="same"))[1],
    )

    assert (first.status_code, second.status_code) == (201, 409)
    assert Deposit.objects.filter(account=world.account_a, amount=7).count() == 1
    replay = trader.post(url, body, key="same")
    assert replay.status_code == 201
    assert replay.json() == first.json()


def test_two_concurrent_confirmations_of_one_deposit_credit_it_once(world, monkeypatch):
    from accounts import custody
    from accounts.custody import deposit_announce

    deposit = deposit_announce(
        account=world.account_a,
        asset=world.venue.usdc,
        amount=Decimal(500),
        announced_by=world["trader_a"].user,
    )
    # Widen the window between reading the deposit under its lock and crediting it.
    credit = custody._credit

    def slow_credit(**kwargs):
        time.sleep(0.3)
        return credit(**kwargs)

    monkeypatch.setattr(custody, "_credit", slow_credit)
    url = f"{V1}/custody/deposits/{deposit.pk}/confirm/"
    custodian, other = world["custodian"], client_for(world["custodian"].user)
    responses = run_together(
        lambda: custodian.post(url, {"reference": "0xone"}),
        lambda: other.post(url, {"reference": "0xtwo"}),
    )

    assert sorted(r.status_code for r in responses) == [201, 409]
    assert CollateralMovement.objects.filter(account=world.account_a, kind="deposit", amount=500).count() == 1
    assert CollateralBalance.objects.get(account=world.account_a, asset__symbol="USDC").amount == Decimal(
        100_500
    )


def test_two_concurrent_custody_steps_on_one_withdrawal_leave_exactly_one(world, monkeypatch):
    from accounts import custody
    from riskengine.withdrawals import withdrawal_request

    withdrawal = withdrawal_request(
        account=world.account_a,
        asset=world.venue.usdc,
        amount=Decimal(300),
        requested_by=world["trader_a"].user,
    )
    lock = custody.custody_row_lock

    def slow_lock(*args, **kwargs):
        row = lock(*args, **kwargs)
        time.sleep(0.3)
        return row

    monkeypatch.setattr(custody, "custody_row_lock", slow_lock)
    custodian, other = world["custodian"], client_for(world["custodian"].user)
    responses = run_together(
        lambda: custodian.post(f"{V1}/custody/withdrawals/{withdrawal.pk}/sent/", {"reference": "0xpaid"}),
        lambda: other.post(f"{V1}/custody/withdrawals/{withdrawal.pk}/failed/", {"reason": "bounced"}),
    )

    assert sorted(r.status_code for r in responses) == [201, 409]
    state = Withdrawal.objects.get(pk=withdrawal.pk).state
    released = CollateralMovement.objects.filter(kind="withdrawal_release").count()
    assert (state, released) in {("sent", 0), ("failed", 1)}
    expected = Decimal(100_000) if state == "failed" else Decimal(99_700)
    assert CollateralBalance.objects.get(account=world.account_a, asset__symbol="USDC").amount == expected

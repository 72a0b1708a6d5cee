"""The custody ledgers are append-only and the database keeps their rules: one terminal step per
request, an external reference credited once per asset, four eyes on the insurance fund. The
expiry and the demo custody run from Celery beat and act only through the custodian's services."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings as django_settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils import timezone

from accounts.custody import (
    deposit_announce,
    deposit_confirm,
    fund_withdrawal_propose,
    withdrawal_mark_sent,
)
from accounts.models import (
    AccountKind,
    CollateralBalance,
    Deposit,
    DepositStep,
    FundWithdrawalDecision,
    MarginAccount,
    Member,
    Role,
    Withdrawal,
    WithdrawalStep,
)
from accounts.services import collateral_deposit
from clearing.ledger import AppendOnlyError
from riskengine import whatif
from riskengine.services import parameter_set_bootstrap
from riskengine.withdrawals import fund_withdrawal_approve, withdrawal_request
from tests import factories
from tests.factories import quotes_fixed, venue_parameters_form

TABLES = [
    "accounts_deposit",
    "accounts_depositstep",
    "accounts_withdrawal",
    "accounts_withdrawalstep",
    "accounts_fundwithdrawalproposal",
    "accounts_fundwithdrawaldecision",
]


@pytest.fixture
def books(venue, member_a, monkeypatch):
    """An account with 10,000 USDC, a trader, the custodian, ops and a risk approver, an insurance
    fund; one confirmed deposit, one sent withdrawal and one approved fund withdrawal."""
    monkeypatch.setattr(whatif, "quotes_current", quotes_fixed)
    parameter_set_bootstrap(form=venue_parameters_form("v1"))
    account = factories.account_make(member=member_a, code="AAA-01")
    collateral_deposit(account=account, asset=venue.usdc, amount=Decimal(10_000))
    venue_member = Member.objects.create(code="VENUE", name="The clearing venue")
    fund = MarginAccount.objects.create(
        member=venue_member, code="VENUE-INSURANCE", kind=AccountKind.INSURANCE_FUND, mode="cross"
    )
    collateral_deposit(account=fund, asset=venue.usd, amount=Decimal(1_000))
    users = {
        "trader": factories.user_make(username="trader", member=member_a),
        "custody": factories.user_make(username="custody", role=Role.CUSTODIAN),
        "ops": factories.user_make(username="ops", role=Role.OPS),
        "risk": factories.user_make(username="risk", role=Role.RISK_APPROVER),
    }
    deposit = deposit_announce(
        account=account, asset=venue.usdc, amount=Decimal(5), announced_by=users["trader"]
    )
    deposit_confirm(deposit=deposit, custodian=users["custody"], reference="0x01")
    withdrawal = withdrawal_request(
        account=account, asset=venue.usdc, amount=Decimal(7), requested_by=users["trader"]
    )
    withdrawal_mark_sent(withdrawal=withdrawal, custodian=users["custody"], reference="0x02")
    proposal = fund_withdrawal_propose(
        asset=venue.usd, amount=Decimal(10), reason="audit fee", proposed_by=users["ops"]
    )
    fund_withdrawal_approve(proposal=proposal, approved_by=users["risk"])
    return {"account": account, "fund": fund, "deposit": deposit, "withdrawal": withdrawal, **users}


def test_the_models_refuse_to_change_or_delete_custody_rows(books):
    deposit, withdrawal = books["deposit"], books["withdrawal"]
    rows = [deposit, deposit.step, withdrawal, withdrawal.step, FundWithdrawalDecision.objects.get()]
    rows.append(rows[-1].proposal)
    for row in rows:
        with pytest.raises(AppendOnlyError):
            row.save()
        with pytest.raises(AppendOnlyError):
            row.delete()


@pytest.mark.parametrize("table", TABLES)
def test_the_database_refuses_to_update_or_delete_custody_rows(books, table):
    for statement in (f"UPDATE {table} SET id = id", f"DELETE FROM {table}"):
        with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {table}")
        assert cursor.fetchone()[0] >= 1


def test_the_database_refuses_a_second_terminal_step(books):
    deposit, withdrawal, custody = books["deposit"], books["withdrawal"], books["custody"]
    now = timezone.now()
    with pytest.raises(IntegrityError), transaction.atomic():
        DepositStep.objects.create(deposit=deposit, kind="expired", asset=deposit.asset, created_at=now)
    with pytest.raises(IntegrityError), transaction.atomic():
        WithdrawalStep.objects.create(
            withdrawal=withdrawal, kind="sent", reference="0x03", created_by=custody, created_at=now
        )
    assert (Deposit.objects.get(pk=deposit.pk).state, Withdrawal.objects.get(pk=withdrawal.pk).state) == (
        "confirmed",
        "sent",
    )


def test_the_database_credits_an_external_reference_once_per_asset(books, venue):
    account, trader, custody = books["account"], books["trader"], books["custody"]
    again = deposit_announce(account=account, asset=venue.usdc, amount=Decimal(5), announced_by=trader)
    other_asset = deposit_announce(account=account, asset=venue.usd, amount=Decimal(5), announced_by=trader)
    # A movement of its own, so that the reference is the only thing the insert repeats.
    movement = collateral_deposit(account=account, asset=venue.usdc, amount=Decimal(5))
    with pytest.raises(IntegrityError), transaction.atomic():
        # Bypassing the service's check: the unique constraint still refuses it.
        DepositStep.objects.create(
            deposit=again, kind="confirmed", asset=venue.usdc, reference="0x01", movement=movement,
            created_by=custody, created_at=timezone.now(),
        )  # fmt: skip
    # The same reference on another asset is another payment (another chain, another bank).
    step, created = deposit_confirm(deposit=other_asset, custodian=custody, reference="0x01")
    assert (created, step.kind) == (True, "confirmed")


def test_a_confirmed_step_must_carry_its_reference_and_its_credit(books, venue):
    pending = deposit_announce(
        account=books["account"], asset=venue.usdc, amount=Decimal(1), announced_by=books["trader"]
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        DepositStep.objects.create(
            deposit=pending,
            kind="confirmed",
            asset=venue.usdc,
            reference="0xnocredit",
            created_at=timezone.now(),
        )
    assert Deposit.objects.get(pk=pending.pk).state == "pending"


def test_the_ttl_is_stamped_on_each_announcement(books, venue, settings):
    settings.CUSTODY_DEPOSIT_TTL_SECONDS = 600
    now = timezone.now()
    deposit = deposit_announce(
        account=books["account"], asset=venue.usdc, amount=Decimal(1), announced_by=books["trader"], now=now
    )
    assert deposit.expires_at == now + timedelta(seconds=600)
    assert django_settings.CUSTODY_DEPOSIT_TTL_SECONDS == 600


def test_beat_expires_announcements_past_their_ttl(books, venue):
    from accounts.tasks import deposits_expire
    from clearing.config.celery import app

    [entry] = [
        e for e in django_settings.CELERY_BEAT_SCHEDULE.values() if e["task"] == "custody.deposits_expire"
    ]
    late = deposit_announce(
        account=books["account"], asset=venue.usdc, amount=Decimal(1), announced_by=books["trader"],
        now=timezone.now() - timedelta(seconds=django_settings.CUSTODY_DEPOSIT_TTL_SECONDS + 1),
    )  # fmt: skip
    fresh = deposit_announce(
        account=books["account"], asset=venue.usdc, amount=Decimal(1), announced_by=books["trader"]
    )

    assert deposits_expire.name == entry["task"]  # the worker finds it in accounts.tasks
    assert app.tasks[entry["task"]].apply().get() == 1
    assert app.tasks[entry["task"]].apply().get() == 0
    assert (Deposit.objects.get(pk=late.pk).state, Deposit.objects.get(pk=fresh.pk).state) == (
        "expired",
        "pending",
    )
    assert not DepositStep.objects.get(deposit=late).movement_id


def test_the_demo_custody_acts_as_the_custody_user_and_only_when_switched_on(books, venue, settings):
    from accounts.tasks import demo_process

    account, trader, custody = books["account"], books["trader"], books["custody"]
    a_while_ago = timezone.now() - timedelta(seconds=30)
    deposit = deposit_announce(
        account=account, asset=venue.usdc, amount=Decimal(3), announced_by=trader, now=a_while_ago
    )
    just_now = deposit_announce(account=account, asset=venue.usdc, amount=Decimal(4), announced_by=trader)
    withdrawal = withdrawal_request(
        account=account, asset=venue.usdc, amount=Decimal(2), requested_by=trader, now=a_while_ago
    )

    settings.CUSTODY_DEMO_AUTOCONFIRM = False
    assert demo_process.apply().get() == [0, 0]
    settings.CUSTODY_DEMO_AUTOCONFIRM, settings.DJANGO_ENV = True, "production"
    assert demo_process.apply().get() == [0, 0]
    assert Deposit.objects.get(pk=deposit.pk).state == "pending"

    settings.DJANGO_ENV, settings.CUSTODY_DEMO_DELAY_SECONDS = "development", 5
    assert demo_process.apply().get() == [1, 1]
    step = DepositStep.objects.get(deposit=deposit)
    assert (step.kind, step.created_by, step.movement.created_by) == ("confirmed", custody, custody)
    assert WithdrawalStep.objects.get(withdrawal=withdrawal).created_by == custody
    assert Deposit.objects.get(pk=just_now.pk).state == "pending"  # announced less than 5 s ago
    assert CollateralBalance.objects.get(account=account, asset=venue.usdc).amount == Decimal(
        10_000 + 5 - 7 + 3 - 2
    )

"""Custody: collateral reaches or leaves an account only through the custodian, in two steps.

Deposits. A member's trader *announces* a deposit (``deposit_announce``): it is shown as pending
and counts for nothing. The custodian *confirms* it with the external reference of the money
received (``deposit_confirm``): only then is the account credited, in the same transaction. An
announcement not confirmed within its TTL (``CUSTODY_DEPOSIT_TTL_SECONDS``, stamped when it is
announced) expires (``deposits_expire``, Celery beat) and can no longer be confirmed. The
custodian may also credit money it saw arrive without an announcement (``deposit_credit``).

Withdrawals. A member's trader *requests* one (``riskengine.withdrawals.withdrawal_request``: the
margin check and the reservation of the amount). The custodian marks it ``sent`` with its
reference (``withdrawal_mark_sent``) or ``failed`` (``withdrawal_mark_failed``: the reservation is
released by a movement crediting the amount back).

Insurance fund. Ops propose a withdrawal from the fund (``fund_withdrawal_propose``); a risk
approver who is not the proposer approves it (``riskengine.withdrawals.fund_withdrawal_approve``,
which creates the custody request) or rejects it (``fund_withdrawal_reject``).

Every step is an append-only row; a request's state is derived from its one terminal step, which
the database keeps unique. Transitions lock the account (``margin_accounts_lock``) and then the
request row, so a second confirmation or send waits for the first and then sees its step: the
same step again (same reference) is answered idempotently, anything else is refused with
``CustodyConflict``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TypeVar

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import (
    AccountKind,
    Asset,
    CollateralBalance,
    Deposit,
    DepositOrigin,
    DepositState,
    DepositStep,
    DepositStepKind,
    FundDecision,
    FundWithdrawalDecision,
    FundWithdrawalProposal,
    MarginAccount,
    MovementKind,
    Role,
    User,
    Withdrawal,
    WithdrawalStep,
    WithdrawalStepKind,
)
from accounts.selectors import deposits_in_state, withdrawals_in_state
from accounts.services import (
    BalanceChange,
    collateral_amount_validate,
    collateral_movements_apply,
    margin_accounts_lock,
)
from clearing.events import events_publish

REFERENCE_MAX_LENGTH = 200
REASON_MAX_LENGTH = 500


class CustodyConflict(Exception):
    """The request contradicts the current state of a custody request or of the market (already
    confirmed, expired, prices not trusted...): nothing was changed. The API answers 409."""


# --- Checks shared by the services -----------------------------------------------------------------


def text_clean(value: object, *, field: str, max_length: int, required: bool) -> str:
    """``value`` stripped, within ``max_length``; a ValidationError naming ``field`` otherwise."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise ValidationError({field: "Must be text."})
    value = value.strip()
    if required and not value:
        raise ValidationError({field: "Required."})
    if len(value) > max_length:
        raise ValidationError({field: f"At most {max_length} characters."})
    if "\x00" in value:
        raise ValidationError({field: "Must not contain NUL characters."})
    return value


def custodian_require(user: User | None, *, field: str = "custodian") -> None:
    if user is None or not user.is_active or user.role != Role.CUSTODIAN:
        raise ValidationError({field: "Only the custodian can take this step."})


def member_trader_require(*, user: User | None, account: MarginAccount, field: str) -> None:
    """Only an active trader of the account's own member acts for it."""
    if (
        user is None
        or not user.is_active
        or user.role != Role.TRADER
        or user.member_id is None
        or user.member_id != account.member_id
    ):
        raise ValidationError({field: "Only a trader of the account's member can do this."})


def member_account_require(account: MarginAccount) -> None:
    """The house account and the insurance fund take no member deposits or withdrawals (a member's
    margin and funding accounts do)."""
    if account.kind not in (AccountKind.MEMBER, AccountKind.FUNDING):
        raise ValidationError(
            {
                "account": f"{account.code} is the venue's {account.get_kind_display().lower()}: it "
                "accepts no deposit announcements or withdrawal requests (the insurance fund pays out "
                "only through an approved proposal in the admin)."
            }
        )


def custody_events_publish(*, changes: list[tuple[int, str, int, str]]) -> None:
    """Tell the watchers of each account that a custody request changed: ``(account_id, "deposit"
    or "withdrawal", request id, new state)``. Written in the caller's transaction (the outbox row
    commits or rolls back with the change); the account page then re-reads its pending section."""
    if not changes:
        return
    events_publish(
        events=[
            (account_id, "custody.updated", {"request": request, "id": pk, "state": state})
            for account_id, request, pk, state in changes
        ]
    )


_Row = TypeVar("_Row", Deposit, Withdrawal, FundWithdrawalProposal)
_T = TypeVar("_T")
# The reverse one-to-one of each request's terminal row, read with the lock.
_TERMINAL = {Deposit: "step", Withdrawal: "step", FundWithdrawalProposal: "decision"}


def custody_row_lock(model: type[_Row], pk: int, account_id: int | None = None) -> _Row:
    """The request ``pk`` locked (``SELECT … FOR UPDATE``) with its terminal row, after its
    account: a concurrent transition waits here, then sees what the first one appended."""
    if account_id is not None:
        margin_accounts_lock(account_ids=[account_id])
    rows = model.objects.select_for_update(of=("self",)).select_related(_TERMINAL[model])
    return rows.get(pk=pk)


def _integrity(call: Callable[[], _T], *, field: str, message: str) -> _T:
    """Run ``call`` in a savepoint; a unique-constraint violation becomes a ValidationError
    naming ``field`` (the database is the last word on races the checks above did not see)."""
    try:
        with transaction.atomic():
            return call()
    except IntegrityError:
        raise ValidationError({field: message}) from None


# --- Deposits ------------------------------------------------------------------------------------


@transaction.atomic
def deposit_announce(
    *,
    account: MarginAccount,
    asset: Asset,
    amount: object,
    announced_by: User,
    note: str = "",
    now: datetime | None = None,
) -> Deposit:
    """A member's trader announces a deposit: pending, credited only when the custodian confirms
    it. Refused (ValidationError naming the field, nothing written) for a venue account, a user
    who is not a trader of the account's member, or a bad amount."""
    member_account_require(account)
    member_trader_require(user=announced_by, account=account, field="announced_by")
    amount = collateral_amount_validate(asset=asset, amount=amount)
    note = text_clean(note, field="note", max_length=REFERENCE_MAX_LENGTH, required=False)
    now = now or timezone.now()
    deposit = Deposit.objects.create(
        account=account,
        asset=asset,
        amount=amount,
        origin=DepositOrigin.ANNOUNCED,
        note=note,
        created_by=announced_by,
        created_at=now,
        expires_at=now + timedelta(seconds=settings.CUSTODY_DEPOSIT_TTL_SECONDS),
    )
    custody_events_publish(changes=[(account.pk, "deposit", deposit.pk, DepositState.PENDING)])
    return deposit


def _reference_taken(*, asset: Asset, reference: str) -> DepositStep | None:
    return (
        DepositStep.objects.filter(kind=DepositStepKind.CONFIRMED, asset=asset, reference=reference)
        .select_related("deposit__account")
        .first()
    )


def _credit(*, deposit: Deposit, custodian: User, reference: str, now: datetime) -> DepositStep:
    """Credit ``deposit`` (its account locked by the caller) and append its confirmation."""
    taken = _reference_taken(asset=deposit.asset, reference=reference)
    if taken is not None:
        raise ValidationError(
            {
                "reference": f"{deposit.asset.symbol} reference {reference!r} already credited deposit "
                f"#{taken.deposit_id} to {taken.deposit.account.code}: the same money is credited once."
            }
        )
    (movement,) = collateral_movements_apply(
        changes=[
            BalanceChange(deposit.account_id, deposit.asset, MovementKind.DEPOSIT, deposit.amount, reference)
        ],
        created_by=custodian,
    )
    step = _integrity(
        lambda: DepositStep.objects.create(
            deposit=deposit,
            kind=DepositStepKind.CONFIRMED,
            asset=deposit.asset,
            reference=reference,
            movement=movement,
            created_by=custodian,
            created_at=now,
        ),
        field="reference",
        message=f"{deposit.asset.symbol} reference {reference!r} was credited meanwhile.",
    )
    deposit.step = step
    custody_events_publish(changes=[(deposit.account_id, "deposit", deposit.pk, step.kind)])
    return step


@transaction.atomic
def deposit_confirm(
    *, deposit: Deposit, custodian: User, reference: object, now: datetime | None = None
) -> tuple[DepositStep, bool]:
    """The custodian confirms an announced deposit with the external ``reference`` (transaction
    hash, bank reference) of the money received, and the account is credited.

    Returns ``(step, created)``: confirming again with the same reference returns the existing
    confirmation (``created`` False) and credits nothing. Refused with ``CustodyConflict`` once
    the deposit is confirmed otherwise or has expired (by its step or by its time), and with a
    ValidationError naming ``reference`` when that reference already credited money."""
    custodian_require(custodian)
    reference = text_clean(reference, field="reference", max_length=REFERENCE_MAX_LENGTH, required=True)
    deposit = custody_row_lock(Deposit, deposit.pk, deposit.account_id)
    step = deposit.step_or_none
    if step is not None:
        if step.kind == DepositStepKind.CONFIRMED and step.reference == reference:
            return step, False
        raise CustodyConflict(
            f"Deposit #{deposit.pk} is already {step.kind}"
            + (f" (reference {step.reference!r})." if step.reference else ".")
        )
    now = now or timezone.now()
    if deposit.expires_at is not None and deposit.expires_at <= now:
        raise CustodyConflict(
            f"Deposit #{deposit.pk} expired at {deposit.expires_at.isoformat()}: it can no longer be "
            "confirmed. Credit the money received as an observed deposit instead."
        )
    return _credit(deposit=deposit, custodian=custodian, reference=reference, now=now), True


@transaction.atomic
def deposit_credit(
    *,
    account: MarginAccount,
    asset: Asset,
    amount: object,
    custodian: User,
    reference: object,
    now: datetime | None = None,
) -> Deposit:
    """The custodian credits money it saw arrive without an announcement: an ``observed`` deposit
    and its confirmation, in one transaction. Any account, the venue's included (custody is the
    one that knows the money is there). The reference must not have credited this asset before."""
    custodian_require(custodian)
    amount = collateral_amount_validate(asset=asset, amount=amount)
    reference = text_clean(reference, field="reference", max_length=REFERENCE_MAX_LENGTH, required=True)
    now = now or timezone.now()
    margin_accounts_lock(account_ids=[account.pk])
    deposit = Deposit.objects.create(
        account=account,
        asset=asset,
        amount=amount,
        origin=DepositOrigin.OBSERVED,
        created_by=custodian,
        created_at=now,
    )
    _credit(deposit=deposit, custodian=custodian, reference=reference, now=now)
    return deposit


@transaction.atomic
def deposits_expire(*, now: datetime | None = None, limit: int = 1000) -> int:
    """Append the expiry of announced deposits past their TTL and still unconfirmed; returns how
    many. Idempotent (an expired deposit has its step) and safe beside confirmations: rows a
    confirmation holds are skipped (``SKIP LOCKED``) and seen again at the next run."""
    now = now or timezone.now()
    due = list(
        Deposit.objects.filter(origin=DepositOrigin.ANNOUNCED, expires_at__lte=now, step__isnull=True)
        .select_for_update(skip_locked=True, of=("self",))
        .order_by("pk")
        .values_list("pk", "asset_id", "account_id")[:limit]
    )
    if not due:
        return 0
    # A confirmation committed between our read and the lock would have its step: re-check.
    closed = set(
        DepositStep.objects.filter(deposit_id__in=[pk for pk, *_ in due]).values_list("deposit_id", flat=True)
    )
    expiring = [(pk, asset_id, account_id) for pk, asset_id, account_id in due if pk not in closed]
    DepositStep.objects.bulk_create(
        [
            DepositStep(deposit_id=pk, kind=DepositStepKind.EXPIRED, asset_id=asset_id, created_at=now)
            for pk, asset_id, _ in expiring
        ],
        ignore_conflicts=True,
    )
    custody_events_publish(
        changes=[(account_id, "deposit", pk, DepositStepKind.EXPIRED) for pk, _, account_id in expiring]
    )
    return len(expiring)


# --- Withdrawals: the custodian's steps (the request is in riskengine.withdrawals) ---------------


@transaction.atomic
def withdrawal_mark_sent(
    *, withdrawal: Withdrawal, custodian: User, reference: object, now: datetime | None = None
) -> tuple[WithdrawalStep, bool]:
    """The custodian sent the money: the reservation becomes final. Returns ``(step, created)``;
    the same reference again is idempotent, anything else once the request is closed is refused
    with ``CustodyConflict``."""
    custodian_require(custodian)
    reference = text_clean(reference, field="reference", max_length=REFERENCE_MAX_LENGTH, required=True)
    withdrawal = custody_row_lock(Withdrawal, withdrawal.pk, withdrawal.account_id)
    step = withdrawal.step_or_none
    if step is not None:
        if step.kind == WithdrawalStepKind.SENT and step.reference == reference:
            return step, False
        raise CustodyConflict(f"Withdrawal #{withdrawal.pk} is already {step.kind}.")
    step = WithdrawalStep.objects.create(
        withdrawal=withdrawal,
        kind=WithdrawalStepKind.SENT,
        reference=reference,
        created_by=custodian,
        created_at=now or timezone.now(),
    )
    withdrawal.step = step
    custody_events_publish(changes=[(withdrawal.account_id, "withdrawal", withdrawal.pk, step.kind)])
    return step, True


@transaction.atomic
def withdrawal_mark_failed(
    *, withdrawal: Withdrawal, custodian: User, reason: object, now: datetime | None = None
) -> tuple[WithdrawalStep, bool]:
    """Custody could not send the money: the reservation is released (a movement crediting the
    amount back) and the request is closed. Returns ``(step, created)``; failing it again with the
    same reason is idempotent, anything else once it is closed is refused with ``CustodyConflict``."""
    custodian_require(custodian)
    reason = text_clean(reason, field="reason", max_length=REASON_MAX_LENGTH, required=True)
    withdrawal = custody_row_lock(Withdrawal, withdrawal.pk, withdrawal.account_id)
    step = withdrawal.step_or_none
    if step is not None:
        if step.kind == WithdrawalStepKind.FAILED and step.reason == reason:
            return step, False
        raise CustodyConflict(f"Withdrawal #{withdrawal.pk} is already {step.kind}.")
    (release,) = collateral_movements_apply(
        changes=[
            BalanceChange(
                withdrawal.account_id,
                withdrawal.asset,
                MovementKind.WITHDRAWAL_RELEASE,
                withdrawal.amount,
                f"withdrawal #{withdrawal.pk} failed",
            )
        ],
        created_by=custodian,
    )
    step = WithdrawalStep.objects.create(
        withdrawal=withdrawal,
        kind=WithdrawalStepKind.FAILED,
        reason=reason,
        release=release,
        created_by=custodian,
        created_at=now or timezone.now(),
    )
    withdrawal.step = step
    custody_events_publish(changes=[(withdrawal.account_id, "withdrawal", withdrawal.pk, step.kind)])
    return step, True


# --- Insurance fund: maker-checker ----------------------------------------------------------------


def insurance_fund() -> MarginAccount:
    fund = MarginAccount.objects.filter(kind=AccountKind.INSURANCE_FUND).first()
    if fund is None:
        raise ValidationError({"account": "The venue has no insurance fund account."})
    return fund


def fund_decider_require(*, proposal: FundWithdrawalProposal, user: User | None, field: str) -> None:
    """A risk approver who is not the proposer (four eyes; the database checks it again)."""
    if user is None or not user.is_active or user.role != Role.RISK_APPROVER:
        raise ValidationError({field: "Only a risk approver can decide an insurance-fund withdrawal."})
    if user.pk == proposal.proposed_by_id:
        raise ValidationError({field: "The proposer of an insurance-fund withdrawal cannot decide it."})


@transaction.atomic
def fund_withdrawal_propose(
    *,
    asset: Asset,
    amount: object,
    reason: object,
    proposed_by: User,
    destination: object = "",
    now: datetime | None = None,
) -> FundWithdrawalProposal:
    """Venue ops propose to pay ``amount`` of ``asset`` out of the insurance fund, saying why.
    Nothing moves until a different user, a risk approver, approves it."""
    if proposed_by is None or not proposed_by.is_active or proposed_by.role != Role.OPS:
        raise ValidationError({"proposed_by": "Only venue ops can propose an insurance-fund withdrawal."})
    amount = collateral_amount_validate(asset=asset, amount=amount)
    reason = text_clean(reason, field="reason", max_length=2000, required=True)
    destination = text_clean(
        destination, field="destination", max_length=REFERENCE_MAX_LENGTH, required=False
    )
    fund = insurance_fund()
    held = (
        CollateralBalance.objects.filter(account=fund, asset=asset).values_list("amount", flat=True).first()
    )
    if amount > (held or Decimal(0)):
        raise ValidationError({"amount": f"The insurance fund holds only {held or 0} {asset.symbol}."})
    return FundWithdrawalProposal.objects.create(
        account=fund,
        asset=asset,
        amount=amount,
        reason=reason,
        destination=destination,
        proposed_by=proposed_by,
        created_at=now or timezone.now(),
    )


@transaction.atomic
def fund_withdrawal_reject(
    *, proposal: FundWithdrawalProposal, rejected_by: User, note: object, now: datetime | None = None
) -> FundWithdrawalDecision:
    """A risk approver other than the proposer rejects the proposal, saying why."""
    fund_decider_require(proposal=proposal, user=rejected_by, field="rejected_by")
    note = text_clean(note, field="note", max_length=2000, required=True)
    proposal = custody_row_lock(FundWithdrawalProposal, proposal.pk, proposal.account_id)
    if proposal.decision_or_none is not None:
        raise CustodyConflict(f"Insurance-fund withdrawal #{proposal.pk} is already {proposal.state}.")
    return FundWithdrawalDecision.objects.create(
        proposal=proposal,
        decision=FundDecision.REJECTED,
        proposed_by_id=proposal.proposed_by_id,
        decided_by=rejected_by,
        note=note,
        created_at=now or timezone.now(),
    )


# --- The demo custody ------------------------------------------------------------------------------

# The demo venue's custodian user (``seed_demo`` creates it).
DEMO_CUSTODIAN = "custody"


def custody_demo_process(
    *, now: datetime | None = None, delay_seconds: float | None = None
) -> tuple[int, int]:
    """The demo venue's custody (``CUSTODY_DEMO_AUTOCONFIRM``, development only): deposits announced
    and withdrawals requested at least ``delay_seconds`` ago are confirmed and sent, so the demo
    flows without a real custodian. It acts as the ``custody`` user through the custodian's own
    services, checks and ledger entries included; returns (deposits confirmed, withdrawals sent)."""
    custodian = User.objects.filter(username=DEMO_CUSTODIAN, role=Role.CUSTODIAN, is_active=True).first()
    if custodian is None:
        return 0, 0
    now = now or timezone.now()
    delay = settings.CUSTODY_DEMO_DELAY_SECONDS if delay_seconds is None else delay_seconds
    cutoff = now - timedelta(seconds=delay)
    confirmed = sent = 0
    for deposit in deposits_in_state().filter(created_at__lte=cutoff, expires_at__gt=now)[:100]:
        try:
            _, created = deposit_confirm(
                deposit=deposit, custodian=custodian, reference=f"demo-in-{deposit.pk}"
            )
        except (CustodyConflict, ValidationError):
            continue  # settled meanwhile, or an amount the balance cannot hold: leave it to expire
        confirmed += created
    for withdrawal in withdrawals_in_state().filter(created_at__lte=cutoff)[:100]:
        try:
            _, created = withdrawal_mark_sent(
                withdrawal=withdrawal, custodian=custodian, reference=f"demo-out-{withdrawal.pk}"
            )
        except CustodyConflict:
            continue
        sent += created
    return confirmed, sent

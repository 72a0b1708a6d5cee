"""Read operations on accounts; every member-facing read goes through ``margin_accounts_visible``."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import QuerySet

from accounts.models import (
    ACCOUNT_READER_ROLES,
    Deposit,
    DepositState,
    MarginAccount,
    User,
    Withdrawal,
    WithdrawalState,
)


def margin_accounts_visible(*, user: User) -> QuerySet[MarginAccount]:
    """The accounts ``user`` may see: its member's for member users, all for ops and risk approvers,
    none for security admins, system users (price sources, the trading venue) and anonymous
    visitors."""
    accounts = MarginAccount.objects.select_related("member")
    if not user.is_authenticated or not user.is_active:
        return accounts.none()
    if user.is_superuser or user.role in ACCOUNT_READER_ROLES:
        return accounts
    if user.is_member_user:
        return accounts.filter(member_id=user.member_id)
    return accounts.none()


# --- Custody ---------------------------------------------------------------------------------------


def deposits_of_account(*, account: MarginAccount) -> QuerySet[Deposit]:
    """The account's deposits, newest first, with their terminal step (state)."""
    return Deposit.objects.filter(account=account).select_related("account", "asset", "step").order_by("-id")


def withdrawals_of_account(*, account: MarginAccount) -> QuerySet[Withdrawal]:
    return (
        Withdrawal.objects.filter(account=account).select_related("account", "asset", "step").order_by("-id")
    )


def deposits_in_state(*, state: str | None = DepositState.PENDING) -> QuerySet[Deposit]:
    """Deposits of every account in ``state`` (all with None), oldest first: the custodian's queue."""
    deposits = Deposit.objects.select_related("account", "asset", "step").order_by("id")
    if state == DepositState.PENDING:
        return deposits.filter(step__isnull=True)
    if state is not None:
        return deposits.filter(step__kind=state)
    return deposits


def withdrawals_in_state(*, state: str | None = WithdrawalState.REQUESTED) -> QuerySet[Withdrawal]:
    withdrawals = Withdrawal.objects.select_related("account", "asset", "step").order_by("id")
    if state == WithdrawalState.REQUESTED:
        return withdrawals.filter(step__isnull=True)
    if state is not None:
        return withdrawals.filter(step__kind=state)
    return withdrawals


@dataclass(frozen=True)
class CustodyPending:
    """What custody has not settled yet for one account: announced deposits (not counted in its
    equity) and requested withdrawals (already reserved: out of its equity)."""

    deposits: list[Deposit]
    withdrawals: list[Withdrawal]


def custody_pending(*, account: MarginAccount) -> CustodyPending:
    return CustodyPending(
        deposits=list(
            Deposit.objects.filter(account=account, step__isnull=True).select_related("asset").order_by("-id")
        ),
        withdrawals=list(
            Withdrawal.objects.filter(account=account, step__isnull=True)
            .select_related("asset")
            .order_by("-id")
        ),
    )

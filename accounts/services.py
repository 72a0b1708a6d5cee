"""Write operations on members, users, accounts, collateral and API tokens.

Every service is keyword-only and atomic. Anything that changes an account's money first locks the
account rows (``margin_accounts_lock``), always in primary-key order, so two writers on the same
accounts queue instead of deadlocking or interleaving.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from accounts.models import (
    MEMBER_ROLES,
    ApiToken,
    Asset,
    CollateralBalance,
    CollateralMovement,
    MarginAccount,
    Member,
    MovementKind,
    Role,
    User,
)
from clearing.signals import accounts_changed_on_commit
from clearing.validation import decimal_positive


def margin_accounts_lock(*, account_ids: Iterable[int]) -> dict[int, MarginAccount]:
    """Lock the given accounts (``SELECT … FOR UPDATE``) in primary-key order and return them by id.

    Must run inside a transaction. On SQLite the whole database is locked by the IMMEDIATE
    transaction instead, which gives the same guarantee for one machine.
    """
    ids = sorted(set(account_ids))
    accounts = MarginAccount.objects.filter(pk__in=ids).order_by("pk").select_for_update()
    return {account.pk: account for account in accounts}


# Balances are NUMERIC(28, 10): strictly less than 10^18 units.
BALANCE_LIMIT = Decimal(10) ** 18


@dataclass(frozen=True)
class BalanceChange:
    """One ledger entry to write: ``amount`` (signed, in units of ``asset``) on ``account_id``."""

    account_id: int
    asset: Asset
    kind: str
    amount: Decimal
    reference: str = ""
    trade_id: int | None = None


def collateral_movements_apply(
    *, changes: Sequence[BalanceChange], created_by: User | None
) -> list[CollateralMovement]:
    """Append the movements and update the derived balances, in the caller's transaction.

    The caller holds the account locks. Balance rows are created when missing and locked in
    primary-key order; the number of queries does not grow with the number of changes.
    """
    changes = [change for change in changes if change.amount != 0]
    if not changes:
        return []
    pairs = {(change.account_id, change.asset.pk) for change in changes}
    account_ids = {account_id for account_id, _ in pairs}
    asset_ids = {asset_id for _, asset_id in pairs}
    CollateralBalance.objects.bulk_create(
        [CollateralBalance(account_id=a, asset_id=s) for a, s in pairs], ignore_conflicts=True
    )
    balances = {
        (balance.account_id, balance.asset_id): balance
        for balance in CollateralBalance.objects.filter(account_id__in=account_ids, asset_id__in=asset_ids)
        .order_by("pk")
        .select_for_update()
        if (balance.account_id, balance.asset_id) in pairs
    }
    movements = []
    for change in changes:
        balance = balances[(change.account_id, change.asset.pk)]
        balance.amount += change.amount
        if abs(balance.amount) >= BALANCE_LIMIT:
            # NUMERIC(28, 10) holds less than 10^18: refuse here, naming the field, rather than
            # let the database fail the transaction with an overflow.
            raise ValidationError(
                {"amount": f"The {change.asset.symbol} balance would exceed what an account can hold."}
            )
        movements.append(
            CollateralMovement(
                account_id=change.account_id,
                asset=change.asset,
                kind=change.kind,
                amount=change.amount,
                trade_id=change.trade_id,
                reference=change.reference,
                created_by=created_by,
            )
        )
    now = timezone.now()
    for balance in balances.values():
        balance.updated_at = now
    CollateralBalance.objects.bulk_update(list(balances.values()), ["amount", "updated_at"])
    accounts_changed_on_commit(sender=__name__, account_ids=account_ids)
    return CollateralMovement.objects.bulk_create(movements)


def collateral_amount_validate(*, asset: Asset, amount: object) -> Decimal:
    """``amount`` as a positive Decimal within ``asset``'s decimal places, for an active asset;
    a ValidationError naming ``amount`` or ``asset`` otherwise."""
    amount = decimal_positive(amount, field="amount")
    if amount.as_tuple().exponent < -asset.decimals:
        raise ValidationError({"amount": f"{asset.symbol} accepts at most {asset.decimals} decimal places."})
    if not asset.is_active:
        raise ValidationError({"asset": f"{asset.symbol} is not accepted as collateral."})
    return amount


@transaction.atomic
def collateral_deposit(
    *,
    account: MarginAccount,
    asset: Asset,
    amount: Decimal,
    created_by: User | None = None,
    reference: str = "",
) -> CollateralMovement:
    """Credit ``amount`` (> 0) of ``asset`` to ``account``: the venue's own credit path.

    No member request reaches this: members announce deposits and only the custodian's
    confirmation credits them (``accounts.custody``). It serves the venue's internal callers —
    seeding the demo venue and the insurance fund, benches and test set-ups — for money that is
    in custody by construction."""
    amount = collateral_amount_validate(asset=asset, amount=amount)
    margin_accounts_lock(account_ids=[account.pk])
    (movement,) = collateral_movements_apply(
        changes=[BalanceChange(account.pk, asset, MovementKind.DEPOSIT, amount, reference)],
        created_by=created_by,
    )
    return movement


@transaction.atomic
def collateral_withdraw(
    *,
    account: MarginAccount,
    asset: Asset,
    amount: Decimal,
    created_by: User | None = None,
    reference: str = "",
) -> CollateralMovement:
    """Debit ``amount`` (> 0) of ``asset`` from ``account``; never more than its balance.

    Internal (no margin check, no custody): money leaves through
    ``riskengine.withdrawals.withdrawal_request`` and the custodian's steps."""
    amount = collateral_amount_validate(asset=asset, amount=amount)
    margin_accounts_lock(account_ids=[account.pk])
    available = CollateralBalance.objects.filter(account=account, asset=asset).values_list(
        "amount", flat=True
    ).first() or Decimal(0)
    if amount > available:
        raise ValidationError({"amount": f"Only {available} {asset.symbol} is available to withdraw."})
    (movement,) = collateral_movements_apply(
        changes=[BalanceChange(account.pk, asset, MovementKind.WITHDRAWAL, -amount, reference)],
        created_by=created_by,
    )
    return movement


@transaction.atomic
def user_create(
    *, username: str, password: str | None, role: str, member: Member | None = None, email: str = ""
) -> User:
    """Create a user with a role; member traders and viewers must name their member."""
    if role not in Role.values:
        raise ValidationError({"role": f"Unknown role {role!r}."})
    if (role in MEMBER_ROLES) != (member is not None):
        raise ValidationError({"member": "Member traders and viewers need a member; other roles have none."})
    user = User(username=username, role=role, member=member, email=email)
    if password:
        user.set_password(password)
    else:
        user.set_unusable_password()
    user.full_clean()
    user.save()
    return user


TOKEN_PREFIX = "clr"


def api_token_digest(token: str) -> str:
    """Tokens carry 256 bits of randomness, so a fast unsalted hash is enough to make a stolen
    table useless (the same reasoning as GitHub's and Django REST Knox's hashed tokens)."""
    return hashlib.sha256(token.encode()).hexdigest()


@transaction.atomic
def api_token_issue(*, user: User, name: str = "") -> tuple[ApiToken, str]:
    """Create a token for ``user`` and return it with its secret, which is never stored."""
    public = secrets.token_hex(4)
    token = f"{TOKEN_PREFIX}_{public}_{secrets.token_urlsafe(32)}"
    record = ApiToken.objects.create(user=user, name=name, prefix=public, digest=api_token_digest(token))
    return record, token


def api_token_revoke(*, token: ApiToken) -> ApiToken:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
    return token

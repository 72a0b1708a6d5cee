"""Read operations on accounts; every member-facing read goes through ``margin_accounts_visible``."""

from __future__ import annotations

from django.db.models import QuerySet

from accounts.models import ACCOUNT_READER_ROLES, MarginAccount, User


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

"""Read operations on accounts; every member-facing read goes through ``margin_accounts_visible``,
and who may use the platform at all is ``user_admitted``."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import import_module

from django.conf import settings
from django.db.models import Q, QuerySet
from django.shortcuts import get_object_or_404
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from accounts.models import (
    ACCOUNT_READER_ROLES,
    Deposit,
    DepositState,
    MarginAccount,
    User,
    Withdrawal,
    WithdrawalState,
)
from clearing.bulk import filter_any

# The admission rule as a filter on users, for callers that check many users in one query (the
# websocket hub re-checks every open socket's user every few seconds): the same rule as
# ``user_admitted``.
USERS_ADMITTED = Q(is_active=True) & (Q(member__isnull=True) | Q(member__is_active=True))


def user_admitted(*, user) -> bool:
    """Whether ``user`` may use the platform at all: signed in, active, and — for member users —
    of an active member. Deactivating a member shuts out all of its users at once (pages, API
    tokens and sessions, websockets) without touching each user."""
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    return user.member_id is None or user.member.is_active


def margin_accounts_visible(*, user: User) -> QuerySet[MarginAccount]:
    """The accounts ``user`` may see: its member's for member users, all for ops and risk approvers,
    none for security admins, system users (price sources, the trading venue) and anonymous
    visitors."""
    accounts = MarginAccount.objects.select_related("member")
    if not user_admitted(user=user):
        return accounts.none()
    if user.is_superuser or user.role in ACCOUNT_READER_ROLES:
        return accounts
    if user.is_member_user:
        return accounts.filter(member_id=user.member_id)
    return accounts.none()


def margin_account_visible(*, user: User, pk: int | None = None, code: str | None = None) -> MarginAccount:
    """The account with ``pk`` (or ``code``) if ``user`` may see it, its member joined; ``Http404``
    otherwise, whether or not it exists: another member's account is indistinguishable from one
    that does not exist. The one way the API and the web app resolve an account they are given."""
    lookup = {"pk": pk} if pk is not None else {"code": code}
    return get_object_or_404(margin_accounts_visible(user=user), **lookup)


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


def user_password_digest(*, user) -> str:
    """A digest of the user's stored password hash: it changes exactly when the password does
    (which is also when Django's session auth hash changes and ends the user's other sessions).
    A plain SHA-256, not Django's salted HMAC: the hub recomputes it for every socket's user every
    few seconds, and it is only compared with the value taken when the socket connected."""
    return hashlib.sha256((user.password or "").encode()).hexdigest()


@dataclass(frozen=True)
class SessionGrant:
    """What a long-lived connection (a websocket) was admitted with: its session key, its user and
    ``user_password_digest`` at that moment."""

    session_key: str
    user_id: int
    password_digest: str


# Sessions stored in the database are checked in bulk; other engines are asked key by key.
_DB_SESSION_ENGINES = {"django.contrib.sessions.backends.db", "django.contrib.sessions.backends.cached_db"}


def _sessions_alive(keys: list[str], *, now) -> set[str]:
    if settings.SESSION_ENGINE in _DB_SESSION_ENGINES:
        # Only with a database session engine: otherwise the sessions app need not be installed.
        from django.contrib.sessions.models import Session

        alive = filter_any(Session.objects.filter(expire_date__gt=now), "session_key", keys)
        return set(alive.values_list("session_key", flat=True))
    store = import_module(settings.SESSION_ENGINE).SessionStore
    return {key for key in keys if store().exists(key)}


def session_grants_ended(*, grants: Iterable[SessionGrant]) -> set[SessionGrant]:
    """The grants that no longer admit their user: the session was deleted (sign-out; a password
    change or a new sign-in in the same browser cycles its key) or expired, the user's password
    changed since (its other sessions), or the user or its member was deactivated.

    Two queries however many grants (sessions by key, admitted users by id, both index lookups):
    the websocket hub calls it for all of its process's sockets every few seconds."""
    grants = list(grants)
    if not grants:
        return set()
    alive = _sessions_alive(list({grant.session_key for grant in grants}), now=timezone.now())
    user_ids = list({grant.user_id for grant in grants})
    admitted = filter_any(User.objects.filter(USERS_ADMITTED), "id", user_ids)
    digests = {
        pk: hashlib.sha256((password or "").encode()).hexdigest()
        for pk, password in admitted.values_list("pk", "password")
    }
    return {
        grant
        for grant in grants
        if grant.session_key not in alive
        or not constant_time_compare(digests.get(grant.user_id, ""), grant.password_digest)
    }

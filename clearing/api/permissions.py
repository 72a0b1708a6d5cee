"""Who may call what: each view names the roles allowed to read (GET) and to write (POST).

Roles (``accounts.models.Role``):

* ``trader`` — a member user who may act: what-if, announcing deposits and requesting
  withdrawals, all on its own member's accounts (member accounts only: never the venue's);
* ``viewer`` — a member user who reads its own member's accounts only;
* ``ops`` / ``risk_approver`` — venue staff: read every account; ops endpoints are theirs;
* ``price_source`` — a price feed: submits prices and implied vols, nothing else;
* ``venue`` — the trading venue's system user: books trades and reads reference data;
* ``custodian`` — custody's system user: confirms announced deposits, credits deposits it
  observed, marks requested withdrawals sent or failed. Nothing else moves money through the API:
  ops may not deposit or withdraw (the insurance fund pays out through maker-checker in the admin).

Which accounts a user sees is never decided here but by ``accounts.selectors.margin_accounts_visible``
(another member's account is a 404, not a 403, so its existence does not leak).
"""

from __future__ import annotations

from rest_framework.permissions import SAFE_METHODS, BasePermission

from accounts.models import Role
from accounts.selectors import user_admitted

MEMBER = frozenset({Role.TRADER, Role.VIEWER})
STAFF = frozenset({Role.OPS, Role.RISK_APPROVER})
READERS = MEMBER | STAFF
REFERENCE_READERS = READERS | {Role.VENUE}
ACCOUNT_WRITERS = frozenset({Role.TRADER})
WHAT_IF_USERS = frozenset({Role.TRADER}) | STAFF
OPS = frozenset({Role.OPS})
PRICE_SOURCES = frozenset({Role.PRICE_SOURCE})
VENUE = frozenset({Role.VENUE})
CUSTODIAN = frozenset({Role.CUSTODIAN})


def user_role(user) -> str | None:
    if not user_admitted(user=user):
        return None
    # A superuser (created by createsuperuser for the first admin) acts as venue ops.
    return Role.OPS if user.is_superuser else user.role


class RolePermission(BasePermission):
    """Allows a request when the user's role is in the view's ``read_roles`` (safe methods) or
    ``write_roles`` (anything else). A view that names no roles for a method allows nobody."""

    message = "Your role may not use this endpoint."

    def has_permission(self, request, view) -> bool:
        role = user_role(request.user)
        if role is None:
            return False
        allowed = getattr(view, "read_roles" if request.method in SAFE_METHODS else "write_roles", ())
        return role in allowed

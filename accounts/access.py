"""User and role administration under four eyes, and the audit log it writes.

Who may do what (``accounts.roles``): only security admins administer users. They create member
users (traders, viewers) and set member roles, passwords of member users and API tokens directly;
every such act is in the append-only ``SecurityEvent`` log. Giving or taking away a staff or system
role (ops, risk approver, security admin, price source, venue, custodian) is a ``RoleGrant``
proposal that takes effect only when a second security admin approves it: nobody approves their
own proposal, nobody proposes or approves a grant for themselves, nobody changes their own role.

So one person can never hold two of the identities a maker-checker relies on: they cannot create a
second staff user, promote an accomplice's account, take over a staff user's password or token,
or approve for themselves. Staff and system users' passwords are never set by someone else (staff
change their own, with the current one; the operator at the command line is the last resort).

Every service is keyword-only and atomic, re-checks the actor's permission and the four-eyes rules
inside its transaction, raises ``ValidationError`` naming the field, and changes nothing when it
refuses. Row locks: users before grants, in primary-key order.
"""

from __future__ import annotations

from django.contrib.auth import password_validation
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import (
    MEMBER_ROLES,
    PRIVILEGED_ROLES,
    STAFF_ROLES,
    ApiToken,
    GrantStatus,
    Member,
    Role,
    RoleGrant,
    SecurityAction,
    SecurityEvent,
    User,
)
from accounts.services import api_token_issue, api_token_revoke, user_create

USER_ADD_PERMISSION = "accounts.add_user"
USER_CHANGE_PERMISSION = "accounts.change_user"
GRANT_PROPOSE_PERMISSION = "accounts.add_rolegrant"
GRANT_APPROVE_PERMISSION = "accounts.approve_rolegrant"
TOKEN_ISSUE_PERMISSION = "accounts.add_apitoken"
TOKEN_REVOKE_PERMISSION = "accounts.change_apitoken"
OTP_REMOVE_PERMISSION = "otp_totp.delete_totpdevice"


def _require(actor: User | None, permission: str, field: str, what: str) -> None:
    if actor is None or not actor.is_active or not actor.has_perm(permission):
        raise ValidationError({field: f"{getattr(actor, 'username', 'Nobody')} may not {what}."})


def _lock_user(user: User) -> User:
    return User.objects.select_for_update(of=("self",)).select_related("member").get(pk=user.pk)


def _password_validate(password: str, user: User) -> None:
    try:
        password_validation.validate_password(password, user)
    except ValidationError as error:
        raise ValidationError({"password": error.messages}) from None


def _member_code(member: Member | None) -> str | None:
    return member.code if member is not None else None


def _role_and_member_validate(*, role: str, member: Member | None) -> None:
    if role not in Role.values:
        raise ValidationError({"role": f"Unknown role {role!r}."})
    if (role in MEMBER_ROLES) != (member is not None):
        raise ValidationError({"member": "Member traders and viewers need a member; other roles have none."})


def security_event_record(
    *,
    action: str,
    actor: User | None,
    user: User | None = None,
    grant: RoleGrant | None = None,
    role: str = "",
    note: str = "",
    changes: dict | None = None,
) -> SecurityEvent:
    """Append one entry to the security log (``actor=None``: the operator at the command line)."""
    return SecurityEvent.objects.create(
        action=action, actor=actor, user=user, grant=grant, role=role, note=note, changes=changes or {}
    )


# --- Users ------------------------------------------------------------------------------------


@transaction.atomic
def user_member_create(
    *,
    created_by: User,
    username: str,
    role: str,
    member: Member | None,
    password: str | None,
    email: str = "",
) -> User:
    """Create a member trader or viewer (a security admin, directly; logged)."""
    _require(created_by, USER_ADD_PERMISSION, "created_by", "create users")
    if role not in MEMBER_ROLES:
        raise ValidationError(
            {"role": "Staff and system roles are granted by a proposal a second security admin approves."}
        )
    _role_and_member_validate(role=role, member=member)
    if password:
        _password_validate(password, User(username=username, email=email, role=role, member=member))
    user = user_create(username=username, password=password, role=role, member=member, email=email)
    security_event_record(
        action=SecurityAction.USER_CREATED,
        actor=created_by,
        user=user,
        role=role,
        changes={"member": _member_code(member), "password": "set" if password else "none"},
    )
    return user


@transaction.atomic
def user_privileged_create(
    *,
    created_by: User,
    username: str,
    role: str,
    reason: str,
    password: str | None = None,
    email: str = "",
) -> RoleGrant:
    """Create the user for a staff or system role, with no role yet, and propose the grant: the
    user can do nothing until a second security admin approves it."""
    _require(created_by, USER_ADD_PERMISSION, "created_by", "create users")
    if role not in PRIVILEGED_ROLES:
        raise ValidationError({"role": "Member users are created directly with their member."})
    if not reason.strip():
        raise ValidationError({"reason": "Say why this person needs the role."})
    if password:
        _password_validate(password, User(username=username, email=email, role=Role.NONE))
    user = user_create(username=username, password=password, role=Role.NONE, member=None, email=email)
    security_event_record(
        action=SecurityAction.USER_CREATED,
        actor=created_by,
        user=user,
        role=Role.NONE,
        note=reason,
        changes={"password": "set" if password else "none"},
    )
    return role_grant_propose(user=user, role=role, proposed_by=created_by, reason=reason)


def role_change_needs_approval(*, user: User, role: str) -> bool:
    """Whether changing ``user`` to ``role`` gives or takes away a staff or system role."""
    return role in PRIVILEGED_ROLES or user.role in PRIVILEGED_ROLES


@transaction.atomic
def user_role_set(
    *, user: User, changed_by: User, role: str, member: Member | None = None, reason: str = ""
) -> User:
    """Set a member role (or no role) directly, for a user who holds no staff or system role."""
    _require(changed_by, USER_CHANGE_PERMISSION, "changed_by", "change roles")
    user = _lock_user(user)
    if user.pk == changed_by.pk:
        raise ValidationError({"user": "Nobody changes their own role."})
    _role_and_member_validate(role=role, member=member)
    if role_change_needs_approval(user=user, role=role):
        raise ValidationError(
            {
                "role": "Giving or taking away a staff or system role needs a second security admin: "
                "propose it."
            }
        )
    if RoleGrant.objects.filter(user=user, status=GrantStatus.PROPOSED).exists():
        raise ValidationError(
            {"user": f"A role grant for {user.username} awaits a decision; decide it first."}
        )
    changes = {"role": [user.role, role], "member": [_member_code(user.member), _member_code(member)]}
    user.role, user.member = role, member
    user.full_clean()
    user.save()
    security_event_record(
        action=SecurityAction.ROLE_SET, actor=changed_by, user=user, role=role, note=reason, changes=changes
    )
    return user


def user_details_check(*, user: User, changed_by: User, is_active: bool) -> None:
    """The rules on activation (also run by the admin's form, to show them on the field)."""
    if user.pk == changed_by.pk and user.is_active and not is_active:
        raise ValidationError({"is_active": "You cannot deactivate yourself."})
    if is_active and not user.is_active and user.role in PRIVILEGED_ROLES:
        raise ValidationError(
            {
                "is_active": "A staff or system user is reactivated by a second security admin: "
                "propose their role again."
            }
        )


@transaction.atomic
def user_details_change(
    *, user: User, changed_by: User, email: str, first_name: str, last_name: str, is_active: bool
) -> User:
    """Change a user's name, e-mail and activity. Deactivating takes effect at once (the emergency
    lever, for anyone but oneself); reactivating staff or system users needs a role grant."""
    _require(changed_by, USER_CHANGE_PERMISSION, "changed_by", "change users")
    user = _lock_user(user)
    user_details_check(user=user, changed_by=changed_by, is_active=is_active)
    wanted = {"email": email, "first_name": first_name, "last_name": last_name, "is_active": is_active}
    changes = {
        name: [getattr(user, name), value] for name, value in wanted.items() if getattr(user, name) != value
    }
    if not changes:
        return user
    for name, value in wanted.items():
        setattr(user, name, value)
    user.full_clean()
    user.save()
    security_event_record(
        action=SecurityAction.USER_CHANGED, actor=changed_by, user=user, role=user.role, changes=changes
    )
    return user


def user_password_check(*, user: User, set_by: User) -> None:
    """Whose password another user may set: member users' and role-less users', never one's own
    (that is the self-service page, which asks for the current password), never staff's or system
    users' (setting it would let the setter act as them)."""
    if user.pk == set_by.pk:
        raise ValidationError(
            {"user": "Change your own password with “Change password”, which asks for the current one."}
        )
    if user.role in PRIVILEGED_ROLES:
        raise ValidationError(
            {
                "user": "Passwords of staff and system users are never set by someone else: staff change "
                "their own; a forgotten one is reset by the operator (manage.py changepassword)."
            }
        )


@transaction.atomic
def user_password_set(*, user: User, set_by: User, password: str | None) -> User:
    """Set (``password=None``: disable) the password of a member or role-less user; logged, never
    with the password."""
    _require(set_by, USER_CHANGE_PERMISSION, "set_by", "set passwords")
    user = _lock_user(user)
    user_password_check(user=user, set_by=set_by)
    if password is None:
        user.set_unusable_password()
    else:
        _password_validate(password, user)
        user.set_password(password)
    user.save(update_fields=["password"])
    security_event_record(
        action=SecurityAction.PASSWORD_SET,
        actor=set_by,
        user=user,
        role=user.role,
        note="" if password is not None else "Password sign-in disabled.",
    )
    return user


# --- Role grants (maker-checker) ------------------------------------------------------------------


@transaction.atomic
def role_grant_propose(
    *, user: User, role: str, proposed_by: User, reason: str, member: Member | None = None
) -> RoleGrant:
    """Propose that ``user`` gets ``role`` (with ``member`` for member roles). Nothing changes for
    the user until a second security admin approves."""
    _require(proposed_by, GRANT_PROPOSE_PERMISSION, "proposed_by", "propose role grants")
    if not reason.strip():
        raise ValidationError({"reason": "Say why this role is needed."})
    user = _lock_user(user)
    if user.pk == proposed_by.pk:
        raise ValidationError({"user": "Nobody can grant a role to themselves."})
    _role_and_member_validate(role=role, member=member)
    if user.role == role and user.member_id == (member.pk if member else None) and user.is_active:
        raise ValidationError({"role": f"{user.username} already holds this role."})
    if RoleGrant.objects.filter(user=user, status=GrantStatus.PROPOSED).exists():
        raise ValidationError({"user": f"A role grant for {user.username} already awaits a decision."})
    grant = RoleGrant.objects.create(
        user=user, role=role, member=member, from_role=user.role, reason=reason, proposed_by=proposed_by
    )
    security_event_record(
        action=SecurityAction.GRANT_PROPOSED,
        actor=proposed_by,
        user=user,
        grant=grant,
        role=role,
        note=reason,
        changes={"role": [user.role, role], "member": [_member_code(user.member), _member_code(member)]},
    )
    return grant


def _lock_grant(grant: RoleGrant) -> tuple[User, RoleGrant]:
    """Lock the grant's user, then the grant (users before grants, as everywhere here)."""
    user = _lock_user(User(pk=RoleGrant.objects.values_list("user_id", flat=True).get(pk=grant.pk)))
    return user, RoleGrant.objects.select_for_update().get(pk=grant.pk)


def _decide(*, grant: RoleGrant, status: str, decided_by: User, note: str) -> None:
    grant.status = status
    grant.decided_by = decided_by
    grant.decided_at = timezone.now()
    grant.decision_note = note
    grant.save(update_fields=["status", "decided_by", "decided_at", "decision_note"])


def role_grant_may_decide(*, grant: RoleGrant, user: User) -> bool:
    """Whether ``user`` may approve or reject ``grant`` (the buttons shown; the services check again)."""
    return (
        grant.status == GrantStatus.PROPOSED
        and user.has_perm(GRANT_APPROVE_PERMISSION)
        and user.pk not in (grant.proposed_by_id, grant.user_id)
    )


@transaction.atomic
def role_grant_approve(*, grant: RoleGrant, approved_by: User, note: str = "") -> RoleGrant:
    """Approve a proposal (a security admin who neither proposed it nor is its grantee): the user
    gets the role now, and is active again when it is a staff or system role."""
    _require(approved_by, GRANT_APPROVE_PERMISSION, "approved_by", "approve role grants")
    user, grant = _lock_grant(grant)
    if grant.status != GrantStatus.PROPOSED:
        raise ValidationError(
            {"status": f"Only a proposed grant can be approved; this one is {grant.status}."}
        )
    if grant.proposed_by_id == approved_by.pk:
        raise ValidationError({"approved_by": "The proposer of a role grant cannot approve it."})
    if grant.user_id == approved_by.pk:
        raise ValidationError({"approved_by": "Nobody can approve a role grant for themselves."})
    changes = {
        "role": [user.role, grant.role],
        "member": [_member_code(user.member), _member_code(grant.member)],
    }
    user.role, user.member = grant.role, grant.member
    if grant.role in PRIVILEGED_ROLES and not user.is_active:
        user.is_active = True
        changes["is_active"] = [False, True]
    user.full_clean()
    user.save()
    _decide(grant=grant, status=GrantStatus.APPROVED, decided_by=approved_by, note=note)
    security_event_record(
        action=SecurityAction.GRANT_APPROVED,
        actor=approved_by,
        user=user,
        grant=grant,
        role=grant.role,
        note=note,
        changes=changes,
    )
    return grant


@transaction.atomic
def role_grant_reject(*, grant: RoleGrant, rejected_by: User, note: str) -> RoleGrant:
    """Refuse a proposal, with the reason (a security admin who neither proposed it nor is its
    grantee). The user's role does not change."""
    _require(rejected_by, GRANT_APPROVE_PERMISSION, "rejected_by", "reject role grants")
    if not note.strip():
        raise ValidationError({"note": "Say why the proposal is rejected."})
    _, grant = _lock_grant(grant)
    if grant.status != GrantStatus.PROPOSED:
        raise ValidationError(
            {"status": f"Only a proposed grant can be rejected; this one is {grant.status}."}
        )
    if grant.proposed_by_id == rejected_by.pk:
        raise ValidationError({"rejected_by": "The proposer cannot reject their own proposal; withdraw it."})
    if grant.user_id == rejected_by.pk:
        raise ValidationError({"rejected_by": "Nobody decides a role grant for themselves."})
    _decide(grant=grant, status=GrantStatus.REJECTED, decided_by=rejected_by, note=note)
    security_event_record(
        action=SecurityAction.GRANT_REJECTED,
        actor=rejected_by,
        user=grant.user,
        grant=grant,
        role=grant.role,
        note=note,
    )
    return grant


@transaction.atomic
def role_grant_withdraw(*, grant: RoleGrant, withdrawn_by: User, note: str) -> RoleGrant:
    """The proposer abandons their proposal, with the reason."""
    _require(withdrawn_by, GRANT_PROPOSE_PERMISSION, "withdrawn_by", "withdraw role grants")
    if not note.strip():
        raise ValidationError({"note": "Say why the proposal is withdrawn."})
    _, grant = _lock_grant(grant)
    if grant.status != GrantStatus.PROPOSED:
        raise ValidationError(
            {"status": f"Only a proposed grant can be withdrawn; this one is {grant.status}."}
        )
    if grant.proposed_by_id != withdrawn_by.pk:
        raise ValidationError({"withdrawn_by": "Only the proposer withdraws a proposal; others reject it."})
    _decide(grant=grant, status=GrantStatus.WITHDRAWN, decided_by=withdrawn_by, note=note)
    security_event_record(
        action=SecurityAction.GRANT_WITHDRAWN,
        actor=withdrawn_by,
        user=grant.user,
        grant=grant,
        role=grant.role,
        note=note,
    )
    return grant


# --- API tokens -----------------------------------------------------------------------------------


def api_token_issue_check(*, user: User, issued_by: User) -> None:
    """For whom a token may be issued in the admin: member and system users that are active. A
    token acts as its user, so a token for venue staff would let its issuer act as them."""
    if user.role in STAFF_ROLES or user.pk == issued_by.pk:
        raise ValidationError(
            {"user": "Tokens for venue staff are not issued in the admin: a token acts as its user."}
        )
    if not user.is_active or user.role == Role.NONE:
        raise ValidationError({"user": f"{user.username} is inactive or has no role."})


@transaction.atomic
def api_token_issue_for(*, user: User, issued_by: User, name: str = "") -> tuple[ApiToken, str]:
    """Issue a token for another (member or system) user; logged with its public prefix. Returns
    the token record and the secret, which is shown once and never stored."""
    _require(issued_by, TOKEN_ISSUE_PERMISSION, "issued_by", "issue API tokens")
    user = _lock_user(user)
    api_token_issue_check(user=user, issued_by=issued_by)
    record, token = api_token_issue(user=user, name=name)
    security_event_record(
        action=SecurityAction.TOKEN_ISSUED,
        actor=issued_by,
        user=user,
        role=user.role,
        changes={"prefix": record.prefix, "name": name},
    )
    return record, token


@transaction.atomic
def api_token_revoke_by(*, token: ApiToken, revoked_by: User) -> ApiToken:
    """Revoke a token (ops and security admins, e.g. on a leak); logged."""
    _require(revoked_by, TOKEN_REVOKE_PERMISSION, "revoked_by", "revoke API tokens")
    token = ApiToken.objects.select_for_update().get(pk=token.pk)
    if token.revoked_at is not None:
        return token
    api_token_revoke(token=token)
    security_event_record(
        action=SecurityAction.TOKEN_REVOKED,
        actor=revoked_by,
        user=token.user,
        changes={"prefix": token.prefix, "name": token.name},
    )
    return token


# --- Second factor --------------------------------------------------------------------------------


@transaction.atomic
def otp_device_start(*, user: User) -> TOTPDevice:
    """A new unconfirmed TOTP device for a staff user enrolling, replacing any earlier unconfirmed
    one: each secret is shown once, and reloading the page makes a new one."""
    if not user.is_staff:
        raise ValidationError({"user": "Only venue staff enrol a second factor."})
    if TOTPDevice.objects.filter(user=user, confirmed=True).exists():
        raise ValidationError({"user": f"{user.username} has a second factor already."})
    TOTPDevice.objects.filter(user=user, confirmed=False).delete()
    return TOTPDevice.objects.create(user=user, name="Authenticator app", confirmed=False)


def otp_device_confirm(*, user: User, device_id: int | None, token: str) -> TOTPDevice:
    """Confirm the device being enrolled with a first code from it; logged.

    Not one transaction with the refusal: a wrong code must stay counted by the device's own
    throttling, so the error is raised after the transaction that recorded it committed.
    """
    error = None
    with transaction.atomic():
        device = (
            TOTPDevice.objects.select_for_update().filter(pk=device_id, user=user, confirmed=False).first()
            if device_id
            else None
        )
        if device is None:
            raise ValidationError({"otp_token": "This set-up has expired: start again with a new secret."})
        allowed, _ = device.verify_is_allowed()
        if not token.strip():
            error = "Enter the code your authenticator app shows."
        elif not allowed:
            error = "Too many wrong codes: wait a little and try again."
        elif device.verify_token(token.strip()):
            device.confirmed = True
            device.save(update_fields=["confirmed"])
            security_event_record(action=SecurityAction.OTP_ENROLLED, actor=user, user=user, role=user.role)
        else:
            error = "That code is wrong: check the clock of your phone and try the next code."
    if error:
        raise ValidationError({"otp_token": error})
    return device


@transaction.atomic
def otp_device_remove(*, device: TOTPDevice, removed_by: User) -> None:
    """Remove another staff user's second factor (a lost phone): they enrol a new one at their next
    sign-in, which still needs their password. Nobody removes their own: with only a stolen
    session, that would be the way to enrol an attacker's phone."""
    _require(removed_by, OTP_REMOVE_PERMISSION, "removed_by", "remove second factors")
    device = TOTPDevice.objects.select_for_update(of=("self",)).select_related("user").get(pk=device.pk)
    if device.user_id == removed_by.pk:
        raise ValidationError({"device": "Nobody removes their own second factor."})
    security_event_record(
        action=SecurityAction.OTP_REMOVED,
        actor=removed_by,
        user=device.user,
        role=device.user.role,
        note=device.name,
    )
    device.delete()

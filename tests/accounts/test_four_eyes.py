"""User and role administration under four eyes (issue #12): each attack is made as the attacker
would, through the admin pages with a signed-in client posting the forms, and shown refused with
nothing changed."""

import re

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, transaction
from django.urls import reverse
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.access import role_grant_approve, role_grant_propose, role_grant_reject, role_grant_withdraw
from accounts.models import ApiToken, GrantStatus, Role, RoleGrant, SecurityAction, SecurityEvent, User
from accounts.selectors import margin_accounts_visible
from clearing.ledger import AppendOnlyError
from tests import factories

PASSWORD = "pw-Str0ng!"
NEW_PASSWORD = "An0ther-long-passphrase"


@pytest.fixture
def security(db):
    return factories.user_make(username="sec1", role=Role.SECURITY_ADMIN)


@pytest.fixture
def security2(db):
    return factories.user_make(username="sec2", role=Role.SECURITY_ADMIN)


@pytest.fixture
def bob(member_a):
    return factories.user_make(username="bob", role=Role.TRADER, member=member_a)


@pytest.fixture
def venue_user(db):
    return factories.user_make(username="venue", role=Role.VENUE, password=None)


def user_url(user, page="change"):
    names = {
        "change": "admin:accounts_user_change",
        "password": "admin:auth_user_password_change",
        "role": "admin:accounts_user_role",
        "token": "admin:accounts_user_token",
    }
    return reverse(names[page], args=[user.pk])


def grant_url(grant, action):
    return reverse(f"admin:accounts_rolegrant_{action}", args=[grant.pk])


ADD_URL = "/admin/accounts/user/add/"


def add_form(username, role, **extra):
    return {"username": username, "email": "", "role": role, "password1": "", "password2": "", **extra}


def change_form_data(client, user, **fields):
    """The user's change form as the browser posts it: its hidden fields (the history inline's
    management form) plus ``fields``; an unticked checkbox is simply absent."""
    page = client.get(user_url(user)).content.decode()
    data = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page))
    return data | {"first_name": "", "last_name": "", "email": ""} | fields


def snapshot():
    """Everything a user-administration attack could change."""
    return (
        sorted(
            User.objects.values_list("username", "role", "member_id", "is_active", "is_staff", "password")
        ),
        ApiToken.objects.count(),
        RoleGrant.objects.count(),
    )


# --- Ops and risk approvers administer no user -------------------------------------------------


@pytest.mark.parametrize("attacker_role", [Role.OPS, Role.RISK_APPROVER])
def test_ops_and_risk_approvers_cannot_add_a_user_of_any_role(client, db, attacker_role):
    client.force_login(factories.user_make(username="attacker", role=attacker_role))
    before = snapshot()
    assert client.get(ADD_URL).status_code == 403
    for role in (Role.RISK_APPROVER, Role.OPS, Role.SECURITY_ADMIN, Role.TRADER):
        data = add_form(
            f"accomplice-{role}", role, password1=NEW_PASSWORD, password2=NEW_PASSWORD, reason="r"
        )
        assert client.post(ADD_URL, data).status_code == 403
    assert snapshot() == before


@pytest.mark.parametrize("attacker_role", [Role.OPS, Role.RISK_APPROVER])
def test_ops_and_risk_approvers_cannot_change_anyones_role(client, bob, approver, attacker_role):
    attacker = factories.user_make(username="attacker", role=attacker_role)
    client.force_login(attacker)
    before = snapshot()
    for target in (bob, approver, attacker):
        # The change form (as Django's stock user admin had it) and the role page.
        change = {"username": target.username, "role": Role.RISK_APPROVER, "member": "", "is_active": "on"}
        assert client.post(user_url(target), change).status_code == 403
        assert (
            client.post(user_url(target, "role"), {"role": Role.SECURITY_ADMIN, "reason": "r"}).status_code
            == 403
        )
    assert snapshot() == before


@pytest.mark.parametrize("attacker_role", [Role.OPS, Role.RISK_APPROVER])
def test_ops_and_risk_approvers_cannot_set_another_users_password(client, bob, approver, attacker_role):
    client.force_login(factories.user_make(username="attacker", role=attacker_role))
    before = snapshot()
    for target in (bob, approver):
        assert client.get(user_url(target, "password")).status_code == 403
        data = {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "usable_password": "true"}
        assert client.post(user_url(target, "password"), data).status_code == 403
        target.refresh_from_db()
        assert target.check_password(PASSWORD)
        assert not target.check_password(NEW_PASSWORD)
    assert snapshot() == before


@pytest.mark.parametrize("attacker_role", [Role.OPS, Role.RISK_APPROVER])
def test_ops_and_risk_approvers_cannot_issue_a_token_for_another_user(
    client, bob, approver, venue_user, attacker_role
):
    client.force_login(factories.user_make(username="attacker", role=attacker_role))
    for target in (bob, approver, venue_user):
        assert client.get(user_url(target, "token")).status_code == 403
        response = client.post(user_url(target, "token"), {"name": "mine now"})
        assert response.status_code == 403
        assert "clr_" not in response.content.decode()
    assert client.get("/admin/accounts/apitoken/add/").status_code == 403
    assert not ApiToken.objects.exists()


def test_the_user_pages_are_read_only_for_ops(client, ops, bob):
    client.force_login(ops)
    page = client.get(user_url(bob)).content.decode()
    assert 'name="_save"' not in page
    for link in (user_url(bob, "password"), user_url(bob, "role"), user_url(bob, "token")):
        assert link not in page


# --- A staff grant needs a second security admin --------------------------------------------------


def test_a_security_admins_staff_grant_takes_effect_only_when_a_second_security_admin_approves(
    client, security, security2
):
    client.force_login(security)
    data = add_form(
        "newrisk",
        Role.RISK_APPROVER,
        password1=NEW_PASSWORD,
        password2=NEW_PASSWORD,
        reason="Joins the risk team (ticket SEC-42)",
    )
    response = client.post(ADD_URL, data)
    assert response.status_code == 302, response.content.decode()[:2000]
    newrisk = User.objects.get(username="newrisk")
    grant = RoleGrant.objects.get(user=newrisk)
    # Proposed, not applied: the user holds no role and cannot reach the admin.
    assert (newrisk.role, newrisk.is_staff, grant.status) == (Role.NONE, False, GrantStatus.PROPOSED)
    assert not newrisk.has_perm("riskengine.approve_parameterset")

    # The proposer sees no approve button and cannot post one.
    assert (
        grant_url(grant, "approve")
        not in client.get(reverse("admin:accounts_rolegrant_change", args=[grant.pk])).content.decode()
    )
    assert client.get(grant_url(grant, "approve")).status_code == 403
    assert client.post(grant_url(grant, "approve"), {"note": "fine by me"}).status_code == 403
    newrisk.refresh_from_db()
    grant.refresh_from_db()
    assert (newrisk.role, grant.status) == (Role.NONE, GrantStatus.PROPOSED)

    client.force_login(security2)
    page = client.get(grant_url(grant, "approve")).content.decode()
    assert "Joins the risk team (ticket SEC-42)" in page
    assert client.post(grant_url(grant, "approve"), {"note": "Checked with the CRO"}).status_code == 302
    newrisk.refresh_from_db()
    grant.refresh_from_db()
    assert (newrisk.role, newrisk.is_staff, grant.status) == (Role.RISK_APPROVER, True, GrantStatus.APPROVED)
    assert (grant.proposed_by, grant.decided_by) == (security, security2)
    log = list(newrisk.security_events.order_by("pk").values_list("action", "actor__username", "role"))
    assert log == [
        (SecurityAction.USER_CREATED, "sec1", Role.NONE),
        (SecurityAction.GRANT_PROPOSED, "sec1", Role.RISK_APPROVER),
        (SecurityAction.GRANT_APPROVED, "sec2", Role.RISK_APPROVER),
    ]


def test_a_role_change_of_an_existing_user_to_staff_is_a_proposal_too(client, security, security2, bob):
    client.force_login(security)
    response = client.post(user_url(bob, "role"), {"role": Role.OPS, "member": "", "reason": "Moves to ops"})
    assert response.status_code == 302
    bob.refresh_from_db()
    assert (bob.role, bob.member_id is not None) == (Role.TRADER, True)  # unchanged until approved
    grant = RoleGrant.objects.get(user=bob, status=GrantStatus.PROPOSED)
    role_grant_approve(grant=grant, approved_by=security2)
    bob.refresh_from_db()
    assert (bob.role, bob.member, bob.is_staff) == (Role.OPS, None, True)


def test_nobody_approves_their_own_proposal(security, security2, bob):
    grant = role_grant_propose(user=bob, role=Role.VENUE, proposed_by=security, reason="r")
    with pytest.raises(ValidationError) as refused:
        role_grant_approve(grant=grant, approved_by=security)
    assert "approved_by" in refused.value.message_dict
    with pytest.raises(ValidationError) as refused:
        role_grant_reject(grant=grant, rejected_by=security, note="no")
    assert "rejected_by" in refused.value.message_dict
    grant.refresh_from_db()
    bob.refresh_from_db()
    assert (grant.status, bob.role) == (GrantStatus.PROPOSED, Role.TRADER)
    # Nor can a second person who is the grantee approve it.
    demotion = role_grant_propose(user=security2, role=Role.OPS, proposed_by=security, reason="r")
    with pytest.raises(ValidationError) as refused:
        role_grant_approve(grant=demotion, approved_by=security2)
    assert "approved_by" in refused.value.message_dict
    security2.refresh_from_db()
    assert security2.role == Role.SECURITY_ADMIN


def test_the_database_refuses_a_grant_approved_by_its_proposer_or_grantee(security, security2, bob):
    grant = role_grant_propose(user=bob, role=Role.VENUE, proposed_by=security, reason="r")
    for approver in (security, bob):
        with pytest.raises(IntegrityError), transaction.atomic():
            RoleGrant.objects.filter(pk=grant.pk).update(status=GrantStatus.APPROVED, decided_by=approver)
    with pytest.raises(IntegrityError), transaction.atomic():
        RoleGrant.objects.create(
            user=security, role=Role.OPS, from_role=Role.SECURITY_ADMIN, reason="r", proposed_by=security
        )


def test_nobody_grants_a_role_to_themselves_nor_changes_their_own(client, security):
    client.force_login(security)
    before = snapshot()
    assert user_url(security, "role") not in client.get(user_url(security)).content.decode()
    for role in (Role.OPS, Role.RISK_APPROVER, Role.NONE):
        response = client.post(user_url(security, "role"), {"role": role, "reason": "I need it"})
        assert response.status_code == 200
        assert "Nobody can grant a role to themselves." in response.content.decode()
    # The change form has no role field: a posted role is ignored.
    change = change_form_data(client, security, is_active="on", role=Role.OPS, member="")
    assert client.post(user_url(security), change).status_code == 302
    assert snapshot() == before


def test_member_users_are_created_directly_by_a_security_admin_and_logged(client, security, member_a):
    client.force_login(security)
    data = add_form("carol", Role.VIEWER, member=member_a.pk, password1=NEW_PASSWORD, password2=NEW_PASSWORD)
    assert client.post(ADD_URL, data).status_code == 302
    carol = User.objects.get(username="carol")
    assert (carol.role, carol.member, carol.check_password(NEW_PASSWORD)) == (Role.VIEWER, member_a, True)
    event = carol.security_events.get()
    assert (event.action, event.actor, event.changes["member"]) == (
        SecurityAction.USER_CREATED,
        security,
        "AAA",
    )
    assert NEW_PASSWORD not in str(event.changes)


def test_the_add_form_names_the_field_in_error_and_creates_nothing(client, security, member_a):
    client.force_login(security)
    before = snapshot()
    no_member = client.post(
        ADD_URL, add_form("dave", Role.TRADER, password1=NEW_PASSWORD, password2=NEW_PASSWORD)
    )
    assert "Member traders and viewers need a member" in no_member.content.decode()
    no_reason = client.post(ADD_URL, add_form("eve", Role.OPS))
    assert "Say why this person needs the role." in no_reason.content.decode()
    weak = client.post(
        ADD_URL, add_form("frank", Role.TRADER, member=member_a.pk, password1="abc", password2="abc")
    )
    assert "This password is too short" in weak.content.decode()
    assert snapshot() == before


def test_a_security_admin_sets_member_users_passwords_but_never_staff_nor_their_own(
    client, security, bob, approver, venue_user
):
    client.force_login(security)
    data = {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "usable_password": "true"}
    assert client.post(user_url(bob, "password"), data).status_code == 302
    bob.refresh_from_db()
    assert bob.check_password(NEW_PASSWORD)
    assert bob.security_events.get().action == SecurityAction.PASSWORD_SET
    for target in (approver, venue_user, security):
        assert client.post(user_url(target, "password"), data).status_code == 403
        target.refresh_from_db()
        assert not target.check_password(NEW_PASSWORD)


def test_tokens_are_issued_in_the_admin_by_security_admins_for_member_and_system_users_only(
    client, security, venue_user, approver
):
    client.force_login(security)
    response = client.post(user_url(venue_user, "token"), {"name": "matching engine"})
    assert response.status_code == 200
    assert response["Cache-Control"].startswith("max-age=0")
    record = ApiToken.objects.get()
    page = response.content.decode()
    token = page.split('<code id="api-token">')[1].split("</code>")[0]
    assert token.startswith(f"clr_{record.prefix}_")
    event = venue_user.security_events.get()
    assert (event.action, event.actor, event.changes) == (
        SecurityAction.TOKEN_ISSUED,
        security,
        {"prefix": record.prefix, "name": "matching engine"},
    )
    assert token not in str(event.changes)
    # A token acts as its user: none for venue staff, so no security admin can act as them.
    for staff in (approver, security):
        refused = client.post(user_url(staff, "token"), {"name": "x"})
        assert "Tokens for venue staff are not issued in the admin" in refused.content.decode()
    assert ApiToken.objects.count() == 1


def test_deactivation_is_immediate_but_staff_come_back_only_through_an_approved_grant(
    client, security, security2, ops
):
    client.force_login(security)
    response = client.post(user_url(ops), change_form_data(client, ops))  # is_active unticked
    assert response.status_code == 302
    ops.refresh_from_db()
    assert not ops.is_active
    response = client.post(user_url(ops), change_form_data(client, ops, is_active="on"))
    assert response.status_code == 200
    assert "reactivated by a second security admin" in response.content.decode()
    ops.refresh_from_db()
    assert not ops.is_active
    # Nobody deactivates themselves.
    response = client.post(user_url(security), change_form_data(client, security))
    assert "You cannot deactivate yourself." in response.content.decode()
    security.refresh_from_db()
    assert security.is_active

    client.post(user_url(ops, "role"), {"role": Role.OPS, "reason": "Back from leave"})
    role_grant_approve(grant=RoleGrant.objects.get(user=ops), approved_by=security2)
    ops.refresh_from_db()
    assert ops.is_active


def test_a_role_change_ends_the_users_open_sessions(client, security, bob):
    client.force_login(bob)
    assert client.get("/").status_code == 200
    from accounts.access import user_role_set

    user_role_set(user=bob, changed_by=security, role=Role.VIEWER, member=bob.member)
    assert client.get("/").status_code == 302  # signed out: the session belonged to a trader


def test_withdrawal_is_for_the_proposer_and_a_decided_grant_stays_decided(security, security2, bob):
    grant = role_grant_propose(user=bob, role=Role.PRICE_SOURCE, proposed_by=security, reason="feed")
    with pytest.raises(ValidationError):
        role_grant_withdraw(grant=grant, withdrawn_by=security2, note="not mine")
    role_grant_withdraw(grant=grant, withdrawn_by=security, note="wrong user")
    with pytest.raises(ValidationError) as refused:
        role_grant_approve(grant=grant, approved_by=security2)
    assert "status" in refused.value.message_dict
    bob.refresh_from_db()
    assert bob.role == Role.TRADER


def test_the_security_log_is_append_only(security, bob):
    role_grant_propose(user=bob, role=Role.VENUE, proposed_by=security, reason="r")
    event = SecurityEvent.objects.get()
    event.note = "nothing happened"
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()
    with pytest.raises(Exception, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE accounts_securityevent SET note = 'x'")


def test_security_admins_are_staff_but_read_no_member_account(client, security, member_a):
    factories.account_make(member=member_a, code="AAA-01")
    assert security.is_staff
    assert not margin_accounts_visible(user=security).exists()
    client.force_login(security)
    index = client.get("/admin/")
    assert index.status_code == 200
    assert reverse("ops_dashboard") not in index.content.decode()
    assert client.get(reverse("ops_dashboard")).status_code == 403  # margin calls, liquidations
    assert client.get("/api/v1/accounts/").status_code == 403
    assert client.get("/accounts/AAA-01/").status_code == 404
    assert client.get("/admin/accounts/marginaccount/").status_code == 403


def test_a_lost_second_factor_is_removed_by_another_security_admin_and_logged(client, security, ops):
    device = TOTPDevice.objects.create(user=ops, name="phone", confirmed=True)
    own = TOTPDevice.objects.create(user=security, name="phone", confirmed=True)
    client.force_login(ops)
    assert client.get(reverse("admin:otp_totp_totpdevice_changelist")).status_code == 403
    client.force_login(security)
    page = client.get(reverse("admin:otp_totp_totpdevice_change", args=[device.pk])).content.decode()
    assert device.key not in page
    own_delete = reverse("admin:otp_totp_totpdevice_delete", args=[own.pk])
    assert client.post(own_delete, {"post": "yes"}).status_code == 403
    response = client.post(reverse("admin:otp_totp_totpdevice_delete", args=[device.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert list(TOTPDevice.objects.values_list("user__username", flat=True)) == ["sec1"]
    event = ops.security_events.get()
    assert (event.action, event.actor) == (SecurityAction.OTP_REMOVED, security)


def test_the_operator_bootstraps_two_security_admins_and_no_more(db):
    call_command("security_admin_bootstrap", "first")
    call_command("security_admin_bootstrap", "second")
    with pytest.raises(CommandError, match="grant the role in the admin"):
        call_command("security_admin_bootstrap", "third")
    assert sorted(User.objects.filter(role=Role.SECURITY_ADMIN).values_list("username", flat=True)) == [
        "first",
        "second",
    ]
    first = User.objects.get(username="first")
    assert first.is_staff
    assert not first.has_usable_password()
    assert first.security_events.get().actor is None


def test_a_token_issued_at_the_command_line_is_logged_too(venue_user, capsys):
    call_command("issue_api_token", "venue", "--name", "engine")
    token = capsys.readouterr().out.strip()
    event = venue_user.security_events.get()
    assert (event.action, event.actor, event.changes["name"]) == (SecurityAction.TOKEN_ISSUED, None, "engine")
    assert event.changes["prefix"] == ApiToken.objects.get().prefix
    assert token not in str(event.changes)

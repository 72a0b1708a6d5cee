import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from accounts.models import Role, User
from accounts.selectors import margin_accounts_visible
from tests import factories


@pytest.fixture
def accounts(member_a, member_b):
    return factories.account_make(member=member_a, code="AAA-01"), factories.account_make(
        member=member_b, code="BBB-01"
    )


def test_a_member_user_needs_a_member_and_staff_have_none(member_a):
    with pytest.raises(ValidationError):
        factories.user_make(username="t", role=Role.TRADER)
    with pytest.raises(ValidationError):
        factories.user_make(username="o", role=Role.OPS, member=member_a)
    with pytest.raises(IntegrityError), transaction.atomic():
        User.objects.create(username="raw", role=Role.VIEWER)


def test_staff_flag_follows_the_role(member_a):
    assert factories.user_make(username="o", role=Role.OPS).is_staff
    assert factories.user_make(username="r", role=Role.RISK_APPROVER).is_staff
    assert factories.user_make(username="s", role=Role.SECURITY_ADMIN).is_staff
    assert not factories.user_make(username="t", role=Role.TRADER, member=member_a).is_staff
    assert not factories.user_make(username="f", role=Role.PRICE_SOURCE).is_staff


def test_a_member_sees_only_its_own_accounts(accounts, member_a):
    alice = factories.user_make(username="alice", member=member_a)
    assert list(margin_accounts_visible(user=alice)) == [accounts[0]]


def test_system_users_see_no_account(accounts):
    venue = factories.user_make(username="venue", role=Role.VENUE)
    assert not margin_accounts_visible(user=venue).exists()


def test_a_member_page_of_another_members_account_is_a_404(client, accounts, member_a):
    client.force_login(factories.user_make(username="alice", member=member_a))
    assert client.get("/accounts/AAA-01/").status_code == 200
    assert client.get("/accounts/BBB-01/").status_code == 404
    overview = client.get("/").content.decode()
    assert "AAA-01" in overview
    assert "BBB-01" not in overview


def test_pages_require_sign_in(client, accounts):
    response = client.get("/accounts/AAA-01/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_members_cannot_reach_the_admin(client, member_a):
    client.force_login(factories.user_make(username="alice", member=member_a))
    response = client.get("/admin/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_ops_can_edit_reference_data_but_ledgers_are_read_only(client, venue):
    client.force_login(factories.user_make(username="ops", role=Role.OPS))
    assert client.get("/admin/clearing/instrument/add/").status_code == 200
    assert client.get("/admin/clearing/trade/").status_code == 200
    assert client.get("/admin/clearing/trade/add/").status_code == 403
    assert client.get("/admin/accounts/collateralmovement/add/").status_code == 403


def test_a_risk_approver_can_view_but_not_edit_reference_data(client, venue):
    client.force_login(factories.user_make(username="risk", role=Role.RISK_APPROVER))
    assert client.get("/admin/clearing/instrument/").status_code == 200
    assert client.get("/admin/clearing/instrument/add/").status_code == 403


def test_the_health_endpoint_reports_ok(client, db):
    assert client.get("/healthz").json() == {"status": "ok"}

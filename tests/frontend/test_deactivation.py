"""The member pages refuse the users of a deactivated member: no sign-in, and a session opened
before the deactivation is signed out."""

from __future__ import annotations

import pytest

from accounts.models import Member
from tests import factories

PASSWORD = "pw-Str0ng!"  # tests.factories.user_make's


@pytest.fixture
def alice(member_a):
    factories.account_make(member=member_a, code="AAA-01")
    return factories.user_make(username="alice", member=member_a, password=PASSWORD)


def member_deactivate(member: Member) -> None:
    member.is_active = False
    member.save()


def test_a_user_of_a_deactivated_member_cannot_sign_in(client, alice, member_a):
    member_deactivate(member_a)
    page = client.post("/login/", {"username": "alice", "password": PASSWORD})
    assert page.status_code == 200  # the form again, with its error
    assert "correct username and password" in page.content.decode()
    assert "_auth_user_id" not in client.session
    assert client.get("/").status_code == 302


def test_an_open_session_is_signed_out_when_its_member_is_deactivated(client, alice, member_a):
    assert client.post("/login/", {"username": "alice", "password": PASSWORD}).status_code == 302
    assert client.get("/accounts/AAA-01/").status_code == 200
    member_deactivate(member_a)
    for path in ("/", "/accounts/AAA-01/", "/accounts/AAA-01/what-if/"):
        response = client.get(path)
        assert response.status_code == 302
        assert response["Location"].startswith("/login/")

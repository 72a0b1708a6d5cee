"""A deactivated member shuts out all of its users on the API, whether they call with a token or
with the web app's session; other members' users are unaffected."""

from __future__ import annotations

from django.test import Client

from accounts.models import Member, User

V1 = "/api/v1"


def member_deactivate(code: str) -> None:
    member = Member.objects.get(code=code)
    member.is_active = False
    member.save()


def test_a_token_of_a_deactivated_members_user_is_refused(world):
    assert world["trader_a"].get(f"{V1}/accounts/").status_code == 200
    member_deactivate("AAA")
    for name in ("trader_a", "viewer_a"):
        refused = world[name].get(f"{V1}/accounts/")
        assert refused.status_code == 401
        assert "deactivated" in refused.json()["detail"]
    refused = world["trader_a"].post(f"{V1}/accounts/{world.account_a.pk}/what-if/", {"trades": []})
    assert refused.status_code == 401
    assert world["trader_b"].get(f"{V1}/accounts/").status_code == 200


def test_a_session_of_a_deactivated_members_user_no_longer_authenticates(world):
    browser = Client()
    browser.force_login(User.objects.get(username="viewer-a"))
    assert browser.get(f"{V1}/accounts/").status_code == 200
    member_deactivate("AAA")
    assert browser.get(f"{V1}/accounts/").status_code == 401


def test_a_deactivated_users_token_is_refused(world):
    User.objects.filter(username="trader-a").update(is_active=False)
    assert world["trader_a"].get(f"{V1}/accounts/").status_code == 401
    assert world["viewer_a"].get(f"{V1}/accounts/").status_code == 200

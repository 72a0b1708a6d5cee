import hashlib

import pytest
from django.core.management import call_command
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.test import APIRequestFactory

from accounts.models import ApiToken, Role
from accounts.services import api_token_revoke
from clearing.api.authentication import BearerTokenAuthentication
from tests import factories


def authenticate(token: str):
    request = APIRequestFactory().get("/", HTTP_AUTHORIZATION=f"Bearer {token}")
    return BearerTokenAuthentication().authenticate(request)


def test_issue_api_token_prints_only_the_token_and_stores_only_its_digest(db, capsys):
    factories.user_make(username="venue", role=Role.VENUE)
    call_command("issue_api_token", "venue")
    token = capsys.readouterr().out.strip()

    assert len(token.split()) == 1
    stored = ApiToken.objects.get()
    assert stored.digest == hashlib.sha256(token.encode()).hexdigest()
    assert token not in {stored.prefix, stored.digest, stored.name}


def test_a_token_acts_as_its_user_until_revoked(db, capsys):
    user = factories.user_make(username="feed", role=Role.PRICE_SOURCE)
    call_command("issue_api_token", "feed")
    token = capsys.readouterr().out.strip()

    assert authenticate(token)[0] == user
    api_token_revoke(token=ApiToken.objects.get())
    with pytest.raises(AuthenticationFailed):
        authenticate(token)


def test_an_unknown_token_is_refused(db):
    with pytest.raises(AuthenticationFailed):
        authenticate("clr_deadbeef_not-a-real-token")

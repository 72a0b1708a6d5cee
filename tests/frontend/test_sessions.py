"""An open /ws/margin/ socket lives only as long as its session: sign-out, a password change, a
deactivated user or a deactivated member close it within seconds, and nothing more is pushed."""

from __future__ import annotations

import time

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.test import Client

from accounts.models import Member, User
from clearing.events import events_publish
from frontend import hub
from tests.factories import communicator, session_cookie

pytestmark = [pytest.mark.asyncio, pytest.mark.usefixtures("stop_relay")]

# The tests check often so that they run quickly; one test keeps the production period.
FAST_CHECK_SECONDS = 0.2


@pytest.fixture
def fast_checks(monkeypatch):
    monkeypatch.setattr(hub, "SESSION_CHECK_SECONDS", FAST_CHECK_SECONDS)


def signed_in(user) -> tuple[Client, str]:
    client = Client()
    client.force_login(user)
    return client, client.cookies[settings.SESSION_COOKIE_NAME].value


async def connected(cookie: str):
    socket = communicator(cookie=cookie)
    assert (await socket.connect())[0]
    assert (await socket.receive_json_from(timeout=2))["type"] == "hello"
    return socket


async def closed_within(socket, seconds: float) -> float:
    """Waits for the server's close; returns how long it took. Fails if an event arrives first."""
    started = time.monotonic()
    message = await socket.receive_output(timeout=seconds)
    assert message == {"type": "websocket.close", "code": 4401}, message
    return time.monotonic() - started


async def test_a_socket_closes_within_seconds_of_signing_out_and_other_sockets_stay(two_members):
    """With the production check period (``SESSION_CHECK_SECONDS``)."""
    (a1, _), (b1,) = two_members["a_accounts"], two_members["b_accounts"]
    alice_client, alice_cookie = await sync_to_async(signed_in)(two_members["alice"])
    alice = await connected(alice_cookie)
    bob = await connected(await sync_to_async(session_cookie)(two_members["bob"]))

    await sync_to_async(alice_client.post)("/logout/")
    took = await closed_within(alice, hub.SESSION_CHECK_SECONDS + 1.5)
    assert took <= hub.SESSION_CHECK_SECONDS + 1.5

    await sync_to_async(events_publish)(
        events=[(a1.pk, "margin_call.opened", {"call": 1}), (b1.pk, "margin_call.opened", {"call": 2})]
    )
    # Bob's session is untouched: his socket still streams; Alice's gets nothing more.
    assert (await bob.receive_json_from(timeout=2))["call"] == 2
    assert await alice.receive_nothing(timeout=0.3)
    await bob.disconnect()


@pytest.mark.usefixtures("fast_checks")
async def test_a_password_change_closes_the_sockets_of_the_users_other_sessions(two_members):
    alice = await connected(await sync_to_async(session_cookie)(two_members["alice"]))
    bob = await connected(await sync_to_async(session_cookie)(two_members["bob"]))

    def password_change():
        user = User.objects.get(username="alice")
        user.set_password("a-new-Str0ng-password")
        user.save()

    await sync_to_async(password_change)()
    await closed_within(alice, 3)
    assert await bob.receive_nothing(timeout=FAST_CHECK_SECONDS * 3)
    await bob.disconnect()


@pytest.mark.usefixtures("fast_checks")
async def test_deactivating_a_user_closes_its_sockets(two_members):
    (a1, _) = two_members["a_accounts"]
    alice = await connected(await sync_to_async(session_cookie)(two_members["alice"]))
    await sync_to_async(User.objects.filter(username="alice").update)(is_active=False)
    await closed_within(alice, 3)
    await sync_to_async(events_publish)(events=[(a1.pk, "margin_call.opened", {"call": 1})])
    assert await alice.receive_nothing(timeout=0.3)


@pytest.mark.usefixtures("fast_checks")
async def test_deactivating_a_member_closes_its_users_sockets_and_refuses_new_ones(two_members):
    alice_cookie = await sync_to_async(session_cookie)(two_members["alice"])
    alice = await connected(alice_cookie)
    bob = await connected(await sync_to_async(session_cookie)(two_members["bob"]))

    def member_deactivate():
        member = Member.objects.get(code="AAA")
        member.is_active = False
        member.save()

    await sync_to_async(member_deactivate)()
    await closed_within(alice, 3)
    # The same session cookie cannot open a new socket; another member's users are unaffected.
    again, code = await communicator(cookie=alice_cookie).connect()
    assert (again, code) == (False, 4401)
    assert await bob.receive_nothing(timeout=FAST_CHECK_SECONDS * 3)
    await bob.disconnect()


@pytest.mark.usefixtures("fast_checks")
async def test_an_expired_session_closes_its_socket(two_members):
    from django.contrib.sessions.models import Session
    from django.utils import timezone

    cookie = await sync_to_async(session_cookie)(two_members["alice"])
    alice = await connected(cookie)
    await sync_to_async(Session.objects.filter(session_key=cookie).update)(expire_date=timezone.now())
    await closed_within(alice, 3)


async def test_one_check_covers_all_sockets_in_two_queries(two_members):
    """The hub's check costs the same two queries for one socket or many (here three sessions of
    two users, two of them already ended)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from accounts.selectors import SessionGrant, session_grants_ended, user_password_digest

    alice_client, alice_cookie = await sync_to_async(signed_in)(two_members["alice"])
    _, alice_other = await sync_to_async(signed_in)(two_members["alice"])
    bob_cookie = await sync_to_async(session_cookie)(two_members["bob"])

    def check():
        alice, bob = User.objects.get(username="alice"), User.objects.get(username="bob")
        grants = [
            SessionGrant(alice_cookie, alice.pk, user_password_digest(user=alice)),
            SessionGrant(alice_other, alice.pk, "the digest of a password from before a change"),
            SessionGrant(bob_cookie, bob.pk, user_password_digest(user=bob)),
        ]
        alice_client.logout()
        with CaptureQueriesContext(connection) as queries:
            ended = session_grants_ended(grants=grants)
        return {grant.session_key for grant in ended}, len(queries)

    ended, queries = await sync_to_async(check)()
    assert ended == {alice_cookie, alice_other}
    assert queries == 2

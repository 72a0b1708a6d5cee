"""The /ws/margin/ socket: who may connect, and that a member hears only its own accounts."""

import asyncio
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.db import transaction

from accounts.services import collateral_deposit
from clearing.events import events_publish
from clearing.marketdata.signals import price_status_changed
from tests import factories
from tests.factories import communicator, session_cookie

pytestmark = [pytest.mark.asyncio, pytest.mark.usefixtures("stop_relay")]


async def test_an_anonymous_visitor_is_refused(two_members):
    socket = communicator()
    connected, code = await socket.connect()
    assert not connected
    assert code == 4401


async def test_a_foreign_origin_is_refused_even_with_a_valid_session(two_members):
    cookie = await sync_to_async(session_cookie)(two_members["alice"])
    socket = communicator(cookie=cookie, origin="https://evil.example.com")
    connected, _ = await socket.connect()
    assert not connected


@pytest.mark.parametrize(
    "origin",
    [
        "https://testserver",  # our host name, another scheme
        "http://testserver:8080",  # our host name, another port (another service on the host)
        "http://testserver:80.evil.example",
        "http://sub.testserver",
        "null",  # a sandboxed frame or a file
        "",
    ],
)
async def test_an_origin_differing_in_scheme_port_or_host_is_refused(two_members, origin):
    """The page is http://testserver (ws://, Host testserver); only that exact origin may connect."""
    cookie = await sync_to_async(session_cookie)(two_members["alice"])
    connected, _ = await communicator(cookie=cookie, origin=origin).connect()
    assert not connected


async def test_the_pages_own_origin_is_accepted_and_over_tls_only_its_https_origin(two_members):
    cookie = await sync_to_async(session_cookie)(two_members["alice"])
    plain = communicator(cookie=cookie, origin="http://testserver")
    assert (await plain.connect())[0]
    await plain.disconnect()
    for origin, accepted in (("https://testserver", True), ("http://testserver", False)):
        secure = communicator(cookie=cookie, origin=origin)
        secure.scope["scheme"] = "wss"
        assert (await secure.connect())[0] is accepted, origin
        await secure.disconnect()


async def test_a_host_outside_allowed_hosts_is_refused_even_from_its_own_origin(two_members):
    from channels.testing import WebsocketCommunicator

    from clearing.config.asgi import application

    socket = WebsocketCommunicator(
        application, "/ws/margin/", headers=[(b"origin", b"http://evil.example"), (b"host", b"evil.example")]
    )
    assert not (await socket.connect())[0]


@pytest.mark.parametrize("username", ["ops", "feed"])
async def test_staff_and_system_users_are_refused(two_members, username):
    cookie = await sync_to_async(session_cookie)(two_members[username])
    connected, code = await communicator(cookie=cookie).connect()
    assert not connected
    assert code == 4403


async def test_a_member_is_greeted_with_exactly_its_own_accounts(two_members):
    cookie = await sync_to_async(session_cookie)(two_members["alice"])
    socket = communicator(cookie=cookie)
    connected, _ = await socket.connect()
    assert connected
    hello = await socket.receive_json_from(timeout=2)
    assert hello["type"] == "hello"
    assert [account["code"] for account in hello["accounts"]] == ["AAA-01", "AAA-02"]
    await socket.disconnect()


async def test_a_member_receives_its_own_events_and_never_another_members(two_members):
    a1, a2 = two_members["a_accounts"]
    (b1,) = two_members["b_accounts"]
    alice = communicator(cookie=await sync_to_async(session_cookie)(two_members["alice"]))
    bob = communicator(cookie=await sync_to_async(session_cookie)(two_members["bob"]))
    assert (await alice.connect())[0]
    assert (await bob.connect())[0]
    await alice.receive_json_from(timeout=2)
    await bob.receive_json_from(timeout=2)

    await sync_to_async(events_publish)(
        events=[
            (b1.pk, "margin_call.opened", {"call": 7, "shortfall": "1200.5"}),
            (a1.pk, "margin.updated", {"equity": "100"}),
            (a2.pk, "margin_call.opened", {"call": 8}),
        ]
    )
    received = [await alice.receive_json_from(timeout=2) for _ in range(2)]
    # Order is kept per account; across accounts a margin call may overtake a routine update.
    assert sorted(received, key=lambda event: event["account"]) == [
        {"type": "margin.updated", "account": a1.pk, "account_code": "AAA-01", "equity": "100"},
        {"type": "margin_call.opened", "account": a2.pk, "account_code": "AAA-02", "call": 8},
    ]
    assert await bob.receive_json_from(timeout=2) == {
        "type": "margin_call.opened",
        "account": b1.pk,
        "account_code": "BBB-01",
        "call": 7,
        "shortfall": "1200.5",
    }
    assert await alice.receive_nothing(timeout=0.3)
    assert await bob.receive_nothing(timeout=0.3)
    await alice.disconnect()
    await bob.disconnect()


async def test_a_ping_is_answered_and_other_messages_are_ignored(two_members):
    socket = communicator(cookie=await sync_to_async(session_cookie)(two_members["alice"]))
    await socket.connect()
    await socket.receive_json_from(timeout=2)
    await socket.send_json_to({"type": "subscribe", "account": two_members["b_accounts"][0].pk})
    await socket.send_json_to({"type": "ping"})
    assert await socket.receive_json_from(timeout=2) == {"type": "pong"}
    await socket.disconnect()


async def test_an_event_rolled_back_with_its_change_is_never_pushed(two_members):
    (a1, _) = two_members["a_accounts"]
    socket = communicator(cookie=await sync_to_async(session_cookie)(two_members["alice"]))
    await socket.connect()
    await socket.receive_json_from(timeout=2)

    def publish_then_fail():
        try:
            with transaction.atomic():
                events_publish(events=[(a1.pk, "margin_call.opened", {"call": 1})])
                raise RuntimeError("the sweep failed after publishing")
        except RuntimeError:
            pass

    await sync_to_async(publish_then_fail)()
    assert await socket.receive_nothing(timeout=0.4)
    await asyncio.sleep(0)
    await socket.disconnect()


async def test_a_member_hears_of_a_price_status_change_once_and_only_for_symbols_its_accounts_depend_on(
    two_members,
):
    a1, a2 = two_members["a_accounts"]
    (b1,) = two_members["b_accounts"]

    def holdings() -> None:
        venue = factories.venue_make()
        collateral_deposit(account=a1, asset=venue.usdc, amount=Decimal(1000))
        collateral_deposit(account=a2, asset=venue.usdc, amount=Decimal(2000))
        collateral_deposit(account=b1, asset=venue.btc_asset, amount=Decimal(1))

    await sync_to_async(holdings)()
    alice = communicator(cookie=await sync_to_async(session_cookie)(two_members["alice"]))
    bob = communicator(cookie=await sync_to_async(session_cookie)(two_members["bob"]))
    assert (await alice.connect())[0]
    assert (await bob.connect())[0]
    await alice.receive_json_from(timeout=2)
    await bob.receive_json_from(timeout=2)

    def oracle_changes() -> None:
        with transaction.atomic():
            price_status_changed.send(
                sender=__name__,
                changes=[("USDC", "ok", "degraded"), ("BTC", "ok", "stale"), ("ETH", "ok", "ok")],
            )

    await sync_to_async(oracle_changes)()
    assert await alice.receive_json_from(timeout=2) == {
        "type": "price.status",
        "account": a1.pk,
        "account_code": "AAA-01",
        "symbol": "USDC",
        "previous": "ok",
        "status": "degraded",
        "accounts": [a1.pk, a2.pk],
    }
    bob_event = await bob.receive_json_from(timeout=2)
    assert (bob_event["symbol"], bob_event["accounts"]) == ("BTC", [b1.pk])
    assert await alice.receive_nothing(timeout=0.3), "no second USDC event, and nothing about BTC"
    assert await bob.receive_nothing(timeout=0.3)
    await alice.disconnect()
    await bob.disconnect()

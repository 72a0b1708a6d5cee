"""The agents over the API (issue #18 item 3): band policy, hedge policies, hedge requests,
automatic transfers, webhook endpoints and their delivery logs; who may change what is in the
authorization matrix (``test_authorization``)."""

from decimal import Decimal

import pytest
from django.test import override_settings

from accounts.models import AccountKind, MarginAccount
from accounts.services import collateral_deposit
from accounts.trading import trade_book
from agents.band import band_policy_apply
from agents.crypto import secret_decrypt
from agents.hedge import hedge_policy_evaluate
from agents.models import HedgeRequest, PolicyChange, WebhookAttempt, WebhookEndpoint
from agents.webhooks import hedge_request_deliver
from tests.factories import WebhookReceiver

V1 = "/api/v1"


@pytest.fixture
def funding(world):
    account = MarginAccount.objects.create(
        member=world.account_a.member, code="AAA-FUND", kind=AccountKind.FUNDING
    )
    collateral_deposit(account=account, asset=world.venue.usdc, amount=Decimal(500_000))
    return account


BAND = {"funding_account": "AAA-FUND", "search_level": "1.3", "target_level": "1.6", "release_level": "3",
        "assets": ["USDC"]}  # fmt: skip


def test_a_trader_sets_reads_and_switches_off_a_band_policy(world, funding):
    path = f"{V1}/accounts/{world.account_a.pk}/band-policy/"
    assert world["trader_a"].get(path).status_code == 404

    put = world["trader_a"].put(path, BAND)
    assert put.status_code == 200, put.json()
    assert put.json() | {"created_at": None, "updated_at": None} == {
        "account": "AAA-01", "funding_account": "AAA-FUND", "search_level": "1.3000",
        "target_level": "1.6000", "release_level": "3.0000", "assets": ["USDC"], "min_interval_seconds": 60,
        "state": "on",
        "suspended_at": None, "suspension_reason": "", "created_at": None, "updated_at": None,
    }  # fmt: skip
    assert world["viewer_a"].get(path).json()["state"] == "on"
    assert world["viewer_a"].put(path, BAND).status_code == 403
    assert world["trader_a"].delete(path).json()["state"] == "off"
    assert list(PolicyChange.objects.order_by("pk").values_list("action", flat=True)) == [
        "created",
        "switched_off",
    ]


def test_a_band_policy_that_cannot_work_is_refused_naming_the_field(world, funding):
    path = f"{V1}/accounts/{world.account_a.pk}/band-policy/"
    cases = {
        "search_level": {"search_level": "0.9"},
        "release_level": {"release_level": "1.5"},
        "assets[0]": {"assets": ["NOPE"]},
        "funding_account": {"funding_account": "AAA-02"},
        "min_interval_seconds": {"min_interval_seconds": -1},
    }
    for field, change in cases.items():
        answer = world["trader_a"].put(path, BAND | change)
        assert answer.status_code == 400, (field, answer.json())
        assert field in answer.json(), (field, answer.json())
    # Member B's funding account is not A's.
    MarginAccount.objects.create(member=world.account_b.member, code="BBB-FUND", kind=AccountKind.FUNDING)
    answer = world["trader_a"].put(path, BAND | {"funding_account": "BBB-FUND"})
    assert list(answer.json()) == ["funding_account"]


def test_hedge_policies_are_created_once_per_underlying_and_replayed_by_idempotency_key(world):
    path = f"{V1}/accounts/{world.account_a.pk}/hedge-policies/"
    body = {"underlying": "BTC", "instrument": "BTC-PERP", "threshold_usd": "5000", "max_quantity": "2"}

    first = world["trader_a"].post(path, body, key="hedge-1")
    replay = world["trader_a"].post(path, body, key="hedge-1")
    duplicate = world["trader_a"].post(path, body)

    assert first.status_code == replay.status_code == 201
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert first.json()["id"] == replay.json()["id"]
    assert (first.json()["mode"], first.json()["state"]) == ("propose", "on")
    assert duplicate.status_code == 400
    assert list(duplicate.json()) == ["underlying"]
    request_mode = world["trader_a"].post(path, body | {"underlying": "ETH", "instrument": "ETH-PERP",
                                                        "mode": "request"})  # fmt: skip
    assert list(request_mode.json()) == ["endpoint"]
    option = world["trader_a"].post(path, body | {"underlying": "ETH", "instrument": "BTC-70000-C"})
    assert list(option.json()) == ["instrument"]
    assert [p["underlying"] for p in world["viewer_a"].get(path).json()["results"]] == ["BTC"]


def test_an_endpoints_secret_is_answered_once_and_never_listed(world):
    created = world["trader_a"].post(f"{V1}/webhook-endpoints/", {"url": "https://hedges.example.org/a"})
    assert created.status_code == 201, created.json()
    secret = created.json()["secret"]
    endpoint = WebhookEndpoint.objects.get(pk=created.json()["id"])
    assert secret_decrypt(endpoint.secret_encrypted) == secret
    assert secret not in endpoint.secret_encrypted

    listed = world["viewer_a"].get(f"{V1}/webhook-endpoints/").json()["results"]
    detail = world["ops"].get(f"{V1}/webhook-endpoints/{endpoint.pk}/").json()
    assert [row["id"] for row in listed] == [endpoint.pk]
    for shown in (listed[0], detail):
        assert "secret" not in shown
        assert shown["secret_hint"] == secret[:10]
    assert world["trader_b"].get(f"{V1}/webhook-endpoints/").json()["results"] == []


@override_settings(WEBHOOK_REQUIRE_HTTPS=True, WEBHOOK_ALLOW_PRIVATE_ADDRESSES=False)
def test_in_production_an_endpoint_must_be_https_on_a_public_address(world):
    for url in (
        "http://hedges.example.org/a",
        "http://127.0.0.1:8080/hook",
        "https://10.0.0.7/hook",
        "https://[::1]/hook",
        "https://user:pw@hedges.example.org/a",
        "ftp://hedges.example.org/a",
    ):
        answer = world["trader_a"].post(f"{V1}/webhook-endpoints/", {"url": url})
        assert answer.status_code == 400, url
        assert list(answer.json()) == ["url"]
    ok = world["trader_a"].post(f"{V1}/webhook-endpoints/", {"url": "https://93.184.215.14/hook"})
    assert ok.status_code == 201


def test_members_see_their_hedges_transfers_and_every_delivery_attempt(world, funding):
    receiver = WebhookReceiver(answers=[500])
    try:
        created = world["trader_a"].post(f"{V1}/webhook-endpoints/", {"url": receiver.url}).json()
        receiver.secret = created["secret"]
        path = f"{V1}/accounts/{world.account_a2.pk}/"
        world["trader_a"].put(f"{path}band-policy/", BAND | {"release_level": "2.5"})
        trade_book(account=world.account_a2, instrument="BTC-PERP", quantity=2, price=60_000)
        policy = world["trader_a"].post(
            f"{path}hedge-policies/",
            {"underlying": "BTC", "instrument": "BTC-PERP", "threshold_usd": "1000", "max_quantity": "1",
             "mode": "request", "endpoint": created["id"]},
        ).json()  # fmt: skip
        transfer = band_policy_apply(account_id=world.account_a2.pk).transfer  # 100,000 USDC on IM 12,000
        request = hedge_policy_evaluate(policy_id=policy["id"])
        hedge_request_deliver(hedge_request_id=request.pk)
    finally:
        receiver.close()

    transfers = world["viewer_a"].get(f"{path}auto-transfers/").json()["results"]
    assert [(t["id"], t["direction"]) for t in transfers] == [(transfer.pk, "release")]
    hedges = world["viewer_a"].get(f"{path}hedge-requests/").json()["results"]
    assert [(h["id"], h["status"], h["quantity"]) for h in hedges] == [
        (request.pk, "requested", "-1.0000000000")
    ]
    assert hedges[0]["after"]["initial_margin"] < hedges[0]["before"]["initial_margin"]
    deliveries = (
        world["viewer_a"].get(f"{V1}/webhook-endpoints/{created['id']}/deliveries/").json()["results"]
    )
    attempt = WebhookAttempt.objects.get()
    assert [(d["id"], d["status_code"], d["outcome"], d["idempotency_id"]) for d in deliveries] == [
        (attempt.pk, 500, "failed", str(HedgeRequest.objects.get().idempotency_id))
    ]


def test_the_venue_cannot_book_a_fill_into_a_funding_account(world, funding):
    answer = world["venue"].post(
        f"{V1}/trades/", {"account": "AAA-FUND", "instrument": "BTC-PERP", "quantity": "1", "price": "60000"}
    )
    assert answer.status_code == 400
    assert "funding account" in answer.json()["account"][0]

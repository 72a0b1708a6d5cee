"""Hedge policies (issue #18 items 2, 4, 5): a proposal with the exact trade and its margin effect
from the engine; in request mode a signed webhook to a real HTTP receiver, retried after failures,
executed once per idempotency id and linked to the fill the venue books; never on untrusted prices,
during a liquidation, more often than the interval, nor when the hedge would raise the IM."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from accounts.models import Role
from accounts.services import user_create
from agents.crypto import secret_decrypt
from agents.hedge import hedge_policy_evaluate
from agents.models import HedgeFill, HedgeRequest, WebhookAttempt
from agents.services import hedge_policy_create, policy_suspend, webhook_endpoint_create
from agents.webhooks import hedge_request_deliver, hedge_requests_due, retry_delay
from clearing.models import OutboxEvent
from riskengine.sweeps.models import Liquidation, MarginCall
from riskengine.sweeps.services import sweep_accounts_run
from tests.factories import WebhookReceiver, client_for

# AAA-01: long 10 BTC-PERP at 60,000 in cross mode: Δ$ 600,000, IM 60,000, MM 30,000.


@pytest.fixture
def receiver():
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def endpoint(agents_world, receiver):
    endpoint, secret = webhook_endpoint_create(
        member=agents_world.margin.member, url=receiver.url, user=agents_world.trader
    )
    receiver.secret = secret
    return endpoint


def policy(world, *, instrument="BTC-PERP", max_quantity="4", mode="propose", endpoint=None, interval=300):
    return hedge_policy_create(
        account=world.margin, underlying="BTC", instrument=instrument, target_delta_usd=0,
        threshold_usd=100_000, max_quantity=max_quantity, min_interval_seconds=interval, mode=mode,
        endpoint=endpoint, user=world.trader,
    )  # fmt: skip


def test_a_proposal_names_the_exact_trade_and_its_margin_effect_from_the_engine(agents_world):
    hedge = policy(agents_world)

    request = hedge_policy_evaluate(policy_id=hedge.pk)

    assert (request.status, request.mode, request.instrument.symbol) == ("proposed", "propose", "BTC-PERP")
    assert request.quantity == -4  # 10 BTC of delta, at most 4 a hedge
    assert request.delta_usd_before == pytest.approx(600_000)
    assert request.delta_usd_after == pytest.approx(360_000)
    assert (request.initial_margin_before, request.initial_margin_after) == pytest.approx((60_000, 36_000))
    assert request.endpoint is None
    assert request.next_attempt_at is None
    event = OutboxEvent.objects.get(type="hedge.proposed")
    assert event.payload["hedge_request"] == request.pk
    assert Decimal(event.payload["quantity"]) == -4
    assert event.payload["initial_margin_after"] == pytest.approx(36_000)


def test_a_hedge_within_its_size_brings_the_delta_to_its_target(agents_world):
    request = hedge_policy_evaluate(policy_id=policy(agents_world, max_quantity="50").pk)
    assert request.quantity == -10
    assert request.delta_usd_after == pytest.approx(0, abs=1e-6)


def test_a_delta_within_the_threshold_proposes_nothing(agents_world):
    hedge = policy(agents_world)
    agents_world.move(BTC=60_000.0)
    hedge.threshold_usd = Decimal(600_001)
    hedge.save()
    assert hedge_policy_evaluate(policy_id=hedge.pk) is None
    assert not HedgeRequest.objects.exists()


def test_a_hedge_that_would_raise_the_initial_margin_is_not_sent(agents_world, endpoint, receiver):
    # In cross mode a short future beside the long perpetual is margined on its own: more IM.
    hedge = policy(agents_world, instrument="BTC-FUT", mode="request", endpoint=endpoint)

    request = hedge_policy_evaluate(policy_id=hedge.pk)

    assert request.status == "withheld"
    assert request.initial_margin_after > request.initial_margin_before
    assert "raise the initial margin" in request.reason
    assert hedge_requests_due() == []
    assert hedge_request_deliver(hedge_request_id=request.pk) is None
    assert receiver.deliveries == []


def test_no_hedge_while_a_price_the_account_depends_on_is_not_trusted(agents_world):
    hedge = policy(agents_world)
    for status in ("stale", "unconfirmed", "degraded"):
        agents_world.statuses(BTC=status)
        assert hedge_policy_evaluate(policy_id=hedge.pk) is None
    agents_world.move(BTC=60_000.0)
    agents_world.statuses(USDC="stale")  # the account's collateral
    assert hedge_policy_evaluate(policy_id=hedge.pk) is None
    assert not HedgeRequest.objects.exists()


def test_no_hedge_while_the_account_is_being_liquidated(agents_world):
    hedge = policy(agents_world)
    quotes = agents_world.move(BTC=57_000.0)
    sweep = sweep_accounts_run(account_ids=[agents_world.margin.pk], cause="test", quotes=quotes)
    call = MarginCall.objects.get(account=agents_world.margin)
    Liquidation.objects.create(
        account=agents_world.margin, call=call, sweep=sweep, started_at=timezone.now(), plan=[]
    )
    assert hedge_policy_evaluate(policy_id=hedge.pk) is None
    assert not HedgeRequest.objects.exists()


def test_no_second_hedge_within_the_policys_interval_and_a_newer_one_supersedes_the_older(agents_world):
    hedge = policy(agents_world, interval=300)
    first = hedge_policy_evaluate(policy_id=hedge.pk)
    assert hedge_policy_evaluate(policy_id=hedge.pk) is None
    later = hedge_policy_evaluate(policy_id=hedge.pk, now=timezone.now() + timedelta(seconds=301))

    first.refresh_from_db()
    assert (first.status, later.status) == ("superseded", "proposed")
    assert HedgeRequest.objects.count() == 2


def test_a_suspended_policy_proposes_nothing(agents_world, ops):
    hedge = policy(agents_world)
    policy_suspend(policy=hedge, user=ops, reason="runaway hedging")
    assert hedge_policy_evaluate(policy_id=hedge.pk) is None


def test_a_requested_hedge_is_signed_retried_after_failures_executed_once_and_booked_once(
    agents_world, endpoint, receiver, django_capture_on_commit_callbacks
):
    world = agents_world
    receiver.answers = [500, 200]
    hedge = policy(world, mode="request", endpoint=endpoint)
    with django_capture_on_commit_callbacks() as sent:
        request = hedge_policy_evaluate(policy_id=hedge.pk)
    assert request.status == "requested"
    assert len(sent) == 1  # the delivery is a task sent on commit, never made here
    assert receiver.deliveries == []

    now = timezone.now()
    failed = hedge_request_deliver(hedge_request_id=request.pk, now=now)
    assert hedge_request_deliver(hedge_request_id=request.pk, now=now + timedelta(seconds=29)) is None
    delivered = hedge_request_deliver(hedge_request_id=request.pk, now=now + timedelta(seconds=31))

    assert (failed.outcome, failed.status_code, failed.number) == ("failed", 500, 1)
    assert failed.next_attempt_at == now + retry_delay(1) == now + timedelta(seconds=30)
    assert (delivered.outcome, delivered.status_code, delivered.number) == ("delivered", 200, 2)
    request.refresh_from_db()
    assert (request.status, request.attempts, request.next_attempt_at) == ("delivered", 2, None)

    # The receiver saw the same hedge twice, each signed with the endpoint's secret at its own time.
    first, second = receiver.deliveries
    assert first.signature_ok
    assert second.signature_ok
    assert first.body == second.body
    assert first.headers["clearing-webhook-id"] == second.headers["clearing-webhook-id"]
    assert first.headers["clearing-webhook-id"] == str(request.idempotency_id)
    assert (first.headers["clearing-webhook-attempt"], second.headers["clearing-webhook-attempt"]) == (
        "1",
        "2",
    )
    assert (
        int(second.headers["clearing-webhook-timestamp"]) - int(first.headers["clearing-webhook-timestamp"])
        == 31
    )
    payload = first.payload
    assert payload["type"] == "hedge.requested"
    assert payload["trade"] == {"instrument": "BTC-PERP", "side": "sell", "quantity": "-4.0000000000",
                                "index_price": "60000.0000000000"}  # fmt: skip
    assert payload["margin"]["after"]["initial_margin"] == pytest.approx(36_000)
    assert receiver.executed == [str(request.idempotency_id)]  # one hedge for one id

    # The venue books the member's fill naming the request: linked, filled, requested no more.
    venue = client_for(user_create(username="venue", password=None, role=Role.VENUE))
    fill = {"account": "AAA-01", "instrument": "BTC-PERP", "quantity": "-4", "price": "60010",
            "hedge_request": request.pk}  # fmt: skip
    booked = venue.post("/api/v1/trades/", fill)
    assert booked.status_code == 201, booked.json()
    request.refresh_from_db()
    assert request.status == "filled"
    assert HedgeFill.objects.get(hedge_request=request).trade_id == booked.json()["trades"][0]["id"]
    again = venue.post("/api/v1/trades/", fill)
    assert again.status_code == 400
    assert "filled" in again.json()["hedge_request"][0]
    assert hedge_request_deliver(hedge_request_id=request.pk, now=now + timedelta(hours=1)) is None
    assert len(receiver.deliveries) == 2


def test_a_fill_naming_another_accounts_or_instruments_hedge_is_refused(agents_world, member_b):
    request = hedge_policy_evaluate(policy_id=policy(agents_world).pk)
    venue = client_for(user_create(username="venue", password=None, role=Role.VENUE))
    for wrong in ({"instrument": "ETH-PERP", "price": "3000"}, {"hedge_request": request.pk + 1000}):
        fill = {"account": "AAA-01", "instrument": "BTC-PERP", "quantity": "-4", "price": "60000",
                "hedge_request": request.pk, **wrong}  # fmt: skip
        answer = venue.post("/api/v1/trades/", fill)
        assert answer.status_code == 400
        assert list(answer.json()) == ["hedge_request"]
    assert not HedgeFill.objects.exists()


def test_deliveries_back_off_exponentially_and_give_up_after_a_day(agents_world, endpoint, receiver):
    receiver.answers = [503] * 100
    request = hedge_policy_evaluate(policy_id=policy(agents_world, mode="request", endpoint=endpoint).pk)
    now = request.created_at
    waits = []
    while (attempt := hedge_request_deliver(hedge_request_id=request.pk, now=now)) is not None:
        if attempt.next_attempt_at is None:
            break
        waits.append((attempt.next_attempt_at - now).total_seconds())
        now = attempt.next_attempt_at

    assert waits[:8] == [30, 60, 120, 240, 480, 960, 1920, 3600]
    assert set(waits[8:]) == {3600}
    request.refresh_from_db()
    assert request.status == "undeliverable"
    assert now <= request.deliver_until < now + timedelta(hours=1)
    attempts = WebhookAttempt.objects.filter(hedge_request=request).order_by("number")
    assert attempts.count() == len(receiver.deliveries) == len(waits) + 1
    assert attempts.last().outcome == "abandoned"
    assert OutboxEvent.objects.filter(type="hedge.undeliverable").exists()


def test_a_redirect_is_a_failed_attempt_not_followed(agents_world, endpoint, receiver):
    receiver.answers = [302]
    request = hedge_policy_evaluate(policy_id=policy(agents_world, mode="request", endpoint=endpoint).pk)
    attempt = hedge_request_deliver(hedge_request_id=request.pk)
    assert (attempt.outcome, attempt.status_code) == ("failed", 302)
    assert len(receiver.deliveries) == 1


def test_the_sweep_never_waits_for_a_delivery(agents_world, endpoint, receiver, sweep_with_agents):
    policy(agents_world, mode="request", endpoint=endpoint)
    sweep_with_agents(account_ids=[agents_world.margin.pk], quotes=agents_world.quotes)

    request = HedgeRequest.objects.get()
    assert request.status == "requested"
    assert sweep_with_agents.deliveries == [request.pk]  # handed to the delivery task
    assert receiver.deliveries == []


def test_the_endpoint_secret_is_stored_encrypted_and_shown_once(agents_world, endpoint, receiver):
    assert receiver.secret.startswith("whsec_")
    assert receiver.secret not in endpoint.secret_encrypted
    assert endpoint.secret_hint == receiver.secret[:10]
    assert secret_decrypt(endpoint.secret_encrypted) == receiver.secret

"""``Idempotency-Key``: replay, mismatch (422), concurrent duplicate (409), released on failure."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.utils import timezone

from accounts.models import CollateralBalance, Deposit, Withdrawal
from clearing.api.idempotency import LEASE, idempotency_records_purge
from clearing.api.models import IdempotencyRecord, IdempotencyState
from clearing.models import Trade

V1 = "/api/v1"


def deposit_url(world) -> str:
    return f"{V1}/accounts/{world.account_a.pk}/deposits/"


def test_a_replay_returns_the_stored_response_and_applies_nothing_twice(world):
    trader = world["trader_a"]
    first = trader.post(deposit_url(world), {"asset": "USDC", "amount": "10"}, key="dep-1")
    again = trader.post(deposit_url(world), {"amount": "10", "asset": "USDC"}, key="dep-1")

    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert Deposit.objects.filter(account=world.account_a, amount=10).count() == 1


def test_the_same_key_with_a_different_body_is_refused_with_422(world):
    trader = world["trader_a"]
    trader.post(deposit_url(world), {"asset": "USDC", "amount": "10"}, key="dep-2")
    response = trader.post(deposit_url(world), {"asset": "USDC", "amount": "11"}, key="dep-2")

    assert response.status_code == 422
    assert not Deposit.objects.filter(amount=11).exists()


def test_the_same_key_on_another_endpoint_is_refused_with_422(world):
    trader = world["trader_a"]
    trader.post(deposit_url(world), {"asset": "USDC", "amount": "10"}, key="k")
    balance_before = CollateralBalance.objects.get(account=world.account_a, asset__symbol="USDC").amount
    response = trader.post(
        f"{V1}/accounts/{world.account_a.pk}/withdrawals/", {"asset": "USDC", "amount": "10"}, key="k"
    )
    assert response.status_code == 422
    assert not Withdrawal.objects.exists()
    after = CollateralBalance.objects.get(account=world.account_a, asset__symbol="USDC").amount
    assert after == balance_before


def test_a_duplicate_while_the_first_request_runs_gets_409(world):
    trader = world["trader_a"]
    body = {"asset": "USDC", "amount": "10"}
    # The first request has claimed the key and is still running (its outcome not yet stored).
    from clearing.api.idempotency import request_fingerprint

    class Request:
        method, path, data = "POST", deposit_url(world), body

    IdempotencyRecord.objects.create(
        user=trader.user,
        key="dep-3",
        fingerprint=request_fingerprint(Request),
        state=IdempotencyState.IN_PROGRESS,
        lease_until=timezone.now() + LEASE,
    )
    response = trader.post(deposit_url(world), body, key="dep-3")

    assert response.status_code == 409
    assert not Deposit.objects.filter(amount=10).exists()


def test_an_abandoned_claim_is_taken_over_after_its_lease(world):
    trader = world["trader_a"]
    body = {"asset": "USDC", "amount": "10"}
    from clearing.api.idempotency import request_fingerprint

    class Request:
        method, path, data = "POST", deposit_url(world), body

    IdempotencyRecord.objects.create(
        user=trader.user,
        key="dep-4",
        fingerprint=request_fingerprint(Request),
        state=IdempotencyState.IN_PROGRESS,
        lease_until=timezone.now() - timedelta(seconds=1),
    )
    response = trader.post(deposit_url(world), body, key="dep-4")
    assert response.status_code == 201
    assert IdempotencyRecord.objects.get(key="dep-4").state == IdempotencyState.DONE


def test_keys_are_per_user(world):
    body = {"asset": "USDC", "amount": "10"}
    assert world["trader_a"].post(deposit_url(world), body, key="shared").status_code == 201
    # Another user's same key on another request is neither replayed nor a mismatch (422).
    response = world["trader_b"].post(f"{V1}/accounts/{world.account_b.pk}/deposits/", body, key="shared")
    assert response.status_code == 201
    assert "Idempotent-Replayed" not in response.headers
    assert Deposit.objects.filter(amount=10).count() == 2


def test_a_refusal_is_stored_and_replayed_and_nothing_was_applied(world):
    venue = world["venue"]
    bad = {"fills": [{"account": "AAA-01", "instrument": "BTC-PERP", "quantity": "1", "price": "60000"},
                     {"account": "AAA-01", "instrument": "NOPE", "quantity": "1", "price": "1"}]}  # fmt: skip
    first = venue.post(f"{V1}/trades/", bad, key="batch-1")
    again = venue.post(f"{V1}/trades/", bad, key="batch-1")
    assert first.status_code == again.status_code == 400
    assert again.json() == first.json()
    assert not Trade.objects.exists()


def test_a_trade_batch_replayed_after_a_lost_response_books_once(world):
    venue = world["venue"]
    batch = {
        "fills": [
            {"account": "AAA-01", "instrument": "BTC-PERP", "quantity": "1", "price": "60000"},
            {"account": "BBB-01", "instrument": "ETH-PERP", "quantity": "2", "price": "3000"},
        ]
    }
    first = venue.post(f"{V1}/trades/", batch, key="batch-2")
    again = venue.post(f"{V1}/trades/", batch, key="batch-2")
    assert first.status_code == again.status_code == 201
    assert Trade.objects.count() == 2


def test_a_malformed_key_is_refused_naming_the_header(world):
    response = world["trader_a"].post(deposit_url(world), {"asset": "USDC", "amount": "1"}, key="x" * 300)
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()


def test_old_records_are_purged(world):
    world["trader_a"].post(deposit_url(world), {"asset": "USDC", "amount": "1"}, key="old")
    IdempotencyRecord.objects.update(created_at=timezone.now() - timedelta(days=2))
    assert idempotency_records_purge() == 1
    assert not IdempotencyRecord.objects.exists()
    assert Decimal(1) in set(Deposit.objects.values_list("amount", flat=True))


def test_beat_purges_records_past_the_retention_every_hour_and_keeps_recent_ones(world):
    from django.conf import settings

    from clearing.api.tasks import idempotency_records_purge_task
    from clearing.config.celery import app

    trader = world["trader_a"]
    trader.post(deposit_url(world), {"asset": "USDC", "amount": "1"}, key="yesterday")
    IdempotencyRecord.objects.update(created_at=timezone.now() - timedelta(hours=25))
    trader.post(deposit_url(world), {"asset": "USDC", "amount": "2"}, key="today")

    [entry] = [
        e for e in settings.CELERY_BEAT_SCHEDULE.values() if e["task"] == "api.idempotency_records_purge"
    ]
    assert entry["schedule"].minute == {7}  # hourly (celery's crontab)
    assert idempotency_records_purge_task.name == entry["task"]
    assert app.tasks[entry["task"]].apply().get() == 1  # the task beat names, as a worker runs it
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["today"]
    assert trader.post(deposit_url(world), {"asset": "USDC", "amount": "2"}, key="today").status_code == 201

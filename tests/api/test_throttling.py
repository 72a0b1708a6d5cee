"""Throttling: a fixed budget per window, 429 with Retry-After, counted atomically; one budget per
user (tokens and session together), a lower compute budget, refused tokens and anonymous calls
per trusted client address."""

from __future__ import annotations

import math
import threading

import pytest
from django.core.cache import caches
from django.test import Client as Browser

from clearing.api.throttling import (
    AnonymousThrottle,
    ComputeRateThrottle,
    UserRateThrottle,
    WindowRateThrottle,
)
from tests.factories import client_for

V1 = "/api/v1"
MID_MINUTE = 1_800_000_000 + 20.25  # a timestamp 20.25 s into a UTC minute


@pytest.fixture
def clock(monkeypatch):
    """The throttles' clock, pinned (a window boundary mid-test would refill the budget)."""
    now = {"t": MID_MINUTE}
    monkeypatch.setattr(WindowRateThrottle, "timer", lambda self: now["t"])
    return now


def test_each_user_is_throttled_on_its_own_with_429(world, monkeypatch, clock):
    monkeypatch.setattr(UserRateThrottle, "rate", "3/min", raising=False)
    codes = [world["viewer_a"].get(f"{V1}/accounts/").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    # Another user has its own budget.
    assert world["trader_a"].get(f"{V1}/accounts/").status_code == 200


def test_a_users_session_and_its_tokens_share_one_budget(world, monkeypatch, clock):
    monkeypatch.setattr(UserRateThrottle, "rate", "4/min", raising=False)
    browser = Browser()
    browser.force_login(world["viewer_a"].user)
    second_token = client_for(world["viewer_a"].user)
    codes = [
        world["viewer_a"].get(f"{V1}/accounts/").status_code,
        browser.get(f"{V1}/accounts/").status_code,
        second_token.get(f"{V1}/accounts/").status_code,
        browser.get(f"{V1}/accounts/").status_code,
        # The budget of 4 is spent, by whichever credential: each of them is refused now.
        world["viewer_a"].get(f"{V1}/accounts/").status_code,
        browser.get(f"{V1}/accounts/").status_code,
        second_token.get(f"{V1}/accounts/").status_code,
    ]
    assert codes == [200, 200, 200, 200, 429, 429, 429]


def test_a_throttled_client_is_told_to_retry_when_the_window_ends_and_then_may(world, monkeypatch, clock):
    monkeypatch.setattr(UserRateThrottle, "rate", "2/min", raising=False)
    viewer = world["viewer_a"]
    assert [viewer.get(f"{V1}/accounts/").status_code for _ in range(2)] == [200, 200]
    refused = viewer.get(f"{V1}/accounts/")
    assert refused.status_code == 429
    assert refused["Retry-After"] == str(math.ceil(60 - 20.25))
    clock["t"] += 60 - 20.25  # the next minute starts
    assert viewer.get(f"{V1}/accounts/").status_code == 200


def test_anonymous_requests_are_throttled_by_address(world, monkeypatch, clock):
    """The public docs page; elsewhere an anonymous request is refused (401) before counting."""
    monkeypatch.setattr(AnonymousThrottle, "rate", "2/min", raising=False)
    codes = [world["anonymous"].get("/api/docs/").status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    # Another address has its own budget.
    assert world["anonymous"].get("/api/docs/", REMOTE_ADDR="192.0.2.7").status_code == 200


def test_a_forged_x_forwarded_for_does_not_change_the_anonymous_key_without_trusted_proxies(
    world, monkeypatch, clock, settings
):
    assert settings.TRUSTED_PROXY_COUNT == 0  # the default
    monkeypatch.setattr(AnonymousThrottle, "rate", "2/min", raising=False)
    codes = [
        world["anonymous"].get("/api/docs/", HTTP_X_FORWARDED_FOR=f"198.51.100.{i}").status_code
        for i in range(3)
    ]
    assert codes == [200, 200, 429]


def test_behind_trusted_proxies_the_address_the_outermost_proxy_saw_is_the_key(
    world, monkeypatch, clock, settings
):
    settings.TRUSTED_PROXY_COUNT = 2  # e.g. a CDN, then the load balancer
    monkeypatch.setattr(AnonymousThrottle, "rate", "2/min", raising=False)

    def docs(forwarded_for: str) -> int:
        return world["anonymous"].get("/api/docs/", HTTP_X_FORWARDED_FOR=forwarded_for).status_code

    # The client's own claims (left of what the proxies appended) change nothing.
    assert [docs(f"198.51.100.{i}, 203.0.113.5, 10.0.0.2") for i in range(3)] == [200, 200, 429]
    # Another client, as the CDN saw it, has its own budget.
    assert docs("203.0.113.6, 10.0.0.2") == 200
    # Garbage where the address should be: the connection's address is the key.
    assert docs("not-an-address, 10.0.0.2") == 200


def test_an_invalid_token_is_throttled_by_client_address(world, monkeypatch, clock):
    """Guessing tokens is not free: every refused token counts against the anonymous budget of its
    address, and beyond it the answer is 429, not another 401."""
    from rest_framework.test import APIClient

    monkeypatch.setattr(AnonymousThrottle, "rate", "3/min", raising=False)
    guesser = APIClient()
    codes = []
    for guess in range(5):
        guesser.credentials(HTTP_AUTHORIZATION=f"Bearer guess-{guess}")
        codes.append(guesser.get(f"{V1}/accounts/").status_code)
    assert codes == [401, 401, 401, 429, 429]
    guesser.credentials(HTTP_AUTHORIZATION="Bearer one two")  # malformed counts too
    assert guesser.get(f"{V1}/accounts/").status_code == 429
    # Another address guesses on its own budget; a valid token is not held back by the guesser.
    assert guesser.get(f"{V1}/accounts/", REMOTE_ADDR="192.0.2.9").status_code == 401
    assert world["viewer_a"].get(f"{V1}/accounts/").status_code == 200


def test_the_compute_budget_is_lower_than_the_general_budget(settings):
    from rest_framework.throttling import SimpleRateThrottle

    rates = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    per_second = {
        scope: count / seconds
        for scope, (count, seconds) in (
            (scope, SimpleRateThrottle.parse_rate(None, rate)) for scope, rate in rates.items()
        )
    }
    assert per_second["compute"] < per_second["user"]


def test_simulate_and_what_if_share_a_compute_budget_that_the_reads_do_not_touch(world, monkeypatch, clock):
    monkeypatch.setattr(ComputeRateThrottle, "rate", "3/min", raising=False)
    trader = world["trader_a"]
    document = world.simulate_document()
    what_if = f"{V1}/accounts/{world.account_a.pk}/what-if/"
    codes = [
        trader.post(f"{V1}/margin/simulate/", document).status_code,
        trader.post(what_if, {"trades": [{"instrument": "BTC-PERP", "quantity": "1"}]}).status_code,
        trader.post(f"{V1}/margin/simulate/", document).status_code,
        trader.post(f"{V1}/margin/simulate/", document).status_code,
        trader.post(what_if, {"trades": [{"instrument": "BTC-PERP", "quantity": "1"}]}).status_code,
    ]
    assert codes == [200, 200, 200, 429, 429]
    assert trader.get(f"{V1}/accounts/").status_code == 200  # the general budget is not spent
    assert world["trader_b"].post(f"{V1}/margin/simulate/", document).status_code == 200


@pytest.mark.parametrize("backend", ["redis", "locmem"])
def test_concurrent_requests_in_many_threads_are_each_counted_once(backend, clock):
    """What several web processes and threads do at once: no increment is lost, none repeated."""
    if backend == "redis":
        cache = caches.create_connection("default")
        assert type(cache).__name__ == "RedisCache", "the test settings use Redis (REDIS_URL)"
    else:
        from django.core.cache.backends.locmem import LocMemCache

        cache = LocMemCache("throttle-concurrency", {})
    throttle = UserRateThrottle()
    throttle.cache = cache
    key = f"throttle-test-{backend}-{threading.get_ident()}-{id(cache)}"
    cache.delete(key)
    numbers: list[int] = []
    lock = threading.Lock()

    def hammer():
        mine = [throttle._count(key) for _ in range(25)]
        with lock:
            numbers.extend(mine)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(numbers) == list(range(1, 201))
    if backend == "redis":
        redis_key = cache.make_and_validate_key(key)
        ttl = cache._cache.get_client(redis_key).ttl(redis_key)
        assert 0 < ttl <= throttle.duration + 1  # the counter goes away after its window
    cache.delete(key)


def _port_nobody_listens_on() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_write_api_stays_up_when_the_throttles_redis_is_away(world, monkeypatch, caplog):
    """Redis down, PostgreSQL healthy: trades are still booked (the throttle fails open), with a
    log line and the fail-open counter."""
    from django.core.cache.backends.redis import RedisCache

    from clearing.models import Trade
    from clearing.ops.metrics import THROTTLE_FAIL_OPENS

    away = RedisCache(
        f"redis://127.0.0.1:{_port_nobody_listens_on()}/0",
        {"OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5}},
    )
    monkeypatch.setattr(WindowRateThrottle, "cache", away)
    before = THROTTLE_FAIL_OPENS._value.get()
    response = world["venue"].post(
        f"{V1}/trades/",
        {"account": "AAA-01", "instrument": "BTC-PERP", "quantity": "1", "price": "60000", "trade_id": "r-1"},
    )
    assert response.status_code == 201, response.content
    assert Trade.objects.filter(external_id="r-1").exists()
    assert THROTTLE_FAIL_OPENS._value.get() > before
    assert "throttle let a request through" in caplog.text

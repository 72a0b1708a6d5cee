"""Per-token throttling: a fixed budget per window, 429 with Retry-After, counted atomically."""

from __future__ import annotations

import math
import threading

import pytest
from django.core.cache import caches

from clearing.api.throttling import AnonymousThrottle, TokenRateThrottle, WindowRateThrottle

V1 = "/api/v1"
MID_MINUTE = 1_800_000_000 + 20.25  # a timestamp 20.25 s into a UTC minute


@pytest.fixture
def clock(monkeypatch):
    """The throttles' clock, pinned (a window boundary mid-test would refill the budget)."""
    now = {"t": MID_MINUTE}
    monkeypatch.setattr(WindowRateThrottle, "timer", lambda self: now["t"])
    return now


def test_each_token_is_throttled_on_its_own_with_429(world, monkeypatch, clock):
    monkeypatch.setattr(TokenRateThrottle, "rate", "3/min", raising=False)
    codes = [world["viewer_a"].get(f"{V1}/accounts/").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    # Another token (another user here) has its own budget.
    assert world["trader_a"].get(f"{V1}/accounts/").status_code == 200


def test_a_throttled_client_is_told_to_retry_when_the_window_ends_and_then_may(world, monkeypatch, clock):
    monkeypatch.setattr(TokenRateThrottle, "rate", "2/min", raising=False)
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


@pytest.mark.parametrize("backend", ["redis", "locmem"])
def test_concurrent_requests_in_many_threads_are_each_counted_once(backend, clock):
    """What several web processes and threads do at once: no increment is lost, none repeated."""
    if backend == "redis":
        cache = caches.create_connection("default")
        assert type(cache).__name__ == "RedisCache", "the test settings use Redis (REDIS_URL)"
    else:
        from django.core.cache.backends.locmem import LocMemCache

        cache = LocMemCache("throttle-concurrency", {})
    throttle = TokenRateThrottle()
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

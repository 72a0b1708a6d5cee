"""The Redis cache reuses the process's connections across requests."""

from __future__ import annotations

import threading

import redis
from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache

from clearing.api.throttling import AnonymousThrottle, UserRateThrottle


def connections_received() -> int:
    return redis.Redis.from_url(settings.REDIS_URL).info("stats")["total_connections_received"]


def test_cache_objects_of_separate_requests_share_the_process_connections_to_redis():
    """Under ASGI each request gets its own cache object (caches are context-local): without a
    shared pool each would open, and drop, a connection of its own."""
    caches.create_connection("default").get("warm-up")  # the pool's first connection
    before = connections_received()

    def one_request():
        caches.create_connection("default").get("throttle-probe")

    for _ in range(30):
        thread = threading.Thread(target=one_request)
        thread.start()
        thread.join()
    opened = connections_received() - before - 1  # minus the INFO call's own connection
    assert opened <= 1


def test_the_api_throttles_count_in_the_redis_cache_that_every_web_process_shares():
    assert isinstance(UserRateThrottle().cache, RedisCache)
    assert isinstance(AnonymousThrottle().cache, RedisCache)

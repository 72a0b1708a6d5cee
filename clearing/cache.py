"""One Redis connection pool per server and process for Django's cache.

Django's ``RedisCache`` builds its connection pool inside the cache object, and cache objects
live per request context under ASGI (``django.core.cache.caches`` is context-local): each request
would open a new TCP connection to Redis (and say ``HELLO``) for its first cache call — the API's
throttle counter — and drop it afterwards. Given as the cache's ``pool_class``, this class hands
every cache object of the process the same pool for the same server and options, so connections
are reused across requests. redis-py pools are thread-safe and reset themselves in a forked child.
"""

from __future__ import annotations

import threading

import redis


class ProcessConnectionPool(redis.ConnectionPool):
    _shared: dict[tuple, redis.ConnectionPool] = {}
    _lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **options) -> redis.ConnectionPool:
        key = (url, tuple(sorted(options.items(), key=lambda item: item[0])))
        with cls._lock:
            pool = cls._shared.get(key)
            if pool is None:
                pool = cls._shared[key] = redis.ConnectionPool.from_url(url, **options)
            return pool

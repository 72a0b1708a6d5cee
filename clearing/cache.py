"""Per-process caches: one Redis connection pool per server for Django's cache, and
``ProcessLRU`` for values that never change once written.

Django's ``RedisCache`` builds its connection pool inside the cache object, and cache objects
live per request context under ASGI (``django.core.cache.caches`` is context-local): each request
would open a new TCP connection to Redis (and say ``HELLO``) for its first cache call — the API's
throttle counter — and drop it afterwards. Given as the cache's ``pool_class``, this class hands
every cache object of the process the same pool for the same server and options, so connections
are reused across requests. redis-py pools are thread-safe and reset themselves in a forked child.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict

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


class ProcessLRU:
    """A bounded per-process cache of values that never change once written (a sweep's market, a
    snapshot's document), safe for the web server's pool of threads. ``get_or_build(key, build)``
    returns the cached value or builds it outside the lock (two threads may both build the same
    value once; both are equal) and keeps at most ``size`` values, dropping the least recently
    used. Values are shared: callers must not change them."""

    _MISSING = object()
    _instances: weakref.WeakSet[ProcessLRU] = weakref.WeakSet()

    def __init__(self, size: int):
        self.size = size
        self._values: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        ProcessLRU._instances.add(self)

    def get_or_build(self, key, build):
        with self._lock:
            value = self._values.get(key, self._MISSING)
            if value is not self._MISSING:
                self._values.move_to_end(key)
                return value
        value = build()
        with self._lock:
            self._values[key] = value
            while len(self._values) > self.size:
                self._values.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._values.clear()

    @classmethod
    def clear_all(cls) -> None:
        """Empty every cache of the process (tests: SQLite hands a rolled-back test's ids out again,
        and the keys' timestamps alone may meet again within a test run)."""
        for cache in list(cls._instances):
            cache.clear()

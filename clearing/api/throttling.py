"""Per-token request throttling (429 with ``Retry-After``).

A bearer token is throttled on its own (two tokens of one user have separate budgets: a member's
back office and its risk dashboard should not starve each other); a browser session on its user;
anonymous requests on their address. Counters live in the default cache, which is Redis when
``REDIS_URL`` is set, so every web process shares them.

The budget is per fixed window: a rate of ``1200/min`` allows 1,200 requests in each calendar
minute (UTC), and a refused request is told to retry when the window ends. Each request is one
atomic increment of the window's counter, so concurrent requests in several processes are all
counted (DRF's default throttle reads, appends to and writes back a list of timestamps: the
later write of two concurrent requests loses the other's, and the list it pickles grows with
the rate).
"""

from __future__ import annotations

from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from rest_framework.throttling import SimpleRateThrottle

from accounts.models import ApiToken


class WindowRateThrottle(SimpleRateThrottle):
    """``num_requests`` per window of ``duration`` seconds, counted atomically in the cache."""

    @property
    def cache(self):
        # The cache object itself (DRF's default is a proxy), so that Redis can be told apart.
        return caches["default"]

    def allow_request(self, request, view) -> bool:
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        self.now = self.timer()
        window = int(self.now // self.duration)
        self.window_ends_at = (window + 1) * self.duration
        if self._count(f"{self.key}:{window}") > self.num_requests:
            return self.throttle_failure()
        return True

    def _count(self, key: str) -> int:
        """This request's number in the window. The counter outlives its window by a second."""
        cache = self.cache
        if isinstance(cache, RedisCache):
            # One round trip: create the counter with its expiry if it is new, then increment.
            redis_key = cache.make_and_validate_key(key)
            client = cache._cache.get_client(redis_key, write=True)
            with client.pipeline(transaction=False) as pipeline:
                pipeline.set(redis_key, 0, ex=self.duration + 1, nx=True)
                pipeline.incr(redis_key)
                return pipeline.execute()[1]
        # Any other cache: the outliving second also keeps the counter from expiring between
        # cache.incr's existence check and its increment.
        try:
            return cache.incr(key)
        except ValueError:  # the window's first request (here or in another process)
            if cache.add(key, 1, timeout=self.duration + 1):
                return 1
            return cache.incr(key)

    def wait(self) -> float:
        return max(0.0, self.window_ends_at - self.now)


class TokenRateThrottle(WindowRateThrottle):
    scope = "token"

    def get_cache_key(self, request, view):
        if isinstance(request.auth, ApiToken):
            ident = f"token-{request.auth.pk}"
        elif request.user and request.user.is_authenticated:
            ident = f"user-{request.user.pk}"
        else:
            return None  # anonymous requests are the AnonymousThrottle's
        return self.cache_format % {"scope": self.scope, "ident": ident}


class AnonymousThrottle(WindowRateThrottle):
    scope = "anon"

    def get_cache_key(self, request, view):
        if request.user and request.user.is_authenticated:
            return None
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}

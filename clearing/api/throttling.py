"""Request throttling (429 with ``Retry-After``).

Budgets:

* ``user`` (``API_THROTTLE_RATE``): one per user, whatever it calls with — all of its tokens and
  its browser session draw on the same budget, so a second token or a session is not a second
  budget;
* ``compute`` (``API_COMPUTE_THROTTLE_RATE``): a separate, lower budget per user for the endpoints
  that run the margin engine on the caller's input (``margin/simulate/``, ``accounts/{id}/what-if/``
  and the web app's what-if), on top of the ``user`` budget;
* ``anon`` (``API_ANON_THROTTLE_RATE``): per client address for requests without credentials and
  for requests whose token is invalid, revoked or of a deactivated user (counted before the 401,
  so guessing tokens is throttled like any anonymous traffic).

The client address is ``client_address``: the connection's address, or — behind
``TRUSTED_PROXY_COUNT`` reverse proxies — the address the outermost of them saw; a client cannot
choose its throttle key by sending its own ``X-Forwarded-For``.

Counters live in the default cache, which is Redis when ``REDIS_URL`` is set, so every web process
shares them.

The budget is per fixed window: a rate of ``1200/min`` allows 1,200 requests in each calendar
minute (UTC), and a refused request is told to retry when the window ends. Each request is one
atomic increment of the window's counter, so concurrent requests in several processes are all
counted (DRF's default throttle reads, appends to and writes back a list of timestamps: the
later write of two concurrent requests loses the other's, and the list it pickles grows with
the rate).
"""

from __future__ import annotations

import ipaddress
import logging

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from redis.exceptions import RedisError
from rest_framework import exceptions
from rest_framework.throttling import SimpleRateThrottle

from clearing.ops.metrics import THROTTLE_FAIL_OPENS

logger = logging.getLogger(__name__)


def client_address(request) -> str:
    """The client's address as far as it can be trusted.

    With ``TRUSTED_PROXY_COUNT = 0`` (the default: clients connect to the web server directly, or
    the web server already resolved the address from the proxies it trusts, as uvicorn does for
    ``FORWARDED_ALLOW_IPS``) it is the connection's address and ``X-Forwarded-For`` is ignored:
    anyone can send that header. With ``n`` proxies in front, each appending the address it saw,
    the ``n``-th entry from the right is the one the outermost proxy saw (entries further left
    are the client's own claims). Anything that is not an IP address falls back to the
    connection's address."""
    remote = request.META.get("REMOTE_ADDR", "")
    proxies = settings.TRUSTED_PROXY_COUNT
    if proxies <= 0:
        return remote
    hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    if not hops:
        return remote
    candidate = hops[-min(proxies, len(hops))]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return remote


class WindowRateThrottle(SimpleRateThrottle):
    """``num_requests`` per window of ``duration`` seconds, counted atomically in the cache."""

    @property
    def cache(self):
        # The cache object itself (DRF's default is a proxy), so that Redis can be told apart.
        return caches["default"]

    def get_ident(self, request) -> str:
        return client_address(request)

    def allow_request(self, request, view) -> bool:
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        return self.allow_key(key)

    def allow_key(self, key: str) -> bool:
        """Count one request against ``key``'s budget in the current window; False beyond it
        (``wait()`` then tells when the window ends)."""
        if self.rate is None:
            return True
        self.key = key
        self.now = self.timer()
        window = int(self.now // self.duration)
        self.window_ends_at = (window + 1) * self.duration
        try:
            return self._count(f"{key}:{window}") <= self.num_requests
        except (RedisError, ConnectionError, TimeoutError) as error:
            # Fail open: the counters are a courtesy to the venue, PostgreSQL holds the truth and
            # every write path is guarded there. Refusing trades because the cache is away would
            # turn a Redis outage into a clearing outage. Logged and counted, so ops see it.
            THROTTLE_FAIL_OPENS.inc()
            logger.warning("API throttle let a request through: its counter store failed (%s)", error)
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


class UserRateThrottle(WindowRateThrottle):
    """One budget per user: its tokens and its session count together."""

    scope = "user"

    def get_cache_key(self, request, view):
        if not (request.user and request.user.is_authenticated):
            return None  # anonymous requests are the AnonymousThrottle's
        return self.user_key(request.user)

    def user_key(self, user) -> str:
        return self.cache_format % {"scope": self.scope, "ident": f"user-{user.pk}"}


class ComputeRateThrottle(UserRateThrottle):
    """The engine-running endpoints' own, lower, budget per user (views list it explicitly)."""

    scope = "compute"


class AnonymousThrottle(WindowRateThrottle):
    scope = "anon"

    def get_cache_key(self, request, view):
        if request.user and request.user.is_authenticated:
            return None
        return self.address_key(request)

    def address_key(self, request) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


def credentials_refused_count(request) -> None:
    """Count a request whose credentials are refused against its address's anonymous budget
    (without touching ``request.user``: authenticators call it); raises ``Throttled`` (429) beyond
    the budget, else returns and the caller answers 401."""
    throttle = AnonymousThrottle()
    if not throttle.allow_key(throttle.address_key(request)):
        raise exceptions.Throttled(wait=throttle.wait())


def compute_budget_wait(*, user) -> float | None:
    """For the web app's what-if (a plain Django view, outside DRF's throttling): count one
    engine run against ``user``'s compute budget, the one the API's what-if and simulate share.
    None when allowed, else the seconds until the budget refills."""
    throttle = ComputeRateThrottle()
    return None if throttle.allow_key(throttle.user_key(user)) else throttle.wait()

"""Per-token request throttling (429 with ``Retry-After``).

A bearer token is throttled on its own (two tokens of one user have separate budgets: a member's
back office and its risk dashboard should not starve each other); a browser session on its user;
anonymous requests on their address. Counters live in the default cache, which is Redis when
``REDIS_URL`` is set, so every web process shares them.
"""

from __future__ import annotations

from rest_framework.throttling import SimpleRateThrottle

from accounts.models import ApiToken


class TokenRateThrottle(SimpleRateThrottle):
    scope = "token"

    def get_cache_key(self, request, view):
        if isinstance(request.auth, ApiToken):
            ident = f"token-{request.auth.pk}"
        elif request.user and request.user.is_authenticated:
            ident = f"user-{request.user.pk}"
        else:
            return None  # anonymous requests are the AnonymousThrottle's
        return self.cache_format % {"scope": self.scope, "ident": ident}


class AnonymousThrottle(SimpleRateThrottle):
    scope = "anon"

    def get_cache_key(self, request, view):
        if request.user and request.user.is_authenticated:
            return None
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}

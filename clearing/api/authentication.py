"""``Authorization: Bearer <token>`` for external systems; the token acts as its user.

A refused token (malformed, unknown, revoked, of a deactivated user or member) is counted against
the client address's anonymous budget before the 401 (``clearing.api.throttling``): DRF checks its
throttles only after authentication succeeded, so otherwise guessing tokens would never be
throttled."""

from __future__ import annotations

from typing import NoReturn

from django.utils import timezone
from rest_framework import authentication, exceptions

from accounts.models import ApiToken
from accounts.selectors import user_admitted
from accounts.services import api_token_digest
from clearing.api.throttling import credentials_refused_count

# Writing last_used_at on every request would turn each read into a write; once a minute is enough
# to tell ops whether a token is still in use.
LAST_USED_RESOLUTION_SECONDS = 60


class BearerTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            self._refuse(request, "Invalid Authorization header: expected 'Bearer <token>'.")
        try:
            token = header[1].decode()
        except UnicodeError:
            self._refuse(request, "Invalid token.")
        try:
            # get(), not first(): the digest is unique, and first() would add an ORDER BY.
            record = ApiToken.objects.select_related("user__member").get(
                digest=api_token_digest(token), revoked_at__isnull=True
            )
        except ApiToken.DoesNotExist:
            self._refuse(request, "Invalid or revoked token.")
        if not user_admitted(user=record.user):
            self._refuse(request, "The token's user or its member is deactivated.")
        now = timezone.now()
        if (
            record.last_used_at is None
            or (now - record.last_used_at).total_seconds() > LAST_USED_RESOLUTION_SECONDS
        ):
            ApiToken.objects.filter(pk=record.pk).update(last_used_at=now)
        return record.user, record

    def _refuse(self, request, message: str) -> NoReturn:
        credentials_refused_count(request)  # 429 once the address's budget is spent
        raise exceptions.AuthenticationFailed(message)

    def authenticate_header(self, request):
        return self.keyword

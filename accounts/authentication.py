"""``Authorization: Bearer <token>`` for external systems; the token acts as its user."""

from __future__ import annotations

from django.utils import timezone
from rest_framework import authentication, exceptions

from accounts.models import ApiToken
from accounts.selectors import user_admitted
from accounts.services import api_token_digest

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
            raise exceptions.AuthenticationFailed("Invalid Authorization header: expected 'Bearer <token>'.")
        try:
            token = header[1].decode()
        except UnicodeError:
            raise exceptions.AuthenticationFailed("Invalid token.") from None
        record = (
            ApiToken.objects.select_related("user__member")
            .filter(digest=api_token_digest(token), revoked_at__isnull=True)
            .first()
        )
        if record is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        if not user_admitted(user=record.user):
            raise exceptions.AuthenticationFailed("The token's user or its member is deactivated.")
        now = timezone.now()
        if (
            record.last_used_at is None
            or (now - record.last_used_at).total_seconds() > LAST_USED_RESOLUTION_SECONDS
        ):
            ApiToken.objects.filter(pk=record.pk).update(last_used_at=now)
        return record.user, record

    def authenticate_header(self, request):
        return self.keyword

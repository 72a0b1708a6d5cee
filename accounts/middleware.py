"""A staff session without a verified second factor is no session (when STAFF_OTP_REQUIRED).

The admin site checks the second factor itself (``accounts.admin_site``), but a password alone
also opens a session at the member sign-in page ``/login/``, and that session would reach the
member pages and the REST API (session authentication) with the staff role. Below
``django_otp.middleware.OTPMiddleware``, this middleware shows such a user as anonymous to
everything except the pages that finish signing in: second-factor enrolment and sign-out.
"""

from __future__ import annotations

import functools

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.urls import reverse
from django.utils.functional import SimpleLazyObject


def staff_unverified(user) -> bool:
    """Whether ``user`` is signed-in staff whose session has not passed the second factor."""
    return bool(
        user is not None
        and user.is_authenticated
        and user.is_staff
        and not (hasattr(user, "is_verified") and user.is_verified())
    )


def _exempt_paths() -> frozenset[str]:
    return frozenset({reverse("admin:otp_enrol"), reverse("admin:logout"), reverse("logout")})


class StaffSecondFactorMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self._is_async = iscoroutinefunction(get_response)
        if self._is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self._is_async:
            return self.__acall__(request)
        self._guard(request)
        return self.get_response(request)

    async def __acall__(self, request):
        self._guard(request)
        return await self.get_response(request)

    @staticmethod
    def _guard(request) -> None:
        if not settings.STAFF_OTP_REQUIRED or request.path in _exempt_paths():
            return
        user = getattr(request, "user", None)
        if user is not None:
            request.user = SimpleLazyObject(functools.partial(_visible_user, user))
        auser = getattr(request, "auser", None)
        if auser is not None:

            async def visible_auser():
                return _visible_user(await auser())

            request.auser = visible_auser


def _visible_user(user):
    return AnonymousUser() if staff_unverified(user) else user

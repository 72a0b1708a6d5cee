"""Receivers for the sign-in signals."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver
from django.utils import timezone


@receiver(user_logged_in, dispatch_uid="accounts.staff_session_expiry")
def staff_session_expiry(sender, request, user, **kwargs) -> None:
    """Staff sessions end STAFF_SESSION_SECONDS after sign-in, active or not (a fixed time, not an
    idle timeout: a staff session left open on a desk does not live on by being used). Members
    keep the default session length."""
    if user.is_staff and request is not None and hasattr(request, "session"):
        request.session.set_expiry(timezone.now() + timedelta(seconds=settings.STAFF_SESSION_SECONDS))

"""Back-off for the login lock-out (django-axes calls ``login_cool_off`` as AXES_COOLOFF_TIME)."""

from __future__ import annotations

from datetime import timedelta

from axes.models import AccessAttempt
from django.conf import settings
from django.db.models import Sum


def login_cool_off(request=None) -> timedelta:
    """How long the failures of this request's username and address count, and so how long a lock
    lasts: LOGIN_COOLOFF_MINUTES at the lock, doubled by each further attempt while locked (django-
    axes records those as failures without checking the password, and restarts the lock from the
    last one), at most LOGIN_COOLOFF_MAX_MINUTES. Guessing on through a lock only makes it longer."""
    base = timedelta(minutes=settings.LOGIN_COOLOFF_MINUTES)
    ceiling = timedelta(minutes=settings.LOGIN_COOLOFF_MAX_MINUTES)
    username = request.POST.get("username") if request is not None and request.method == "POST" else None
    address = getattr(request, "axes_ip_address", None)
    if not username or not address:
        return base
    failures = (
        AccessAttempt.objects.filter(username=username, ip_address=address).aggregate(
            total=Sum("failures_since_start")
        )["total"]
        or 0
    )
    beyond = max(0, failures - settings.AXES_FAILURE_LIMIT)
    if beyond >= 32:  # 2**32 minutes is past any ceiling; do not build huge timedeltas
        return ceiling
    return min(base * 2**beyond, ceiling)

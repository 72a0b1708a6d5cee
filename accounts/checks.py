"""Deployment checks (``manage.py check --deploy``) for staff sign-in."""

from __future__ import annotations

from django.conf import settings
from django.core import checks


@checks.register(checks.Tags.security, deploy=True)
def staff_second_factor_check(app_configs, **kwargs):
    if settings.STAFF_OTP_REQUIRED:
        return []
    return [
        checks.Warning(
            "STAFF_OTP_REQUIRED is off: venue staff reach the admin with a password alone.",
            hint="Production settings (DJANGO_ENV=production) always turn it on.",
            id="accounts.W001",
        )
    ]

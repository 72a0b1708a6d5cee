"""The admin site venue staff use, with a second factor (TOTP, django-otp) when STAFF_OTP_REQUIRED.

Signing in takes the password (throttled by django-axes) and, once the user has a confirmed TOTP
device, the code it shows. A staff user without a device signs in with the password and is sent to
``otp/enrol/``, which shows a new secret once and confirms it with a first code; only then does
the session count as verified and reach the admin. Unverified staff sessions reach nothing else
either (``accounts.middleware.StaffSecondFactorMiddleware``).
"""

from __future__ import annotations

from base64 import b32encode

import django_otp
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpResponseRedirect
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.middleware import staff_unverified

ENROL_SESSION_KEY = "accounts_otp_enrol_device"


class StaffAuthenticationForm(AdminAuthenticationForm):
    """The admin's sign-in form: password, then (when required and enrolled) the TOTP code."""

    otp_token = forms.CharField(
        label="Code from your authenticator app",
        required=False,
        max_length=10,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
    )

    def clean(self):
        cleaned_data = super().clean()  # the password (through django-axes) and the staff flag
        if settings.STAFF_OTP_REQUIRED and self.user_cache is not None:
            self._clean_second_factor(self.user_cache)
        return cleaned_data

    def _clean_second_factor(self, user) -> None:
        error = None
        with transaction.atomic():
            # Locked so that one code is accepted once even by two simultaneous sign-ins.
            device = (
                TOTPDevice.objects.select_for_update()
                .filter(user=user, confirmed=True)
                .order_by("pk")
                .first()
            )
            if device is None:
                return  # signed in with the password only: StaffAdminSite.login sends them to enrol
            token = (self.cleaned_data.get("otp_token") or "").strip()
            allowed, _ = device.verify_is_allowed()
            if not token:
                error = "Enter the code your authenticator app shows."
            elif not allowed:
                error = "Too many wrong codes: wait a little and try again."
            elif device.verify_token(token):
                # django_otp's user_logged_in receiver keeps this device in the session (verified).
                user.otp_device = device
            else:
                error = "That code is wrong or was already used."
        # Raised outside the transaction so that the failure counted by verify_token is kept.
        if error:
            raise ValidationError({"otp_token": error})


class StaffAdminSite(admin.AdminSite):
    login_form = StaffAuthenticationForm
    login_template = "accounts/admin_login.html"

    def has_permission(self, request):
        return super().has_permission(request) and not (
            settings.STAFF_OTP_REQUIRED and staff_unverified(request.user)
        )

    def login(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "otp_required": settings.STAFF_OTP_REQUIRED}
        response = super().login(request, extra_context)
        signed_in = request.method == "POST" and isinstance(response, HttpResponseRedirect)
        if (
            signed_in
            and settings.STAFF_OTP_REQUIRED
            and request.user.is_staff
            and getattr(request.user, "otp_device", None) is None
        ):
            # The password was right and the user has no device yet (otherwise the form would have
            # required its code): enrolment is the only page this session reaches.
            return redirect("admin:otp_enrol")
        return response

    def get_urls(self):
        return [path("otp/enrol/", self.otp_enrol, name="otp_enrol"), *super().get_urls()]

    @method_decorator(never_cache)
    @method_decorator(csrf_protect)
    def otp_enrol(self, request):
        """Show a new TOTP secret once (GET) and confirm it with a first code (POST)."""
        # accounts.access imports models: this module is loaded as the default admin site while the
        # app registry is still being populated, before any model may be imported.
        from accounts.access import otp_device_confirm, otp_device_start

        user = request.user
        if not settings.STAFF_OTP_REQUIRED:
            return redirect("admin:index")
        if not (user.is_authenticated and user.is_active and user.is_staff):
            return redirect("admin:login")
        if not staff_unverified(user):
            return redirect("admin:index")
        if TOTPDevice.objects.filter(user=user, confirmed=True).exists():
            # Enrolled already: this session has only the password; sign in with the code.
            messages.info(request, "Sign in with the code from your authenticator app.")
            return redirect("admin:login")
        context = {
            **self.each_context(request),
            "title": "Set up your second factor",
            "errors": [],
        }
        if request.method == "POST":
            try:
                device = otp_device_confirm(
                    user=user,
                    device_id=request.session.get(ENROL_SESSION_KEY),
                    token=request.POST.get("otp_token", ""),
                )
            except ValidationError as error:
                context["errors"] = error.messages
            else:
                del request.session[ENROL_SESSION_KEY]
                django_otp.login(request, device)
                messages.success(request, "Your second factor is set up.")
                return redirect("admin:index")
        else:
            device = otp_device_start(user=user)
            request.session[ENROL_SESSION_KEY] = device.pk
            secret = b32encode(device.bin_key).decode()
            context.update(
                secret=" ".join(secret[i : i + 4] for i in range(0, len(secret), 4)),
                config_url=device.config_url,
            )
        context["restart_url"] = reverse("admin:otp_enrol")
        return TemplateResponse(request, "accounts/otp_enrol.html", context)

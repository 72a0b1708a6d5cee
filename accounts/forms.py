"""Forms of the user administration pages and of the member sign-in page. They only collect input:
the rules are in ``accounts.access``, whose errors ``errors_add`` puts on the fields they name."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError

from accounts.access import user_details_check
from accounts.models import Member, Role, User


def errors_add(form: forms.Form, error: ValidationError, aliases: dict[str, str] | None = None) -> None:
    """Put a service's ``ValidationError`` on the form: on the field it names, else on the form."""
    aliases = aliases or {}
    if not hasattr(error, "error_dict"):
        form.add_error(None, error.messages)
        return
    for name, messages in error.message_dict.items():
        name = aliases.get(name, name)
        form.add_error(name if name in form.fields else None, messages)


def _member_field() -> forms.ModelChoiceField:
    return forms.ModelChoiceField(
        queryset=Member.objects.filter(is_active=True).order_by("code"),
        required=False,
        help_text="Member traders and viewers only.",
    )


class UserAddForm(forms.Form):
    username = forms.CharField(max_length=150, help_text=User._meta.get_field("username").help_text)
    email = forms.EmailField(required=False)
    role = forms.ChoiceField(
        choices=[(role.value, role.label) for role in Role if role != Role.NONE],
        help_text="A staff or system role is proposed: the user gets it when a second security admin "
        "approves, and has no role until then. Member users are created at once.",
    )
    member = _member_field()
    password1 = forms.CharField(
        label="Password",
        required=False,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text="Blank: no password (system users sign in with API tokens).",
    )
    password2 = forms.CharField(
        label="Password confirmation",
        required=False,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )
    reason = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 70}),
        help_text="For staff and system roles: why this person needs the role (the approver reads it).",
    )

    def clean(self):
        data = super().clean()
        if data.get("password1", "") != data.get("password2", ""):
            self.add_error("password2", "The two passwords differ.")
        return data


class UserRoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)
    member = _member_field()
    reason = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 70}),
        help_text="Required when a staff or system role is given or taken away (the approver reads it).",
    )


class NoteForm(forms.Form):
    note = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 4, "cols": 70}))


class ApiTokenIssueForm(forms.Form):
    name = forms.CharField(
        max_length=100, required=False, help_text="A label to recognise the token, e.g. “back office”."
    )


class UserDetailsForm(forms.ModelForm):
    """The user's change page: name, e-mail, active. Role and password have their own pages."""

    actor: User | None = None  # set per request by UserAdmin.get_form

    class Meta:
        model = User
        fields = ["first_name", "last_name", "email", "is_active"]

    def clean(self):
        data = super().clean()
        if self.actor is not None and "is_active" in data:
            try:
                # self.instance still holds the stored values here (the form writes them later).
                user_details_check(user=self.instance, changed_by=self.actor, is_active=data["is_active"])
            except ValidationError as error:
                errors_add(self, error)
        return data


class MemberAuthenticationForm(AuthenticationForm):
    """The member sign-in page (``/login/``). When staff need a second factor they sign in at the
    admin, which asks for it; a password alone does not make a staff session here."""

    def confirm_login_allowed(self, user):
        super().confirm_login_allowed(user)
        if settings.STAFF_OTP_REQUIRED and user.is_staff:
            raise ValidationError(
                "Venue staff sign in at /admin/ with the code from their authenticator app.", code="staff"
            )

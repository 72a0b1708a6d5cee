"""Members, accounts and assets for ops; users, roles, passwords, tokens and second factors for
security admins (through ``accounts.access``, which checks the rules again and logs every act)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin.helpers import AdminForm
from django.contrib.admin.utils import unquote
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminPasswordChangeForm
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.access import (
    GRANT_PROPOSE_PERMISSION,
    TOKEN_ISSUE_PERMISSION,
    TOKEN_REVOKE_PERMISSION,
    api_token_issue_check,
    api_token_issue_for,
    api_token_revoke_by,
    otp_device_remove,
    role_change_needs_approval,
    role_grant_approve,
    role_grant_may_decide,
    role_grant_propose,
    role_grant_reject,
    role_grant_withdraw,
    user_details_change,
    user_member_create,
    user_password_check,
    user_password_set,
    user_privileged_create,
    user_role_set,
)
from accounts.forms import (
    ApiTokenIssueForm,
    NoteForm,
    UserAddForm,
    UserDetailsForm,
    UserRoleForm,
    errors_add,
)
from accounts.models import (
    PRIVILEGED_ROLES,
    ApiToken,
    Asset,
    CollateralBalance,
    CollateralMovement,
    Deposit,
    DepositState,
    DepositStep,
    GrantStatus,
    Member,
    RoleGrant,
    SecurityEvent,
    User,
    Withdrawal,
    WithdrawalState,
    WithdrawalStep,
)
from clearing.admin_mixins import ReadOnlyAdminMixin

FORM_PAGE = "admin/accounts/form_page.html"


def _page(model_admin, request, original, template: str = FORM_PAGE, **context):
    return TemplateResponse(
        request,
        template,
        {
            **model_admin.admin_site.each_context(request),
            "opts": model_admin.model._meta,
            "original": original,
            "media": model_admin.media,
            **context,
        },
    )


def _change_url(obj) -> str:
    return reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])


@admin.register(Member)
class MemberAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "is_active", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["code", "name"]


class SecurityEventInline(admin.TabularInline):
    """The user's security history (read-only; shown to those who may read the security log)."""

    model = SecurityEvent
    fk_name = "user"
    extra = 0
    can_delete = False
    fields = ["at", "action", "actor", "role", "note", "changes"]
    readonly_fields = fields
    verbose_name_plural = "Security history"

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("actor")


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    """Security admins' user pages. Nothing here writes a user directly: adding, details, role,
    password and tokens each go through ``accounts.access``. Ops and risk approvers see the list
    and the pages read-only (view permission only)."""

    list_display = ["username", "role", "member", "is_active", "last_login"]
    list_filter = ["role", "member", "is_active"]
    search_fields = ["username", "email", "member__code"]
    form = UserDetailsForm
    fieldsets = (
        (None, {"fields": ("username", "password_status")}),
        ("Personal", {"fields": ("first_name", "last_name", "email")}),
        ("Role", {"fields": ("role", "member", "open_grant")}),
        ("Status", {"fields": ("is_active", "last_login", "date_joined")}),
    )
    readonly_fields = [
        "username",
        "password_status",
        "role",
        "member",
        "open_grant",
        "last_login",
        "date_joined",
    ]
    inlines = [SecurityEventInline]
    actions = None

    def has_delete_permission(self, request, obj=None):
        return False  # users are kept (the audit log refers to them): deactivate instead

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        return type(form.__name__, (form,), {"actor": request.user})

    @admin.display(description="password")
    def password_status(self, user):
        return "set" if user.has_usable_password() else "none (password sign-in disabled)"

    @admin.display(description="awaiting approval")
    def open_grant(self, user):
        grant = user.role_grants.filter(status=GrantStatus.PROPOSED).first()
        if grant is None:
            return "—"
        return format_html(
            '<a href="{}">{} proposed by {}</a>',
            _change_url(grant),
            grant.get_role_display(),
            grant.proposed_by.username,
        )

    def save_model(self, request, obj, form, change):
        if not change:
            raise PermissionDenied  # users are added through add_view and accounts.access
        user_details_change(
            user=obj,
            changed_by=request.user,
            **{name: form.cleaned_data[name] for name in ("email", "first_name", "last_name", "is_active")},
        )

    def change_view(self, request, object_id, form_url="", extra_context=None):
        user = self.get_object(request, unquote(object_id))
        extra_context = {**(extra_context or {}), "security_tools": self._tools(request, user)}
        return super().change_view(request, object_id, form_url, extra_context)

    def _tools(self, request, user: User | None) -> list[tuple[str, str]]:
        if user is None or not self.has_change_permission(request, user):
            return []
        tools = []
        if request.user.has_perm(GRANT_PROPOSE_PERMISSION) and user.pk != request.user.pk:
            tools.append(("Role…", reverse("admin:accounts_user_role", args=[user.pk])))
        try:
            user_password_check(user=user, set_by=request.user)
        except ValidationError:
            pass
        else:
            tools.append(("Set password…", reverse("admin:auth_user_password_change", args=[user.pk])))
        if request.user.has_perm(TOKEN_ISSUE_PERMISSION):
            tools.append(("Issue API token…", reverse("admin:accounts_user_token", args=[user.pk])))
        return tools

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<path:object_id>/role/", view(self.role_view), name="accounts_user_role"),
            path("<path:object_id>/token/", view(self.token_view), name="accounts_user_token"),
            *super().get_urls(),
        ]

    def _user_or_404(self, request, object_id) -> User:
        user = self.get_object(request, unquote(object_id))
        if user is None:
            raise Http404("No such user.")
        return user

    # --- Pages ---------------------------------------------------------------------------------

    @method_decorator(sensitive_post_parameters())
    @method_decorator(csrf_protect)
    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = UserAddForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            common = {
                "created_by": request.user,
                "username": data["username"],
                "role": data["role"],
                "password": data["password1"] or None,
                "email": data["email"],
            }
            try:
                if data["role"] in PRIVILEGED_ROLES:
                    grant = user_privileged_create(**common, reason=data["reason"])
                    user = grant.user
                    note = (
                        f"{user.username} was created with no role; the grant of "
                        f"“{grant.get_role_display()}” awaits a second security admin."
                    )
                else:
                    user = user_member_create(**common, member=data["member"])
                    note = f"{user.username} was created ({user.get_role_display()})."
            except ValidationError as error:
                errors_add(form, error, {"password": "password1"})
            else:
                self.log_addition(request, user, [{"added": {}}])
                self.message_user(request, note, messages.SUCCESS)
                return redirect(_change_url(user))
        return _page(
            self,
            request,
            None,
            title="Add user",
            form=form,
            submit="Add user",
            cancel_url=reverse("admin:accounts_user_changelist"),
        )

    def role_view(self, request, object_id):
        user = self._user_or_404(request, object_id)
        if not (
            self.has_change_permission(request, user) and request.user.has_perm(GRANT_PROPOSE_PERMISSION)
        ):
            raise PermissionDenied
        initial = {"role": user.role, "member": user.member}
        form = UserRoleForm(request.POST if request.method == "POST" else None, initial=initial)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                if role_change_needs_approval(user=user, role=data["role"]):
                    grant = role_grant_propose(
                        user=user,
                        role=data["role"],
                        member=data["member"],
                        proposed_by=request.user,
                        reason=data["reason"],
                    )
                    note = (
                        f"Proposed: {user.username} → {grant.get_role_display()}. "
                        "A second security admin decides."
                    )
                else:
                    user_role_set(
                        user=user,
                        changed_by=request.user,
                        role=data["role"],
                        member=data["member"],
                        reason=data["reason"],
                    )
                    note = f"{user.username} is now {user.get_role_display()}."
            except ValidationError as error:
                errors_add(form, error)
            else:
                self.message_user(request, note, messages.SUCCESS)
                return redirect(_change_url(user))
        return _page(
            self,
            request,
            user,
            title=f"Role of {user.username}",
            explain="Member roles change at once. Giving or taking away a staff or system role is a "
            "proposal: it takes effect when a second security admin approves it.",
            form=form,
            submit="Save or propose",
            cancel_url=_change_url(user),
        )

    @method_decorator(sensitive_post_parameters())
    @method_decorator(csrf_protect)
    def user_change_password(self, request, id, form_url=""):
        user = self._user_or_404(request, id)
        if not self.has_change_permission(request, user):
            raise PermissionDenied
        try:
            user_password_check(user=user, set_by=request.user)
        except ValidationError:
            raise PermissionDenied from None
        form = AdminPasswordChangeForm(user, request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            disable = not form.cleaned_data["set_usable_password"]
            if disable and "unset-password" not in request.POST:
                self.message_user(
                    request, "Conflicting form data submitted. Please try again.", messages.ERROR
                )
                return HttpResponseRedirect(request.get_full_path())
            try:
                user_password_set(
                    user=user,
                    set_by=request.user,
                    password=None if disable else form.cleaned_data["password1"],
                )
            except ValidationError as error:
                errors_add(form, error, {"password": "password2"})
            else:
                self.log_change(request, user, [{"changed": {"fields": ["password"]}}])
                self.message_user(request, "Password set.", messages.SUCCESS)
                return redirect(_change_url(user))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Set password: {user.username}",
            "adminForm": AdminForm(form, [(None, {"fields": list(form.base_fields)})], {}),
            "form_url": form_url,
            "form": form,
            "is_popup": False,
            "add": True,
            "change": False,
            "has_delete_permission": False,
            "has_change_permission": True,
            "has_absolute_url": False,
            "opts": self.opts,
            "original": user,
            "save_as": False,
            "show_save": True,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/auth/user/change_password.html", context)

    @method_decorator(never_cache)
    def token_view(self, request, object_id):
        user = self._user_or_404(request, object_id)
        if not request.user.has_perm(TOKEN_ISSUE_PERMISSION):
            raise PermissionDenied
        form = ApiTokenIssueForm(request.POST if request.method == "POST" else None)
        refusal = None
        try:
            api_token_issue_check(user=user, issued_by=request.user)
        except ValidationError as error:
            refusal, form = " ".join(error.messages), None
        if form is not None and request.method == "POST" and form.is_valid():
            try:
                record, token = api_token_issue_for(user=user, issued_by=request.user, **form.cleaned_data)
            except ValidationError as error:
                errors_add(form, error)
            else:
                return _page(
                    self,
                    request,
                    user,
                    "admin/accounts/user/token_issued.html",
                    title=f"API token for {user.username}",
                    token=token,
                    record=record,
                )
        return _page(
            self,
            request,
            user,
            title=f"Issue an API token for {user.username}",
            explain="The token acts as this user through the API. It is shown once, on the next page; "
            "only its digest is stored. Issuing it is logged.",
            refusal=refusal,
            form=form,
            submit="Issue token",
            cancel_url=_change_url(user),
        )


@admin.register(RoleGrant)
class RoleGrantAdmin(admin.ModelAdmin):
    """Proposals to give or take away staff and system roles. They are made on a user's Role page
    and decided here by a second security admin; nothing here is edited."""

    list_display = [
        "user",
        "from_role",
        "role",
        "member",
        "status",
        "proposed_by",
        "proposed_at",
        "decided_by",
    ]
    list_filter = ["status", "role"]
    search_fields = ["user__username", "proposed_by__username", "reason"]
    list_select_related = ["user", "member", "proposed_by", "decided_by"]
    fields = [
        "user",
        "from_role",
        "role",
        "member",
        "reason",
        "status",
        "proposed_by",
        "proposed_at",
        "decided_by",
        "decided_at",
        "decision_note",
    ]
    readonly_fields = fields
    actions = None

    def has_add_permission(self, request):
        return False  # proposals start on the user's Role page

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def _decisions(self, request, grant: RoleGrant) -> list[tuple[str, str]]:
        decisions = []
        if role_grant_may_decide(grant=grant, user=request.user):
            decisions += [
                ("Approve…", reverse("admin:accounts_rolegrant_approve", args=[grant.pk])),
                ("Reject…", reverse("admin:accounts_rolegrant_reject", args=[grant.pk])),
            ]
        if grant.is_open and grant.proposed_by_id == request.user.pk:
            decisions.append(("Withdraw…", reverse("admin:accounts_rolegrant_withdraw", args=[grant.pk])))
        return decisions

    def change_view(self, request, object_id, form_url="", extra_context=None):
        grant = self.get_object(request, unquote(object_id))
        extra_context = {**(extra_context or {})}
        if grant is not None:
            extra_context["security_tools"] = self._decisions(request, grant)
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            *(
                path(
                    f"<path:object_id>/{action}/",
                    view(self.decision_view),
                    {"action": action},
                    name=f"accounts_rolegrant_{action}",
                )
                for action in DECISIONS
            ),
            *super().get_urls(),
        ]

    def decision_view(self, request, object_id, action):
        grant = self.get_object(request, unquote(object_id))
        if grant is None:
            raise Http404("No such role grant.")
        spec = DECISIONS[action]
        allowed = {label for label, _ in self._decisions(request, grant)}
        if f"{spec['title']}…" not in allowed:
            raise PermissionDenied
        form = NoteForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            try:
                spec["run"](grant, request.user, form.cleaned_data["note"])
            except ValidationError as error:
                errors_add(form, error)
            else:
                grant.refresh_from_db()
                self.message_user(
                    request,
                    f"{grant.user.username} → {grant.get_role_display()}: {grant.status}.",
                    messages.SUCCESS,
                )
                return redirect(_change_url(grant))
        return _page(
            self,
            request,
            grant,
            title=f"{spec['title']} the grant of {grant.get_role_display()} to {grant.user.username}",
            explain=spec["explain"],
            summary=[
                (
                    "User",
                    f"{grant.user.username} (now {grant.user.get_role_display()}"
                    f"{'' if grant.user.is_active else ', inactive'})",
                ),
                ("Role proposed", grant.get_role_display()),
                ("Proposed by", f"{grant.proposed_by.username} on {grant.proposed_at:%Y-%m-%d %H:%M} UTC"),
                ("Reason", grant.reason),
            ],
            form=form,
            submit=spec["title"],
            cancel_url=_change_url(grant),
        )


DECISIONS = {
    "approve": {
        "title": "Approve",
        "run": lambda grant, user, note: role_grant_approve(grant=grant, approved_by=user, note=note),
        "explain": "The user gets the role now (and is active again if it is a staff or system role). "
        "Check the user's security history first: who created them, who set their password.",
    },
    "reject": {
        "title": "Reject",
        "run": lambda grant, user, note: role_grant_reject(grant=grant, rejected_by=user, note=note),
        "explain": "The proposal is kept, rejected, with your reason; the user's role does not change.",
    },
    "withdraw": {
        "title": "Withdraw",
        "run": lambda grant, user, note: role_grant_withdraw(grant=grant, withdrawn_by=user, note=note),
        "explain": "Your proposal is kept, withdrawn, with your reason; the user's role does not change.",
    },
}


@admin.register(SecurityEvent)
class SecurityEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["at", "action", "actor", "user", "role", "note"]
    list_filter = ["action"]
    search_fields = ["user__username", "actor__username", "note"]
    list_select_related = ["actor", "user"]
    date_hierarchy = "at"


@admin.register(TOTPDevice)
class TOTPDeviceAdmin(admin.ModelAdmin):
    """Second factors: seen, and removed when a phone is lost (the owner enrols again at the next
    sign-in). Never added or edited here, and the secret is never shown: the owner enrols their own
    device (``accounts.admin_site``). Registered before django-otp's own admin, which would show it."""

    list_display = ["user", "name", "confirmed", "created_at", "last_used_at"]
    list_filter = ["confirmed"]
    search_fields = ["user__username"]
    fields = ["user", "name", "confirmed", "created_at", "last_used_at"]
    readonly_fields = fields
    actions = None

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and (obj is None or obj.user_id != request.user.pk)

    def delete_model(self, request, obj):
        otp_device_remove(device=obj, removed_by=request.user)


@admin.register(Asset)
class AssetAdmin(admin.ModelAdmin):
    list_display = ["symbol", "name", "underlying", "decimals", "is_active"]
    list_filter = ["is_active"]
    search_fields = ["symbol", "name"]


@admin.register(CollateralMovement)
class CollateralMovementAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "created_at", "account", "asset", "kind", "amount", "trade", "created_by"]
    list_filter = ["kind", "asset"]
    search_fields = ["account__code", "reference"]
    list_select_related = ["account", "asset", "created_by"]
    date_hierarchy = "created_at"


@admin.register(CollateralBalance)
class CollateralBalanceAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["account", "asset", "amount", "updated_at"]
    list_filter = ["asset"]
    search_fields = ["account__code"]
    list_select_related = ["account", "asset"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are issued by security admins on a user's page (or with ``manage.py
    issue_api_token``); the secret is shown once, there. Here they are seen and revoked."""

    list_display = ["prefix", "name", "user", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["prefix", "name", "user__username"]
    readonly_fields = ["user", "name", "prefix", "created_at", "last_used_at", "revoked_at"]
    fields = readonly_fields
    actions = ["revoke"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False  # nothing to edit; revoking is the action below

    def has_revoke_permission(self, request):
        return request.user.has_perm(TOKEN_REVOKE_PERMISSION)

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Revoke the selected tokens", permissions=["revoke"])
    def revoke(self, request, queryset):
        for token in queryset.filter(revoked_at__isnull=True).order_by("pk"):
            api_token_revoke_by(token=token, revoked_by=request.user)
        self.message_user(request, "Revoked.", messages.SUCCESS)


# --- Custody: requests and their steps, read-only (they change only through the custodian's API) ---


class StateFilter(admin.SimpleListFilter):
    """Filter requests by their derived state: no terminal step yet (the first choice), or the
    kind of their step."""

    title = "state"
    parameter_name = "state"
    states: type = DepositState

    def lookups(self, request, model_admin):
        return self.states.choices

    def queryset(self, request, queryset):
        value = self.value()
        if value is None:
            return queryset
        if value == self.states.values[0]:
            return queryset.filter(step__isnull=True)
        return queryset.filter(step__kind=value)


class WithdrawalStateFilter(StateFilter):
    states = WithdrawalState


class DepositStepInline(ReadOnlyAdminMixin, admin.StackedInline):
    model = DepositStep
    fields = readonly_fields = ["kind", "reference", "movement", "created_by", "created_at"]
    verbose_name = verbose_name_plural = "Terminal step"


class WithdrawalStepInline(ReadOnlyAdminMixin, admin.StackedInline):
    model = WithdrawalStep
    fields = readonly_fields = ["kind", "reference", "reason", "release", "created_by", "created_at"]
    verbose_name = verbose_name_plural = "Terminal step"


@admin.register(Deposit)
class DepositAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "created_at",
        "account",
        "asset",
        "amount",
        "origin",
        "state",
        "expires_at",
        "created_by",
    ]
    list_filter = [StateFilter, "origin", "asset"]
    search_fields = ["account__code", "note", "step__reference"]
    list_select_related = ["account", "asset", "created_by", "step"]
    inlines = [DepositStepInline]
    date_hierarchy = "created_at"


@admin.register(Withdrawal)
class WithdrawalAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "created_at", "account", "asset", "amount", "state", "destination", "requested_by"]
    list_filter = [WithdrawalStateFilter, "asset"]
    search_fields = ["account__code", "destination", "step__reference"]
    list_select_related = ["account", "asset", "requested_by", "step"]
    inlines = [WithdrawalStepInline]
    date_hierarchy = "created_at"


# --- Insurance fund: ops propose, a different risk approver decides ---------------------------------

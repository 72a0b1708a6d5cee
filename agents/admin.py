"""The agents in the admin: read-only for every staff role, and ops suspend or resume any policy
(with a reason the member sees) through ``agents.services``, which audits it. Secrets are never
shown: an endpoint's encrypted secret is not even listed."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from agents.models import (
    AutoTransfer,
    BandPolicy,
    HedgeFill,
    HedgePolicy,
    HedgeRequest,
    PolicyChange,
    WebhookAttempt,
    WebhookEndpoint,
)
from agents.services import SUSPEND_PERMISSIONS, policy_kind, policy_resume, policy_suspend
from clearing.admin_mixins import ReadOnlyAdminMixin

FORM_PAGE = "admin/accounts/form_page.html"


class ReasonForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 4, "cols": 70}))


class PolicyAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """A policy, read-only, with ops' suspend and resume pages."""

    list_filter = ["is_active", ("suspended_at", admin.EmptyFieldListFilter)]
    list_select_related = ["account"]
    search_fields = ["account__code", "account__member__code"]

    def get_readonly_fields(self, request, obj=None):
        return [*(f.name for f in self.model._meta.fields), "ops_tools"]

    def _may_suspend(self, request) -> bool:
        return request.user.has_perm(SUSPEND_PERMISSIONS[policy_kind(self.model())])

    @admin.display(description="Ops")
    def ops_tools(self, obj):
        if obj is None or not obj.pk:
            return "—"
        action = "resume" if obj.suspended_at else "suspend"
        url = reverse(f"admin:agents_{self.model._meta.model_name}_{action}", args=[obj.pk])
        return format_html('<a class="button" href="{}">{}…</a>', url, action.capitalize())

    @admin.display(description="State")
    def state(self, obj) -> str:
        return obj.state

    def get_urls(self):
        view, name = self.admin_site.admin_view, self.model._meta.model_name
        return [
            *(
                path(
                    f"<path:object_id>/{action}/",
                    view(self.suspend_view),
                    {"action": action},
                    name=f"agents_{name}_{action}",
                )
                for action in ("suspend", "resume")
            ),
            *super().get_urls(),
        ]

    def suspend_view(self, request, object_id, action):
        policy = self.get_object(request, unquote(object_id))
        if policy is None:
            raise Http404("No such policy.")
        if not self._may_suspend(request):
            raise PermissionDenied
        form = ReasonForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            reason = form.cleaned_data["reason"]
            try:
                if action == "suspend":
                    policy_suspend(policy=policy, user=request.user, reason=reason)
                else:
                    policy_resume(policy=policy, user=request.user, note=reason)
            except ValidationError as error:
                form.add_error("reason", error.messages)
            else:
                self.message_user(request, f"{policy}: {action}d.", messages.SUCCESS)
                change = reverse(f"admin:agents_{self.model._meta.model_name}_change", args=[policy.pk])
                return redirect(change)
        return TemplateResponse(
            request,
            FORM_PAGE,
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "original": policy,
                "title": f"{action.capitalize()} {policy}",
                "explain": "A suspended policy keeps its settings and does nothing until resumed; the member "
                "sees it suspended, with this reason. Both are in the policy changes log."
                if action == "suspend"
                else "The policy acts again from the next sweep. Say why it may.",
                "form": form,
                "submit": action.capitalize(),
                "cancel_url": reverse(f"admin:agents_{self.model._meta.model_name}_change", args=[policy.pk]),
            },
        )


@admin.register(BandPolicy)
class BandPolicyAdmin(PolicyAdmin):
    list_display = [
        "account", "funding_account", "search_level", "target_level", "release_level", "state", "updated_at",
    ]  # fmt: skip


@admin.register(HedgePolicy)
class HedgePolicyAdmin(PolicyAdmin):
    list_display = [
        "account",
        "underlying",
        "instrument",
        "mode",
        "target_delta_usd",
        "threshold_usd",
        "state",
    ]
    list_select_related = ["account", "underlying", "instrument"]


@admin.register(AutoTransfer)
class AutoTransferAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "created_at",
        "account",
        "funding_account",
        "direction",
        "legs",
        "ratio_before",
        "ratio_after",
    ]
    list_filter = ["direction"]
    list_select_related = ["account", "funding_account"]
    search_fields = ["account__code", "funding_account__code"]
    date_hierarchy = "created_at"


class AttemptInline(admin.TabularInline):
    model = WebhookAttempt
    fields = ["number", "started_at", "status_code", "outcome", "error", "duration_ms", "next_attempt_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(HedgeRequest)
class HedgeRequestAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "account", "instrument", "quantity", "mode", "status", "attempts"]
    list_filter = ["status", "mode"]
    list_select_related = ["account", "instrument"]
    search_fields = ["account__code", "idempotency_id"]
    date_hierarchy = "created_at"
    inlines = [AttemptInline]


@admin.register(HedgeFill)
class HedgeFillAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "hedge_request", "trade"]


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["member", "url", "secret_hint", "is_active", "created_at", "deactivated_at"]
    list_filter = ["is_active"]
    exclude = ["secret_encrypted"]
    search_fields = ["member__code", "url"]


@admin.register(WebhookAttempt)
class WebhookAttemptAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["started_at", "hedge_request", "endpoint", "number", "status_code", "outcome", "error"]
    list_filter = ["outcome"]
    date_hierarchy = "started_at"


@admin.register(PolicyChange)
class PolicyChangeAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["at", "kind", "object_id", "action", "member", "account", "actor", "note"]
    list_filter = ["kind", "action"]
    list_select_related = ["member", "account", "actor"]
    search_fields = ["member__code", "account__code", "actor__username", "note"]
    date_hierarchy = "at"

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from accounts.custody import CustodyConflict, fund_withdrawal_propose, fund_withdrawal_reject
from accounts.models import (
    ApiToken,
    Asset,
    CollateralBalance,
    CollateralMovement,
    Deposit,
    DepositState,
    DepositStep,
    FundWithdrawalDecision,
    FundWithdrawalProposal,
    MarginAccount,
    Member,
    User,
    Withdrawal,
    WithdrawalState,
    WithdrawalStep,
)
from accounts.services import api_token_revoke
from clearing.admin_mixins import ReadOnlyAdminMixin


@admin.register(Member)
class MemberAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "is_active", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["code", "name"]


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = ["username", "role", "member", "is_active", "last_login"]
    list_filter = ["role", "member", "is_active"]
    search_fields = ["username", "email", "member__code"]
    fieldsets = (
        *DjangoUserAdmin.fieldsets[:1],
        ("Role", {"fields": ("role", "member")}),
        ("Status", {"fields": ("is_active", "last_login", "date_joined")}),
    )
    add_fieldsets = (
        (None, {"classes": ("wide",), "fields": ("username", "role", "member", "password1", "password2")}),
    )
    readonly_fields = ["last_login", "date_joined"]


@admin.register(MarginAccount)
class MarginAccountAdmin(admin.ModelAdmin):
    list_display = ["code", "member", "mode", "created_at"]
    list_filter = ["mode", "member"]
    search_fields = ["code", "name", "member__code", "member__name"]
    list_select_related = ["member"]


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
    """Tokens are issued with ``manage.py issue_api_token`` (the secret is shown once, there);
    here ops see them and revoke them."""

    list_display = ["prefix", "name", "user", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["prefix", "name", "user__username"]
    readonly_fields = ["user", "prefix", "created_at", "last_used_at", "revoked_at"]
    fields = ["user", "name", "prefix", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Revoke the selected tokens", permissions=["change"])
    def revoke(self, request, queryset):
        for token in queryset.filter(revoked_at__isnull=True).order_by("pk"):
            api_token_revoke(token=token)
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

FUND_APPROVE_PERMISSION = "accounts.approve_fundwithdrawalproposal"
FUND_PROPOSE_PERMISSION = "accounts.add_fundwithdrawalproposal"


class FundWithdrawalProposeForm(forms.Form):
    asset = forms.ModelChoiceField(queryset=Asset.objects.filter(is_active=True).order_by("symbol"))
    amount = forms.DecimalField(max_digits=28, decimal_places=10, min_value=0)
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 60}), max_length=2000)
    destination = forms.CharField(max_length=200, required=False, help_text="Where custody is to send it.")


class FundWithdrawalDecideForm(forms.Form):
    note = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        max_length=2000,
        required=False,
        help_text="Required to reject: the reason is kept with the decision.",
    )


class FundWithdrawalDecisionInline(ReadOnlyAdminMixin, admin.StackedInline):
    model = FundWithdrawalDecision
    fk_name = "proposal"
    fields = readonly_fields = ["decision", "decided_by", "note", "withdrawal", "created_at"]
    verbose_name = verbose_name_plural = "Decision"


def _form_errors(form: forms.Form, error: ValidationError) -> None:
    fields = set(form.fields)
    for field, messages_ in (
        error.message_dict.items() if hasattr(error, "error_dict") else [(None, error.messages)]
    ):
        form.add_error(field if field in fields else None, messages_)


@admin.register(FundWithdrawalProposal)
class FundWithdrawalProposalAdmin(admin.ModelAdmin):
    """Proposals and decisions are append-only: the add page proposes (ops), the decide page of a
    proposal approves or rejects it (a risk approver who did not propose it). Both call the
    services, which check the roles again."""

    list_display = [
        "id",
        "created_at",
        "asset",
        "amount",
        "state",
        "proposed_by",
        "decided_by",
        "withdrawal_state",
    ]
    list_select_related = ["asset", "proposed_by", "decision__decided_by", "decision__withdrawal__step"]
    readonly_fields = [
        "account",
        "asset",
        "amount",
        "reason",
        "destination",
        "proposed_by",
        "created_at",
        "decide",
    ]
    fields = readonly_fields
    inlines = [FundWithdrawalDecisionInline]

    def has_add_permission(self, request):
        return request.user.has_perm(FUND_PROPOSE_PERMISSION)

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="decided by")
    def decided_by(self, obj):
        decision = obj.decision_or_none
        return decision.decided_by if decision else "—"

    @admin.display(description="custody")
    def withdrawal_state(self, obj):
        decision = obj.decision_or_none
        return decision.withdrawal.state if decision and decision.withdrawal else "—"

    @admin.display(description="decision")
    def decide(self, obj):
        if obj.decision_or_none is not None:
            return obj.state
        url = reverse("admin:accounts_fundwithdrawalproposal_decide", args=[obj.pk])
        return format_html('<a class="button" href="{}">Approve or reject…</a>', url)

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path(
                "<path:object_id>/decide/",
                view(self.decide_view),
                name="accounts_fundwithdrawalproposal_decide",
            ),
            *super().get_urls(),
        ]

    def _page(self, request, template: str, **context):
        return TemplateResponse(
            request,
            f"admin/accounts/fundwithdrawalproposal/{template}",
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "media": self.media,
                **context,
            },
        )

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = FundWithdrawalProposeForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                proposal = fund_withdrawal_propose(proposed_by=request.user, **form.cleaned_data)
            except ValidationError as error:
                _form_errors(form, error)
            else:
                self.message_user(
                    request,
                    f"Proposed #{proposal.pk}: a risk approver other than you must approve it.",
                    messages.SUCCESS,
                )
                return redirect("admin:accounts_fundwithdrawalproposal_change", proposal.pk)
        return self._page(request, "propose.html", title="Propose an insurance-fund withdrawal", form=form)

    def decide_view(self, request, object_id):
        proposal = self.get_object(request, object_id)
        if proposal is None:
            raise Http404("No such proposal.")
        user = request.user
        if not user.has_perm(FUND_APPROVE_PERMISSION) or proposal.proposed_by_id == user.pk:
            raise PermissionDenied
        form = FundWithdrawalDecideForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            from riskengine.withdrawals import fund_withdrawal_approve

            note = form.cleaned_data["note"]
            try:
                if "reject" in request.POST:
                    fund_withdrawal_reject(proposal=proposal, rejected_by=user, note=note)
                else:
                    fund_withdrawal_approve(proposal=proposal, approved_by=user, note=note)
            except ValidationError as error:
                _form_errors(form, error)
            except CustodyConflict as error:
                form.add_error(None, str(error))
            else:
                proposal.refresh_from_db()
                self.message_user(request, f"#{proposal.pk}: {proposal.state}.", messages.SUCCESS)
                return redirect("admin:accounts_fundwithdrawalproposal_change", proposal.pk)
        return self._page(
            request,
            "decide.html",
            title=f"Decide insurance-fund withdrawal #{proposal.pk}",
            original=proposal,
            form=form,
        )

"""Risk parameter governance in the admin: drafts are edited here, then proposed, previewed,
approved by a second person (a risk approver) and activated; every step is in the set's history.

Edits are possible only while a set is a draft (the admin shows other sets read-only and the models
refuse changes). The buttons on a set's page lead to confirmation pages that call the services in
``riskengine.services``, which check the roles again. The insurance fund's withdrawal proposals
are here too (their approval runs the engine's margin check).
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from accounts.custody import CustodyConflict, fund_withdrawal_propose, fund_withdrawal_reject
from accounts.models import AccountKind, Asset, FundWithdrawalDecision, FundWithdrawalProposal, MarginAccount
from clearing.admin_mixins import ReadOnlyAdminMixin
from clearing.models import Position
from riskengine.allocations import margin_account_mode_change, margin_account_mode_plan
from riskengine.forms import (
    ACCEPT_NEAREST,
    CorrelationGridWidget,
    HaircutBracketForm,
    HaircutBracketFormSet,
    ParameterSetForm,
    UnderlyingParametersForm,
    correlation_project,
    parameter_set_underlyings,
)
from riskengine.models import (
    AssetParameters,
    EventAction,
    HaircutBracket,
    ParameterSet,
    ParameterSetEvent,
    ParameterStatus,
    StressScenario,
    UnderlyingParameters,
)
from riskengine.selectors import (
    NoActiveParameterSet,
    parameter_set_impact,
    parameter_set_version_suggest,
)
from riskengine.services import (
    ADD_PERMISSION,
    APPROVE_PERMISSION,
    EDIT_PERMISSION,
    TRANSITIONS,
    parameter_set_approve,
    parameter_set_draft_from,
    parameter_set_edit_record,
    parameter_set_event_record,
    parameter_set_propose,
    parameter_set_refusal,
    parameter_set_reject,
    parameter_set_validate,
    parameter_set_withdraw,
)

# Model validation's admin (runs, per-account results, "Run now") registers when imported here.
from riskengine.validation import admin as validation_admin  # noqa: F401
from riskengine.validation.selectors import (
    proposal_comparison,
    proposal_validation,
    worst_account_backtests,
    worst_account_stresses,
)
from riskengine.validation.services import validation_proposal_start
from riskengine.withdrawals import fund_withdrawal_approve

# The admin index links the ops dashboard (riskengine.views.ops_dashboard).
admin.site.index_template = "admin/riskengine/index.html"


def status_badge(status: str):
    label = ParameterStatus(status).label
    return format_html('<span class="gov-status gov-status-{}">{}</span>', status, label)


def may(user, parameter_set: ParameterSet | None, action: str) -> bool:
    """Whether ``user`` may take ``action`` on ``parameter_set``: the buttons shown. A transition's
    button follows the services' own table (``parameter_set_refusal``), so it is shown exactly
    when the service would accept it."""
    if action == "new_draft":
        return user.has_perm(ADD_PERMISSION)
    if parameter_set is None:
        return False
    if action in TRANSITIONS:
        return parameter_set_refusal(parameter_set=parameter_set, action=action, user=user) is None
    if action == "validate":
        return parameter_set.status == ParameterStatus.PROPOSED and (
            user.has_perm(EDIT_PERMISSION) or user.has_perm(APPROVE_PERMISSION)
        )
    if action == "impact":
        return parameter_set.status in (
            ParameterStatus.DRAFT,
            ParameterStatus.PROPOSED,
            ParameterStatus.APPROVED,
        )
    return False


class DraftRowsInline:
    """Rows are editable while their set is a draft, by users who may edit parameter sets."""

    def _editable(self, request, obj) -> bool:
        return (obj is None or obj.is_draft) and request.user.has_perm(EDIT_PERMISSION)

    def has_add_permission(self, request, obj=None):
        return self._editable(request, obj) and super().has_add_permission(request, obj)

    def has_change_permission(self, request, obj=None):
        return self._editable(request, obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return self._editable(request, obj)


class UnderlyingParametersInline(DraftRowsInline, admin.StackedInline):
    model = UnderlyingParameters
    form = UnderlyingParametersForm
    extra = 0
    verbose_name_plural = "Underlyings: scan ranges, standard-rule fractions and oracle thresholds"
    fieldsets = [
        (None, {"fields": ["underlying"]}),
        ("Scan (portfolio rules)", {"fields": [("psr", "vol_up", "vol_down"), "extreme"]}),
        (
            "Basis, short options, concentration",
            {"fields": [("min_basis", "basis_rate", "som_rate"), ("conc_threshold", "conc_rate")]},
        ),
        ("Standard rules (isolated, cross)", {"fields": [("imf", "mmf")]}),
        (
            "Oracle safety",
            {
                "fields": [
                    ("max_age_seconds", "max_deviation", "min_sources"),
                    ("breaker_move", "breaker_window_seconds", "event_move"),
                ]
            },
        ),
    ]


class AssetParametersInline(DraftRowsInline, admin.TabularInline):
    model = AssetParameters
    extra = 0
    fields = ["asset", "liability_addon"]
    verbose_name_plural = "Collateral assets: liability add-on (haircut brackets below)"


class HaircutBracketInline(DraftRowsInline, admin.TabularInline):
    model = HaircutBracket
    form = HaircutBracketForm
    formset = HaircutBracketFormSet
    extra = 0
    fields = ["asset", "up_to", "haircut"]
    verbose_name_plural = "Haircut brackets (per asset: 'up to' increasing, the last one blank = no limit)"


class StressScenarioInline(DraftRowsInline, admin.TabularInline):
    model = StressScenario
    extra = 0
    fields = ["number", "name", "underlyings", "others", "stablecoin_price", "iv_factor"]
    verbose_name_plural = (
        "Hypothetical stress scenarios (methodology section 8: price factors, stablecoins' price, iv factor)"
    )


class ParameterSetEventInline(admin.TabularInline):
    """The set's history: every transition and edit, who, when and why (read-only)."""

    model = ParameterSetEvent
    extra = 0
    can_delete = False
    fields = ["at", "action", "actor_name", "from_status", "to_status", "note", "changes"]
    readonly_fields = fields
    verbose_name_plural = "History"

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("actor")

    @admin.display(description="by")
    def actor_name(self, event):
        return event.actor.username if event.actor_id else "system"


@admin.register(ParameterSet)
class ParameterSetAdmin(admin.ModelAdmin):
    form = ParameterSetForm
    change_form_template = "admin/riskengine/parameterset/change_form.html"
    list_display = [
        "version",
        "status_display",
        "origin",
        "effective_at",
        "proposed_by",
        "decided_by",
        "activated_at",
        "created_at",
    ]
    list_filter = ["status", "origin"]
    search_fields = ["version", "reason"]
    list_select_related = ["proposed_by", "decided_by"]
    inlines = [
        UnderlyingParametersInline,
        AssetParametersInline,
        HaircutBracketInline,
        StressScenarioInline,
        ParameterSetEventInline,
    ]
    governance_fields = [
        "status_display",
        "origin",
        "based_on",
        "created_by",
        "created_at",
        "proposed_by",
        "proposed_at",
        "decided_by",
        "decided_at",
        "decision_note",
        "activated_at",
    ]
    readonly_fields = [*governance_fields, "correlation_grid"]

    def get_fieldsets(self, request, obj=None):
        editable = obj is None or obj.is_draft
        return [
            ("Set", {"fields": ["version", "effective_at", "reason"]}),
            (
                "Margin (methodology sections 4b and 5)",
                {
                    "fields": [
                        ("mm_ratio", "offset_cap"),
                        ("lookahead_days", "rate"),
                        ("price_steps", "min_vol"),
                        ("pivot_days", "short_power", "long_power"),
                        ("option_imf", "option_min", "option_mmf"),
                    ]
                },
            ),
            ("Correlation", {"fields": ["correlation" if editable else "correlation_grid"]}),
            (
                "Operations",
                {"fields": [("cure_period_minutes", "sweep_interval_seconds"), "insurance_fund_floor"]},
            ),
            (
                "Liquidation foresight and the warning ladder",
                {
                    "fields": [
                        ("foresight_horizon_days", "foresight_below_ratio"),
                        ("warning_watch_sigmas", "warning_warning_sigmas"),
                        ("warning_watch_ratio", "warning_warning_ratio"),
                        "warning_hysteresis",
                    ]
                },
            ),
            ("Governance", {"fields": self.governance_fields}),
        ]

    @admin.display(description="status", ordering="status")
    def status_display(self, obj):
        return status_badge(obj.status)

    @admin.display(description="correlation")
    def correlation_grid(self, obj):
        widget = CorrelationGridWidget()
        value = correlation_project(obj.correlation or {}, parameter_set_underlyings(obj))
        return widget.render("correlation", value, attrs={"disabled": True})

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and (obj is None or obj.is_draft)

    def has_delete_permission(self, request, obj=None):
        return False  # sets are kept for ever: withdraw or reject instead

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        parameter_set = form.instance
        # Keep the matrix's rows and columns in step with the set's underlyings (added or removed
        # in the inlines just saved).
        projected = correlation_project(
            parameter_set.correlation or {}, parameter_set_underlyings(parameter_set)
        )
        if projected != parameter_set.correlation:
            parameter_set.correlation = projected
            parameter_set.save(update_fields=["correlation"])
        if change:
            parameter_set_edit_record(
                parameter_set=parameter_set,
                edited_by=request.user,
                changes=self.construct_change_message(request, form, formsets, add=False),
            )
        else:
            parameter_set_event_record(
                parameter_set=parameter_set,
                action=EventAction.CREATED,
                actor=request.user,
                note=parameter_set.reason,
                to_status=ParameterStatus.DRAFT,
            )

    def response_change(self, request, obj):
        if ACCEPT_NEAREST in request.POST:
            self.message_user(
                request, "The nearest valid correlation matrix was saved: review it.", messages.WARNING
            )
            return HttpResponseRedirect(request.path)
        return super().response_change(request, obj)

    def response_add(self, request, obj, post_url_continue=None):
        if ACCEPT_NEAREST in request.POST:
            return HttpResponseRedirect(reverse("admin:riskengine_parameterset_change", args=[obj.pk]))
        return super().response_add(request, obj, post_url_continue)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        obj = self.get_object(request, object_id)
        extra_context = extra_context or {}
        if obj is not None:
            extra_context["governance"] = self._governance_context(request, obj)
        return super().change_view(request, object_id, form_url, extra_context)

    def _governance_context(self, request, obj: ParameterSet) -> dict:
        user = request.user
        readiness = None
        if obj.is_draft:
            try:
                parameter_set_validate(parameter_set=obj)
            except ValidationError as error:
                readiness = [f"{field}: {'; '.join(msgs)}" for field, msgs in error.message_dict.items()]
            else:
                readiness = []
        active = ParameterSet.objects.filter(status=ParameterStatus.ACTIVE).only("pk", "version").first()
        stale_base = (
            active is not None
            and obj.status in (ParameterStatus.DRAFT, ParameterStatus.PROPOSED, ParameterStatus.APPROVED)
            and obj.based_on_id is not None
            and obj.based_on_id != active.pk
        )
        actions = [
            name
            for name in ("impact", "validate", "propose", "approve", "reject", "withdraw", "new_draft")
            if may(user, obj, name)
        ]
        own_proposal = (
            obj.status == ParameterStatus.PROPOSED
            and user.has_perm(APPROVE_PERMISSION)
            and obj.proposed_by_id == user.pk
        )
        return {
            "actions": actions,
            "readiness": readiness,
            "active": active,
            "stale_base": stale_base,
            "own_proposal": own_proposal,
            "validation": self._validation_context(obj) if obj.status == ParameterStatus.PROPOSED else None,
        }

    @staticmethod
    def _validation_context(obj: ParameterSet) -> dict:
        """The proposal's backtest and stress beside the active set's (riskengine.validation)."""
        verdict = proposal_validation(proposed=obj)
        runs = [(verdict.current, "active"), (verdict.proposed, "proposed")]
        done = [(run, label) for run, label in runs if run is not None and run.status == "done"]
        return {
            "verdict": verdict,
            "active": verdict.current.parameter_set if verdict.current is not None else None,
            "rows": proposal_comparison(verdict=verdict) if done else [],
            "worst": [(label, worst_account_backtests(run=run, limit=5)) for run, label in done],
            "stressed": [(label, worst_account_stresses(run=run, limit=5)) for run, label in done],
        }

    # --- Governance pages ------------------------------------------------------------------------

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path(
                "<path:object_id>/new-draft/",
                view(self.new_draft_view),
                name="riskengine_parameterset_new_draft",
            ),
            path("<path:object_id>/impact/", view(self.impact_view), name="riskengine_parameterset_impact"),
            path(
                "<path:object_id>/validate/",
                view(self.validate_view),
                name="riskengine_parameterset_validate",
            ),
            *(
                path(
                    f"<path:object_id>/{action}/",
                    view(self.transition_view),
                    {"action": action},
                    name=f"riskengine_parameterset_{action}",
                )
                for action in TRANSITIONS
            ),
            *super().get_urls(),
        ]

    def _object_or_404(self, request, object_id) -> ParameterSet:
        obj = self.get_object(request, object_id)
        if obj is None:
            raise Http404("No such parameter set.")
        if not self.has_view_permission(request, obj):
            raise PermissionDenied
        return obj

    def _page(self, request, obj, template: str, **context):
        return TemplateResponse(
            request,
            f"admin/riskengine/parameterset/{template}",
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "original": obj,
                "status": status_badge(obj.status),
                "media": self.media,
                **context,
            },
        )

    def new_draft_view(self, request, object_id):
        base = self._object_or_404(request, object_id)
        if not may(request.user, base, "new_draft"):
            raise PermissionDenied
        errors: list[str] = []
        version = request.POST.get("version", "").strip() or parameter_set_version_suggest()
        reason = request.POST.get("note", "")
        if request.method == "POST":
            try:
                draft = parameter_set_draft_from(
                    base=base, created_by=request.user, version=version, reason=reason
                )
            except ValidationError as error:
                errors = error.messages
            else:
                self.message_user(
                    request, f"Draft {draft.version} created from {base.version}.", messages.SUCCESS
                )
                return redirect("admin:riskengine_parameterset_change", draft.pk)
        return self._page(
            request,
            base,
            "new_draft.html",
            title=f"New draft from {base.version}",
            errors=errors,
            version=version,
            note=reason,
        )

    def transition_view(self, request, object_id, action):
        obj = self._object_or_404(request, object_id)
        spec = TRANSITION_PAGES[action]
        if not may(request.user, obj, action):
            raise PermissionDenied
        errors: list[str] = []
        note = request.POST.get("note", "")
        if request.method == "POST":
            try:
                spec["run"](obj, request.user, note)
            except ValidationError as error:
                errors = error.messages
            else:
                obj.refresh_from_db()
                self.message_user(
                    request,
                    f"{obj.version}: {spec['done']} (now {obj.get_status_display()}).",
                    messages.SUCCESS,
                )
                return redirect("admin:riskengine_parameterset_change", obj.pk)
        context = {
            "title": f"{spec['title']} {obj.version}",
            "action": action,
            "spec": spec,
            "errors": errors,
        }
        context["note"] = note
        if action == "approve":
            context.update(self._impact_context(obj))
            context["governance"] = self._governance_context(request, obj)
            context["validation"] = context["governance"]["validation"]
        return self._page(request, obj, "transition.html", **context)

    def validate_view(self, request, object_id):
        """Run the proposal's validation (again): a failed or missing one, or after the active set
        changed."""
        obj = self._object_or_404(request, object_id)
        if not may(request.user, obj, "validate"):
            raise PermissionDenied
        if request.method == "POST":
            runs = validation_proposal_start(proposed=obj, requested_by=request.user)
            states = ", ".join(f"{run.parameter_set.version}: {run.status}" for run in runs) or "not started"
            self.message_user(request, f"Validation of {obj.version} started ({states}).", messages.INFO)
            return redirect("admin:riskengine_parameterset_change", obj.pk)
        return self._page(
            request,
            obj,
            "validate.html",
            title=f"Validate {obj.version}",
            validation=self._validation_context(obj),
        )

    def _impact_context(self, obj: ParameterSet) -> dict:
        try:
            return {"impact": parameter_set_impact(proposed=obj)}
        except NoActiveParameterSet as error:
            return {"impact_error": str(error)}
        except ValidationError as error:
            return {"impact_error": "; ".join(error.messages)}

    def impact_view(self, request, object_id):
        obj = self._object_or_404(request, object_id)
        if not may(request.user, obj, "impact"):
            raise PermissionDenied
        return self._page(
            request, obj, "impact.html", title=f"Impact preview of {obj.version}", **self._impact_context(obj)
        )


def _propose(obj, user, note):
    parameter_set_propose(parameter_set=obj, proposed_by=user, reason=note)


def _approve(obj, user, note):
    parameter_set_approve(parameter_set=obj, approved_by=user, note=note)


def _reject(obj, user, note):
    parameter_set_reject(parameter_set=obj, rejected_by=user, note=note)


def _withdraw(obj, user, note):
    parameter_set_withdraw(parameter_set=obj, withdrawn_by=user, note=note)


TRANSITION_PAGES = {
    "propose": {
        "title": "Propose",
        "label": "Why is this change needed? (shown to the approver and kept in the history)",
        "button": "Propose for approval",
        "done": "proposed",
        "run": _propose,
        "explain": "The set is validated by the engine and frozen; a risk approver other than you "
        "must approve it before it takes effect.",
    },
    "approve": {
        "title": "Approve",
        "label": "Note (optional)",
        "button": "Approve",
        "done": "approved",
        "run": _approve,
        "explain": "Approval activates the set at its effective time (at once if it is unset or past) "
        "and triggers a full sweep of every account.",
    },
    "reject": {
        "title": "Reject",
        "label": "Why is it rejected?",
        "button": "Reject",
        "done": "rejected",
        "run": _reject,
        "explain": "The proposal is kept, marked rejected, with your reason.",
    },
    "withdraw": {
        "title": "Withdraw",
        "label": "Why is it withdrawn?",
        "button": "Withdraw",
        "done": "withdrawn",
        "run": _withdraw,
        "explain": "The set is kept, marked withdrawn; it can never become active.",
    },
}


# --- Insurance fund withdrawals ------------------------------------------------------------------
# The proposals are accounts' rows, but approving one runs the risk engine's margin check
# (``riskengine.withdrawals.fund_withdrawal_approve``): their admin lives with that check.

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


class MarginAccountAdminForm(forms.ModelForm):
    """Registered here, not in ``accounts``: a margin account's admin judges mode changes with the
    risk engine, which depends on ``accounts``.

    A change of an existing account's margin mode is judged by the engine before it is saved
    (``riskengine.allocations.margin_account_mode_plan``): refused on the ``mode`` field when the
    account's status would be worse, or while a price it depends on is not trusted."""

    class Meta:
        model = MarginAccount
        fields = ["member", "code", "name", "mode", "kind"]

    def clean(self):
        data = super().clean()
        if (
            self.instance.pk
            and data.get("kind") == AccountKind.FUNDING
            and Position.objects.filter(account_id=self.instance.pk).exclude(quantity=0).exists()
        ):
            # A funding account margins nothing: it may hold no position.
            self.add_error("kind", "This account holds open positions: it cannot be a funding account.")
        if self.instance.pk and "mode" in self.changed_data and data.get("mode"):
            stored = MarginAccount.objects.get(pk=self.instance.pk)
            try:
                margin_account_mode_plan(account=stored, mode=data["mode"])
            except ValidationError as error:
                self.add_error(None, error)
            except CustodyConflict as error:  # PricesUntrusted
                self.add_error("mode", str(error))
        return data


@admin.register(MarginAccount)
class MarginAccountAdmin(admin.ModelAdmin):
    form = MarginAccountAdminForm
    list_display = ["code", "member", "kind", "mode", "created_at"]
    list_filter = ["kind", "mode", "member"]
    search_fields = ["code", "name", "member__code", "member__name"]
    list_select_related = ["member"]

    def save_model(self, request, obj, form, change):
        if not (change and "mode" in form.changed_data):
            return super().save_model(request, obj, form, change)
        # The mode changes only through the service, which allocates or releases explicitly (and
        # judges again under the account lock); the other fields are saved as usual.
        mode, obj.mode = obj.mode, form.initial["mode"]
        super().save_model(request, obj, form, change)
        plan = margin_account_mode_change(account=obj, mode=mode, changed_by=request.user)
        obj.mode = plan.mode
        allocated = sum(plan.allocations)
        self.message_user(
            request,
            f"{obj.code} is now in {plan.mode} mode ({plan.status_before.replace('_', ' ')} before, "
            f"{plan.status_after.replace('_', ' ')} after); {allocated:,.2f} USD allocated to its positions.",
            messages.INFO,
        )
        return None

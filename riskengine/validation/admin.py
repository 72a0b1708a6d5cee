"""Validation runs in the admin: read-only for everyone (runs change only through their services),
with "Run now" on the list for whoever may start one (``riskengine.run_validationrun``: ops and
risk approvers). Registered by ``riskengine.admin``, which Django's admin discovers."""

from __future__ import annotations

import json

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import redirect
from django.urls import path
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from clearing.admin_mixins import ReadOnlyAdminMixin
from riskengine.selectors import NoActiveParameterSet
from riskengine.validation.models import (
    AccountBacktest,
    AccountStress,
    ValidationKind,
    ValidationRun,
    ValidationShard,
)
from riskengine.validation.services import validation_runs_start

RUN_PERMISSION = "riskengine.run_validationrun"


class ValidationShardInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = ValidationShard
    fields = [
        "number", "status", "accounts", "backtested", "first_account_id", "last_account_id", "worker",
        "finished_at", "timings", "error",
    ]  # fmt: skip
    readonly_fields = fields
    extra = 0


@admin.register(ValidationRun)
class ValidationRunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    change_list_template = "admin/riskengine/validationrun/change_list.html"
    list_display = [
        "id", "kind", "mode", "parameter_set", "status", "light", "coverage", "cover_2", "fund_value",
        "backtested", "started_at", "finished_at",
    ]  # fmt: skip
    list_filter = ["kind", "mode", "status", "light", "parameter_set"]
    list_select_related = ["parameter_set"]
    date_hierarchy = "started_at"
    inlines = [ValidationShardInline]
    fields = [
        "kind", "mode", "mpor_days", "parameter_set", "proposal", "cause", "requested_by", "status", "error",
        "valuation_time", "first_day", "last_day", "observations", "accounts", "backtested", "fund_value",
        "fund_unpriced", "light", "report_text", "started_at", "finished_at",
    ]  # fmt: skip
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).defer("market", "history", "series")

    @admin.display(description="pooled coverage")
    def coverage(self, obj: ValidationRun) -> str:
        pooled = (obj.report or {}).get("pooled")
        return "—" if not pooled else f"{pooled['coverage']:.4f}"

    @admin.display(description="Cover-2 (USD)")
    def cover_2(self, obj: ValidationRun) -> str:
        cover = (obj.report or {}).get("cover_2")
        return "—" if not cover else f"{cover['amount']:,.0f}"

    @admin.display(description="report")
    def report_text(self, obj: ValidationRun):
        return format_html("<pre>{}</pre>", json.dumps(obj.report, indent=1))

    def get_urls(self):
        return [
            path(
                "run-now/",
                self.admin_site.admin_view(require_POST(self.run_now_view)),
                name="riskengine_validationrun_run_now",
            ),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "may_run": request.user.has_perm(RUN_PERMISSION)}
        return super().changelist_view(request, extra_context)

    def run_now_view(self, request):
        if not request.user.has_perm(RUN_PERMISSION):
            raise PermissionDenied
        try:
            runs = validation_runs_start(
                kind=ValidationKind.ON_DEMAND,
                cause=f"run now by {request.user.username}",
                requested_by=request.user,
            )
        except (NoActiveParameterSet, ValidationError) as error:
            self.message_user(request, f"No run started: {error}", messages.ERROR)
        else:
            started = ", ".join(f"{run.pk} ({run.mode}, {run.status})" for run in runs)
            self.message_user(request, f"Validation runs started: {started}.", messages.SUCCESS)
        return redirect("admin:riskengine_validationrun_changelist")


@admin.register(AccountBacktest)
class AccountBacktestAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "account",
        "run",
        "observations",
        "exceptions",
        "coverage",
        "light",
        "peak_to_trough",
    ]
    list_filter = ["light", "run__mode", "run__kind"]
    search_fields = ["account__code", "account__member__code"]
    list_select_related = ["account"]
    raw_id_fields = ["run", "account"]
    exclude = ["series"]


@admin.register(AccountStress)
class AccountStressAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "account",
        "member",
        "run",
        "equity",
        "worst_scenario",
        "worst_loss",
        "worst_uncovered",
    ]
    search_fields = ["account__code", "member__code"]
    list_select_related = ["account", "member"]
    raw_id_fields = ["run", "account", "member"]

"""The uncovered deficits in the admin, read-only (they are a ledger). Venue roles see them once
``accounts.roles`` grants ``ops.view_uncovereddeficit`` (superusers do now)."""

from django.contrib import admin

from clearing.admin_mixins import ReadOnlyAdminMixin
from clearing.ops.models import UncoveredDeficit


@admin.register(UncoveredDeficit)
class UncoveredDeficitAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["at", "uncovered", "fund_value", "cause", "liquidation"]
    list_select_related = ["liquidation"]
    date_hierarchy = "at"

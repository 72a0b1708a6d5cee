"""The uncovered deficits in the admin, read-only (they are a ledger). Venue roles see them once
``accounts.roles`` grants ``ops.view_uncovereddeficit`` (superusers do now). Ops alerts are
read-only too: ops resolve them through ``clearing.ops.alerts``, never by editing rows."""

from django.contrib import admin, messages

from clearing.admin_mixins import ReadOnlyAdminMixin
from clearing.ops.alerts import ops_alert_resolve
from clearing.ops.models import OpsAlert, UncoveredDeficit

# Not a model permission (no row in auth_permission): roles are code (accounts/roles.py) and the
# role backend grants this string to ops.
RESOLVE_PERMISSION = "ops.resolve_opsalert"


@admin.register(UncoveredDeficit)
class UncoveredDeficitAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["at", "uncovered", "fund_value", "cause", "liquidation"]
    list_select_related = ["liquidation"]
    date_hierarchy = "at"


@admin.register(OpsAlert)
class OpsAlertAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["kind", "key", "message", "raise_count", "created_at", "last_raised_at", "resolved_at"]
    list_filter = [("resolved_at", admin.EmptyFieldListFilter), "kind"]
    search_fields = ["kind", "key", "message"]
    date_hierarchy = "last_raised_at"
    actions = ["resolve"]

    def has_resolve_permission(self, request) -> bool:
        return request.user.has_perm(RESOLVE_PERMISSION)

    @admin.action(description="Resolve the selected alerts", permissions=["resolve"])
    def resolve(self, request, queryset):
        # One service call per alert: the service is the one writer of resolutions.
        resolved = sum(
            ops_alert_resolve(kind=kind, key=key)
            for kind, key in queryset.filter(resolved_at=None).values_list("kind", "key")
        )
        self.message_user(request, f"{resolved} alert(s) resolved.", messages.SUCCESS)

"""Sweeps in the admin: what the engine computed and what it set in motion, read-only for everyone
(margin calls and liquidations change only through the sweep services)."""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from clearing.admin_mixins import ReadOnlyAdminMixin
from riskengine.sweeps.models import (
    AccountMargin,
    Liquidation,
    MarginCall,
    MarginCallEvent,
    MarginSnapshot,
    Sweep,
    SweepShard,
)


class SweepShardInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = SweepShard
    fields = [
        "number", "status", "accounts", "first_account_id", "last_account_id", "worker", "read_at",
        "finished_at", "timings", "error",
    ]  # fmt: skip
    readonly_fields = fields
    extra = 0
    show_change_link = False


@admin.register(Sweep)
class SweepAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id", "kind", "cause", "status", "accounts", "shards", "started_at", "duration", "parameter_set",
    ]  # fmt: skip
    list_filter = ["kind", "status", "parameter_set"]
    search_fields = ["cause"]
    list_select_related = ["parameter_set"]
    date_hierarchy = "started_at"
    inlines = [SweepShardInline]

    @admin.display(description="shards")
    def shards(self, obj: Sweep) -> str:
        return f"{obj.shards_done}/{obj.shard_count}"

    @admin.display(description="duration")
    def duration(self, obj: Sweep) -> str:
        if obj.finished_at is None:
            return "running"
        return f"{(obj.finished_at - obj.started_at).total_seconds():.2f} s"


@admin.register(MarginSnapshot)
class MarginSnapshotAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id", "account", "sweep", "read_at", "mode", "status", "equity", "initial_margin",
        "maintenance_margin", "margin_ratio",
    ]  # fmt: skip
    list_filter = ["status", "mode", "sweep__kind"]
    search_fields = ["account__code", "account__member__code"]
    list_select_related = ["account", "sweep"]
    date_hierarchy = "read_at"
    # The sweep's market JSON is large: link to the sweep instead of a select over all sweeps.
    raw_id_fields = ["sweep", "shard", "account", "parameter_set"]


@admin.register(AccountMargin)
class AccountMarginAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "account",
        "status",
        "equity",
        "initial_margin",
        "maintenance_margin",
        "read_at",
        "snapshot_link",
    ]
    list_filter = ["status", "account__kind"]
    search_fields = ["account__code", "account__member__code"]
    list_select_related = ["account"]
    raw_id_fields = ["account", "snapshot"]

    @admin.display(description="snapshot")
    def snapshot_link(self, obj: AccountMargin) -> str:
        url = reverse("admin:sweeps_marginsnapshot_change", args=[obj.snapshot_id])
        return format_html('<a href="{}">{}</a>', url, obj.snapshot_id)


class MarginCallEventInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = MarginCallEvent
    fields = ["at", "from_status", "to_status", "cause", "snapshot"]
    readonly_fields = fields
    extra = 0


@admin.register(MarginCall)
class MarginCallAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "account", "status", "amount", "opened_at", "deadline", "closed_at"]
    list_filter = ["status"]
    search_fields = ["account__code", "account__member__code"]
    list_select_related = ["account"]
    date_hierarchy = "opened_at"
    raw_id_fields = ["account", "opened_by"]
    inlines = [MarginCallEventInline]


@admin.register(Liquidation)
class LiquidationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id", "account", "status", "started_at", "finished_at", "closed_notional", "fee", "deficit_covered",
    ]  # fmt: skip
    list_filter = ["status"]
    search_fields = ["account__code", "account__member__code"]
    list_select_related = ["account"]
    date_hierarchy = "started_at"
    raw_id_fields = ["account", "call", "sweep", "trades"]

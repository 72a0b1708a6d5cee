from django.contrib import admin

from clearing.admin_mixins import ReadOnlyAdminMixin
from clearing.models import Instrument, Position, Trade, Underlying


@admin.register(Underlying)
class UnderlyingAdmin(admin.ModelAdmin):
    list_display = ["symbol", "name", "is_active"]
    list_filter = ["is_active"]
    search_fields = ["symbol", "name"]


@admin.register(Instrument)
class InstrumentAdmin(admin.ModelAdmin):
    list_display = ["symbol", "kind", "underlying", "multiplier", "expiry", "strike", "right", "is_active"]
    list_filter = ["kind", "underlying", "right", "is_active"]
    search_fields = ["symbol"]
    list_select_related = ["underlying"]


@admin.register(Trade)
class TradeAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "executed_at",
        "account",
        "instrument",
        "quantity",
        "price",
        "external_id",
        "booked_by",
    ]
    list_filter = ["instrument__underlying", "instrument__kind"]
    search_fields = ["account__code", "instrument__symbol", "external_id"]
    list_select_related = ["account", "instrument", "booked_by"]
    date_hierarchy = "executed_at"


@admin.register(Position)
class PositionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["account", "instrument", "quantity", "entry_price", "realised_pnl", "updated_at"]
    list_filter = ["instrument__underlying", "instrument__kind"]
    search_fields = ["account__code", "instrument__symbol"]
    list_select_related = ["account", "instrument"]

"""Market data in the admin. Observations and index prices are append-only ledgers and the oracle
states are derived: all read-only. Ops may deactivate a price source, resolve alerts and confirm a
move the circuit breaker holds — each through the oracle's services, never by editing rows."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.http import url_has_allowed_host_and_scheme

from clearing.admin_mixins import ReadOnlyAdminMixin
from clearing.marketdata.models import IndexPrice, IndexState, PriceObservation, PriceSource
from clearing.marketdata.services import index_price_confirm

# Not model permissions (no rows in auth_permission): roles are code (accounts/roles.py) and the
# role backend grants these strings to ops.
CONFIRM_PERMISSION = "marketdata.confirm_indexprice"


@admin.register(PriceSource)
class PriceSourceAdmin(admin.ModelAdmin):
    """Sources are registered by ``price_source_register`` (a ``price_source`` user); here ops
    switch one off (its observations are then refused) or back on."""

    list_display = ["name", "user", "is_active", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["name", "user__username"]
    list_select_related = ["user"]
    readonly_fields = ["user", "name", "created_at"]
    fields = ["name", "user", "is_active", "created_at"]

    def has_add_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(PriceObservation)
class PriceObservationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "symbol", "price", "source", "source_time", "received_at"]
    list_filter = ["symbol", "source"]
    search_fields = ["symbol", "source__name"]
    list_select_related = ["source"]
    date_hierarchy = "received_at"
    # The ledger grows by millions of rows: no full count for the paginator.
    show_full_result_count = False


@admin.register(IndexPrice)
class IndexPriceAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "symbol",
        "status",
        "price",
        "last_good_price",
        "sources",
        "computed_at",
        "confirmed_by",
    ]
    list_filter = ["status", "symbol"]
    search_fields = ["symbol", "note"]
    list_select_related = ["confirmed_by"]
    date_hierarchy = "computed_at"
    show_full_result_count = False
    raw_id_fields = ["observation"]


@admin.register(IndexState)
class IndexStateAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "symbol", "kind", "status", "last_good_price", "last_good_at", "pending_price", "pending_since",
        "fresh_until",
    ]  # fmt: skip
    list_filter = ["status", "kind"]
    search_fields = ["symbol"]
    raw_id_fields = ["last_index_price", "last_good_index_price"]

    def get_urls(self):
        return [
            path(
                "<str:symbol>/confirm/",
                self.admin_site.admin_view(self.confirm_view),
                name="marketdata_indexstate_confirm",
            ),
            *super().get_urls(),
        ]

    def confirm_view(self, request, symbol: str):
        """POST: accept the held move of ``symbol`` (``index_price_confirm``), then go back."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not request.user.has_perm(CONFIRM_PERMISSION):
            raise PermissionDenied
        get_object_or_404(IndexState, symbol=symbol)
        try:
            row = index_price_confirm(symbol=symbol, confirmed_by=request.user)
        except ValidationError as error:
            messages.error(request, " ".join(error.messages))
        else:
            messages.success(request, f"{symbol}: {row.note}.")
        target = request.POST.get("next", "")
        if not url_has_allowed_host_and_scheme(
            target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            target = reverse("admin:marketdata_indexstate_changelist")
        return HttpResponseRedirect(target)

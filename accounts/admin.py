from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from accounts.models import (
    ApiToken,
    Asset,
    CollateralBalance,
    CollateralMovement,
    MarginAccount,
    Member,
    User,
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

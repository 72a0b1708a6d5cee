"""Admin behaviour shared by every ledger and derived table."""

from __future__ import annotations


class ReadOnlyAdminMixin:
    """Ledgers and derived state change only through services: the admin shows them, never edits."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

"""Authentication backend that adds each user's role permissions to Django's model backend."""

from __future__ import annotations

from django.contrib.auth.backends import ModelBackend

from accounts.roles import role_permissions


class RolePermissionBackend(ModelBackend):
    def get_all_permissions(self, user_obj, obj=None):
        if not user_obj.is_active or user_obj.is_anonymous or obj is not None:
            return set()
        return super().get_all_permissions(user_obj, obj) | set(role_permissions(user_obj.role))

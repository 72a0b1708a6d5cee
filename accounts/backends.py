"""Authentication backend: Django's model backend, with each user's role permissions and with
``accounts.selectors.user_admitted`` deciding who may sign in or stay signed in."""

from __future__ import annotations

from django.contrib.auth.backends import ModelBackend

from accounts.models import User
from accounts.roles import role_permissions
from accounts.selectors import user_admitted


class RolePermissionBackend(ModelBackend):
    def user_can_authenticate(self, user) -> bool:
        # Login (``authenticate``) and every request's session user (``get_user``) go through
        # here: a user of a deactivated member can neither sign in nor keep using a session it
        # opened before, in the pages, the API's session auth and the websocket alike.
        return user_admitted(user=user)

    def get_user(self, user_id):
        # The member is read with the user (one query per request, as before): the admission
        # rule and the pages need it.
        user = User._default_manager.select_related("member").filter(pk=user_id).first()
        return user if user is not None and self.user_can_authenticate(user) else None

    async def aget_user(self, user_id):
        user = await User._default_manager.select_related("member").filter(pk=user_id).afirst()
        return user if user is not None and self.user_can_authenticate(user) else None

    def get_all_permissions(self, user_obj, obj=None):
        if not user_obj.is_active or user_obj.is_anonymous or obj is not None:
            return set()
        return super().get_all_permissions(user_obj, obj) | set(role_permissions(user_obj.role))

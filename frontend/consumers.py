"""Websocket consumers: ``/ws/margin/`` pushes a member's account events to its browser.

Who may connect (the ASGI app already checks that the ``Origin`` is the page's own origin or a
trusted one, ``frontend.origins``, and loads the session user through the authentication backend,
which refuses deactivated users and users of deactivated members):

* member users (``trader``, ``viewer``): the socket joins the group of exactly the accounts
  ``margin_accounts_visible`` returns for them — their member's — and so receives only those events;
* everyone else is refused at the handshake: anonymous visitors, system users (price sources, the
  venue) and venue staff. Staff see every account, and a socket subscribed to the whole venue is
  not what the member app is for; staff follow accounts in the admin.

On connect the consumer sends ``{"type": "hello", "accounts": [{"id", "code"}, …]}``. Events are
notifications: the page re-reads the current state from the server on every ``hello``, so a page
that connects late or reconnects after a gap catches up from the database, not from missed pushes.
Events reach the socket through the process's hub (``frontend.hub``), which also re-checks the
socket's session every few seconds and closes it (code 4401) once the session has ended: signed
out, the password changed, the user or its member deactivated.
"""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from accounts.selectors import SessionGrant, margin_accounts_visible, user_admitted, user_password_digest
from clearing.events import account_group
from frontend.hub import hub_get
from frontend.relay import relay_ensure_started

# Close codes in the application range (4000–4999) so the page can tell "sign in again" apart
# from a network drop worth retrying.
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403


@database_sync_to_async
def _member_accounts(user) -> list[dict] | None:
    """The accounts a member user may watch, or None when the user may not use the socket."""
    if not user_admitted(user=user) or not user.is_member_user:
        return None
    return [
        {"id": pk, "code": code} for pk, code in margin_accounts_visible(user=user).values_list("pk", "code")
    ]


class MarginConsumer(AsyncJsonWebsocketConsumer):
    # No channel-layer channel per socket: events arrive through this process's hub (frontend.hub).
    channel_layer_alias = "none: sockets receive through frontend.hub"

    account_groups: list[str] = []
    # Set once the hub found the session ended: nothing is sent any more, even before the close
    # handshake completes.
    ended = False

    async def connect(self) -> None:
        user = self.scope.get("user")
        session = self.scope.get("session")
        if user is None or not user.is_authenticated or session is None or not session.session_key:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        accounts = await _member_accounts(user)
        if accounts is None:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        relay_ensure_started()
        self.account_groups = [account_group(account["id"]) for account in accounts]
        await self.accept()
        hub = hub_get()
        # The user as it was admitted (channels.auth verified the session against its password):
        # a password change after this moment changes the digest.
        grant = SessionGrant(
            session_key=session.session_key, user_id=user.pk, password_digest=user_password_digest(user=user)
        )
        hub.session_watch(grant=grant, revoke=self.session_end)
        # Subscribed before the hello: the page re-reads its state on every hello, so nothing
        # committed before or during the handshake is missed.
        await hub.subscribe(groups=self.account_groups, sink=self.event_deliver)
        await self.send_json({"type": "hello", "accounts": accounts})

    async def _leave(self) -> None:
        hub = hub_get()
        hub.session_unwatch(revoke=self.session_end)
        if self.account_groups:
            groups, self.account_groups = self.account_groups, []
            await hub.unsubscribe(groups=groups, sink=self.event_deliver)

    async def disconnect(self, code: int) -> None:
        await self._leave()

    async def session_end(self) -> None:
        """Called by the hub once this socket's session no longer admits its user."""
        self.ended = True
        await self._leave()
        await self.close(code=CLOSE_UNAUTHENTICATED)

    async def receive_json(self, content, **kwargs) -> None:
        # The socket is push-only; a ping keeps proxies from closing an idle connection.
        if not self.ended and isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong"})

    async def event_deliver(self, text: str) -> None:
        if not self.ended:
            await self.send(text_data=text)

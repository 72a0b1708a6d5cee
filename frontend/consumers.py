"""Websocket consumers: ``/ws/margin/`` pushes a member's account events to its browser.

Who may connect (the ASGI app already checks the ``Origin`` against ``ALLOWED_HOSTS`` and loads the
session user):

* member users (``trader``, ``viewer``): the socket joins the group of exactly the accounts
  ``margin_accounts_visible`` returns for them — their member's — and so receives only those events;
* everyone else is refused at the handshake: anonymous visitors, system users (price sources, the
  venue) and venue staff. Staff see every account, and a socket subscribed to the whole venue is
  not what the member app is for; staff follow accounts in the admin.

On connect the consumer sends ``{"type": "hello", "accounts": [{"id", "code"}, …]}``. Events are
notifications: the page re-reads the current state from the server on every ``hello``, so a page
that connects late or reconnects after a gap catches up from the database, not from missed pushes.
Events reach the socket through the process's hub (``frontend.hub``).
"""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from accounts.selectors import margin_accounts_visible
from frontend.events import account_group
from frontend.hub import hub_get
from frontend.relay import relay_ensure_started

# Close codes in the application range (4000–4999) so the page can tell "sign in again" apart
# from a network drop worth retrying.
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403


@database_sync_to_async
def _member_accounts(user) -> list[dict] | None:
    """The accounts a member user may watch, or None when the user may not use the socket."""
    if not user.is_authenticated or not user.is_active or not user.is_member_user:
        return None
    return [
        {"id": pk, "code": code} for pk, code in margin_accounts_visible(user=user).values_list("pk", "code")
    ]


class MarginConsumer(AsyncJsonWebsocketConsumer):
    # No channel-layer channel per socket: events arrive through this process's hub (frontend.hub).
    channel_layer_alias = "none: sockets receive through frontend.hub"

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        accounts = await _member_accounts(user)
        if accounts is None:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        relay_ensure_started()
        self.account_groups = [account_group(account["id"]) for account in accounts]
        await self.accept()
        # Subscribed before the hello: the page re-reads its state on every hello, so nothing
        # committed before or during the handshake is missed.
        await hub_get().subscribe(groups=self.account_groups, sink=self.event_deliver)
        await self.send_json({"type": "hello", "accounts": accounts})

    async def disconnect(self, code: int) -> None:
        if getattr(self, "account_groups", None):
            await hub_get().unsubscribe(groups=self.account_groups, sink=self.event_deliver)

    async def receive_json(self, content, **kwargs) -> None:
        # The socket is push-only; a ping keeps proxies from closing an idle connection.
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong"})

    async def event_deliver(self, text: str) -> None:
        await self.send(text_data=text)

"""Websocket routes (served under the ASGI app's session authentication and origin check)."""

websocket_urlpatterns: list = []

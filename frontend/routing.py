"""Websocket routes (served under the ASGI app's session authentication and origin check)."""

from django.urls import path

from frontend.consumers import MarginConsumer

websocket_urlpatterns: list = [
    path("ws/margin/", MarginConsumer.as_asgi()),
]

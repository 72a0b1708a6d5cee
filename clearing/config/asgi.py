"""ASGI entry point: HTTP through Django on a fixed pool of request threads per process
(``clearing.server.asgi_handler``), websockets through Channels (session auth, an exact origin check:
``frontend.origins``)."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clearing.config.settings")
django.setup(set_prefix=False)

from django.conf import settings  # noqa: E402

from clearing.server.asgi_handler import ThreadPoolASGIHandler  # noqa: E402

django_asgi_app = ThreadPoolASGIHandler(threads=settings.WEB_THREADS)

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs the app registry ready)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from frontend.origins import WebsocketOriginValidator  # noqa: E402
from frontend.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": WebsocketOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)

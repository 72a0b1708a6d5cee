"""The websocket's ``Origin`` check: exact scheme, host and port.

A browser sends the cookie of our session with a websocket handshake to our host from any page,
including an attacker's (cross-site websocket hijacking); the ``Origin`` header, which the page
cannot forge, is the only thing that tells our pages apart. Channels' ``AllowedHostsOriginValidator``
compares only the host name with ``ALLOWED_HOSTS``, so ``http://clearing.example.org:8080`` (another
service on the same host) or a plain-HTTP page of the same name pass. Here the rule is Django's own
CSRF origin rule for the web app's forms, so a socket is accepted from exactly the pages whose form
posts Django accepts:

* the handshake's own origin — ``https`` for ``wss`` (or when ``SECURE_PROXY_SSL_HEADER`` says the
  proxy in front received HTTPS), ``http`` for ``ws``, then the ``Host`` header with its port —
  provided that host is in ``ALLOWED_HOSTS``; this is the origin of the page that opened the socket
  when the page and the socket are served by the same site, as ours are;
* or one of ``CSRF_TRUSTED_ORIGINS``, exactly (scheme, host and port; ``https://*.example.org``
  allows the subdomains of ``example.org`` on that scheme and port).

No ``Origin`` (not a browser) is refused too: the socket is for the web app.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import is_same_domain, split_domain_port, validate_host

DEFAULT_PORTS = {"http": 80, "https": 443}


def _normalised(origin: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of an origin, with the default port made explicit; None if it is
    not an http(s) origin."""
    try:
        parts = urlsplit(origin.strip().lower())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.path or parts.query:
        return None
    return parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme]


def _handshake_secure(scope) -> bool:
    if scope.get("scheme") == "wss":
        return True
    proxy = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy:
        header, value = proxy
        name = header.removeprefix("HTTP_").replace("_", "-").lower().encode("latin1")
        for key, received in scope.get("headers", ()):
            if key == name:
                return received.decode("latin1").split(",")[0].strip() == value
    return False


def websocket_origin_allowed(*, origin: str | None, host: str | None, secure: bool) -> bool:
    """Whether a handshake with these ``Origin`` and ``Host`` headers, received over TLS or not,
    comes from one of our pages (the module docstring has the rule)."""
    if not origin:
        return False
    asked = _normalised(origin)
    if asked is None:
        return False
    if host:
        domain, _ = split_domain_port(host.lower())
        if domain and validate_host(domain, settings.ALLOWED_HOSTS):
            own = _normalised(f"{'https' if secure else 'http'}://{host}")
            if own is not None and asked == own:
                return True
    for trusted in settings.CSRF_TRUSTED_ORIGINS:
        wildcard = "://*." in trusted
        allowed = _normalised(trusted.replace("://*.", "://", 1) if wildcard else trusted)
        if allowed is None:
            continue
        scheme, allowed_host, port = allowed
        if asked == allowed or (
            wildcard
            and asked[0] == scheme
            and asked[2] == port
            and is_same_domain(asked[1], f".{allowed_host}")
        ):
            return True
    return False


class WebsocketOriginValidator:
    """ASGI middleware refusing (403 at the handshake) a websocket whose ``Origin`` is not allowed."""

    def __init__(self, application) -> None:
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            raise ValueError("WebsocketOriginValidator guards websocket connections only")
        headers = {}
        for name, value in scope.get("headers", ()):
            if name in (b"origin", b"host"):
                # A repeated header is ambiguous: refuse rather than pick one.
                headers[name] = None if name in headers else value.decode("latin1")
        allowed = websocket_origin_allowed(
            origin=headers.get(b"origin"), host=headers.get(b"host"), secure=_handshake_secure(scope)
        )
        if allowed:
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)

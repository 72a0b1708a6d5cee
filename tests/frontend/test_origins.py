"""The websocket origin rule (``frontend.origins``), case by case: Django's CSRF origin rule."""

from __future__ import annotations

import pytest

from frontend.origins import websocket_origin_allowed


@pytest.mark.parametrize(
    ("origin", "host", "secure", "allowed"),
    [
        ("http://testserver", "testserver", False, True),
        ("HTTP://TestServer", "testserver", False, True),  # origins compare case-insensitively
        ("http://testserver:80", "testserver", False, True),  # the default port, spelt out
        ("http://127.0.0.1:8000", "127.0.0.1:8000", False, True),
        ("http://127.0.0.1:8001", "127.0.0.1:8000", False, False),
        ("http://127.0.0.1", "127.0.0.1:8000", False, False),
        ("https://testserver", "testserver", False, False),
        ("http://testserver", "testserver", True, False),
        ("https://testserver", "testserver", True, True),
        ("http://evil.example", "evil.example", False, False),  # not in ALLOWED_HOSTS
        ("http://testserver/path", "testserver", False, False),
        ("ftp://testserver", "testserver", False, False),
        (None, "testserver", False, False),
        ("http://testserver", None, False, False),
    ],
)
def test_only_the_pages_own_origin_on_an_allowed_host_is_accepted(origin, host, secure, allowed):
    assert websocket_origin_allowed(origin=origin, host=host, secure=secure) is allowed


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://app.example.org", True),
        ("https://app.example.org:443", True),
        ("http://app.example.org", False),
        ("https://app.example.org:8443", False),
        ("https://desk.example.com:8443", True),
        ("https://eu.desk.example.com:8443", True),
        ("https://desk.example.com", False),
        ("https://evil-desk.example.com:8443", False),
    ],
)
def test_csrf_trusted_origins_are_matched_exactly_and_wildcards_only_on_their_scheme_and_port(
    settings, origin, allowed
):
    settings.CSRF_TRUSTED_ORIGINS = ["https://app.example.org", "https://*.desk.example.com:8443"]
    assert websocket_origin_allowed(origin=origin, host="testserver", secure=False) is allowed

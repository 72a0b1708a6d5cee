"""The OpenAPI schema builds and validates, and the API honours it: schemathesis generates
requests from the schema against a seeded database with authenticated tokens and no response may
be a server error (or stray from the documented response schemas)."""

from __future__ import annotations

import io

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.management import call_command
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from riskengine.selectors import parameter_set_active


def test_the_schema_builds_and_validates_without_warnings():
    out = io.StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=out)
    schema = out.getvalue()
    assert "/api/v1/accounts/{id}/what-if/" in schema
    assert "bearerAuth" in schema


def test_the_docs_page_and_the_schema_are_served(client):
    assert client.get("/api/schema/").status_code == 200
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"swagger" in docs.content.lower()


def test_the_docs_page_loads_swagger_ui_from_our_own_static_files_only(client):
    import re

    from django.conf import settings
    from django.contrib.staticfiles import finders

    page = client.get("/api/docs/").content.decode()
    urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", page)
    urls += re.findall(r"""["']((?:https?:)?//[^"']+)["']""", page)
    assert any(url.endswith("swagger-ui-bundle.js") for url in urls), urls
    assert all(not url.startswith(("http:", "https:", "//")) for url in urls), urls
    assert all(
        url.startswith(settings.STATIC_URL) for url in urls if url.endswith((".js", ".css", ".png"))
    ), urls
    for url in urls:  # each is a file the project's static files really provide
        assert finders.find(url.removeprefix(settings.STATIC_URL)), url


@pytest.fixture
def keep_connection(db):
    # Like Django's test client: the test's transaction must survive each request, so the
    # handler must not close the connection at the end of a request.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


# Loaded from the application itself (the schema view needs no database).
schema = schemathesis.openapi.from_wsgi("/api/schema/", WSGIHandler())

# The caller that may use each operation; anything else runs as venue ops (reads everything).
CALLERS = {
    ("POST", "/api/v1/price-observations/"): "feed",
    ("POST", "/api/v1/vol-observations/"): "feed",
    ("POST", "/api/v1/trades/"): "venue",
    ("POST", "/api/v1/accounts/{id}/deposits/"): "trader_a",
    ("POST", "/api/v1/accounts/{id}/withdrawals/"): "trader_a",
    ("POST", "/api/v1/accounts/{id}/what-if/"): "trader_a",
    ("GET", "/api/v1/custody/deposits/"): "custodian",
    ("POST", "/api/v1/custody/deposits/"): "custodian",
    ("POST", "/api/v1/custody/deposits/{id}/confirm/"): "custodian",
    ("GET", "/api/v1/custody/withdrawals/"): "custodian",
    ("POST", "/api/v1/custody/withdrawals/{id}/sent/"): "custodian",
    ("POST", "/api/v1/custody/withdrawals/{id}/failed/"): "custodian",
}


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_no_generated_request_causes_a_server_error(case, world, swept, keep_connection):
    caller = world[CALLERS.get((case.method.upper(), case.operation.path), "ops")]
    if case.path_parameters and "id" in case.path_parameters:
        # Aim at real objects instead of 404s most of the time.
        path = case.operation.path
        if path.startswith("/api/v1/accounts/"):
            case.path_parameters["id"] = world.account_a.pk
        elif path.startswith("/api/v1/margin-calls/"):
            case.path_parameters["id"] = swept.call.pk
        elif path.startswith("/api/v1/liquidations/"):
            case.path_parameters["id"] = swept.liquidation.pk
        else:
            case.path_parameters["id"] = parameter_set_active().pk
    headers = {"Authorization": caller.http._credentials["HTTP_AUTHORIZATION"]}
    case.call_and_validate(headers=headers, checks=[not_a_server_error, response_schema_conformance])

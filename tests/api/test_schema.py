"""The OpenAPI schema builds and validates, documents every error answer and the Idempotency-Key
rules, and the API honours it: schemathesis generates requests (valid and invalid) from the schema
against a seeded database with authenticated tokens and runs all of its checks on every answer —
no server error, only documented status codes, content types, headers and bodies, invalid input
refused, valid input accepted, authentication not ignored, unsupported methods refused."""

from __future__ import annotations

import io
import tomllib
from pathlib import Path

import pytest
import schemathesis
import yaml
from django.core.handlers.wsgi import WSGIHandler
from django.core.management import call_command
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from riskengine.selectors import parameter_set_active

# The checks' configuration the CLI run uses too (tests/api/schemathesis.toml).
CHECKS = tomllib.loads((Path(__file__).with_name("schemathesis.toml")).read_text())["checks"]


def test_the_schema_builds_and_validates_without_warnings():
    out = io.StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=out)
    schema = out.getvalue()
    assert "/api/v1/accounts/{id}/what-if/" in schema
    assert "bearerAuth" in schema


def built_schema() -> dict:
    out = io.StringIO()
    call_command("spectacular", stdout=out)
    return yaml.safe_load(out.getvalue())


def test_every_operation_documents_the_errors_it_can_answer_with_a_json_body():
    document = built_schema()
    operations = {
        (method.upper(), path): operation
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    }
    for (method, path), operation in operations.items():
        statuses = set(operation["responses"])
        assert {"401", "403", "429"} <= statuses, (method, path)
        assert "Retry-After" in operation["responses"]["429"]["headers"], (method, path)
        if method == "POST":
            assert {"400", "413"} <= statuses, (method, path)
        if "{" in path:
            assert "404" in statuses, (method, path)
        for status in statuses - {"200", "201"}:
            body = operation["responses"][status]["content"]["application/json"]["schema"]
            assert "Error" in str(body), (method, path, status)
    assert "503" in operations["POST", "/api/v1/accounts/{id}/what-if/"]["responses"]
    assert "404" in operations["GET", "/api/v1/risk-parameters/active/"]["responses"]
    assert "400" in operations["GET", "/api/v1/accounts/"]["responses"]  # limit / offset
    errors = document["components"]["schemas"]
    assert errors["Error"]["required"] == ["detail"]
    assert errors["ValidationErrors"]["additionalProperties"]["items"] == {"type": "string"}


def test_every_idempotent_operation_documents_the_idempotency_key_rules():
    document = built_schema()
    idempotent = {
        ("post", "/api/v1/trades/"),
        ("post", "/api/v1/price-observations/"),
        ("post", "/api/v1/vol-observations/"),
        ("post", "/api/v1/index-prices/{symbol}/confirm/"),
        ("post", "/api/v1/accounts/{id}/deposits/"),
        ("post", "/api/v1/accounts/{id}/withdrawals/"),
        ("post", "/api/v1/accounts/{id}/positions/{position_id}/margin/"),
        ("post", "/api/v1/accounts/{id}/hedge-policies/"),
        ("post", "/api/v1/custody/deposits/"),
        ("post", "/api/v1/custody/deposits/{id}/confirm/"),
        ("post", "/api/v1/custody/withdrawals/{id}/sent/"),
        ("post", "/api/v1/custody/withdrawals/{id}/failed/"),
    }
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            headers = [p for p in operation.get("parameters", []) if p["in"] == "header"]
            if (method, path) not in idempotent:
                assert headers == [], (method, path)
                assert not {"409", "422"} & set(operation["responses"]), (method, path)
                continue
            [key] = headers
            assert key["name"] == "Idempotency-Key"
            assert not key.get("required", False)
            assert (key["schema"]["minLength"], key["schema"]["maxLength"]) == (1, 255)
            for rule in ("printable ASCII", "replays", "`422`", "`409`", "24 hours", "Idempotent-Replayed"):
                assert rule in key["description"], rule
            assert {"409", "422"} <= set(operation["responses"]), (method, path)
            assert "Idempotent-Replayed" in operation["responses"]["201"]["headers"]


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
schema = schemathesis.openapi.from_wsgi(
    "/api/schema/", WSGIHandler(), config=SchemathesisConfig.from_dict({"checks": CHECKS})
)

# The caller that may use each operation; anything else runs as venue ops (reads everything).
CALLERS = {
    ("POST", "/api/v1/price-observations/"): "feed",
    ("POST", "/api/v1/vol-observations/"): "feed",
    ("POST", "/api/v1/index-prices/{symbol}/confirm/"): "feed",
    ("POST", "/api/v1/trades/"): "venue",
    ("POST", "/api/v1/accounts/{id}/deposits/"): "trader_a",
    ("POST", "/api/v1/accounts/{id}/withdrawals/"): "trader_a",
    ("POST", "/api/v1/accounts/{id}/what-if/"): "trader_a",
    ("PUT", "/api/v1/accounts/{id}/band-policy/"): "trader_a",
    ("DELETE", "/api/v1/accounts/{id}/band-policy/"): "trader_a",
    ("POST", "/api/v1/accounts/{id}/hedge-policies/"): "trader_a",
    ("POST", "/api/v1/webhook-endpoints/"): "trader_a",
    ("GET", "/api/v1/custody/deposits/"): "custodian",
    ("POST", "/api/v1/custody/deposits/"): "custodian",
    ("POST", "/api/v1/custody/deposits/{id}/confirm/"): "custodian",
    ("GET", "/api/v1/custody/withdrawals/"): "custodian",
    ("POST", "/api/v1/custody/withdrawals/{id}/sent/"): "custodian",
    ("POST", "/api/v1/custody/withdrawals/{id}/failed/"): "custodian",
    ("POST", "/api/v1/margin/simulate/"): "trader_a",
}


@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_every_generated_request_gets_a_documented_answer(case, world, swept, keep_connection):
    caller = world[CALLERS.get((case.method.upper(), case.operation.path), "ops")]
    path_valid = all(
        info.mode.is_positive for location, info in case.meta.components.items() if location == "path"
    )
    if case.path_parameters and "id" in case.path_parameters and path_valid:
        # Aim at real objects instead of 404s most of the time (a generated invalid id is kept:
        # it must be refused).
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
    # A path that matches no route (an id that is not a number) gets the API's JSON 404 too
    # (clearing.api.views.api_not_found): every check applies to every answer.
    case.call_and_validate(headers=headers)

"""Content-Security-Policy: every page carries the header, and the pages — the member app, the
admin and the API docs — still render with nothing inline that the policy would block."""

from __future__ import annotations

import io
import re

import pytest
from django.contrib import admin
from django.core.management import call_command
from django.urls import NoReverseMatch, reverse

from accounts.models import MarginAccount, User
from riskengine.models import ParameterSet

TAG = re.compile(r"<(script|style)\b([^>]*)>", re.IGNORECASE)
NONCE = re.compile(r"""\bnonce=["']([^"']+)["']""")
# Attributes the policy blocks: inline style attributes, event handlers, javascript: URLs.
BLOCKED_ATTRIBUTES = re.compile(
    r"""<[a-z][^>]*?\s(style|on[a-z]+)\s*=|(href|src|action)\s*=\s*["']\s*javascript:""", re.IGNORECASE
)


def policy(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    return {part.split()[0]: part.split()[1:] for part in header.split(";") if part.strip()}


def blocked(response) -> list[str]:
    """What in the page the policy would refuse to run or apply."""
    html = response.content.decode()
    nonces = [
        v[len("'nonce-") : -1] for v in policy(response).get("script-src", []) if v.startswith("'nonce-")
    ]
    problems = []
    for tag, attributes in TAG.findall(html):
        if tag.lower() == "script" and (re.search(r"\bsrc=", attributes) or "application/json" in attributes):
            continue  # a script file, or data that never runs
        nonce = NONCE.search(attributes)
        if nonce is None or nonce.group(1) not in nonces:
            problems.append(f"inline <{tag}{attributes}> without the response's nonce")
    problems += [match.group(0) for match in BLOCKED_ATTRIBUTES.finditer(html)]
    return problems


@pytest.fixture
def demo(db):
    call_command("seed_demo", stdout=io.StringIO())


def test_the_header_forbids_inline_code_and_foreign_origins(client):
    response = client.get("/login/")
    directives = policy(response)
    assert directives["default-src"] == ["'none'"]
    assert directives["script-src"] == ["'self'"]  # no nonce: this page has no inline script
    assert directives["style-src"] == ["'self'"]
    assert directives["connect-src"] == ["'self'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives["form-action"] == ["'self'"]
    assert not any("unsafe" in value for values in directives.values() for value in values)


def test_the_member_pages_render_under_the_policy(client, demo):
    client.force_login(User.objects.get(username="alice"))
    account = MarginAccount.objects.filter(member__code="ALPHA").order_by("code").first()
    pages = ["/", f"/accounts/{account.code}/", f"/accounts/{account.code}/what-if/"]
    for path in pages:
        response = client.get(path)
        assert response.status_code == 200, path
        assert "Content-Security-Policy" in response, path
        assert blocked(response) == [], path
    client.logout()
    login = client.get("/login/")
    assert (login.status_code, blocked(login)) == (200, [])


def test_the_admin_and_the_ops_dashboard_render_under_the_policy(client, demo):
    client.force_login(User.objects.get(username="ops"))
    pages = ["/admin/", "/admin/dashboard/"]
    for model in admin.site._registry:
        meta = model._meta
        try:
            pages.append(reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist"))
        except NoReverseMatch:
            continue
    # The parameter set form has the correlation grid, the one widget that used inline styles.
    pages.append(reverse("admin:riskengine_parameterset_change", args=[ParameterSet.objects.first().pk]))
    pages.append(reverse("admin:accounts_user_add"))
    rendered = 0
    for path in pages:
        response = client.get(path)
        if response.status_code == 403:  # a page ops may not see at all
            continue
        assert response.status_code == 200, path
        assert blocked(response) == [], path
        rendered += 1
    assert rendered >= 20
    grid = client.get(pages[-2]).content.decode()
    assert "data-colour=" in grid  # the grid's colours now travel as data for its script file


def test_the_api_docs_run_their_inline_blocks_by_nonce(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    directives = policy(response)
    [script_nonce] = [v for v in directives["script-src"] if v.startswith("'nonce-")]
    assert script_nonce in directives["style-src"]
    html = response.content.decode()
    assert f'<script nonce="{script_nonce[7:-1]}">' in html
    assert blocked(response) == []
    # A new nonce for every response.
    assert client.get("/api/docs/")["Content-Security-Policy"] != response["Content-Security-Policy"]

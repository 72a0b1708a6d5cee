"""Under the Content-Security-Policy, in real Chromium: the member pages go live over the websocket,
the admin's correlation grid is coloured, the API docs render — and the browser reports no
violation anywhere."""

from __future__ import annotations

import pytest

from accounts.models import MarginAccount
from riskengine.models import ParameterSet
from tests.factories import browser_sign_in

pytestmark = pytest.mark.browser

# Recorded in every page before its own scripts run: each violation the browser reports.
WATCH_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__violations.push(`${event.violatedDirective} ${event.blockedURI}`);
});
"""


def violations(page) -> list[str]:
    return page.evaluate("window.__violations")


def test_the_pages_work_under_the_policy_without_a_single_violation(asgi_server, browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_init_script(WATCH_VIOLATIONS)
    console = []
    page = context.new_page()
    page.on("console", lambda message: console.append(message.text))

    browser_sign_in(page, asgi_server)
    assert violations(page) == []
    account = MarginAccount.objects.filter(member__code="ALPHA").order_by("code").first()
    page.goto(f"{asgi_server}/accounts/{account.code}/")
    page.wait_for_selector("#live-status[data-state=on]")  # the socket connected under connect-src
    assert violations(page) == []
    page.goto(f"{asgi_server}/accounts/{account.code}/what-if/")
    assert violations(page) == []
    page.click("form[action='/logout/'] button")

    sign_in_admin = context.new_page()
    sign_in_admin.goto(f"{asgi_server}/admin/login/")
    sign_in_admin.fill("#id_username", "ops")
    sign_in_admin.fill("#id_password", "ops-demo-2026")
    sign_in_admin.click("input[type=submit]")
    sign_in_admin.wait_for_selector("#site-name")
    parameter_set = ParameterSet.objects.order_by("pk").first()
    sign_in_admin.goto(f"{asgi_server}/admin/riskengine/parameterset/{parameter_set.pk}/change/")
    cell = sign_in_admin.locator("[data-rho-grid] td[data-colour]").first
    background = cell.evaluate("td => getComputedStyle(td).backgroundColor")
    assert background not in ("", "rgba(0, 0, 0, 0)"), "the grid's script coloured the cell"
    assert violations(sign_in_admin) == []
    sign_in_admin.goto(f"{asgi_server}/admin/dashboard/")
    assert violations(sign_in_admin) == []

    docs = context.new_page()
    docs.goto(f"{asgi_server}/api/docs/")
    docs.wait_for_selector(".swagger-ui .information-container", timeout=10_000)
    docs.wait_for_selector(".opblock", timeout=10_000)  # the schema loaded (connect-src) and rendered
    assert violations(docs) == []
    assert not [text for text in console if "Content Security Policy" in text], console
    context.close()

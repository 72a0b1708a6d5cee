"""The ops dashboard page (staff only: wrapped in ``admin.site.admin_view`` in ``clearing.config.urls``)."""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.template.loader import render_to_string
from django.template.response import TemplateResponse

from clearing.dashboard import dashboard_panels


def ops_dashboard(request):
    # Its panels show member accounts, margin calls and liquidations: for the staff who read member
    # accounts (ops, risk approvers), not for security admins, who administer people only.
    if not request.user.has_perm("accounts.view_marginaccount"):
        raise PermissionDenied
    panels = [
        {
            "title": panel.title,
            "key": panel.key,
            "html": render_to_string(panel.template, panel.context(), request),
        }
        for panel in dashboard_panels()
    ]
    return TemplateResponse(
        request,
        "riskengine/dashboard/page.html",
        {**admin.site.each_context(request), "title": "Ops dashboard", "panels": panels},
    )

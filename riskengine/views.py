"""The ops dashboard page (staff only: wrapped in ``admin.site.admin_view`` in ``clearing.urls``)."""

from __future__ import annotations

from django.contrib import admin
from django.template.loader import render_to_string
from django.template.response import TemplateResponse

from riskengine.dashboard import dashboard_panels


def ops_dashboard(request):
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

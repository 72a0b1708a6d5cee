"""``/metrics``: the Prometheus exposition of ``clearing.ops.metrics`` (access rules there)."""

from __future__ import annotations

from django.http import Http404, HttpResponse, HttpResponseForbidden
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from clearing.ops.metrics import metrics_access, metrics_registry


@require_GET
def metrics_view(request):
    authorization = request.headers.get("Authorization", "")
    status = metrics_access(authorization=authorization, remote_addr=request.META.get("REMOTE_ADDR", ""))
    if status == 404:
        raise Http404
    if status == 403:
        refused = HttpResponseForbidden()
        refused["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return refused
    body = generate_latest(metrics_registry(database=True))
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from accounts.forms import MemberAuthenticationForm
from clearing.ops.views import metrics_view
from clearing.views import healthz
from riskengine.views import ops_dashboard

admin.site.site_header = "Clearing venue — operations"
admin.site.site_title = "Clearing ops"

urlpatterns = [
    # Staff only, like the rest of the admin; before admin.site.urls so the admin does not claim it.
    path("admin/dashboard/", admin.site.admin_view(ops_dashboard), name="ops_dashboard"),
    path("admin/", admin.site.urls),
    path(
        "login/",
        auth_views.LoginView.as_view(
            template_name="frontend/login.html", authentication_form=MemberAuthenticationForm
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics_view, name="metrics"),  # Prometheus; token-protected (clearing.ops.metrics)
    path("api/", include("clearing.api.urls")),
    path("", include("frontend.urls")),
]

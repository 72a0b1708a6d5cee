from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from clearing.views import healthz

admin.site.site_header = "Clearing venue — operations"
admin.site.site_title = "Clearing ops"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("login/", auth_views.LoginView.as_view(template_name="frontend/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", healthz, name="healthz"),
    path("", include("frontend.urls")),
]

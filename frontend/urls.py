from django.urls import path

from frontend import views

app_name = "frontend"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("disclosure/", views.disclosure, name="disclosure"),
    path("accounts/<slug:code>/", views.account_detail, name="account-detail"),
    path("accounts/<slug:code>/what-if/", views.what_if, name="what-if"),
    path("accounts/<slug:code>/band/", views.target_band, name="target-band"),
    path(
        "accounts/<slug:code>/positions/<int:position_id>/margin/",
        views.position_margin,
        name="position-margin",
    ),
    path("accounts/<slug:code>/band-policy/", views.band_policy, name="band-policy"),
    path("accounts/<slug:code>/hedge-policies/", views.hedge_policy, name="hedge-policy"),
    path(
        "accounts/<slug:code>/hedge-policies/<int:policy_id>/off/",
        views.hedge_policy_off,
        name="hedge-policy-off",
    ),
    path("webhooks/", views.webhooks, name="webhooks"),
    path("webhooks/<int:endpoint_id>/off/", views.webhook_off, name="webhook-off"),
]

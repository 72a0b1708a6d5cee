from django.urls import path

from frontend import views

app_name = "frontend"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("accounts/<slug:code>/", views.account_detail, name="account-detail"),
]

from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class AccountsConfig(AppConfig):
    default = True
    name = "accounts"
    verbose_name = "Members and accounts"

    def ready(self):
        from accounts import checks, signals  # noqa: F401  (registers the receivers and checks)


class StaffAdminConfig(admin_apps.AdminConfig):
    """``django.contrib.admin`` with the staff admin site (a second factor when required); named in
    INSTALLED_APPS in its place."""

    default = False
    default_site = "accounts.admin_site.StaffAdminSite"

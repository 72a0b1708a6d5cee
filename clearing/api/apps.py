from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "clearing.api"
    label = "api"
    verbose_name = "REST API"

    def ready(self) -> None:
        # Registers the bearer-token scheme with drf-spectacular.
        from clearing.api import schema  # noqa: F401

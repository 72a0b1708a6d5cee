from django.apps import AppConfig


class MarketDataConfig(AppConfig):
    name = "clearing.marketdata"
    label = "marketdata"
    verbose_name = "Market data"

    def ready(self) -> None:
        # Registers the Celery tasks with the app when the worker imports the project.
        from clearing.marketdata import dashboard, tasks  # noqa: F401

        dashboard.register()

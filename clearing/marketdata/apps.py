from django.apps import AppConfig


class MarketDataConfig(AppConfig):
    name = "clearing.marketdata"
    label = "marketdata"
    verbose_name = "Market data"

    def ready(self) -> None:
        # Imported here, not at module level: these modules import models, which exist only once
        # the app registry is ready. Importing ``tasks`` registers the Celery tasks with the app.
        from clearing.marketdata import dashboard, metrics, tasks  # noqa: F401
        from clearing.ops.metrics import metrics_state_register

        dashboard.register()
        metrics_state_register(key="oracle", read=metrics.oracle_state_metrics)

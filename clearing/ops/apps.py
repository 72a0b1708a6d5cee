from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "clearing.ops"
    label = "ops"
    verbose_name = "Operations"

    def ready(self) -> None:
        # Registers the Celery tasks with the app when the worker imports the project, and the
        # signal handlers that time and count every task (clearing.ops.metrics). Imported here:
        # both modules import models, which exist only once the app registry is ready.
        from clearing.ops import metrics, tasks  # noqa: F401

        metrics.celery_signals_connect()

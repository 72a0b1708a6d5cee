from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "clearing.ops"
    label = "ops"
    verbose_name = "Operations"

    def ready(self) -> None:
        # Registers the Celery tasks with the app when the worker imports the project.
        from clearing.ops import tasks  # noqa: F401

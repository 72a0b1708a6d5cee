from django.apps import AppConfig


class SweepsConfig(AppConfig):
    name = "riskengine.sweeps"
    label = "sweeps"
    verbose_name = "Margin sweeps"

    def ready(self) -> None:
        # Imported here, not at module level: these modules import models, which exist only once
        # the app registry is ready. Importing ``tasks`` registers the Celery tasks with the app.
        from clearing.ops.alerts import ops_alert_severities_register
        from clearing.ops.metrics import metrics_state_register
        from riskengine.sweeps import dashboard, insurance, metrics, receivers, tasks  # noqa: F401

        receivers.connect()
        dashboard.register()
        ops_alert_severities_register(insurance.SEVERITY)
        metrics_state_register(key="sweeps", read=metrics.sweeps_state_metrics)

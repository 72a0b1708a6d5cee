from django.apps import AppConfig


class SweepsConfig(AppConfig):
    name = "riskengine.sweeps"
    label = "sweeps"
    verbose_name = "Margin sweeps"

    def ready(self) -> None:
        from riskengine.sweeps import dashboard, receivers

        receivers.connect()
        dashboard.register()

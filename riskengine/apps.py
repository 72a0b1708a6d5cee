from django.apps import AppConfig


class RiskEngineConfig(AppConfig):
    name = "riskengine"
    verbose_name = "Risk engine"

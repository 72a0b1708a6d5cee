from django.apps import AppConfig


class RiskEngineConfig(AppConfig):
    name = "riskengine"
    verbose_name = "Risk engine"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from accounts.models import Asset
        from clearing.models import Instrument, Underlying
        from riskengine.reference import reference_clear
        from riskengine.signals import parameter_set_activated

        # The per-process reference cache (riskengine.reference) follows edits made in this process.
        parameter_set_activated.connect(reference_clear, dispatch_uid="riskengine.reference.activated")
        for model in (Instrument, Underlying, Asset):
            for signal in (post_save, post_delete):
                signal.connect(
                    reference_clear, sender=model, dispatch_uid=f"riskengine.reference.{model.__name__}"
                )

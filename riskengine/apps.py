from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class RiskEngineConfig(AppConfig):
    name = "riskengine"
    verbose_name = "Risk engine"

    def ready(self) -> None:
        # Imported here, not at module level: these modules import models, which exist only once
        # the app registry is ready.
        from accounts.models import Asset
        from clearing.marketdata.services import oracle_underlying_rules_register
        from clearing.models import Instrument, Underlying
        from clearing.ops.alerts import ops_alert_severities_register
        from clearing.signals import isolated_fills_booked
        from riskengine import dashboard
        from riskengine.allocations import isolated_fills_receive
        from riskengine.reference import reference_clear
        from riskengine.selectors import underlying_oracle_rules
        from riskengine.signals import parameter_set_activated
        from riskengine.validation import dashboard as validation_dashboard
        from riskengine.validation import services as validation

        # The per-process reference cache (riskengine.reference) follows edits made in this process.
        parameter_set_activated.connect(reference_clear, dispatch_uid="riskengine.reference.activated")
        for model in (Instrument, Underlying, Asset):
            for signal in (post_save, post_delete):
                signal.connect(
                    reference_clear, sender=model, dispatch_uid=f"riskengine.reference.{model.__name__}"
                )
        # The oracle's rules for underlyings are governed in the active parameter set.
        oracle_underlying_rules_register(underlying_oracle_rules)
        dashboard.register()
        validation_dashboard.register()
        ops_alert_severities_register(validation.SEVERITY)
        # Booking into an isolated account allocates margin to its positions (spec section 4a).
        isolated_fills_booked.connect(isolated_fills_receive, dispatch_uid="riskengine.allocations")

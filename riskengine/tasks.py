"""Celery tasks of the risk engine's Django side (thin: they call services)."""

from __future__ import annotations

from celery import shared_task

from riskengine.calibration import calibration_propose
from riskengine.services import parameter_set_activate_due


@shared_task(name="riskengine.tasks.parameter_sets_activate_due")
def parameter_sets_activate_due() -> list[str]:
    """Beat runs this every ~15 s: approved sets take effect at their effective time. Idempotent."""
    return [parameter_set.version for parameter_set in parameter_set_activate_due()]


# Named after the oracle's app, where calibration lived: beat and ops already use this name.
@shared_task(name="marketdata.calibrate")
def calibrate() -> int:
    """Daily (beat) and on demand: propose a recalibrated parameter set; returns its id."""
    return calibration_propose().pk

"""Celery tasks of the risk engine's Django side (thin: they call services)."""

from __future__ import annotations

from celery import shared_task

from clearing.ops.retry import RETRY
from riskengine.calibration import calibration_propose
from riskengine.services import parameter_set_activate_due
from riskengine.validation.models import ValidationKind
from riskengine.validation.services import (
    HOSTNAME,
    validation_results_prune,
    validation_runs_expire,
    validation_runs_start,
    validation_shard_run,
)


@shared_task(name="riskengine.tasks.parameter_sets_activate_due")
def parameter_sets_activate_due() -> list[str]:
    """Beat runs this every ~15 s: approved sets take effect at their effective time. Idempotent."""
    return [parameter_set.version for parameter_set in parameter_set_activate_due()]


# Named after the oracle's app, where calibration lived: beat and ops already use this name.
@shared_task(name="marketdata.calibrate")
def calibrate() -> int:
    """Daily (beat) and on demand: propose a recalibrated parameter set; returns its id."""
    return calibration_propose().pk


# --- Model validation (riskengine.validation) ----------------------------------------------------


@shared_task(name="validation.nightly", bind=True, **RETRY)
def validation_nightly(self) -> list[int]:
    """Beat, nightly: fail runs that never completed, prune the per-account rows no report reads,
    then start the active set's runs in both modes. Keyed by this message's id: a redelivery
    starts nothing twice."""
    validation_runs_expire()
    validation_results_prune()
    runs = validation_runs_start(kind=ValidationKind.NIGHTLY, cause="nightly", request_key=self.request.id)
    return [run.pk for run in runs]


@shared_task(name="validation.shard", bind=True, **RETRY)
def validation_shard(self, shard_id: int) -> int:
    """One shard of a validation run; the shard that completes its run reduces it. Idempotent."""
    return validation_shard_run(shard_id=shard_id, worker=self.request.hostname or HOSTNAME)

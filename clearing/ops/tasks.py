"""Celery tasks of operations (thin: they call clearing.ops services). All idempotent and
periodic (beat, settings "Periodic upkeep"). The insurance-fund check and the recovery of stuck
sweeps and liquidations are tasks of the sweeps (``riskengine.sweeps.tasks``), whose rows they read."""

from __future__ import annotations

from celery import shared_task

from clearing.ops.retention import margin_snapshots_prune
from clearing.ops.retry import RETRY


@shared_task(name="ops.margin_snapshots_prune", **RETRY)
def margin_snapshots_prune_task() -> dict:
    """Every minute: delete the snapshots (and empty sweeps) the retention policy does not keep."""
    outcome = margin_snapshots_prune()
    return {"snapshots": outcome.snapshots, "sweeps": outcome.sweeps, "skipped": outcome.skipped}

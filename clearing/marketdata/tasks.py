"""Celery tasks of the oracle: thin wrappers around the services."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="marketdata.calibrate")
def calibrate() -> int:
    """Daily (beat) and on demand: propose a recalibrated parameter set; returns its id."""
    from clearing.marketdata.calibration import calibration_propose

    return calibration_propose().pk


@shared_task(name="marketdata.refresh")
def refresh() -> int:
    """Every few seconds (beat): record symbols whose sources went quiet as stale."""
    from clearing.marketdata.services import index_prices_refresh

    return len(index_prices_refresh())

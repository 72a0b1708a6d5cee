"""Celery tasks of the oracle: thin wrappers around the services."""

from __future__ import annotations

from celery import shared_task

from clearing.marketdata.services import index_prices_refresh


@shared_task(name="marketdata.refresh")
def refresh() -> int:
    """Every few seconds (beat): record symbols whose sources went quiet as stale."""
    return len(index_prices_refresh())

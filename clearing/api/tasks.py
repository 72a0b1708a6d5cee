"""Celery tasks of the API (thin: they call services)."""

from __future__ import annotations

from celery import shared_task

from clearing.api.idempotency import idempotency_records_purge


@shared_task(name="api.idempotency_records_purge")
def idempotency_records_purge_task() -> int:
    """Beat runs this hourly: stored outcomes older than the retention (24 h) are deleted, so a
    key can be replayed for a day and the table stays small. Idempotent; returns how many went."""
    return idempotency_records_purge()

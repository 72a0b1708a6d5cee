"""Celery tasks of the web app (thin: they call the relay's functions)."""

from __future__ import annotations

from celery import shared_task

from clearing.ops.retry import RETRY
from frontend.relay import outbox_prune


@shared_task(name="frontend.outbox_prune", **RETRY)
def outbox_prune_task() -> int:
    """Beat runs this every minute: outbox rows older than the retention (5 min) go, in bounded
    batches, whether or not a web process relays (none does until a socket connects).
    Idempotent; returns how many went."""
    return outbox_prune()

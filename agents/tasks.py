"""Celery tasks of the agents (thin: they call a service). Safe to run twice: a band policy
re-reads the account under its lock and moves nothing once inside its band or within its
interval; a hedge policy writes nothing within its interval; a delivery is claimed before it is
made. Time limits are in settings (``CELERY_TASK_ANNOTATIONS``)."""

from __future__ import annotations

from celery import shared_task

from agents import runs, webhooks
from clearing.ops.retry import RETRY


@shared_task(name="agents.accounts_act", **RETRY)
def accounts_act(account_ids: list[int]) -> dict[str, int]:
    """The policies of accounts a sweep found outside a level (``agents.receivers``)."""
    return runs.accounts_act(account_ids=account_ids)


@shared_task(name="agents.webhook_deliver", **RETRY)
def webhook_deliver(hedge_request_id: int) -> str | None:
    """One delivery attempt of a hedge request's webhook; its outcome, or None if not due."""
    attempt = webhooks.hedge_request_deliver(hedge_request_id=hedge_request_id)
    return None if attempt is None else attempt.outcome


@shared_task(name="agents.webhooks_due")
def webhooks_due() -> int:
    """Every few seconds (beat): send the deliveries whose next attempt is due (retries after
    back-off, and first attempts whose task was lost). Not retried: beat sends it again."""
    due = webhooks.hedge_requests_due()
    for hedge_request_id in due:
        webhook_deliver.delay(hedge_request_id)
    return len(due)

"""Celery tasks of custody: thin wrappers around the services, safe to run again."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from accounts.custody import custody_demo_process
from accounts.custody import deposits_expire as expire


@shared_task(name="custody.deposits_expire")
def deposits_expire() -> int:
    """Every minute (beat): announced deposits past their TTL and unconfirmed expire."""
    return expire()


@shared_task(name="custody.demo_process")
def demo_process() -> list[int]:
    """Every few seconds in the demo (beat, only when ``CUSTODY_DEMO_AUTOCONFIRM`` is on): the demo
    custody confirms announced deposits and sends requested withdrawals. Never in production."""
    if not settings.CUSTODY_DEMO_AUTOCONFIRM or settings.DJANGO_ENV != "development":
        return [0, 0]
    return list(custody_demo_process())

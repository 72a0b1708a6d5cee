"""Work that a crash or an outage left half done, picked up again.

A liquidation is started by a sweep (``Liquidation`` in progress, committed with the margin call's
escalation) and executed by a task sent after that commit. If the send failed (broker down at that
moment) or the message was lost with a broker that kept no copy, nothing would ever execute it —
and the account, marked busy, would get no new call either. ``liquidations_resume`` sends the task
again for every liquidation still in progress ``RESUME_AFTER`` after it started: longer than a
liquidation may legitimately take (its hard time limit, 90 s), so a duplicate is rare, and harmless
when it happens (``liquidation_execute`` locks the row and does nothing once it is done).

Shards need no such help: a lost shard's accounts are swept again by the next full sweep, at most
``sweep_interval_seconds`` later, and the broker hands the message back after its visibility
timeout anyway. Lost event-sweep drains are taken by ``sweeps.full_due`` every 5 s.
"""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from riskengine.sweeps.models import Liquidation, LiquidationStatus

RESUME_AFTER = timedelta(seconds=120)
RESUME_LIMIT = 500


def liquidations_resume(*, older_than: timedelta = RESUME_AFTER, limit: int = RESUME_LIMIT) -> list[int]:
    """Send the execution task again for liquidations in progress for longer than ``older_than``
    (oldest first, at most ``limit``); returns their ids."""
    from riskengine.sweeps.tasks import liquidation_execute

    ids = list(
        Liquidation.objects.filter(
            status=LiquidationStatus.IN_PROGRESS, started_at__lt=timezone.now() - older_than
        )
        .order_by("started_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )
    for liquidation_id in ids:
        liquidation_execute.delay(liquidation_id)
    return ids

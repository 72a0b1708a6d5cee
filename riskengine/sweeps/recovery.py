"""Work that a crash or an outage left half done, picked up again from the database's state.

Nothing here trusts a message to exist: every task whose work is recorded as unfinished is sent
again from that record, so a lost ``on_commit`` send (broker down at that moment), a message lost
with a broker that kept no copy, or a shard whose retries ran out, is recovered within a bound.

A liquidation is started by a sweep (``Liquidation`` in progress, committed with the margin call's
escalation) and executed by a task sent after that commit. ``liquidations_resume`` sends the task
again for every liquidation still in progress ``RESUME_AFTER`` after it started: longer than a
liquidation may legitimately take (its hard time limit, 90 s), so a duplicate is rare, and harmless
when it happens (``liquidation_execute`` locks the row and does nothing once it is done): a lost
liquidation runs within 120 s + the beat period (60 s) = **3 min**. One still in progress after
``LIQUIDATION_STUCK_AFTER`` (10 min) raises a ``liquidation_stuck`` ops alert.

A full sweep's shards are sent after the sweep's commit. ``sweeps_recover`` sends again every
shard of a running sweep that is not done (``pending``, or ``failed`` after its retries)
``shard_resend_after()`` after its last send: the shard task's hard time limit plus the longest
retry countdown (150 + 60 = 210 s with the settings' limits), the longest a shard's message may
legitimately still be running or waiting to retry. A duplicate is harmless (the shard row's lock,
done is done). A shard sent ``MAX_SHARD_RESENDS`` times and still not done past the bound cannot
complete (a bug, bad data, a task that always overruns): its sweep is marked ``expired`` with the
reason and a ``sweep_expired`` ops alert; so is a running sweep that a newer full sweep has
already completed (its results would be history only). Bound: a lost shard runs again within
``shard_resend_after()`` + the beat period (60 s) ≈ 4.5 min; a sweep that cannot complete is
expired and alerted within (``MAX_SHARD_RESENDS`` + 1) × 210 s + 60 s ≈ 15 min. Its accounts are
swept by the next full sweep anyway (every ``sweep_interval_seconds``).

Lost event-sweep drains are taken by ``sweeps.full_due`` every 5 s.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone

from clearing.ops.alerts import ops_alerts_raise, ops_alerts_resolve
from clearing.ops.models import OpsAlert
from clearing.ops.retry import RETRY_BACKOFF_MAX
from riskengine.sweeps.models import (
    Liquidation,
    LiquidationStatus,
    ShardStatus,
    Sweep,
    SweepKind,
    SweepShard,
    SweepStatus,
)
from riskengine.sweeps.services import sweep_superseded

log = logging.getLogger(__name__)

RESUME_AFTER = timedelta(seconds=120)
RESUME_LIMIT = 500
MAX_SHARD_RESENDS = 3
SWEEPS_LIMIT = 50
SWEEP_EXPIRED_ALERT = "sweep_expired"
LIQUIDATION_STUCK_AFTER = timedelta(minutes=10)
LIQUIDATION_STUCK_ALERT = "liquidation_stuck"


def liquidations_resume(
    *,
    older_than: timedelta = RESUME_AFTER,
    limit: int = RESUME_LIMIT,
    stuck_after: timedelta = LIQUIDATION_STUCK_AFTER,
    now: datetime | None = None,
) -> list[int]:
    """Send the execution task again for liquidations in progress for longer than ``older_than``
    (oldest first, at most ``limit``); returns their ids. Those in progress for longer than
    ``stuck_after`` (past any legitimate wait: a lost task is resumed within 3 min) get a
    ``liquidation_stuck`` ops alert, resolved by the first run after they are done."""
    from riskengine.sweeps.tasks import liquidation_execute  # circular: the tasks module imports this one

    now = now or timezone.now()
    rows = list(
        Liquidation.objects.filter(status=LiquidationStatus.IN_PROGRESS, started_at__lt=now - older_than)
        .order_by("started_at", "pk")
        .values_list("pk", "account_id", "started_at")[:limit]
    )
    for liquidation_id, _, _ in rows:
        try:
            liquidation_execute.delay(liquidation_id)
        except Exception:
            # The broker is still away: the next run sends it (and alerts once it is stuck).
            log.exception("could not send liquidation %s again", liquidation_id)
    stuck = {
        str(
            pk
        ): f"Liquidation {pk} of account {account_id} in progress since {started:%Y-%m-%d %H:%M:%S} UTC "
        f"({(now - started).total_seconds() / 60:.0f} min): its task keeps failing, or a price it "
        "depends on is not trustworthy. Check the workers' logs and the oracle."
        for pk, account_id, started in rows
        if started < now - stuck_after
    }
    ops_alerts_raise(kind=LIQUIDATION_STUCK_ALERT, messages=stuck, now=now)
    if open_keys := list(
        OpsAlert.objects.filter(kind=LIQUIDATION_STUCK_ALERT, resolved_at=None).values_list("key", flat=True)
    ):
        finished = Liquidation.objects.filter(pk__in=[int(k) for k in open_keys]).exclude(
            status=LiquidationStatus.IN_PROGRESS
        )
        ops_alerts_resolve(
            kind=LIQUIDATION_STUCK_ALERT,
            keys=[str(pk) for pk in finished.values_list("pk", flat=True)],
            now=now,
        )
    return [pk for pk, _, _ in rows]


def shard_resend_after() -> timedelta:
    """How long a shard's message may legitimately be out: the shard task's hard time limit plus
    the longest retry countdown (from settings, so the bound follows the limits)."""
    limits = settings.CELERY_TASK_ANNOTATIONS.get("sweeps.shard", {})
    return timedelta(seconds=limits.get("time_limit", settings.CELERY_TASK_TIME_LIMIT) + RETRY_BACKOFF_MAX)


@dataclass
class SweepsRecovery:
    """What one ``sweeps_recover`` run did."""

    resent: list[int] = field(default_factory=list)  # shard ids
    expired: list[int] = field(default_factory=list)  # sweep ids


def sweeps_recover(
    *,
    older_than: timedelta | None = None,
    max_resends: int = MAX_SHARD_RESENDS,
    now: datetime | None = None,
    limit: int = SWEEPS_LIMIT,
) -> SweepsRecovery:
    """Send again the shards of running full sweeps that are not done ``older_than`` (default
    ``shard_resend_after()``) after their last send; expire (with a reason and an ops alert) the
    sweeps that cannot complete any more (module docstring). Sweeps are taken oldest first, locked
    with ``SKIP LOCKED`` so two runs never handle the same sweep; the sends happen after commit."""
    bound = older_than if older_than is not None else shard_resend_after()
    now = now or timezone.now()
    outcome = SweepsRecovery()
    messages: dict[str, str] = {}
    with transaction.atomic():
        sweeps = list(
            Sweep.objects.select_for_update(skip_locked=True)
            .filter(kind=SweepKind.FULL, status=SweepStatus.RUNNING, started_at__lt=now - bound)
            .order_by("pk")[:limit]
        )
        for sweep in sweeps:
            stuck = list(
                SweepShard.objects.select_for_update()
                .filter(sweep=sweep)
                .exclude(status=ShardStatus.DONE)
                .annotate(last_sent=Coalesce("sent_at", "sweep__started_at"))
                .filter(last_sent__lt=now - bound)
                .order_by("pk")
            )
            if not stuck:
                continue
            reason = ""
            if sweep_superseded(sweep=sweep):
                reason = "superseded by a newer full sweep before its shards completed"
            elif spent := [s for s in stuck if s.resends >= max_resends]:
                errors = "; ".join(f"shard {s.number}: {s.error or s.status}"[:300] for s in spent[:5])
                reason = f"{len(spent)} shard(s) not done after {max_resends} re-sends ({errors})"
            if reason:
                # Its pending shards are given up with it; a late message for one still stores
                # history, and completes the sweep if it was the last.
                SweepShard.objects.filter(pk__in=[s.pk for s in stuck], status=ShardStatus.PENDING).update(
                    status=ShardStatus.FAILED, error=f"expired: {reason}"[:2000]
                )
                Sweep.objects.filter(pk=sweep.pk).update(
                    status=SweepStatus.EXPIRED, error=reason[:2000], finished_at=now
                )
                outcome.expired.append(sweep.pk)
                messages[str(sweep.pk)] = (
                    f"Full sweep {sweep.pk} ({sweep.cause}) expired: {reason}. Its accounts are covered "
                    "by the next full sweep; check the workers' logs for the shards' errors."
                )
                log.error("full sweep %s expired: %s", sweep.pk, reason)
                continue
            SweepShard.objects.filter(pk__in=[s.pk for s in stuck]).update(
                sent_at=now, resends=F("resends") + 1
            )
            outcome.resent += [s.pk for s in stuck]
        if messages:
            ops_alerts_raise(kind=SWEEP_EXPIRED_ALERT, messages=messages, now=now)
        if outcome.resent:
            resent = list(outcome.resent)
            transaction.on_commit(lambda: _shards_send(resent))
    return outcome


def _shards_send(shard_ids: list[int]) -> None:
    from riskengine.sweeps.tasks import sweep_shard  # circular: the tasks module imports this one

    # A send that fails now is retried by the next run (``sent_at`` ages past the bound again).
    for shard_id in shard_ids:
        try:
            sweep_shard.delay(shard_id)
        except Exception:
            log.exception("could not send shard %s again; the next recovery run will", shard_id)

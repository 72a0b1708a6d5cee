"""Celery tasks of the margin sweeps (thin: fetch by id, call a service). Every task is safe to
run twice: settings acknowledge late, so a task whose worker died is delivered again."""

from __future__ import annotations

from celery import shared_task

from riskengine.sweeps import services


@shared_task(name="sweeps.full")
def sweep_full(cause: str = "requested") -> int:
    """Start a distributed full sweep (its shards are separate tasks)."""
    return services.sweep_full_create(cause=cause).pk


@shared_task(name="sweeps.full_due")
def sweep_full_due() -> int | None:
    """Start a full sweep when due; also drain event-sweep requests whose task was lost."""
    sweep = services.sweep_full_due()
    while services.sweep_requests_drain() is not None:
        pass
    return sweep.pk if sweep else None


@shared_task(name="sweeps.shard", bind=True)
def sweep_shard(self, shard_id: int) -> int:
    return services.sweep_shard_run(
        shard_id=shard_id, worker=self.request.hostname or services.HOSTNAME
    ).accounts


@shared_task(name="sweeps.requests_drain")
def sweep_requests_drain() -> int:
    """Sweep every account with a pending request (several engine runs if more than a batch)."""
    swept = 0
    while (sweep := services.sweep_requests_drain()) is not None:
        swept += sweep.accounts
    return swept


@shared_task(name="sweeps.liquidation_execute")
def liquidation_execute(liquidation_id: int) -> str:
    return services.liquidation_execute(liquidation_id=liquidation_id).status

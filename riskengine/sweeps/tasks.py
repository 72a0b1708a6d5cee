"""Celery tasks of the margin sweeps (thin: fetch by id, call a service). Every task is safe to
run twice: settings acknowledge late, so a task whose worker died is delivered again, and
transient database or broker errors are retried with back-off (``clearing.ops.retry``). Time
limits per task are in settings (``CELERY_TASK_ANNOTATIONS``)."""

from __future__ import annotations

from celery import shared_task

from clearing.ops.retry import RETRY
from riskengine.sweeps import foresight, liquidation, services
from riskengine.sweeps.insurance import insurance_fund_after_shard, insurance_fund_check
from riskengine.sweeps.recovery import liquidations_resume, sweeps_recover

# A drain task takes at most this many engine runs (of up to 5,000 accounts each, ≈ 0.6 s idle):
# an index move that touches every account of a big venue is drained by a chain of bounded
# tasks, each far inside its time limit, rather than by one task of unknown length.
DRAIN_BATCHES_PER_TASK = 10


def _drain() -> int:
    """Drain up to ``DRAIN_BATCHES_PER_TASK`` batches; send another drain task if requests are
    left. Returns the accounts swept."""
    swept = 0
    for _ in range(DRAIN_BATCHES_PER_TASK):
        sweep = services.sweep_requests_drain()
        if sweep is None:
            return swept
        swept += sweep.accounts
    sweep_requests_drain.delay()
    return swept


@shared_task(name="sweeps.full", bind=True, **RETRY)
def sweep_full(self, cause: str = "requested", request_key: str | None = None) -> int:
    """Start a distributed full sweep (its shards are separate tasks). Keyed by ``request_key``
    (default: this message's task id, which a redelivery or a retry keeps): a duplicate delivery
    returns the sweep already started."""
    return services.sweep_full_create(cause=cause, request_key=request_key or self.request.id).pk


@shared_task(name="sweeps.full_due")
def sweep_full_due() -> int | None:
    """Start a full sweep when due; also drain event-sweep requests whose task was lost. Not
    retried: beat sends it again within seconds."""
    sweep = services.sweep_full_due()
    _drain()
    return sweep.pk if sweep else None


@shared_task(name="sweeps.shard", bind=True, **RETRY)
def sweep_shard(self, shard_id: int) -> int:
    accounts = services.sweep_shard_run(
        shard_id=shard_id, worker=self.request.hostname or services.HOSTNAME
    ).accounts
    # The shard that completes a full sweep checks the insurance fund at the sweep's prices.
    insurance_fund_after_shard(shard_id=shard_id)
    return accounts


@shared_task(name="sweeps.requests_drain", **RETRY)
def sweep_requests_drain() -> int:
    """Sweep the accounts with a pending request (several engine runs if more than a batch)."""
    return _drain()


@shared_task(name="sweeps.foresight", **RETRY)
def foresight_grade(sweep_id: int, account_ids: list[int]) -> dict:
    """Liquidation foresight and the warning level of ``account_ids`` from their snapshots in a
    full sweep (``riskengine.sweeps.foresight``). Safe to run twice or late: the newest valuation
    wins, and an unchanged level publishes nothing."""
    outcome = foresight.foresight_accounts_grade(sweep_id=sweep_id, account_ids=account_ids)
    return {"accounts": outcome.accounts, "stored": outcome.stored, "events": outcome.events}


@shared_task(name="sweeps.liquidations_send", **RETRY)
def liquidations_send(liquidation_ids: list[int]) -> int:
    """Send the liquidations a shard escalated, one ``sweeps.liquidation_execute`` task each (the
    shard sends this one message instead of thousands). Running it twice sends them twice; the
    liquidations are idempotent."""
    return services.liquidations_send(liquidation_ids=liquidation_ids)


@shared_task(name="sweeps.liquidation_execute", **RETRY)
def liquidation_execute(liquidation_id: int) -> str:
    return liquidation.liquidation_execute(liquidation_id=liquidation_id).status


# --- Periodic upkeep (beat, settings "Periodic upkeep"; named ops.* as ops run them) -------------


@shared_task(name="ops.insurance_fund_check", **RETRY)
def insurance_fund_check_task() -> str | None:
    """Every minute: the insurance fund against its floor at the oracle's current prices."""
    fund = insurance_fund_check(cause="the periodic check")
    return None if fund is None else str(fund.value)


@shared_task(name="ops.liquidations_resume", **RETRY)
def liquidations_resume_task() -> list[int]:
    """Every minute: liquidations still in progress two minutes after they started are sent
    again (their task was lost; executing twice is harmless)."""
    return liquidations_resume()


@shared_task(name="ops.sweeps_recover", **RETRY)
def sweeps_recover_task() -> dict:
    """Every minute: shards of running full sweeps not done past their bound are sent again;
    sweeps that cannot complete are expired with an ops alert (riskengine.sweeps.recovery)."""
    outcome = sweeps_recover()
    return {"resent": outcome.resent, "expired": outcome.expired}

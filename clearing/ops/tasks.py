"""Celery tasks of operations (thin: they call clearing.ops services). All idempotent and
periodic (beat, settings "Periodic upkeep")."""

from __future__ import annotations

from celery import shared_task

from clearing.ops.insurance import insurance_fund_check
from clearing.ops.recovery import liquidations_resume, sweeps_recover
from clearing.ops.retention import margin_snapshots_prune
from clearing.ops.retry import RETRY


@shared_task(name="ops.margin_snapshots_prune", **RETRY)
def margin_snapshots_prune_task() -> dict:
    """Every minute: delete the snapshots (and empty sweeps) the retention policy does not keep."""
    outcome = margin_snapshots_prune()
    return {"snapshots": outcome.snapshots, "sweeps": outcome.sweeps, "skipped": outcome.skipped}


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
    sweeps that cannot complete are expired with an ops alert (clearing.ops.recovery)."""
    outcome = sweeps_recover()
    return {"resent": outcome.resent, "expired": outcome.expired}

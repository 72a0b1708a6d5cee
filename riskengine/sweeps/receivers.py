"""Event-sweep triggers: trades and collateral movements, index moves, parameter activation; and
the liquidation foresight that follows every full sweep.

The triggers' signals are sent after their transaction committed, so a receiver only records a
request (or enqueues a full sweep): the engine run happens in a worker. ``margins_swept`` is sent
inside a shard's transaction: its receiver reads (one query) and sends ``sweeps.foresight`` for the
accounts to grade once the shard commits.
"""

from __future__ import annotations

import logging

import numpy as np
from django.db import transaction

from clearing.marketdata.signals import index_moved
from clearing.signals import accounts_changed
from riskengine.signals import parameter_set_activated
from riskengine.sweeps.foresight import TASK_ACCOUNTS
from riskengine.sweeps.models import SweepKind
from riskengine.sweeps.selectors import accounts_exposed, accounts_graded_above_ok
from riskengine.sweeps.services import sweep_requests_add
from riskengine.sweeps.signals import margins_swept
from riskengine.sweeps.tasks import foresight_grade, sweep_full

log = logging.getLogger(__name__)


def connect() -> None:
    accounts_changed.connect(on_accounts_changed, dispatch_uid="sweeps.accounts_changed")
    index_moved.connect(on_index_moved, dispatch_uid="sweeps.index_moved")
    parameter_set_activated.connect(on_parameter_set_activated, dispatch_uid="sweeps.parameter_set_activated")
    margins_swept.connect(on_margins_swept, dispatch_uid="sweeps.foresight")


def on_accounts_changed(sender, *, account_ids, **kwargs) -> None:
    sweep_requests_add(account_ids=account_ids, cause=f"accounts changed ({sender})")


def on_index_moved(sender, *, underlying, price, reference_price=None, kind="underlying", **kwargs) -> None:
    sweep_requests_add(
        account_ids=accounts_exposed(symbol=underlying),
        cause=f"index {underlying} moved from {reference_price} to {price}",
    )


def on_parameter_set_activated(sender, *, parameter_set, **kwargs) -> None:
    sweep_full.delay(cause=f"parameter set {parameter_set.version} activated")


def on_margins_swept(sender, *, sweep, swept, **kwargs) -> None:
    """After a full sweep's shard: grade the accounts whose equity / MM is below the set's
    ``foresight_below_ratio`` (a figure that is not a number counts as below), and those graded
    above ``ok`` before, so that their level can come back down."""
    if sweep.kind != SweepKind.FULL or swept.account_ids.size == 0:
        return
    level = float(sweep.parameter_set.foresight_below_ratio)
    with np.errstate(invalid="ignore"):
        below = ~(swept.equity >= level * swept.maintenance_margin) | ~swept.finite
    due = set(swept.account_ids[below].tolist())
    due |= accounts_graded_above_ok(account_ids=swept.account_ids.tolist())
    if due:
        ids = sorted(due)
        transaction.on_commit(lambda: foresight_enqueue(sweep_id=sweep.pk, account_ids=ids))


def foresight_enqueue(*, sweep_id: int, account_ids: list[int]) -> None:
    # After the shard's commit: a broker error must not fail the shard's task. The accounts keep
    # their stored foresight and the next full sweep (a minute at most) grades them again.
    for start in range(0, len(account_ids), TASK_ACCOUNTS):
        try:
            foresight_grade.delay(sweep_id, account_ids[start : start + TASK_ACCOUNTS])
        except Exception:
            log.exception("could not enqueue the foresight of sweep %s; the next full sweep will", sweep_id)

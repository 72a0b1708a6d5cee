"""Event-sweep triggers: trades and collateral movements, index moves, parameter activation.

Every signal here is sent after its transaction committed, so a receiver only records a request
(or enqueues a full sweep): the engine run happens in a worker.
"""

from __future__ import annotations

from clearing.marketdata.signals import index_moved
from clearing.signals import accounts_changed
from riskengine.signals import parameter_set_activated
from riskengine.sweeps.selectors import accounts_exposed
from riskengine.sweeps.services import sweep_requests_add
from riskengine.sweeps.tasks import sweep_full


def connect() -> None:
    accounts_changed.connect(on_accounts_changed, dispatch_uid="sweeps.accounts_changed")
    index_moved.connect(on_index_moved, dispatch_uid="sweeps.index_moved")
    parameter_set_activated.connect(on_parameter_set_activated, dispatch_uid="sweeps.parameter_set_activated")


def on_accounts_changed(sender, *, account_ids, **kwargs) -> None:
    sweep_requests_add(account_ids=account_ids, cause=f"accounts changed ({sender})")


def on_index_moved(sender, *, underlying, price, reference_price=None, kind="underlying", **kwargs) -> None:
    sweep_requests_add(
        account_ids=accounts_exposed(symbol=underlying),
        cause=f"index {underlying} moved from {reference_price} to {price}",
    )


def on_parameter_set_activated(sender, *, parameter_set, **kwargs) -> None:
    sweep_full.delay(cause=f"parameter set {parameter_set.version} activated")

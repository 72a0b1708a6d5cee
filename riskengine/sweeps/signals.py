"""Signals of the margin sweeps, for the apps above them.

``margins_swept`` is sent by ``riskengine.sweeps.calls.calls_follow`` inside a shard's (or an
event sweep's) transaction, after its margin calls are written, for the accounts whose snapshot
became current in it, with kwargs ``sweep`` (the ``Sweep``) and ``swept`` (a ``SweptMargins``).
Receivers run in that transaction, so what they write commits or rolls back with the sweep; they
must cost a constant number of queries (a shard holds up to 25,000 accounts) and hand any real
work to a task sent on commit. The automated agents (``agents``) connect there: an account is
looked at again within one sweep of crossing a policy's level.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from django.dispatch import Signal

margins_swept = Signal()


@dataclass(frozen=True, eq=False)
class SweptMargins:
    """The swept figures of the accounts whose snapshot became current, in account id order.

    ``account_ids`` ``(n,)`` int64; ``equity``, ``initial_margin``, ``maintenance_margin`` ``(n,)``
    float64 USD (the engine's, possibly not finite); ``finite`` ``(n,)`` bool (every figure of the
    account is a number). ``result`` is the engine's ``MarginResult`` and ``portfolios`` ``(n,)``
    the index of each account in it, for ``delta_usd``.
    """

    account_ids: np.ndarray
    equity: np.ndarray
    initial_margin: np.ndarray
    maintenance_margin: np.ndarray
    finite: np.ndarray
    result: object
    portfolios: np.ndarray

    def delta_usd(self, i: int) -> dict[str, float]:
        """The dollar delta by underlying (spec section 4b step 6, linked collateral included) of
        account ``i`` (an index into ``account_ids``): ``{"BTC": Δ$}`` for each underlying it is
        exposed to."""
        result = self.result
        k = int(self.portfolios[i])
        names = result.margin_input.parameters.underlyings
        rows = range(int(result.pair_indptr[k]), int(result.pair_indptr[k + 1]))
        return {names[int(result.pair_underlying[r])]: float(result.delta_usd[r]) for r in rows}

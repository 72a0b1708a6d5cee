"""The margin-call decision: what an account's new margin figures do to its call, for many accounts
at once, as a pure function over arrays (no database; the sweep loads the arrays, calls
``call_decisions`` and writes what it says).

The decision table, per account, in order (the first rule that applies decides):

1. a venue account (house, insurance fund) → ``NONE`` (venue accounts have no calls);
2. figures not finite → ``HOLD_NOT_FINITE`` if it has an open call (kept open: neither cured nor
   escalated on a number that is not one, its liquidation suspended), else ``NONE`` (no call is
   opened: its amount would not be a number);
3. healthy → ``CURE`` if it has an open call, else ``NONE``;
4. no open call while its liquidation is in progress (``busy``) → ``NONE`` (its call was escalated
   and the liquidation is working on it; the first sweep after it finishes decides again);
5. not healthy, no open call → a call is opened (for ``call_amounts``); then, as for an open call:
6. in ``margin_call`` with the deadline not elapsed → ``OPEN`` (or ``NONE`` for an existing call);
7. (``liquidation``, or the deadline elapsed) while a liquidation is in progress → ``NONE`` for an
   existing call (a new call cannot meet a busy account: rule 4);
8. exposed to a price not trusted for liquidation → ``SUSPEND`` / ``OPEN_SUSPEND`` (escalation
   waits; logged on the call);
9. otherwise → ``ESCALATE`` / ``OPEN_ESCALATE`` (a liquidation starts).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .document import ISOLATED
from .margin import HEALTHY, LIQUIDATION, MarginResult

NONE, OPEN, CURE, ESCALATE, OPEN_ESCALATE, SUSPEND, OPEN_SUSPEND, HOLD_NOT_FINITE = range(8)
ACTIONS = (
    "none", "open", "cure", "escalate", "open_and_escalate", "suspend", "open_and_suspend", "not_finite_hold",
)  # fmt: skip
OPENS = (OPEN, OPEN_ESCALATE, OPEN_SUSPEND)
ESCALATES = (ESCALATE, OPEN_ESCALATE)
SUSPENDS = (SUSPEND, OPEN_SUSPEND)


@dataclass(frozen=True, eq=False)
class CallDecisions:
    """``action`` ``(n,)`` int8, one of the codes above; ``amount`` ``(n,)`` float64 USD, the
    amount of a call opened now (``call_amounts``), NaN where no call is opened."""

    action: np.ndarray
    amount: np.ndarray


def call_decisions(
    *,
    status: np.ndarray,
    finite: np.ndarray,
    amount_due: np.ndarray,
    has_call: np.ndarray,
    deadline_elapsed: np.ndarray,
    busy: np.ndarray,
    venue: np.ndarray,
    exposed: np.ndarray,
) -> CallDecisions:
    """Decide every account's call transition (table in the module doc). All arrays ``(n,)``:

    - ``status`` int (``STATUSES`` codes), ``finite`` bool: the account's new figures;
      ``amount_due`` float64 USD, what a call opened now would be for (``call_amounts``);
    - ``has_call`` bool: it has an open call;
    - ``deadline_elapsed`` bool: the open call's deadline has passed (for an account without a
      call: the deadline a call opened now would get has, i.e. a cure period of zero);
    - ``busy`` bool: a liquidation of the account is in progress;
    - ``venue`` bool: a venue account (never called);
    - ``exposed`` bool: its margin depends on a price not trusted for liquidation now.
    """
    status = np.asarray(status)
    finite, has_call, elapsed, busy, venue, exposed = (
        np.asarray(a, dtype=bool) for a in (finite, has_call, deadline_elapsed, busy, venue, exposed)
    )
    n = status.size
    action = np.full(n, NONE, dtype=np.int8)
    member = ~venue
    hold = member & ~finite & has_call
    action[hold] = HOLD_NOT_FINITE
    live = member & finite
    action[live & (status == HEALTHY) & has_call] = CURE
    unhealthy = live & (status != HEALTHY) & ~(busy & ~has_call)
    opens = unhealthy & ~has_call
    due = unhealthy & ((status == LIQUIDATION) | elapsed) & ~busy
    action[opens & ~due] = OPEN
    suspend = due & exposed
    action[suspend & opens] = OPEN_SUSPEND
    action[suspend & ~opens] = SUSPEND
    action[due & ~exposed & opens] = OPEN_ESCALATE
    action[due & ~exposed & ~opens] = ESCALATE
    amount = np.where(opens, np.asarray(amount_due, dtype=np.float64), np.nan)
    return CallDecisions(action=action, amount=amount)


def call_amounts(result: MarginResult) -> np.ndarray:
    """What a margin call opened on each portfolio of ``result`` is for, ``(n_portfolios,)``
    float64 USD (0 for a healthy one).

    Cross and portfolio mode: ``IM − E`` (the engine's ``amount_due``, spec section 4c). Isolated
    mode: the spec's amount due (section 4a: ``Σ (IM_i − e_i)`` over positions in margin call,
    plus ``max(0, −free)``) plus ``IM_i − e_i`` of each position in liquidation: such a position
    is closed on its own rather than cured, but the call names what would have restored it, so an
    account whose only trouble is a position in liquidation is still called for a positive amount.
    Per position, the same figures are ``position_call_amounts``."""
    portfolio = result.margin_input.portfolios.position_portfolio
    liquidating = np.where(result.position_status == LIQUIDATION, position_call_amounts(result), 0.0)
    extra = np.bincount(portfolio, weights=liquidating, minlength=result.status.size)
    return result.amount_due + np.where(result.mode == ISOLATED, extra, 0.0)


def position_call_amounts(result: MarginResult) -> np.ndarray:
    """``(n_pos,)`` float64 USD: ``IM_i − e_i`` for a position of an isolated portfolio that is not
    healthy (in margin call or in liquidation), else 0."""
    portfolio = result.margin_input.portfolios.position_portfolio
    unhealthy = (result.mode[portfolio] == ISOLATED) & (result.position_status != HEALTHY)
    return np.where(unhealthy, result.position_initial_margin - result.position_equity, 0.0)

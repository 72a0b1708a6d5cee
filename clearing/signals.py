"""Signals of the clearing domain.

``accounts_changed`` is sent (``sender`` = the service's module name, kwarg ``account_ids``: a
sorted list of margin account ids) after a transaction that changed positions or collateral
balances has committed — a booked trade batch or applied collateral movements. It is never sent for
a transaction that rolled back. The margin sweeps connect it to a coalesced event sweep of those
accounts (``riskengine.sweeps``).

``margin_ratios_published`` is sent by ``clearing.events`` inside the transaction that writes
``margin.updated`` events carrying a swept equity and maintenance margin, with kwarg ``ratios``
(account id → equity / MM as a float, None when MM = 0). Receivers run in that transaction, so what
they write commits or rolls back with the sweep: the web app checks its target bands there
(``frontend.receivers``).

``isolated_fills_booked`` is sent by ``accounts.trading.trades_book`` inside the booking
transaction, after the batch's cash, with kwargs ``fills`` (``accounts.trading.BookedFill`` of
isolated accounts, in booking order) and ``booked_by``. The risk engine allocates or releases each
position's margin there (spec section 4a), on the positions the caller then saves; the booking
refuses when no receiver answers, so an isolated fill is never booked unallocated.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction
from django.dispatch import Signal

accounts_changed = Signal()
margin_ratios_published = Signal()
isolated_fills_booked = Signal()


def accounts_changed_on_commit(*, sender: str, account_ids: Iterable[int]) -> None:
    """Send ``accounts_changed`` for ``account_ids`` once the current transaction commits."""
    ids = sorted(set(account_ids))
    if ids:
        transaction.on_commit(lambda: accounts_changed.send(sender=sender, account_ids=ids))

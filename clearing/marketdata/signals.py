"""Signals of the oracle.

``index_moved`` is the event-sweep hook. It is sent after the transaction that stored the index
price commits, once per move, with keyword arguments:

- ``underlying`` (str): the symbol that moved — an underlying (``BTC``) or, with ``kind="asset"``,
  an unlinked collateral asset (``USDC``), whose holders are the exposed accounts;
- ``kind`` (str): ``"underlying"`` or ``"asset"``;
- ``reference_price`` (Decimal): the price at the last sweep (see
  ``services.index_sweep_reference_set``);
- ``price`` (Decimal): the new good index price;
- ``index_price_id`` (int): the stored ``IndexPrice`` row.

A move fires when the new good price is more than ``event_move`` (a fraction, per underlying in
the active parameter set; ``ASSET_ORACLE_RULES`` for assets) away from the reference; firing moves
the reference to the new price, so one move triggers one event sweep.

``price_status_changed`` is sent inside the transaction that stores new index statuses, with kwarg
``changes``: ``(symbol, previous status, new status)`` tuples. Receivers run in that transaction
(the web app tells the exposed members through the outbox: ``frontend.receivers``).
"""

from django.dispatch import Signal

index_moved = Signal()
price_status_changed = Signal()

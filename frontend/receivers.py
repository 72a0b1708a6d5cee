"""What the web app does when the domain announces a change (connected in ``FrontendConfig.ready``).

Both signals are sent inside the producer's transaction, so what the receivers write (band states,
outbox rows) commits or rolls back with the change they follow.
"""

from __future__ import annotations

from clearing.marketdata.signals import price_status_changed
from clearing.signals import margin_ratios_published
from frontend.services import price_status_events_publish, target_bands_check


def connect() -> None:
    margin_ratios_published.connect(on_margin_ratios_published, dispatch_uid="frontend.target_bands")
    price_status_changed.connect(on_price_status_changed, dispatch_uid="frontend.price_status")


def on_margin_ratios_published(sender, *, ratios, **kwargs) -> None:
    """A swept ratio is checked against the account's target band (``target_bands_check``)."""
    target_bands_check(ratios=ratios)


def on_price_status_changed(sender, *, changes, **kwargs) -> None:
    """The members exposed to a symbol hear of its oracle status change."""
    price_status_events_publish(changes=changes)

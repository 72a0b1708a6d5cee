"""Publishing live events for members' browsers (see ``frontend.models.OutboxEvent``).

Call these inside the transaction that makes the change the event announces: the rows commit or
roll back with it, and the relay in the web process pushes only committed rows.
"""

from __future__ import annotations

import json

from django.core.serializers.json import DjangoJSONEncoder

from frontend.models import OutboxEvent


def account_group(account_id: int) -> str:
    """The channel-layer group of one margin account's watchers."""
    return f"account-{account_id}"


def events_publish(*, events: list[tuple[int, str, dict]]) -> list[OutboxEvent]:
    """Record ``(account_id, type, payload)`` events in one insert.

    Each message delivered is ``{"type": type, "account": account_id, **payload}``; Decimals and
    datetimes in ``payload`` become strings.
    """
    rows = [
        OutboxEvent(
            group=account_group(account_id),
            type=event_type,
            payload=json.loads(
                json.dumps({"type": event_type, "account": account_id, **payload}, cls=DjangoJSONEncoder)
            ),
        )
        for account_id, event_type, payload in events
    ]
    created = OutboxEvent.objects.bulk_create(rows)
    _target_bands_follow(events)
    return created


def _target_bands_follow(events: list[tuple[int, str, dict]]) -> None:
    """A swept margin (``margin.updated`` carrying equity and MM) is checked against the account's
    target band in the same transaction, so the band alert commits, or not, with the sweep."""
    ratios: dict[int, float | None] = {}
    for account_id, event_type, payload in events:
        if event_type != "margin.updated" or "maintenance_margin" not in payload or "equity" not in payload:
            continue
        mm = float(payload["maintenance_margin"])
        ratios[account_id] = float(payload["equity"]) / mm if mm > 0 else None
    if ratios:
        from frontend.services import target_bands_check  # services publish through this module

        target_bands_check(ratios=ratios)


def event_publish(*, account_id: int, type: str, payload: dict) -> OutboxEvent:
    (event,) = events_publish(events=[(account_id, type, payload)])
    return event

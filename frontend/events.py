"""Publishing live events for members' browsers (see ``frontend.models.OutboxEvent``).

Call these inside the transaction that makes the change the event announces: the rows commit or
roll back with it, and the relay in the web process pushes only committed rows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone

from clearing.bulk import rows_copy
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


def events_publish_encoded(
    *, rows: Sequence[tuple[int, str, str]], margin_ratios: Mapping[int, float | None] | None = None
) -> int:
    """The bulk path for producers of many events (a sweep shard writes up to one per account):
    ``rows`` are ``(account_id, type, message)`` with ``message`` the delivered message already
    encoded as JSON text (``{"type": type, "account": account_id, ...}``, no NaN/inf). They are
    written by ``clearing.bulk.rows_copy`` (on PostgreSQL one ``COPY``: no per-row decode/re-encode,
    no huge ``INSERT``); the rows are the same ``OutboxEvent`` rows the relay reads.
    ``margin_ratios`` (account id → equity / MM, None when MM = 0) are the swept ratios of the
    ``margin.updated`` events among ``rows``: they are checked against target bands in the same
    transaction, as ``events_publish`` does for its payloads. Returns the number of rows written."""
    if rows:
        now = timezone.now()
        rows_copy(
            model=OutboxEvent,
            columns=("group", "type", "payload", "created_at"),
            rows=[(account_group(account), kind, message, now) for account, kind, message in rows],
        )
    if margin_ratios:
        from frontend.services import target_bands_check

        target_bands_check(ratios=margin_ratios)
    return len(rows)


def event_publish(*, account_id: int, type: str, payload: dict) -> OutboxEvent:
    (event,) = events_publish(events=[(account_id, type, payload)])
    return event

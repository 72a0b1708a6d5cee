"""Publishing live events for members' browsers (see ``clearing.models.OutboxEvent``).

Call these inside the transaction that makes the change the event announces: the rows commit or
roll back with it, and the relay in the web process (``frontend.relay``) pushes only committed rows.

Publishing writes the rows and nothing else. The swept margin ratios among the events (the
``margin.updated`` events that carry equity and MM) are announced, in the same transaction, through
``clearing.signals.margin_ratios_published``: the app that owns a rule on them (the web app's target
bands) connects its receiver there.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection
from django.utils import timezone

from clearing.models import OutboxEvent
from clearing.signals import margin_ratios_published


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
    _margin_ratios_announce(events)
    return created


def _margin_ratios_announce(events: list[tuple[int, str, dict]]) -> None:
    """Send ``margin_ratios_published`` for the swept margins (``margin.updated`` carrying equity and
    MM) among ``events``, in the caller's transaction, so what a receiver writes commits, or not,
    with the sweep."""
    ratios: dict[int, float | None] = {}
    for account_id, event_type, payload in events:
        if event_type != "margin.updated" or "maintenance_margin" not in payload or "equity" not in payload:
            continue
        mm = float(payload["maintenance_margin"])
        ratios[account_id] = float(payload["equity"]) / mm if mm > 0 else None
    if ratios:
        margin_ratios_published.send(sender=__name__, ratios=ratios)


def events_publish_encoded(
    *, rows: Sequence[tuple[int, str, str]], margin_ratios: Mapping[int, float | None] | None = None
) -> int:
    """The bulk path for producers of many events (a sweep shard writes up to one per account):
    ``rows`` are ``(account_id, type, message)`` with ``message`` the delivered message already
    encoded as JSON text (``{"type": type, "account": account_id, ...}``, no NaN/inf). On
    PostgreSQL they are written by one ``COPY`` (no per-row decode/re-encode, no huge ``INSERT``);
    the rows are the same ``OutboxEvent`` rows the relay reads. ``margin_ratios`` (account id →
    equity / MM, None when MM = 0) are the swept ratios of the ``margin.updated`` events among
    ``rows``: they are announced (``margin_ratios_published``) in the same transaction, as
    ``events_publish`` does for its payloads. Returns the number of rows written."""
    if rows:
        now = timezone.now()
        if connection.vendor == "postgresql":
            table = OutboxEvent._meta.db_table
            sql = f'COPY {table} ("group", type, payload, created_at) FROM STDIN'
            with connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
                for account_id, event_type, message in rows:
                    copy.write_row((f"account-{account_id}", event_type, message, now))
        else:
            OutboxEvent.objects.bulk_create(
                [
                    OutboxEvent(group=account_group(account_id), type=event_type, payload=json.loads(message))
                    for account_id, event_type, message in rows
                ],
                batch_size=500,
            )
    if margin_ratios:
        margin_ratios_published.send(sender=__name__, ratios=dict(margin_ratios))
    return len(rows)


def event_publish(*, account_id: int, type: str, payload: dict) -> OutboxEvent:
    (event,) = events_publish(events=[(account_id, type, payload)])
    return event

"""Publishing live events for members' browsers (see ``clearing.models.OutboxEvent``).

Call these inside the transaction that makes the change the event announces: the rows commit or
roll back with it, and the relay in the web process (``frontend.relay``) pushes only committed rows.

Publishing writes the rows and nothing else. The swept margin ratios among the events (the
``margin.updated`` events that carry equity and MM) are announced, in the same transaction, through
``clearing.signals.margin_ratios_published``: the app that owns a rule on them (the web app's target
bands) connects its receiver there.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence

import numpy as np
from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone

from clearing.bulk import rows_copy
from clearing.models import OutboxEvent
from clearing.signals import margin_ratios_published

# The group of an outbox row that carries many accounts' events (a full-sweep shard's
# margin.updated: one row instead of one per account); the relay fans it out to each event's
# account group (``frontend.relay.outbox_claim``).
FANOUT_GROUP = "fanout"


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
    encoded as JSON text (``{"type": type, "account": account_id, ...}``, no NaN/inf). They are
    written by ``clearing.bulk.rows_copy`` (on PostgreSQL one ``COPY``: no per-row decode/re-encode,
    no huge ``INSERT``); the rows are the same ``OutboxEvent`` rows the relay reads.
    ``margin_ratios`` (account id → equity / MM, None when MM = 0) are the swept ratios of the
    ``margin.updated`` events among ``rows``: they are announced (``margin_ratios_published``) in
    the same transaction, as ``events_publish`` does for its payloads. Returns the number of rows written."""
    if rows:
        now = timezone.now()
        rows_copy(
            model=OutboxEvent,
            columns=("group", "type", "payload", "created_at"),
            rows=[(account_group(account), kind, message, now) for account, kind, message in rows],
        )
    if margin_ratios:
        margin_ratios_published.send(sender=__name__, ratios=dict(margin_ratios))
    return len(rows)


def events_fanout_publish(*, type: str, fields: Mapping[str, object], columns: Mapping[str, Sequence]) -> int:
    """Record many accounts' events of one ``type`` as one outbox row that the relay fans out.
    Event ``i`` is ``{"type": type, **fields, name: columns[name][i] for each column}``; the
    columns (of equal length) must include ``account``, whose group each event is sent to exactly
    as if it had a row of its own. Number columns (numpy arrays; finite: the outbox holds no NaN)
    are stored as base64 of their float64 or int64 bytes and string columns as codes into their
    distinct values: a shard's 25,000 events are one small JSON document of a few strings, not
    25,000 objects (or 150,000 JSON numbers) to encode, parse into ``jsonb`` and index; the relay
    decodes them exactly (``fanout_events``). Returns the number of events."""
    n = len(columns["account"])
    if not n:
        return 0
    encoded: dict[str, dict] = {}
    for name, values in columns.items():
        if isinstance(values, np.ndarray):
            kind = "i8" if values.dtype.kind in "iu" else "f8"
            if kind == "f8" and not np.isfinite(values).all():
                raise ValueError(f"column {name} holds a figure that is not finite")
            encoded[name] = {kind: base64.b64encode(values.astype(f"<{kind}").tobytes()).decode()}
        else:
            names, codes = np.unique(np.asarray(values, dtype=object).astype(str), return_inverse=True)
            encoded[name] = {
                "values": names.tolist(),
                "codes": base64.b64encode(codes.astype("<i8").tobytes()).decode(),
            }
    payload = json.dumps({"fields": {"type": type, **fields}, "columns": encoded}, cls=DjangoJSONEncoder)
    rows_copy(
        model=OutboxEvent,
        columns=("group", "type", "payload", "created_at"),
        rows=[(FANOUT_GROUP, type, payload, timezone.now())],
    )
    return n


def _fanout_column(column: Mapping) -> list:
    if "values" in column:
        values = column["values"]
        return [
            values[code] for code in np.frombuffer(base64.b64decode(column["codes"]), dtype="<i8").tolist()
        ]
    kind = "i8" if "i8" in column else "f8"
    return np.frombuffer(base64.b64decode(column[kind]), dtype=f"<{kind}").tolist()


def fanout_events(payload: Mapping) -> list[dict]:
    """The events of a fan-out row's payload (``events_fanout_publish``), in column order."""
    fields, columns = payload["fields"], payload["columns"]
    names = list(columns)
    decoded = [_fanout_column(columns[name]) for name in names]
    return [{**fields, **dict(zip(names, values, strict=True))} for values in zip(*decoded, strict=True)]

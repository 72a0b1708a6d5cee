"""Ops alerts: what any app raises for ops to look at (``clearing.ops.models.OpsAlert``), and
resolves once the cause has gone. The kernel owns them so that the oracle, the sweeps, the
insurance fund and governance raise alerts without importing one another."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from clearing.ops.models import OpsAlert

# Alert kind → severity ("warning" unless an app says otherwise): OpsAlert has kinds, not
# severities. Apps register theirs in ``AppConfig.ready()``; the metrics label open alerts with it.
ALERT_SEVERITIES: dict[str, str] = {}


def ops_alert_severities_register(severities: Mapping[str, str]) -> None:
    """Declare the severity of some alert kinds (``{"insurance_fund_negative": "critical"}``)."""
    ALERT_SEVERITIES.update(severities)


def ops_alerts_raise(
    *, kind: str, messages: Mapping[str, str], now: datetime | None = None
) -> list[OpsAlert]:
    """Open the alerts ``(kind, key)`` of ``messages`` (key → message), or bump the open ones
    (count, message, time): one locked read, one update, one insert, however many keys (a sweep
    suspends thousands of liquidations at once).

    One open alert per ``(kind, key)`` is a unique index; an alert another process opens between
    our read and our insert is kept as it is (``ignore_conflicts``), so a race never fails the
    caller's transaction. Alerts opened here are returned without their primary key."""
    if not messages:
        return []
    now = now or timezone.now()
    pending = dict(messages)
    alerts = list(
        OpsAlert.objects.select_for_update()
        .filter(kind=kind, key__in=list(pending), resolved_at=None)
        .order_by("pk")
    )
    for alert in alerts:
        alert.raise_count += 1
        alert.message = pending.pop(alert.key)
        alert.last_raised_at = now
    OpsAlert.objects.bulk_update(alerts, ["raise_count", "message", "last_raised_at"])
    opened = [OpsAlert(kind=kind, key=key, message=text, last_raised_at=now) for key, text in pending.items()]
    OpsAlert.objects.bulk_create(opened, ignore_conflicts=True)
    return alerts + opened


@transaction.atomic
def ops_alert_raise(*, kind: str, key: str, message: str) -> OpsAlert:
    """Open an alert, or bump the open one with the same ``(kind, key)`` (count, message, time)."""
    (alert,) = ops_alerts_raise(kind=kind, messages={key: message})
    return alert if alert.pk else OpsAlert.objects.get(kind=kind, key=key, resolved_at=None)


def ops_alerts_resolve(*, kind: str, keys: Iterable[str], now: datetime | None = None) -> int:
    """Close the open alerts ``(kind, key)`` for ``keys``; returns how many were closed."""
    return OpsAlert.objects.filter(kind=kind, key__in=list(keys), resolved_at=None).update(
        resolved_at=now or timezone.now()
    )


def ops_alert_resolve(*, kind: str, key: str) -> int:
    """Close the open alert ``(kind, key)``, if any; returns how many were closed (0 or 1)."""
    return ops_alerts_resolve(kind=kind, keys=[key])


def ops_alerts_open() -> list[OpsAlert]:
    return list(OpsAlert.objects.filter(resolved_at=None).order_by("-last_raised_at"))

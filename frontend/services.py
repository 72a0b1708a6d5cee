"""Writes of the member web app: target bands, and the live events it publishes for others.

Every function that publishes runs inside the caller's transaction (the outbox: the event commits
with the change it announces, see ``frontend.relay``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction

from accounts.models import MarginAccount, User
from clearing.bulk import filter_any
from clearing.events import events_publish
from clearing.marketdata.models import IndexStatus
from clearing.validation import decimal_positive
from frontend.models import BandState, TargetBand
from riskengine.sweeps.selectors import accounts_exposed


def _band_writer_check(user: User) -> None:
    # The same roles that may change an account over the API (traders, venue ops): a viewer's
    # access is read-only in the web app as it is on the API.
    from clearing.api.permissions import ACCOUNT_WRITERS, user_role

    if user_role(user) not in ACCOUNT_WRITERS:
        raise PermissionDenied("Your role is read-only: only traders (and venue ops) change target bands.")


@transaction.atomic
def target_band_set(*, account: MarginAccount, lower: object, upper: object, user: User) -> TargetBand:
    """Set the band ``lower ≤ equity / MM ≤ upper`` of ``account``. Refused with a ValidationError
    naming ``lower`` or ``upper`` (nothing changed) unless ``0 < lower < upper``, and with
    ``PermissionDenied`` for a read-only role (viewers)."""
    _band_writer_check(user)
    lower = decimal_positive(lower, field="lower")
    upper = decimal_positive(upper, field="upper")
    if upper <= lower:
        raise ValidationError({"upper": "Must be above the lower bound."})
    if max(lower, upper) >= Decimal("1e8"):
        raise ValidationError({"upper": "Must be below 100,000,000."})
    band, _ = TargetBand.objects.update_or_create(
        account=account, defaults={"lower": lower, "upper": upper, "updated_by": user}
    )
    return band


@transaction.atomic
def target_band_clear(*, account: MarginAccount, user: User) -> int:
    """Remove ``account``'s band; ``PermissionDenied`` for a read-only role (viewers)."""
    _band_writer_check(user)
    deleted, _ = TargetBand.objects.filter(account=account).delete()
    return deleted


def target_bands_check(*, ratios: Mapping[int, float | None]) -> list[TargetBand]:
    """Compare freshly swept collateralisation ratios (account id → equity / MM, None when MM = 0)
    with the accounts' bands; publish ``target_band.breached`` when an account leaves its band and
    ``target_band.restored`` when it comes back. Call it in the transaction that stores the sweep's
    results. Returns the bands whose state changed."""
    changed = []
    if not ratios:
        return changed
    # A shard passes up to 25,000 accounts, of which few have a band: one parameter, not 25,000
    # placeholders (whose client-side formatting cost more than the query).
    bands = filter_any(TargetBand.objects.all(), "account_id", list(ratios))
    bands = bands.order_by("pk").select_for_update()
    events = []
    for band in bands:
        ratio = ratios[band.account_id]
        state = band.state_for(ratio)
        if state == band.state:
            continue
        band.state = state
        changed.append(band)
        kind = "target_band.restored" if state == BandState.INSIDE else "target_band.breached"
        events.append(
            (
                band.account_id,
                kind,
                {"ratio": ratio, "lower": band.lower, "upper": band.upper, "state": state},
            )
        )
    if changed:
        TargetBand.objects.bulk_update(changed, ["state"])
        events_publish(events=events)
    return changed


def price_status_events_publish(*, changes: Iterable[tuple[str, str, str]]) -> int:
    """Tell each member whose accounts depend on a symbol that its oracle status changed;
    ``changes`` are ``(symbol, previous status, new status)``, ``previous`` empty for a symbol's
    first status. Called by the oracle in the transaction that stores the new status. Returns how
    many events were written.

    A member hears of a change once, however many of its accounts depend on the symbol
    (``accounts_exposed``: positions on it, collateral that is it or is linked to it), and never
    of a symbol none of its accounts depends on. The event goes to the group of the member's first
    exposed account (a member user's socket watches every account of its member,
    ``margin_accounts_visible``) and names all of them in ``accounts``, so a page re-reads whichever
    it shows. A symbol whose first status is ``ok`` is no news and publishes nothing."""
    events = []
    for symbol, previous, status in changes:
        if previous == status or (not previous and status == IndexStatus.OK):
            continue
        exposed = accounts_exposed(symbol=symbol)
        if not exposed:
            continue
        by_member: dict[int, list[int]] = {}
        rows = filter_any(MarginAccount.objects.all(), "id", exposed).order_by("pk")
        for account_id, member_id in rows.values_list("pk", "member_id"):
            by_member.setdefault(member_id, []).append(account_id)
        events.extend(
            (
                accounts[0],
                "price.status",
                {"symbol": symbol, "previous": previous, "status": status, "accounts": accounts},
            )
            for accounts in by_member.values()
        )
    if events:
        events_publish(events=events)
    return len(events)

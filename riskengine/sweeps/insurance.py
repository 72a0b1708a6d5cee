"""The insurance fund's guard: its value against a governed floor, and the deficit path.

The fund (the one ``AccountKind.INSURANCE_FUND`` account) receives liquidation fees and pays the
deficits of accounts liquidated below zero (``riskengine.sweeps.liquidation.liquidation_execute``).
Its value is its balances at the oracle's last good prices, in USD (as the ops dashboard shows
it); an asset without a price is left out and named in the alert.

Checks. ``insurance_fund_check`` compares the value with the active parameter set's
``insurance_fund_floor`` (governed: edited in a draft, proposed, approved by a second person) and
keeps two ops alerts in step, key ``fund``:

- ``insurance_fund_below_floor`` (warning) while the value is below the floor;
- ``insurance_fund_negative`` (critical) while the value is below zero.

Each opens once and is bumped while the condition lasts, and is resolved when it clears. The check
runs after every liquidation, in its transaction (``insurance_fund_after_liquidation``, the hook in
``liquidation_execute``), after every full sweep (``insurance_fund_after_shard``, from the shard
task that completes it) and every minute from beat (``ops.insurance_fund_check``), so a fund that
loses value with prices alone is seen within a minute.

Deficit path. When a liquidation's deficit exceeds what the fund holds, the liquidation still
completes: the fund's balance goes negative (the venue's own capital stands behind it until more is
paid in). ``insurance_fund_exhausted`` is called with the fund below zero: it raises the critical
alert and records the uncovered deficit (``UncoveredDeficit``, append-only). This is where
auto-deleveraging will go — closing the most profitable opposite positions at the bankruptcy
price to cover the shortfall; today it does nothing more, and ops decide.
"""

from __future__ import annotations

import logging
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from clearing.marketdata.quotes import MarketQuotes
from clearing.ops.alerts import ops_alerts_raise, ops_alerts_resolve
from clearing.ops.metrics import INSURANCE_CHECK_FAILURES
from clearing.ops.models import OpsAlert, UncoveredDeficit
from riskengine.fund import FundValue, insurance_fund_value
from riskengine.sweeps.models import Liquidation, Sweep, SweepKind, SweepStatus
from riskengine.sweeps.selectors import sweep_quotes

log = logging.getLogger(__name__)

ALERT_BELOW_FLOOR = "insurance_fund_below_floor"
ALERT_NEGATIVE = "insurance_fund_negative"
ALERT_KEY = "fund"
# Severity of the ops alerts this module raises (OpsAlert has kinds, not severities).
SEVERITY = {ALERT_BELOW_FLOOR: "warning", ALERT_NEGATIVE: "critical"}
CENT = Decimal("0.01")


def _usd(amount: Decimal) -> str:
    return f"{amount.quantize(CENT):,} USD"


def insurance_fund_check(
    *, quotes: MarketQuotes | None = None, cause: str, liquidation: Liquidation | None = None
) -> FundValue | None:
    """Value the fund, keep its alerts in step (module docstring) and, below zero, take the
    deficit path. Returns the value checked."""
    fund = insurance_fund_value(quotes=quotes)
    if fund is None:
        return None
    now = timezone.now()
    note = f" (no price for {', '.join(fund.unpriced)}: left out)" if fund.unpriced else ""
    if fund.value < fund.floor:
        ops_alerts_raise(
            kind=ALERT_BELOW_FLOOR,
            messages={
                ALERT_KEY: f"Insurance fund at {_usd(fund.value)}, below its floor of "
                f"{_usd(fund.floor)}{note} — after {cause}."
            },
            now=now,
        )
    else:
        ops_alerts_resolve(kind=ALERT_BELOW_FLOOR, keys=[ALERT_KEY], now=now)
    if fund.value < 0:
        insurance_fund_exhausted(fund=fund, cause=cause, liquidation=liquidation, note=note)
    else:
        ops_alerts_resolve(kind=ALERT_NEGATIVE, keys=[ALERT_KEY], now=now)
    return fund


def insurance_fund_exhausted(
    *, fund: FundValue, cause: str, liquidation: Liquidation | None = None, note: str = ""
) -> UncoveredDeficit | None:
    """The fund is below zero. Today: the critical alert, and the uncovered deficit recorded —
    once per liquidation that deepened it, or once when prices alone took it below zero. The hook
    for auto-deleveraging (module docstring). Returns the record made, if any."""
    shortfall = -fund.value
    already_open = OpsAlert.objects.filter(kind=ALERT_NEGATIVE, key=ALERT_KEY, resolved_at=None).exists()
    ops_alerts_raise(
        kind=ALERT_NEGATIVE,
        messages={
            ALERT_KEY: f"Insurance fund exhausted: {_usd(fund.value)}{note} — after {cause}. "
            "Deficits beyond it are not covered (Operations › Uncovered deficits)."
        },
    )
    deficit = liquidation.deficit_covered if liquidation is not None else Decimal(0)
    if deficit > 0:
        uncovered = min(deficit, shortfall)
    elif liquidation is None and not already_open:
        uncovered = shortfall
    else:
        return None
    log.critical("insurance fund exhausted: %s uncovered after %s", uncovered, cause)
    values = {"at": timezone.now(), "fund_value": fund.value, "uncovered": uncovered, "cause": cause[:200]}
    if liquidation is None:
        return UncoveredDeficit.objects.create(**values)
    record, _ = UncoveredDeficit.objects.get_or_create(liquidation=liquidation, defaults=values)
    return record


def insurance_fund_after_liquidation(*, liquidation: Liquidation, quotes: MarketQuotes | None = None) -> None:
    """The hook at the end of ``liquidation_execute``, inside its transaction (the fund's row is
    locked there, so the value read is the one the liquidation left). A failure of the check is
    logged and never fails the liquidation: the beat check runs again within a minute."""
    try:
        with transaction.atomic():
            cause = f"liquidation {liquidation.pk}"
            insurance_fund_check(quotes=quotes, cause=cause, liquidation=liquidation)
    except Exception:
        INSURANCE_CHECK_FAILURES.inc()
        log.exception("insurance fund check after liquidation %s failed", liquidation.pk)


def insurance_fund_after_shard(*, shard_id: int) -> FundValue | None:
    """After a shard task: if the shard's full sweep is done, check the fund at the sweep's prices
    (one query otherwise)."""
    sweep = Sweep.objects.filter(shards__pk=shard_id, kind=SweepKind.FULL, status=SweepStatus.DONE).first()
    if sweep is None:
        return None
    return insurance_fund_check(quotes=sweep_quotes(sweep=sweep), cause=f"full sweep {sweep.pk}")

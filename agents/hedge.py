"""Hedge policies at work: propose or request the trade that brings an underlying's dollar delta
back to its target (``docs/agents.md``).

``hedge_policy_evaluate`` runs for a policy right after a sweep found its account's delta further
from the target than the threshold (``agents.receivers``), in one transaction under the account
lock. It does nothing while the policy is off or suspended, the account has a liquidation in
progress, the policy's last hedge (of any outcome) is more recent than ``min_interval_seconds``,
or a price the account depends on (or the hedge's underlying) is not ``ok``. Otherwise:

1. the engine margins the account now; the delta ``Δ$`` of the underlying (spec section 4b step
   6, linked collateral included) is compared with the target: within the threshold, nothing;
2. the hedge is ``q = −(Δ$ − target) / (multiplier × index)`` units of the policy's instrument,
   at most ``max_quantity`` either way, to ``QUANTITY_STEP``;
3. the engine margins the account after that trade (``riskengine.whatif``, at the mark): a hedge
   that would *raise* the initial margin is not sent, in either mode — it is recorded
   ``withheld`` with the figures, as is a request without an active endpoint;
4. otherwise a ``HedgeRequest`` is written — ``proposed`` (a ``hedge.proposed`` notification with
   the trade and its margin effect) or ``requested`` (``hedge.requested``, and the webhook is
   delivered by ``agents.tasks.webhook_deliver``, sent once the transaction commits: the sweep
   never waits for it). A new hedge supersedes the policy's older ones still open.

A fill booked through ``POST /api/v1/trades/`` may name the request (``hedge_fills_book``): the
request is then ``filled`` and nothing more is delivered for it; a request is filled once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from accounts.models import User
from accounts.services import margin_accounts_lock
from accounts.trading import Fill, trades_book
from agents.models import (
    HEDGE_LINKABLE,
    HEDGE_OPEN,
    HedgeFill,
    HedgeMode,
    HedgePolicy,
    HedgeRequest,
    HedgeStatus,
)
from clearing.events import events_publish
from clearing.marketdata.quotes import MarketQuotes
from clearing.models import Trade
from clearing.validation import decimal_from_float
from riskengine import whatif
from riskengine.core import DocumentError, NonFiniteFigures
from riskengine.reference import reference_current
from riskengine.selectors import NoActiveParameterSet
from riskengine.sweeps.models import Liquidation, LiquidationStatus
from riskengine.withdrawals import account_price_symbols, prices_untrusted

log = logging.getLogger(__name__)

# The smallest step of a hedge's quantity (instrument units).
QUANTITY_STEP = Decimal("0.0001")


def delta_of(result: dict, underlying: str) -> float:
    """The dollar delta of ``underlying`` in an engine result dict (0 without exposure)."""
    return next((row["delta_usd"] for row in result["by_underlying"] if row["underlying"] == underlying), 0.0)


def hedge_quantity(*, delta: float, target: Decimal, per_unit: Decimal, cap: Decimal) -> Decimal:
    """The units (signed) that move ``delta`` to ``target`` at ``per_unit`` USD of delta per unit,
    at most ``cap`` either way, toward zero to ``QUANTITY_STEP``."""
    wanted = (Decimal(target) - decimal_from_float(delta)) / per_unit
    wanted = max(-cap, min(cap, wanted))
    return wanted.quantize(QUANTITY_STEP, rounding=ROUND_DOWN)


def _event_payload(request: HedgeRequest) -> dict:
    return {
        "hedge_request": request.pk,
        "id": str(request.idempotency_id),
        "status": request.status,
        "instrument": request.instrument.symbol,
        "quantity": request.quantity,
        "delta_usd_before": request.delta_usd_before,
        "delta_usd_after": request.delta_usd_after,
        "initial_margin_before": request.initial_margin_before,
        "initial_margin_after": request.initial_margin_after,
        "reason": request.reason,
    }


def hedge_events_publish(requests: Sequence[HedgeRequest]) -> None:
    """``hedge.<status>`` to each request's account watchers (in the caller's transaction)."""
    events_publish(events=[(r.account_id, f"hedge.{r.status}", _event_payload(r)) for r in requests])


@transaction.atomic
def hedge_policy_evaluate(
    *, policy_id: int, quotes: MarketQuotes | None = None, now: datetime | None = None
) -> HedgeRequest | None:
    """Propose, request or withhold one hedge for ``policy_id`` if its delta strayed (module
    docstring); None when the policy does nothing now (a rule, or the delta within threshold)."""
    account_id = HedgePolicy.objects.filter(pk=policy_id).values_list("account_id", flat=True).first()
    if account_id is None:
        return None
    account = margin_accounts_lock(account_ids=[account_id])[account_id]
    policy = (
        HedgePolicy.objects.select_for_update(of=("self",))
        .select_related("underlying", "instrument", "endpoint")
        .get(pk=policy_id)
    )
    symbol = policy.underlying.symbol
    if not policy.is_running:
        return None
    if Liquidation.objects.filter(account_id=account_id, status=LiquidationStatus.IN_PROGRESS).exists():
        log.info("hedge policy %s skipped: %s has a liquidation in progress", policy_id, account.code)
        return None
    now = now or timezone.now()
    last = policy.requests.order_by("-created_at").values_list("created_at", flat=True).first()
    if last is not None and now - last < timedelta(seconds=policy.min_interval_seconds):
        return None
    quotes = quotes or whatif.quotes_current()
    symbols = account_price_symbols(account_id=account_id) | {symbol}
    untrusted = prices_untrusted(quotes=quotes, symbols=symbols)
    if untrusted:
        log.info("hedge policy %s skipped: prices not trusted (%s)", policy_id, ", ".join(untrusted))
        return None
    instrument = policy.instrument
    if not instrument.is_active or (instrument.expiry is not None and instrument.expiry <= now):
        log.info("hedge policy %s skipped: %s is not open for clearing", policy_id, instrument.symbol)
        return None
    try:
        reference = reference_current()
        before = whatif.margin_what_if(account=account, quotes=quotes, reference=reference).before
        delta = delta_of(before, symbol)
        if not abs(decimal_from_float(delta) - policy.target_delta_usd) > policy.threshold_usd:
            return None
        price = decimal_from_float(quotes.underlying_prices[symbol])
        quantity = hedge_quantity(
            delta=delta, target=policy.target_delta_usd, per_unit=instrument.multiplier * price,
            cap=policy.max_quantity,
        )  # fmt: skip
        if quantity == 0:
            return None
        outcome = whatif.margin_what_if(
            account=account, trades=[(instrument, quantity, None)], quotes=quotes, reference=reference
        )
    except (NoActiveParameterSet, NonFiniteFigures, DocumentError, ValidationError, KeyError) as error:
        log.info("hedge policy %s skipped: the account cannot be margined now (%s)", policy_id, error)
        return None
    before, after = outcome.before, outcome.after
    status, reason, endpoint = _decision(policy=policy, before=before, after=after)
    request = HedgeRequest(
        policy=policy,
        account=account,
        instrument=instrument,
        mode=policy.mode,
        quantity=quantity,
        price=price,
        delta_usd_before=delta,
        delta_usd_after=delta_of(after, symbol),
        target_delta_usd=policy.target_delta_usd,
        equity_before=before["equity"],
        equity_after=after["equity"],
        initial_margin_before=before["initial_margin"],
        initial_margin_after=after["initial_margin"],
        maintenance_margin_before=before["maintenance_margin"],
        maintenance_margin_after=after["maintenance_margin"],
        status=status,
        reason=reason,
        endpoint=endpoint,
        created_at=now,
    )
    if status == HedgeStatus.REQUESTED:
        request.next_attempt_at = now
        request.deliver_until = now + timedelta(hours=settings.WEBHOOK_RETRY_HOURS)
    superseded = []
    if status != HedgeStatus.WITHHELD:
        superseded = list(policy.requests.filter(status__in=HEDGE_OPEN).select_related("instrument"))
        policy.requests.filter(pk__in=[r.pk for r in superseded]).update(
            status=HedgeStatus.SUPERSEDED, next_attempt_at=None
        )
        for old in superseded:
            old.status = HedgeStatus.SUPERSEDED
    request.save()
    hedge_events_publish([*superseded, request])
    if status == HedgeStatus.REQUESTED:
        transaction.on_commit(lambda: _deliver_enqueue(request.pk))
    return request


def _decision(*, policy: HedgePolicy, before: dict, after: dict) -> tuple[str, str, object]:
    """``(status, reason, endpoint)`` of a hedge the engine has margined both ways."""
    im_before, im_after = before["initial_margin"], after["initial_margin"]
    # Written so that a NaN withholds too: every comparison with NaN is false.
    if not (im_after <= im_before):
        return (
            HedgeStatus.WITHHELD,
            f"Not sent: the trade would raise the initial margin from {im_before:,.2f} to "
            f"{im_after:,.2f} USD.",
            None,
        )
    if policy.mode == HedgeMode.PROPOSE:
        return HedgeStatus.PROPOSED, "", None
    endpoint = policy.endpoint
    if endpoint is None or not endpoint.is_active:
        return HedgeStatus.WITHHELD, "Not sent: the policy's webhook endpoint is switched off.", None
    return HedgeStatus.REQUESTED, "", endpoint


def _deliver_enqueue(hedge_request_id: int) -> None:
    from agents.tasks import webhook_deliver  # circular: tasks import this module

    # After commit: a broker error must not undo the request. It stays due (next_attempt_at) and
    # ``agents.webhooks_due`` sends it within its period.
    try:
        webhook_deliver.delay(hedge_request_id)
    except Exception:
        log.exception(
            "could not enqueue the delivery of hedge request %s; webhooks_due will", hedge_request_id
        )


# --- Fills that name a hedge request ---------------------------------------------------------------------


@transaction.atomic
def hedge_fills_book(
    *, fills: Sequence[Fill], hedge_requests: Sequence[int | None], booked_by: User | None = None
) -> list[Trade]:
    """Book ``fills`` (``accounts.trading.trades_book``, all or nothing) and link each to the hedge
    request of the same index in ``hedge_requests`` (None: no link). A named request must exist,
    be of the fill's account and instrument and not be filled or withheld; it is then ``filled``.
    Errors name ``fills[i].hedge_request``; nothing is booked."""
    named = {index: pk for index, pk in enumerate(hedge_requests) if pk is not None}
    # The accounts first, as every writer takes them (an evaluation holds its account's lock when
    # it supersedes requests), then the requests named.
    margin_accounts_lock(account_ids=[fill.account.pk for fill in fills])
    requests = (
        HedgeRequest.objects.select_for_update(of=("self",))
        .select_related("instrument")
        .in_bulk(set(named.values()))
    )
    seen: set[int] = set()
    for index, pk in named.items():
        field = f"fills[{index}].hedge_request"
        request, fill = requests.get(pk), fills[index]
        symbol = fill.instrument.symbol if hasattr(fill.instrument, "symbol") else fill.instrument
        if request is None or request.account_id != fill.account.pk:
            raise ValidationError({field: f"No hedge request {pk} of account {fill.account.code}."})
        if request.instrument.symbol != symbol:
            raise ValidationError(
                {field: f"Hedge request {pk} trades {request.instrument.symbol}, not {symbol}."}
            )
        if request.status not in HEDGE_LINKABLE or pk in seen:
            raise ValidationError(
                {field: f"Hedge request {pk} is {request.status}: it takes no (further) fill."}
            )
        seen.add(pk)
    trades = trades_book(fills=fills, booked_by=booked_by)
    now = timezone.now()
    HedgeFill.objects.bulk_create(
        [HedgeFill(hedge_request_id=pk, trade=trades[index], created_at=now) for index, pk in named.items()]
    )
    filled = []
    for pk in seen:
        request = requests[pk]
        request.status, request.filled_at, request.next_attempt_at = HedgeStatus.FILLED, now, None
        request.save(update_fields=["status", "filled_at", "next_attempt_at"])
        filled.append(request)
    if filled:
        hedge_events_publish(filled)
    return trades

"""The margin-call state machine of a sweep: load the arrays the decision needs, let
``riskengine.core.calls.call_decisions`` decide every account's transition, then write calls,
call events, liquidations, alerts and live pushes with one bulk statement each; finally announce
the swept figures (``riskengine.sweeps.signals.margins_swept``) to the apps above.

Fail closed on figures that are not finite (``result.finite``): such an account's status is
``liquidation`` (the engine's rule) but nothing is decided on a number that is not one: no call
is opened (its amount would be NaN), an open call is neither cured nor escalated (its liquidation
is suspended, logged once on the call), a critical ``margin_not_finite`` ops alert names the
account and its figures, and its ``margin.updated`` push carries null figures. The other accounts
are swept as usual; the alert is resolved by the first sweep that finds the account finite again.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from accounts.models import AccountKind, MarginAccount
from clearing.events import events_fanout_publish, events_publish_encoded
from clearing.marketdata.quotes import MarketQuotes
from clearing.ops.alerts import ops_alerts_raise, ops_alerts_resolve
from riskengine.core import non_finite_figures
from riskengine.core.calls import (
    CURE,
    ESCALATES,
    HOLD_NOT_FINITE,
    NONE,
    OPENS,
    SUSPENDS,
    call_amounts,
    call_decisions,
    position_call_amounts,
)
from riskengine.core.document import ISOLATED
from riskengine.core.margin import HEALTHY, STATUSES
from riskengine.loading import LoadedBook
from riskengine.sweeps import storage
from riskengine.sweeps.models import (
    CallStatus,
    Liquidation,
    LiquidationStatus,
    MarginCall,
    MarginCallEvent,
    Sweep,
    SweepKind,
)
from riskengine.sweeps.signals import SweptMargins, margins_swept

log = logging.getLogger(__name__)

# margin.updated is pushed when the status changes or equity, IM or MM moved by more than this
# fraction: a full sweep every minute would otherwise push every account every minute.
UPDATE_THRESHOLD = 1e-4
SUSPENDED_ALERT = "liquidation_suspended"
# Critical: the engine gave an account a figure that is not a number (NaN or infinite).
NOT_FINITE_ALERT = "margin_not_finite"
_SUSPENDED = "liquidation suspended"
# From this many margin.updated messages on (a full-sweep shard after a move), they are written
# as one outbox row the relay fans out (clearing.events.events_fanout_publish) instead of a row
# each: a crash that changes every account costs a row per shard, not 100,000.
FANOUT_MIN = 500


@dataclass
class CallsOutcome:
    """What the transitions of one shard did."""

    opened: int = 0
    cured: int = 0
    escalated: int = 0
    suspended: int = 0
    not_finite: int = 0
    liquidations: list[int] = field(default_factory=list)


def margins_changed(
    previous: dict, account_ids: np.ndarray, status: np.ndarray, figures: np.ndarray
) -> np.ndarray:
    """Which accounts' status changed, or whose equity, IM or MM (``figures``, shape (n, 3)) moved
    by more than ``UPDATE_THRESHOLD`` from ``previous`` (account id → (status, equity, IM, MM));
    accounts never swept count as changed."""
    n = account_ids.size
    old_status = np.full(n, -1, dtype=np.int64)
    old = np.full((n, 3), np.nan)
    for i, account_id in enumerate(account_ids.tolist()):
        row = previous.get(account_id)
        if row is not None:
            old_status[i] = STATUSES.index(row[0])
            old[i] = row[1:]
    with np.errstate(invalid="ignore"):
        moved = np.abs(figures - old) > UPDATE_THRESHOLD * np.maximum(np.abs(old), 1.0)
    return (old_status != status) | moved.any(axis=1) | np.isnan(old).any(axis=1)


def exposed_symbols(book: LoadedBook, unsafe: set[str]) -> list[list[str]]:
    """For every portfolio of ``book``, the symbols of ``unsafe`` its margin depends on (positions
    on that underlying, collateral that is the asset or is linked to that underlying), in one
    vectorised pass per unsafe symbol."""
    n = book.rows.account_ids.size
    exposed: list[list[str]] = [[] for _ in range(n)]
    if not unsafe:
        return exposed
    margin_input = book.margin_input
    parameters, market, portfolios = margin_input.parameters, margin_input.market, margin_input.portfolios
    position_underlying = market.underlying[portfolios.position_instrument]
    balance_underlying = np.asarray(parameters.asset_underlying)[portfolios.balance_asset]
    for symbol in sorted(unsafe):
        hit = np.zeros(n, dtype=bool)
        if symbol in parameters.underlyings:
            u = parameters.underlyings.index(symbol)
            hit[portfolios.position_portfolio[position_underlying == u]] = True
            hit[portfolios.balance_portfolio[balance_underlying == u]] = True
        if symbol in parameters.assets:
            a = parameters.assets.index(symbol)
            hit[portfolios.balance_portfolio[portfolios.balance_asset == a]] = True
        for k in np.flatnonzero(hit).tolist():
            exposed[k].append(symbol)
    return exposed


def calls_follow(
    *,
    sweep: Sweep,
    book: LoadedBook,
    result,
    current: dict[int, int],
    previous: dict,
    quotes: MarketQuotes,
) -> CallsOutcome:
    """Margin-call transitions and live pushes for the accounts whose snapshot became current
    (``current``: account id → snapshot id); ``previous`` are their current margins before
    (``storage.margins_previous``). See the module doc."""
    outcome = CallsOutcome()
    if not current:
        return outcome
    ids = np.array(sorted(current), dtype=np.int64)
    ks = np.searchsorted(book.rows.account_ids, ids)
    status = result.status[ks]
    finite = result.finite[ks]
    equity, im, mm = result.equity[ks], result.initial_margin[ks], result.maintenance_margin[ks]
    figures = np.column_stack([equity, im, mm])
    if sweep.kind == SweepKind.EVENT:
        push = np.ones(ids.size, dtype=bool)
    else:
        push = margins_changed(previous, ids, status, figures)
    id_list = ids.tolist()
    snapshot = [current[a] for a in id_list]

    # The arrays of the decision: venue accounts (a range scan on the primary key, never the
    # whole table), open calls, liquidations in progress, exposure to untrusted prices. Funding
    # accounts are among the accounts never called: they margin nothing (collateral only).
    venue_ids = set(
        MarginAccount.objects.filter(pk__gte=id_list[0], pk__lte=id_list[-1])
        .exclude(kind=AccountKind.MEMBER)
        .values_list("pk", flat=True)
    )
    venue = np.isin(ids, list(venue_ids))
    # Only accounts that may transition need their calls read: unhealthy ones, and healthy ones
    # whose current margin was not. An open call exists only on an account whose current margin
    # is not healthy: it is opened, and cured, in the transaction that makes that margin current
    # (an account without one has never been called).
    candidates = ~venue & (
        (status != HEALTHY) | np.array([previous.get(a, ("healthy",))[0] != "healthy" for a in id_list])
    )
    members = ids[candidates].tolist()
    open_calls: dict[int, MarginCall] = {}
    busy_ids: set[int] = set()
    if members:
        open_calls = {
            call.account_id: call
            for call in storage.any_of(
                MarginCall.objects.filter(status=CallStatus.OPEN), "account_id", members
            )
        }
        busy_ids = set(
            storage.any_of(
                Liquidation.objects.filter(status=LiquidationStatus.IN_PROGRESS), "account_id", members
            ).values_list("account_id", flat=True)
        )
    now = timezone.now()
    cure = timedelta(minutes=sweep.parameter_set.cure_period_minutes)
    unsafe = quotes.unsafe_for_liquidation()
    exposed_lists = exposed_symbols(book, unsafe) if unsafe else None
    has_call = np.isin(ids, list(open_calls))
    # A call opened now is already due only with a cure period of zero; an open one by its deadline.
    elapsed = np.full(ids.size, cure <= timedelta(0))
    elapsed[has_call] = np.isin(ids[has_call], [a for a, c in open_calls.items() if now >= c.deadline])
    exposed = (
        np.array([bool(exposed_lists[k]) for k in ks.tolist()], dtype=bool)
        if exposed_lists is not None
        else np.zeros(ids.size, dtype=bool)
    )
    decisions = call_decisions(
        status=status, finite=finite, amount_due=call_amounts(result)[ks], has_call=has_call,
        deadline_elapsed=elapsed, busy=np.isin(ids, list(busy_ids)), venue=venue, exposed=exposed,
    )  # fmt: skip
    action = decisions.action
    not_finite = {
        id_list[i]: non_finite_figures(result, int(ks[i]))[:5] for i in np.flatnonzero(~finite).tolist()
    }

    # Calls opened now (escalated at once when the decision says so), then the ids they refer to.
    opens = np.flatnonzero(np.isin(action, OPENS)).tolist()
    escalates = np.isin(action, ESCALATES)
    deadline = now + cure
    call_id: dict[int, int] = {a: c.pk for a, c in open_calls.items()}
    amounts = dict(zip(opens, storage.decimal_texts(decisions.amount[opens]), strict=True))
    named = {
        i: isolated_call_positions(book, result, int(ks[i])) for i in opens if result.mode[ks[i]] == ISOLATED
    }
    new_ids = storage.calls_insert(
        account_ids=[id_list[i] for i in opens],
        statuses=[CallStatus.ESCALATED if escalates[i] else CallStatus.OPEN for i in opens],
        amounts=list(amounts.values()),
        snapshot_ids=[snapshot[i] for i in opens],
        deadline=deadline,
        opened_at=now,
        positions=[named.get(i, []) for i in opens],
    )
    call_id.update(zip((id_list[i] for i in opens), new_ids, strict=True))
    cures = np.flatnonzero(action == CURE).tolist()
    storage.calls_close(call_ids=[call_id[id_list[i]] for i in cures], status=CallStatus.CURED, at=now)
    escalated = np.flatnonzero(escalates).tolist()
    storage.calls_close(
        call_ids=[call_id[id_list[i]] for i in escalated if action[i] not in OPENS],
        status=CallStatus.ESCALATED,
        at=now,
    )
    liquidation_ids = storage.liquidations_insert(
        sweep_id=sweep.pk,
        started_at=now,
        account_ids=[id_list[i] for i in escalated],
        call_ids=[call_id[id_list[i]] for i in escalated],
        equity=[float(equity[i]) for i in escalated],
        initial_margin=[float(im[i]) for i in escalated],
    )
    liquidation_of = dict(zip(escalated, liquidation_ids, strict=True))

    if not_finite:
        outcome.not_finite += len(not_finite)
        log.critical("margin figures not finite for accounts %s", sorted(not_finite))
        ops_alerts_raise(
            kind=NOT_FINITE_ALERT,
            messages={
                str(account_id): f"CRITICAL: the margin figures of account {account_id} are not finite "
                f"({', '.join(names)}): it is treated as in liquidation, and its liquidation is suspended "
                "until a sweep computes finite figures. Check the active parameter set and the account's "
                "positions and prices."
                for account_id, names in not_finite.items()
            },
            now=now,
        )
    # An account whose figures were not finite was in liquidation: only those that were may have
    # an alert to resolve (no query at all in a sweep where none was).
    if recovered := [
        str(a) for a, ok in zip(id_list, finite.tolist(), strict=True)
        if ok and previous.get(a, ("",))[0] == "liquidation"
    ]:  # fmt: skip
        ops_alerts_resolve(kind=NOT_FINITE_ALERT, keys=recovered, now=now)
    suspends = np.flatnonzero(np.isin(action, SUSPENDS)).tolist()
    if escalated:
        ops_alerts_resolve(kind=SUSPENDED_ALERT, keys=[str(id_list[i]) for i in escalated], now=now)

    def cause_of(i: int) -> str:
        if status[i] == STATUSES.index("liquidation"):
            return f"equity {equity[i]:.2f} < MM {mm[i]:.2f}"
        return "cure period elapsed"

    if suspends:
        # The accounts' current-margin row locks (taken by the upsert) serialise two sweeps
        # raising the same account's alert.
        ops_alerts_raise(
            kind=SUSPENDED_ALERT,
            messages={
                str(id_list[i]): f"Liquidation of account {id_list[i]} suspended ({cause_of(i)}): "
                f"{', '.join(exposed_lists[ks[i]])} not trustworthy (stale, unconfirmed or short of sources)."
                for i in suspends
            },
            now=now,
        )
    # The last event of each already-open call whose escalation waits (to log a suspension once,
    # not after every sweep); only those calls are read.
    holds = np.flatnonzero(action == HOLD_NOT_FINITE).tolist()
    last_causes: dict[int, str] = {}
    if waiting := [call_id[id_list[i]] for i in [*suspends, *holds] if action[i] not in OPENS]:
        last_cause = MarginCallEvent.objects.filter(call=OuterRef("pk")).order_by("-id").values("cause")[:1]
        last_causes = dict(
            storage.any_of(MarginCall.objects.all(), "id", waiting)
            .annotate(last_cause=Subquery(last_cause))
            .values_list("pk", "last_cause")
        )

    # Call events and their pushes, account by account in id order (call and liquidation events go
    # first in the outbox: the relay sends them first anyway).
    call_events: list[tuple] = []
    events: list[tuple[int, str, str]] = []
    # Decimal and datetime as DjangoJSONEncoder writes them (the outbox's other events do).
    deadline_text = DjangoJSONEncoder().default(deadline)

    def message(kind: str, account_id: int, **payload) -> tuple[int, str, str]:
        return account_id, kind, json.dumps({"type": kind, "account": account_id, **payload}, allow_nan=False)

    for i in np.flatnonzero(action != NONE).tolist():
        account_id, code, snap = id_list[i], int(action[i]), snapshot[i]
        call = call_id[account_id]
        e, m_im, m_mm = float(equity[i]), float(im[i]), float(mm[i])
        if code == HOLD_NOT_FINITE:
            last = last_causes.get(call)
            if last is None or not last.startswith(_SUSPENDED):
                cause = f"{_SUSPENDED}: figures not finite ({', '.join(not_finite[account_id])})"
                call_events.append((call, now, CallStatus.OPEN, CallStatus.OPEN, cause, snap))
            outcome.suspended += 1
            continue
        if code == CURE:
            cause = f"equity {e:.2f} ≥ IM {m_im:.2f}"
            call_events.append((call, now, CallStatus.OPEN, CallStatus.CURED, cause, snap))
            events.append(message("margin_call.cured", account_id, call=call, equity=e, initial_margin=m_im))
            outcome.cured += 1
            continue
        if code in OPENS:
            call_events.append((call, now, "", CallStatus.OPEN, f"equity {e:.2f} < IM {m_im:.2f}", snap))
            per_position = {"positions": named[i]} if i in named else {}
            events.append(
                message(
                    "margin_call.opened", account_id, call=call, amount=amounts[i], deadline=deadline_text,
                    equity=e, initial_margin=m_im, maintenance_margin=m_mm, **per_position,
                )
            )  # fmt: skip
            outcome.opened += 1
        if code in SUSPENDS:
            last = None if code in OPENS else last_causes.get(call)
            if last is None or not last.startswith(_SUSPENDED):
                cause = f"{_SUSPENDED}: {', '.join(exposed_lists[ks[i]])} not trustworthy"
                call_events.append((call, now, CallStatus.OPEN, CallStatus.OPEN, cause, snap))
            outcome.suspended += 1
        if code in ESCALATES:
            liquidation = liquidation_of[i]
            cause = cause_of(i)
            call_events.append((call, now, CallStatus.OPEN, CallStatus.ESCALATED, cause, snap))
            events.append(
                message("margin_call.escalated", account_id, call=call, cause=cause, liquidation=liquidation)
            )
            events.append(
                message(
                    "liquidation.started", account_id, liquidation=liquidation, equity=e, initial_margin=m_im
                )
            )
            outcome.escalated += 1
            outcome.liquidations.append(liquidation)
    storage.call_events_insert(call_events)
    # margin.updated, up to one per account: a finite account's figures are all finite (JSON
    # numbers as they are); one that is not gets null figures (no NaN in the outbox) and no
    # target-band verdict on a ratio that is not a number.
    chosen = np.flatnonzero(push)
    good = chosen[finite[chosen]]
    good_ids = ids[good]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(mm[good] > 0, equity[good] / mm[good], np.nan)
    ratios = {a: (None if np.isnan(r) else r) for a, r in zip(good_ids.tolist(), ratio.tolist(), strict=True)}
    columns = {
        "account": good_ids, "status": [STATUSES[s] for s in status[good].tolist()], "equity": equity[good],
        "initial_margin": im[good], "maintenance_margin": mm[good], "excess": result.excess[ks][good],
    }  # fmt: skip
    nulls = [
        message(
            "margin.updated", id_list[i], sweep=sweep.pk, status=STATUSES[int(status[i])], equity=None,
            initial_margin=None, maintenance_margin=None, excess=None, not_finite=not_finite[id_list[i]],
        )
        for i in chosen[~finite[chosen]].tolist()
    ]  # fmt: skip
    if good.size >= FANOUT_MIN:
        events_publish_encoded(rows=events + nulls, margin_ratios=ratios)
        events_fanout_publish(type="margin.updated", fields={"sweep": sweep.pk}, columns=columns)
    else:
        events_publish_encoded(
            rows=events + _margin_updates(sweep=sweep, columns=columns) + nulls, margin_ratios=ratios
        )
    # Every account made current, pushed or not: an agent's level crossed earlier and not yet
    # acted on (prices untrusted then) is looked at again by the next sweep.
    margins_swept.send(
        sender=__name__,
        sweep=sweep,
        swept=SweptMargins(
            account_ids=ids, equity=equity, initial_margin=im, maintenance_margin=mm, finite=finite,
            result=result, portfolios=ks,
        ),
    )  # fmt: skip
    return outcome


def isolated_call_positions(book: LoadedBook, result, k: int) -> list[dict]:
    """The positions of isolated portfolio ``k`` a call names (spec section 4a): each one that is
    not healthy, with its status and ``IM_i − e_i`` (``position_call_amounts``) as a decimal text."""
    rows = book.rows
    amounts = position_call_amounts(result)
    out = []
    for j in np.flatnonzero(book.margin_input.portfolios.position_portfolio == k).tolist():
        if result.position_status[j] == HEALTHY:
            continue
        out.append(
            {
                "position": int(rows.position_ids[j]),
                "instrument": book.instrument_symbols[int(rows.position_instrument[j])],
                "status": STATUSES[int(result.position_status[j])],
                "amount": storage.decimal_texts(amounts[j : j + 1])[0],
            }
        )
    return out


def _margin_updates(*, sweep: Sweep, columns: dict) -> list[tuple[int, str, str]]:
    """One outbox row per account of ``columns`` (``margin.updated``), encoded straight to JSON
    text from the arrays (float reprs are JSON numbers)."""
    head = f'"sweep": {sweep.pk}, "status": "'
    return [
        (account_id, "margin.updated", (
            f'{{"type": "margin.updated", "account": {account_id}, {head}{name}", "equity": {e!r}, '
            f'"initial_margin": {i_m!r}, "maintenance_margin": {m_m!r}, "excess": {x!r}}}'
        ))
        for account_id, name, e, i_m, m_m, x in zip(
            columns["account"].tolist(), columns["status"], columns["equity"].tolist(),
            columns["initial_margin"].tolist(), columns["maintenance_margin"].tolist(),
            columns["excess"].tolist(), strict=True,
        )
    ]  # fmt: skip

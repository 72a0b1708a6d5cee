"""Margin sweeps: run the engine over accounts, store snapshots, drive margin calls and liquidations.

Consistency. A sweep fixes the parameter set and the prices (stored in ``Sweep.market``) for all
its accounts. A full-sweep shard reads its accounts' positions and balances in one ``REPEATABLE
READ`` transaction (one database snapshot, no locks held); an event sweep locks its accounts first
(every writer of positions and balances takes those locks), so it reads each account whole.

Ordering (newest wins). ``AccountMargin`` holds each account's snapshot with the newest valuation,
ordered by ``(valued_at, sweep_id)`` (the sweep's valuation time, then its id) — never by arrival:
a shard redelivered or retried after a later sweep must not put old prices back. A shard upserts
it with ``… ON CONFLICT DO UPDATE … WHERE (valued_at, sweep_id) < (excluded.valued_at,
excluded.sweep_id) RETURNING``: only accounts for which this snapshot became current drive
margin-call transitions, and the upsert's row locks serialise two sweeps of the same account (rows
are taken in account order, so no deadlock). A shard of a full sweep that a newer full sweep has
already completed (*superseded*) stores its snapshots as history only: no current margin, no call,
no liquidation, no index reference. Liquidations trade at the current trusted quotes, not at
their sweep's (``liquidation_execute``).

Idempotency. A shard stores everything (snapshots, current margins, call transitions, events) in
one transaction that also marks it done, under a lock on the shard row; running it again changes
nothing, and a worker killed before the commit leaves nothing behind (its task is acknowledged
late and redelivered).
"""

from __future__ import annotations

import json
import logging
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

import numpy as np
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, connection, transaction
from django.db.models import BooleanField, F, OuterRef, Q, QuerySet, Subquery
from django.db.models.expressions import RawSQL
from django.utils import timezone

from accounts.models import AccountKind, Asset, MarginAccount, MovementKind
from accounts.services import BalanceChange, collateral_movements_apply, margin_accounts_lock
from clearing.models import Instrument, Position
from clearing.ops.insurance import insurance_fund_after_liquidation
from clearing.services import Fill, trades_book
from clearing.validation import decimal_from_float
from frontend.events import events_publish, events_publish_encoded
from riskengine.core import MODES, OPTION, DocumentError, compute_margin, non_finite_figures, parse_parameters
from riskengine.core.margin import STATUSES
from riskengine.loading import (
    BookRows,
    LoadedBook,
    book_rows_fetch,
    margin_book_build,
    market_form_build,
    market_form_quotes,
)
from riskengine.quotes import MarketQuotes
from riskengine.reference import quotes_current, reference_current
from riskengine.selectors import parameter_set_active
from riskengine.services import INVALID_SET_ALERT
from riskengine.sweeps import codec
from riskengine.sweeps.models import (
    AccountMargin,
    CallStatus,
    Liquidation,
    LiquidationStatus,
    MarginCall,
    MarginCallEvent,
    MarginSnapshot,
    ShardStatus,
    Sweep,
    SweepKind,
    SweepRequest,
    SweepShard,
    SweepStatus,
)
from riskengine.sweeps.selectors import parameters_form, sweep_quotes

log = logging.getLogger(__name__)

HOSTNAME = socket.gethostname()
# margin.updated is pushed when the status changes or equity, IM or MM moved by more than this
# fraction: a full sweep every minute would otherwise push every account every minute.
UPDATE_THRESHOLD = 1e-4
SUSPENDED_ALERT = "liquidation_suspended"
# Critical: the engine gave an account a figure that is not a number (NaN or infinite).
NOT_FINITE_ALERT = "margin_not_finite"


def _any(queryset: QuerySet, column: str, values: list) -> QuerySet:
    """``column IN values``; on PostgreSQL as one array parameter (``= ANY(%s)``): a shard's lists
    hold up to 25,000 ids, and 25,000 placeholders cost more to format and split client-side than
    the query itself."""
    if connection.vendor == "postgresql":
        table = queryset.model._meta.db_table
        return queryset.filter(
            RawSQL(f'"{table}"."{column}" = ANY(%s)', (values,), output_field=BooleanField())
        )
    return queryset.filter(**{f"{column}__in": values})


# --- Engine run and storage --------------------------------------------------------------------


@dataclass
class ShardOutcome:
    """What a shard did (the command's summary adds these up)."""

    accounts: int = 0
    statuses: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    opened: int = 0
    cured: int = 0
    escalated: int = 0
    suspended: int = 0
    not_finite: int = 0
    liquidations: list[int] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def add(self, other: ShardOutcome) -> None:
        self.accounts += other.accounts
        for key, count in other.statuses.items():
            self.statuses[key] += count
        self.opened += other.opened
        self.cured += other.cured
        self.escalated += other.escalated
        self.suspended += other.suspended
        self.not_finite += other.not_finite
        self.liquidations += other.liquidations
        for key, seconds in other.timings.items():
            self.timings[key] = self.timings.get(key, 0.0) + seconds


def _read_at() -> datetime:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT statement_timestamp()")
            return cursor.fetchone()[0]
    return timezone.now()


def _snapshot_columns(
    book: LoadedBook, result, *, sweep: Sweep, shard: SweepShard, read_at: datetime
) -> dict:
    """Every ``MarginSnapshot`` column as a list (one entry per account), built with numpy."""
    rows = book.rows
    n = rows.account_ids.size
    pos_indptr = np.searchsorted(rows.position_account, np.append(rows.account_ids, np.iinfo(np.int64).max))
    bal_indptr = np.searchsorted(rows.balance_account, np.append(rows.account_ids, np.iinfo(np.int64).max))
    positions = codec.records(
        codec.POSITION,
        instrument=rows.position_instrument,
        quantity=rows.position_quantity,
        entry=book.margin_input.portfolios.position_entry,
    )
    balances = codec.records(codec.BALANCE, asset=rows.balance_asset, amount=rows.balance_amount)
    pairs = codec.records(
        codec.PAIR,
        underlying=result.pair_underlying,
        worst=result.worst_scenario,
        scan_risk=result.scan_risk,
        directional=result.directional,
        delta_usd=result.delta_usd,
        gamma_usd=result.gamma_usd,
        vega_usd=result.vega_usd,
        theta_usd=result.theta_usd,
    )
    ratio = result.margin_ratio
    return {
        "sweep_id": [sweep.pk] * n,
        "shard_id": [shard.pk] * n,
        "account_id": rows.account_ids.tolist(),
        "parameter_set_id": [sweep.parameter_set_id] * n,
        "read_at": [read_at] * n,
        "mode": [MODES[m] for m in result.mode.tolist()],
        "status": [STATUSES[s] for s in result.status.tolist()],
        "equity": result.equity.tolist(),
        "collateral_value": result.collateral_value.tolist(),
        "initial_margin": result.initial_margin.tolist(),
        "maintenance_margin": result.maintenance_margin.tolist(),
        "excess": result.excess.tolist(),
        "margin_ratio": [None if np.isnan(r) else r for r in ratio.tolist()],
        "scan_directional": result.scan_directional.tolist(),
        "scan_non_directional": result.scan_non_directional.tolist(),
        "correlation_credit": result.correlation_credit.tolist(),
        "basis": result.basis.tolist(),
        "short_option_minimum": result.short_option_minimum.tolist(),
        "concentration": result.concentration.tolist(),
        "required_isolated": result.required_isolated.tolist(),
        "required_cross": result.required_cross.tolist(),
        "required_portfolio": result.required_portfolio.tolist(),
        "by_underlying": codec.split(pairs, result.pair_indptr),
        "positions": codec.split(positions, pos_indptr),
        "collateral": codec.split(balances, bal_indptr),
    }


# PostgreSQL types of the snapshot columns, for binary COPY (which needs them exactly).
_COPY_TYPES = {
    "sweep_id": "int8",
    "shard_id": "int8",
    "account_id": "int8",
    "parameter_set_id": "int8",
    "read_at": "timestamptz",
    "mode": "text",
    "status": "text",
    "by_underlying": "bytea",
    "positions": "bytea",
    "collateral": "bytea",
}


def _snapshots_insert(columns: dict) -> None:
    names = list(columns)
    if connection.vendor == "postgresql":
        # Binary COPY: one round trip for the whole shard, rows encoded by psycopg's C dumpers
        # (no text formatting of 25 columns × thousands of rows in Python).
        sql = f"COPY {MarginSnapshot._meta.db_table} ({', '.join(names)}) FROM STDIN (FORMAT binary)"
        with connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
            copy.set_types([_COPY_TYPES.get(name, "float8") for name in names])
            for row in zip(*(columns[name] for name in names), strict=True):
                copy.write_row(row)
        return
    MarginSnapshot.objects.bulk_create(
        [MarginSnapshot(**dict(zip(names, row, strict=True))) for row in zip(*columns.values(), strict=True)],
        batch_size=500,
    )


def _current_upsert(*, sweep: Sweep, shard: SweepShard) -> dict[int, int]:
    """Make this shard's snapshots current where their valuation is the newest, by
    ``(valued_at, sweep_id)``; returns those accounts with the id of their (now current) snapshot.
    Accounts whose current margin comes from a newer valuation are left alone (the database
    decides under the row's lock, so two shards racing for one account cannot both win)."""
    table = AccountMargin._meta.db_table
    sql = f"""
        INSERT INTO {table} (account_id, snapshot_id, read_at, valued_at, sweep_id, status, equity,
            initial_margin, maintenance_margin)
        SELECT account_id, id, read_at, %s, sweep_id, status, equity, initial_margin, maintenance_margin
        FROM {MarginSnapshot._meta.db_table} WHERE shard_id = %s ORDER BY account_id
        ON CONFLICT (account_id) DO UPDATE SET
            snapshot_id = excluded.snapshot_id, read_at = excluded.read_at,
            valued_at = excluded.valued_at, sweep_id = excluded.sweep_id, status = excluded.status,
            equity = excluded.equity, initial_margin = excluded.initial_margin,
            maintenance_margin = excluded.maintenance_margin
        WHERE ({table}.valued_at, {table}.sweep_id) < (excluded.valued_at, excluded.sweep_id)
        RETURNING account_id, snapshot_id
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [sweep.valuation_time, shard.pk])
        return dict(cursor.fetchall())


def sweep_superseded(*, sweep: Sweep) -> bool:
    """Whether a full sweep valued after ``sweep`` (by ``(valuation_time, id)``) is already done:
    then ``sweep``'s results are history only."""
    newer = Q(valuation_time__gt=sweep.valuation_time) | Q(
        valuation_time=sweep.valuation_time, pk__gt=sweep.pk
    )
    return Sweep.objects.filter(newer, kind=SweepKind.FULL, status=SweepStatus.DONE).exists()


def _changed(previous: dict, account_ids: np.ndarray, status: np.ndarray, figures: np.ndarray) -> np.ndarray:
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


def _exposed(book: LoadedBook, unsafe: set[str]) -> list[list[str]]:
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


def _store(
    *,
    sweep: Sweep,
    shard: SweepShard,
    book: LoadedBook,
    result,
    read_at: datetime,
    quotes: MarketQuotes,
    worker: str,
    timings: dict[str, float],
) -> ShardOutcome:
    """Write one shard's results (inside the caller's transaction), in a number of queries that
    does not depend on how many accounts it holds or how many of them enter or leave a call."""
    started = time.perf_counter()
    outcome = ShardOutcome(accounts=int(book.rows.account_ids.size), timings=timings)
    columns = _snapshot_columns(book, result, sweep=sweep, shard=shard, read_at=read_at)
    margins = AccountMargin.objects.all()
    if shard.first_account_id is not None:
        margins = margins.filter(
            account_id__gte=shard.first_account_id, account_id__lte=shard.last_account_id
        )
    else:
        margins = margins.filter(account_id__in=columns["account_id"])
    previous = {
        row[0]: row[1:]
        for row in margins.values_list(
            "account_id", "status", "equity", "initial_margin", "maintenance_margin"
        )
    }
    _snapshots_insert(columns)
    # A superseded sweep's shard (redelivered, retried or late) keeps its snapshots as history and
    # touches nothing current: no margin, no call, no liquidation.
    current = (
        {}
        if sweep.kind == SweepKind.FULL and sweep_superseded(sweep=sweep)
        else _current_upsert(sweep=sweep, shard=shard)
    )
    timings["store"] = time.perf_counter() - started

    started = time.perf_counter()
    for code, count in enumerate(np.bincount(result.status, minlength=len(STATUSES)).tolist()):
        outcome.statuses[STATUSES[code]] += count
    _calls_follow(sweep=sweep, book=book, result=result, current=current, previous=previous,
                  quotes=quotes, outcome=outcome)  # fmt: skip
    shard.status, shard.worker, shard.read_at, shard.finished_at = (
        ShardStatus.DONE,
        worker,
        read_at,
        timezone.now(),
    )
    shard.accounts = outcome.accounts
    timings["calls"] = time.perf_counter() - started
    shard.timings = {key: round(seconds, 4) for key, seconds in timings.items()}
    shard.save(update_fields=["status", "worker", "read_at", "finished_at", "accounts", "timings"])
    liquidations = list(outcome.liquidations)
    if liquidations:
        transaction.on_commit(lambda: _liquidations_enqueue(liquidations))
    return outcome


@dataclass
class _Transition:
    """What one account's new snapshot does to its margin call (decided before any write)."""

    k: int
    account_id: int
    snapshot_id: int
    call: MarginCall | None
    opened: bool = False
    cured: bool = False
    escalate_cause: str = ""
    suspended: list[str] = field(default_factory=list)
    not_finite: list[str] = field(default_factory=list)
    liquidation: Liquidation | None = None


def _calls_follow(
    *,
    sweep: Sweep,
    book: LoadedBook,
    result,
    current: dict[int, int],
    previous: dict,
    quotes: MarketQuotes,
    outcome: ShardOutcome,
) -> None:
    """Margin-call transitions and live pushes for the accounts whose snapshot became current:
    decide every account's transition in memory, then write calls, events, liquidations, alerts
    and outbox events with one bulk statement each.

    Fail closed on figures that are not finite (``result.finite``): such an account's status is
    ``liquidation`` (the engine's rule) but nothing is decided on a number that is not one: no call
    is opened (its amount would be NaN), an open call is neither cured nor escalated (its
    liquidation is suspended, logged once on the call), a critical ``margin_not_finite`` ops alert
    names the account and its figures, and its ``margin.updated`` push carries null figures. The
    other accounts are swept as usual; the alert is resolved by the first sweep that finds the
    account finite again."""
    if not current:
        return
    from clearing.marketdata.services import ops_alerts_raise, ops_alerts_resolve

    ids = np.array(sorted(current), dtype=np.int64)
    ks = np.searchsorted(book.rows.account_ids, ids)
    status = result.status[ks]
    finite = result.finite[ks]
    figures = np.column_stack([result.equity[ks], result.initial_margin[ks], result.maintenance_margin[ks]])
    if sweep.kind == SweepKind.EVENT:
        push = np.ones(ids.size, dtype=bool)
    else:
        push = _changed(previous, ids, status, figures)
    healthy = STATUSES.index("healthy")
    liquidating = STATUSES.index("liquidation")

    # Venue accounts among these (a range scan on the primary key, never the whole table).
    venue = set(
        MarginAccount.objects.filter(pk__gte=int(ids[0]), pk__lte=int(ids[-1]))
        .exclude(kind=AccountKind.MEMBER)
        .values_list("pk", flat=True)
    )
    members = [a for a in ids.tolist() if a not in venue]
    open_calls = {
        call.account_id: call
        for call in _any(MarginCall.objects.filter(status=CallStatus.OPEN), "account_id", members)
    }
    busy = set(
        _any(
            Liquidation.objects.filter(status=LiquidationStatus.IN_PROGRESS), "account_id", members
        ).values_list("account_id", flat=True)
    )
    now = timezone.now()
    cure = timedelta(minutes=sweep.parameter_set.cure_period_minutes)
    unsafe = quotes.unsafe_for_liquidation()
    exposed = _exposed(book, unsafe) if unsafe else None

    not_finite = {
        int(ids[i]): non_finite_figures(result, int(ks[i]))[:5] for i in np.flatnonzero(~finite).tolist()
    }
    transitions: dict[int, _Transition] = {}
    for i in np.flatnonzero((status != healthy) | np.isin(ids, list(open_calls))).tolist():
        account_id = int(ids[i])
        if account_id in venue:
            continue
        call = open_calls.get(account_id)
        if not finite[i]:
            if call is not None:  # kept open: not cured, not escalated, its liquidation suspended
                t = _Transition(
                    k=int(ks[i]), account_id=account_id, snapshot_id=current[account_id], call=call
                )
                t.not_finite = not_finite[account_id]
                t.escalate_cause = f"figures not finite ({', '.join(t.not_finite)})"
                transitions[account_id] = t
            continue
        if call is None and account_id in busy:
            # Its call was escalated and the liquidation is working on it: no new call (and no
            # call events or pushes) every sweep until it finishes; the next sweep after it does.
            continue
        t = _Transition(k=int(ks[i]), account_id=account_id, snapshot_id=current[account_id], call=call)
        transitions[account_id] = t
        equity, im, mm = figures[i].tolist()
        if status[i] == healthy:
            t.cured = True
            continue
        if call is None:
            t.opened = True
            t.call = call = MarginCall(
                account_id=account_id,
                amount=decimal_from_float(im - equity),
                deadline=now + cure,
                opened_at=now,
                opened_by_id=t.snapshot_id,
            )
        if status[i] != liquidating and now < call.deadline:
            continue
        if account_id in busy:
            continue
        cause = f"equity {equity:.2f} < MM {mm:.2f}" if status[i] == liquidating else "cure period elapsed"
        if exposed is not None and exposed[t.k]:
            t.suspended = exposed[t.k]
            t.escalate_cause = cause
            continue
        t.escalate_cause = cause
        call.status, call.closed_at = CallStatus.ESCALATED, now
        t.liquidation = Liquidation(
            account_id=account_id,
            call=call,
            sweep=sweep,
            started_at=now,
            equity_before=equity,
            initial_margin_before=im,
        )

    # Writes: one statement each, in an order that gives every row the ids it refers to.
    opened = [t.call for t in transitions.values() if t.opened]
    _calls_insert(opened)
    cured = [t for t in transitions.values() if t.cured]
    if cured:
        _any(MarginCall.objects.all(), "id", [t.call.pk for t in cured]).update(
            status=CallStatus.CURED, closed_at=now
        )
    escalated = [t for t in transitions.values() if t.liquidation is not None]
    if existing := [t.call.pk for t in escalated if not t.opened]:
        _any(MarginCall.objects.all(), "id", existing).update(status=CallStatus.ESCALATED, closed_at=now)
    _liquidations_insert([t.liquidation for t in escalated])
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
        str(a) for a, ok in zip(ids.tolist(), finite.tolist(), strict=True)
        if ok and previous.get(a, ("",))[0] == "liquidation"
    ]:  # fmt: skip
        ops_alerts_resolve(kind=NOT_FINITE_ALERT, keys=recovered, now=now)
    suspended = [t for t in transitions.values() if t.suspended]
    if escalated:
        ops_alerts_resolve(kind=SUSPENDED_ALERT, keys=[str(t.account_id) for t in escalated], now=now)
    if suspended:
        # The accounts' current-margin row locks (taken by the upsert) serialise two sweeps
        # raising the same account's alert.
        ops_alerts_raise(
            kind=SUSPENDED_ALERT,
            messages={
                str(t.account_id): f"Liquidation of account {t.account_id} suspended ({t.escalate_cause}): "
                f"{', '.join(t.suspended)} not trustworthy (stale, unconfirmed or short of sources)."
                for t in suspended
            },
            now=now,
        )
    # The last event of each already-open call whose escalation is suspended (to log a suspension
    # once, not after every sweep); only those calls are read.
    last_causes: dict[int, str] = {}
    if waiting := [
        t.call.pk for t in [*suspended, *(t for t in transitions.values() if t.not_finite)] if not t.opened
    ]:
        last_cause = MarginCallEvent.objects.filter(call=OuterRef("pk")).order_by("-id").values("cause")[:1]
        last_causes = dict(
            _any(MarginCall.objects.all(), "id", waiting)
            .annotate(last_cause=Subquery(last_cause))
            .values_list("pk", "last_cause")
        )

    call_events: list[MarginCallEvent] = []
    events: list[tuple[int, str, dict]] = []
    # margin.updated (up to one per account): encoded once, straight to JSON text for the outbox's
    # COPY; the band check gets the ratios from the arrays, not by parsing payloads back.
    encoded: list[tuple[int, str, str]] = []
    ratios: dict[int, float | None] = {}
    excess = result.excess[ks]
    dumps = json.dumps
    for i in np.flatnonzero(push).tolist():
        account_id = int(ids[i])
        equity, im, mm = figures[i].tolist()
        message = {
            "type": "margin.updated",
            "account": account_id,
            "sweep": sweep.pk,
            "status": STATUSES[int(status[i])],
            "equity": equity,
            "initial_margin": im,
            "maintenance_margin": mm,
            "excess": float(excess[i]),
        }
        if not finite[i]:  # no NaN in the outbox (PostgreSQL's JSON has none): null figures
            message.update(equity=None, initial_margin=None, maintenance_margin=None, excess=None)
            message["not_finite"] = not_finite[account_id]
            encoded.append((account_id, "margin.updated", dumps(message, allow_nan=False)))
            continue  # and no target-band verdict on a ratio that is not a number
        encoded.append((account_id, "margin.updated", dumps(message, allow_nan=False)))
        ratios[account_id] = equity / mm if mm > 0 else None
    for account_id, t in transitions.items():
        i = int(np.searchsorted(ids, account_id))
        equity, im, mm = figures[i].tolist()
        call = t.call
        if t.not_finite:
            last = last_causes.get(call.pk)
            if last is None or not last.startswith("liquidation suspended"):
                cause = f"liquidation suspended: {t.escalate_cause}"
                call_events.append(_event(call, CallStatus.OPEN, CallStatus.OPEN, cause, t.snapshot_id, now))
            outcome.suspended += 1
            continue
        if t.cured:
            cause = f"equity {equity:.2f} ≥ IM {im:.2f}"
            call_events.append(_event(call, CallStatus.OPEN, CallStatus.CURED, cause, t.snapshot_id, now))
            events.append(
                (account_id, "margin_call.cured", {"call": call.pk, "equity": equity, "initial_margin": im})
            )
            outcome.cured += 1
            continue
        if t.opened:
            call_events.append(
                _event(call, "", CallStatus.OPEN, f"equity {equity:.2f} < IM {im:.2f}", t.snapshot_id, now)
            )
            events.append(
                (
                    account_id,
                    "margin_call.opened",
                    {
                        "call": call.pk,
                        "amount": call.amount,
                        "deadline": call.deadline,
                        "equity": equity,
                        "initial_margin": im,
                        "maintenance_margin": mm,
                    },
                )
            )
            outcome.opened += 1
        if t.suspended:
            last = None if t.opened else last_causes.get(call.pk)
            if last is None or not last.startswith("liquidation suspended"):
                cause = f"liquidation suspended: {', '.join(t.suspended)} not trustworthy"
                call_events.append(_event(call, CallStatus.OPEN, CallStatus.OPEN, cause, t.snapshot_id, now))
            outcome.suspended += 1
        if t.liquidation is not None:
            liquidation = t.liquidation
            call_events.append(
                _event(call, CallStatus.OPEN, CallStatus.ESCALATED, t.escalate_cause, t.snapshot_id, now)
            )
            events.append(
                (
                    account_id,
                    "margin_call.escalated",
                    {"call": call.pk, "cause": t.escalate_cause, "liquidation": liquidation.pk},
                )
            )
            events.append(
                (
                    account_id,
                    "liquidation.started",
                    {"liquidation": liquidation.pk, "equity": equity, "initial_margin": im},
                )
            )
            outcome.escalated += 1
            outcome.liquidations.append(liquidation.pk)
    _call_events_insert(call_events)
    # Call and liquidation events go first in the outbox (the relay sends them first anyway).
    rows = [
        (
            account_id,
            kind,
            json.dumps(
                {"type": kind, "account": account_id, **payload}, cls=DjangoJSONEncoder, allow_nan=False
            ),
        )
        for account_id, kind, payload in events
    ]
    events_publish_encoded(rows=rows + encoded, margin_ratios=ratios)


def _calls_insert(calls: list[MarginCall]) -> None:
    """Insert new (open) calls and set their ids: on PostgreSQL one ``INSERT … SELECT FROM unnest``
    of column arrays (a call per account, so ids map back by account)."""
    if not calls:
        return
    if connection.vendor != "postgresql":
        MarginCall.objects.bulk_create(calls)
        return
    first = calls[0]
    table = MarginCall._meta.db_table
    sql = f"""
        INSERT INTO {table} (account_id, status, amount, deadline, opened_at, opened_by_id, closed_at)
        SELECT a, st, m, %s, %s, s, CASE WHEN st = %s THEN NULL ELSE %s::timestamptz END
        FROM unnest(%s::int8[], %s::text[], %s::numeric[], %s::int8[]) AS u(a, st, m, s)
        RETURNING id, account_id
    """
    # A call opened and escalated by the same snapshot is inserted escalated (closed now).
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            [
                first.deadline,
                first.opened_at,
                CallStatus.OPEN,
                first.opened_at,
                [c.account_id for c in calls],
                [str(c.status) for c in calls],
                [c.amount for c in calls],
                [c.opened_by_id for c in calls],
            ],
        )
        ids = {account: pk for pk, account in cursor.fetchall()}
    for call in calls:
        call.pk = ids[call.account_id]
        call._state.adding, call._state.db = False, "default"


def _liquidations_insert(liquidations: list[Liquidation]) -> None:
    """Insert new liquidations and set their ids (one per account, as for calls)."""
    if not liquidations:
        return
    if connection.vendor != "postgresql":
        Liquidation.objects.bulk_create(liquidations)
        return
    first = liquidations[0]
    table = Liquidation._meta.db_table
    sql = f"""
        INSERT INTO {table} (account_id, call_id, sweep_id, status, started_at, plan, equity_before,
            initial_margin_before, closed_notional, fee, deficit_covered)
        SELECT a, c, %s, %s, %s, '[]'::jsonb, e, m, 0, 0, 0
        FROM unnest(%s::int8[], %s::int8[], %s::float8[], %s::float8[]) AS u(a, c, e, m)
        RETURNING id, account_id
    """
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            [
                first.sweep_id,
                LiquidationStatus.IN_PROGRESS,
                first.started_at,
                [x.account_id for x in liquidations],
                [x.call.pk for x in liquidations],
                [x.equity_before for x in liquidations],
                [x.initial_margin_before for x in liquidations],
            ],
        )
        ids = {account: pk for pk, account in cursor.fetchall()}
    for liquidation in liquidations:
        liquidation.pk = ids[liquidation.account_id]
        liquidation.call_id = liquidation.call.pk
        liquidation._state.adding, liquidation._state.db = False, "default"


def _call_events_insert(call_events: list[MarginCallEvent]) -> None:
    if not call_events:
        return
    if connection.vendor != "postgresql":
        MarginCallEvent.objects.bulk_create(call_events)
        return
    table = MarginCallEvent._meta.db_table
    sql = f"COPY {table} (call_id, at, from_status, to_status, cause, snapshot_id) FROM STDIN"
    with connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
        for e in call_events:
            copy.write_row((e.call.pk, e.at, e.from_status, e.to_status, e.cause, e.snapshot_id))


def _event(call, from_status, to_status, cause, snapshot_id, now) -> MarginCallEvent:
    return MarginCallEvent(
        call=call, at=now, from_status=from_status, to_status=to_status, cause=cause, snapshot_id=snapshot_id
    )


def _liquidations_enqueue(ids: list[int]) -> None:
    from riskengine.sweeps.tasks import liquidation_execute as task

    # Runs after the shard's commit: a broker error here must neither fail the task whose work is
    # committed (nor mark its sweep failed) nor lose the liquidation. The liquidation row is in
    # progress in the database, and ``ops.liquidations_resume`` sends its task again from that
    # state within its bound (clearing.ops.recovery).
    for liquidation_id in ids:
        try:
            task.delay(liquidation_id)
        except Exception:
            log.exception("could not enqueue liquidation %s; ops.liquidations_resume will", liquidation_id)


def _compute(
    rows: BookRows, *, form: dict, quotes: MarketQuotes, timings: dict, reference=None
) -> tuple[LoadedBook, object]:
    started = time.perf_counter()
    cached = {}
    if reference is not None:
        cached = {
            "parameters": reference.parameters,
            "instruments": reference.instruments,
            "asset_symbols": reference.asset_symbols,
        }
    book = margin_book_build(rows=rows, parameters_form=form, quotes=quotes, **cached)
    result = compute_margin(book.margin_input)
    timings["compute"] = time.perf_counter() - started
    return book, result


# --- Full sweeps -------------------------------------------------------------------------------


@transaction.atomic
def sweep_full_create(
    *,
    cause: str,
    quotes: MarketQuotes | None = None,
    shard_size: int | None = None,
    enqueue: bool = True,
    request_key: str | None = None,
) -> Sweep:
    """Fix a full sweep's inputs (active parameter set, prices) and split every account into shards
    of ``shard_size`` (default ``CLEARING_SWEEP_SHARD_SIZE``) consecutive ids; with ``enqueue``,
    one Celery task per shard is sent when the transaction commits. With ``request_key`` (the
    ``sweeps.full`` task's id), a request already served returns its sweep and starts nothing: a
    redelivered or duplicated message is one sweep."""
    if request_key is not None and (done := Sweep.objects.filter(request_key=request_key).first()):
        return done
    parameter_set = parameter_set_active()
    quotes = quotes or quotes_current()
    instruments = Instrument.objects.select_related("underlying").all()
    try:
        # A savepoint: two deliveries of one request racing meet at the unique key; the loser
        # returns the winner's sweep (read once the winner commits, after the key's lock wait).
        with transaction.atomic():
            sweep = Sweep.objects.create(
                kind=SweepKind.FULL,
                cause=cause[:200],
                parameter_set=parameter_set,
                valuation_time=quotes.valuation_time,
                market=market_form_build(quotes=quotes, instruments=instruments),
                statuses=quotes.statuses,
                index_price_ids=quotes.index_price_ids,
                request_key=request_key,
            )
    except IntegrityError:
        if request_key is None:
            raise
        return Sweep.objects.get(request_key=request_key)
    ids = np.fromiter(MarginAccount.objects.order_by("pk").values_list("pk", flat=True), dtype=np.int64)
    size = max(1, shard_size or settings.CLEARING_SWEEP_SHARD_SIZE)
    shards = SweepShard.objects.bulk_create(
        [
            SweepShard(
                sweep=sweep,
                number=n,
                first_account_id=int(ids[i]),
                last_account_id=int(ids[min(i + size, ids.size) - 1]),
            )
            for n, i in enumerate(range(0, ids.size, size))
        ]
    )
    sweep.shard_count, sweep.accounts = len(shards), int(ids.size)
    if not shards:
        sweep.status, sweep.finished_at = SweepStatus.DONE, timezone.now()
    sweep.save(update_fields=["shard_count", "accounts", "status", "finished_at"])
    if enqueue and shards:
        shard_ids = [shard.pk for shard in shards]
        transaction.on_commit(lambda: _shards_enqueue(shard_ids))
    return sweep


def _shards_enqueue(shard_ids: list[int]) -> None:
    from riskengine.sweeps.tasks import sweep_shard

    # After the sweep's commit: a broker error must not fail the caller or leave the sweep running
    # for ever. The shards are pending in the database and ``ops.sweeps_recover`` sends them again
    # from that state within its bound (clearing.ops.recovery).
    for shard_id in shard_ids:
        try:
            sweep_shard.delay(shard_id)
        except Exception:
            log.exception("could not enqueue shard %s; ops.sweeps_recover will send it", shard_id)


def sweep_shard_run(*, shard_id: int, worker: str = HOSTNAME) -> ShardOutcome:
    """Compute and store one shard of a full sweep. Idempotent: a shard already done is skipped."""
    shard = SweepShard.objects.select_related("sweep__parameter_set").get(pk=shard_id)
    if shard.status == ShardStatus.DONE:
        return ShardOutcome()
    sweep = shard.sweep
    quotes = sweep_quotes(sweep=sweep)
    form = parameters_form(parameter_set=sweep.parameter_set)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    try:
        # One database snapshot for the shard's reads (inside an outer transaction, e.g. a test,
        # that transaction's isolation applies).
        fresh = not connection.in_atomic_block
        with transaction.atomic():
            if connection.vendor == "postgresql" and fresh:
                with connection.cursor() as cursor:
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            read_at = _read_at()
            rows = book_rows_fetch(account_range=(shard.first_account_id, shard.last_account_id))
        timings["read"] = time.perf_counter() - started
        book, result = _compute(rows, form=form, quotes=quotes, timings=timings)
        with transaction.atomic():
            locked = SweepShard.objects.select_for_update().get(pk=shard_id)
            if locked.status == ShardStatus.DONE:
                return ShardOutcome()
            outcome = _store(
                sweep=sweep,
                shard=locked,
                book=book,
                result=result,
                read_at=read_at,
                quotes=quotes,
                worker=worker,
                timings=timings,
            )
            _sweep_progress(sweep=sweep, quotes=quotes)
        return outcome
    except Exception as error:
        # The shard records its last error; the sweep stays running: a retry (transient errors) or
        # the recovery task's re-send may still complete the shard, and the sweep follows its
        # shards' final state (done when every shard is; expired by ``ops.sweeps_recover``
        # when one cannot complete within its bound).
        SweepShard.objects.filter(pk=shard_id).exclude(status=ShardStatus.DONE).update(
            status=ShardStatus.FAILED, error=repr(error)[:2000]
        )
        raise


def _sweep_progress(*, sweep: Sweep, quotes: MarketQuotes) -> None:
    Sweep.objects.filter(pk=sweep.pk).update(shards_done=F("shards_done") + 1)
    done, count = Sweep.objects.filter(pk=sweep.pk).values_list("shards_done", "shard_count").get()
    if done < count:
        return
    # Every shard is done: the sweep is, whatever an earlier attempt or the recovery task said.
    Sweep.objects.filter(pk=sweep.pk).exclude(status=SweepStatus.DONE).update(
        status=SweepStatus.DONE, finished_at=timezone.now()
    )
    # Event sweeps fire on moves from the newest full sweep's prices: a superseded sweep that
    # completes late must not put its older prices back as the reference.
    if sweep.kind == SweepKind.FULL and not sweep_superseded(sweep=sweep):
        from clearing.marketdata.services import index_sweep_reference_set

        # Quotes are floats (an oracle's median, a moved test price): NUMERIC(28, 10) takes 10 places.
        prices = {
            s: decimal_from_float(p)
            for s, p in {**quotes.underlying_prices, **quotes.asset_prices}.items()
            if p > 0
        }
        index_sweep_reference_set(prices=prices)


def sweep_full_run(
    *, cause: str, quotes: MarketQuotes | None = None, shard_size: int | None = None
) -> tuple[Sweep, ShardOutcome]:
    """A full sweep run here and now, shard after shard (``manage.py sweep``, the benchmark)."""
    sweep = sweep_full_create(cause=cause, quotes=quotes, shard_size=shard_size, enqueue=False)
    total = ShardOutcome()
    for shard_id in sweep.shards.order_by("number").values_list("pk", flat=True):
        total.add(sweep_shard_run(shard_id=shard_id))
    sweep.refresh_from_db()
    return sweep, total


def sweep_full_due(*, now: datetime | None = None) -> Sweep | None:
    """Start a distributed full sweep if the active set's ``sweep_interval_seconds`` has passed
    since the last one started (beat checks every few seconds)."""
    now = now or timezone.now()
    with transaction.atomic():
        parameter_set = parameter_set_active()
        # The active set's row is the mutex: two checks at once start at most one sweep.
        type(parameter_set).objects.select_for_update().filter(pk=parameter_set.pk).first()
        last = (
            Sweep.objects.filter(kind=SweepKind.FULL)
            .order_by("-started_at")
            .values_list("started_at", flat=True)
            .first()
        )
        if last is not None and now - last < timedelta(seconds=parameter_set.sweep_interval_seconds):
            return None
        try:
            parse_parameters(parameters_form(parameter_set=parameter_set))
        except DocumentError as error:
            # Activated before a rule existed (approval and activation refuse such a set now):
            # nothing can be margined with it. No sweep, a critical alert until ops replace it.
            from clearing.marketdata.services import ops_alerts_raise

            log.critical("active parameter set %s fails validation: %s", parameter_set.version, error)
            ops_alerts_raise(
                kind=INVALID_SET_ALERT,
                messages={
                    parameter_set.version: f"CRITICAL: the active parameter set {parameter_set.version} "
                    f"fails validation ({error}); no sweep runs until a valid set is approved."
                },
                now=now,
            )
            return None
        return sweep_full_create(cause="periodic")


# --- Event sweeps ------------------------------------------------------------------------------


@transaction.atomic
def sweep_accounts_run(
    *, account_ids: list[int], cause: str, quotes: MarketQuotes | None = None, worker: str = HOSTNAME
) -> Sweep | None:
    """An event sweep of ``account_ids``: lock them, read, compute, store, drive their calls."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    locked = margin_accounts_lock(account_ids=account_ids)
    if not locked:
        return None
    quotes = quotes or quotes_current()
    parameter_set = parameter_set_active()
    # Parsed parameters, instruments and assets from the per-process cache (one probe query
    # instead of two reads and a parse), when it holds the set this sweep uses.
    reference = reference_current()
    if reference.parameter_set_id != parameter_set.pk:
        reference = None
    read_at = _read_at()
    # The locked rows are the account rows: no second read of the accounts.
    rows = book_rows_fetch(account_ids=sorted(locked), accounts=list(locked.values()))
    timings["read"] = time.perf_counter() - started
    book, result = _compute(
        rows,
        form=parameters_form(parameter_set=parameter_set),
        quotes=quotes,
        timings=timings,
        reference=reference,
    )
    sweep = Sweep.objects.create(
        kind=SweepKind.EVENT,
        cause=cause[:200],
        parameter_set=parameter_set,
        valuation_time=quotes.valuation_time,
        market=book.market_form,
        statuses=quotes.statuses,
        index_price_ids=quotes.index_price_ids,
        shard_count=1,
        accounts=len(locked),
    )
    shard = SweepShard.objects.create(sweep=sweep, number=0, account_ids=sorted(locked))
    _store(
        sweep=sweep,
        shard=shard,
        book=book,
        result=result,
        read_at=read_at,
        quotes=quotes,
        worker=worker,
        timings=timings,
    )
    # One shard, done: the sweep is finished (one statement instead of the full-sweep progress).
    sweep.shards_done, sweep.status, sweep.finished_at = 1, SweepStatus.DONE, timezone.now()
    Sweep.objects.filter(pk=sweep.pk).update(
        shards_done=sweep.shards_done, status=sweep.status, finished_at=sweep.finished_at
    )
    return sweep


def sweep_requests_add(*, account_ids, cause: str) -> int:
    """Ask for an event sweep of ``account_ids``. An account already waiting is not added again;
    when a new request is recorded, one drain task is sent (after ``CLEARING_EVENT_SWEEP_DELAY_SECONDS``),
    so a burst of events for an account, on any machine, makes one engine run. Returns the number
    of new requests."""
    ids = sorted({int(a) for a in account_ids})
    if not ids:
        return 0
    now = timezone.now()
    table = SweepRequest._meta.db_table
    placeholders = ", ".join(["(%s, %s, %s)"] * len(ids))
    params: list = []
    for account_id in ids:
        params += [account_id, cause[:200], now]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (account_id, cause, requested_at) VALUES {placeholders} "
            "ON CONFLICT (account_id) DO NOTHING RETURNING account_id",
            params,
        )
        added = len(cursor.fetchall())
        if added:
            transaction.on_commit(_drain_enqueue)
    return added


def _drain_enqueue() -> None:
    from riskengine.sweeps.tasks import sweep_requests_drain as task

    # Runs after the writer's commit: a broker outage must not fail the trade or deposit. The
    # request row stays and the periodic task drains it.
    try:
        task.apply_async(countdown=settings.CLEARING_EVENT_SWEEP_DELAY_SECONDS)
    except Exception:
        log.exception("could not enqueue the event-sweep drain; the periodic task will take it")


def sweep_requests_drain(*, limit: int = 5000, quotes: MarketQuotes | None = None) -> Sweep | None:
    """Take every pending request (up to ``limit``) and sweep those accounts in one engine run,
    deleting the requests in the same transaction (a crash leaves them for the next drain)."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # Claim and delete in one statement; the delete commits (or not) with the sweep.
            table = SweepRequest._meta.db_table
            with connection.cursor() as cursor:
                cursor.execute(
                    f"DELETE FROM {table} WHERE account_id IN (SELECT account_id FROM {table}"
                    " ORDER BY account_id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING account_id, cause",
                    [limit],
                )
                claimed = cursor.fetchall()
            if not claimed:
                return None
            ids = sorted(account_id for account_id, _ in claimed)
            causes = sorted({cause for _, cause in claimed})
            return sweep_accounts_run(account_ids=ids, cause="; ".join(causes), quotes=quotes)
        requests = list(SweepRequest.objects.select_for_update(skip_locked=True).order_by("pk")[:limit])
        if not requests:
            return None
        causes = sorted({request.cause for request in requests})
        ids = [request.pk for request in requests]
        sweep = sweep_accounts_run(account_ids=ids, cause="; ".join(causes), quotes=quotes)
        SweepRequest.objects.filter(pk__in=ids).delete()
        return sweep


# --- Liquidation -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanStep:
    position_id: int
    instrument: str
    quantity: float
    price: float
    notional: float
    released: float
    equity_after: float
    initial_margin_after: float


def liquidation_plan(
    *, book: LoadedBook, fee_rate: float, settlement_asset_id: int
) -> tuple[list[PlanStep], float, float]:
    """Close positions of the (single) account in ``book`` one at a time, each time choosing the
    position whose close releases the most initial margin per unit of notional, until equity ≥ IM
    or the account is flat. Closing at the index price (the mark for options) moves the position's
    value into cash, so equity only falls by the fee. Returns the steps and the starting equity and
    IM. Each step is one engine run over every candidate (one what-if portfolio per position)."""
    rows = book.rows
    result = compute_margin(book.margin_input)
    equity, im = float(result.equity[0]), float(result.initial_margin[0])
    start = (equity, im)
    market = book.margin_input.market
    instrument_index = book.margin_input.portfolios.position_instrument
    value = result.position_value
    price = np.where(
        market.kind[instrument_index] == OPTION,
        result.position_price,
        market.underlying_price[market.underlying[instrument_index]],
    )
    price = np.maximum(price, 1e-10)
    notional = np.abs(rows.position_quantity) * market.multiplier[instrument_index] * price
    fee = fee_rate * notional
    remaining = list(range(rows.position_ids.size))
    cash = 0.0
    steps: list[PlanStep] = []
    account_id = int(rows.account_ids[0])
    positions, balances = rows.tables()
    while equity < im and remaining:
        n = len(remaining)
        keep = [[j for j in remaining if j != c] for c in remaining]
        fake = np.arange(1, n + 1, dtype=np.int64)
        pos = np.array([j for kept in keep for j in kept], dtype=np.int64)
        owner = np.repeat(fake, [len(kept) for kept in keep])
        bal_owner = np.repeat(fake, rows.balance_account.size)
        extra = np.array([cash + value[c] - fee[c] for c in remaining])
        candidates, held = positions[pos], np.tile(balances, (n, 1))
        candidates[:, 1], held[:, 0] = owner, bal_owner
        what_if = BookRows.build(
            account_ids=fake,
            account_codes=tuple(f"{account_id}-{c}" for c in remaining),
            account_modes=np.repeat(rows.account_modes, n),
            positions=candidates,
            balances=np.vstack([held, np.column_stack([fake, np.full(n, settlement_asset_id), extra])]),
        )
        trial = compute_margin(
            margin_book_build(
                rows=what_if,
                parameters_form=book.parameters_form,
                quotes=market_form_quotes(market=book.market_form, valuation_time=book.valuation_time),
            ).margin_input
        )
        released = im - trial.initial_margin
        best = int(np.argmax(released / np.maximum(notional[remaining], 1e-12)))
        c = remaining[best]
        cash += value[c] - fee[c]
        equity, im = float(trial.equity[best]), float(trial.initial_margin[best])
        steps.append(
            PlanStep(
                int(rows.position_ids[c]),
                book.instrument_symbols[int(rows.position_instrument[c])],
                float(rows.position_quantity[c]),
                float(price[c]),
                float(notional[c]),
                float(released[best]),
                equity,
                im,
            )
        )
        remaining.remove(c)
    return steps, *start


def _balances(account_id: int, form: dict, quotes: MarketQuotes) -> tuple[np.ndarray, np.ndarray]:
    """The account's balances now: (asset index in the parameter set, amount)."""
    portfolios = margin_book_build(
        rows=book_rows_fetch(account_ids=[account_id]), parameters_form=form, quotes=quotes
    ).margin_input.portfolios
    return portfolios.balance_asset, portfolios.balance_amount


@transaction.atomic
def liquidation_execute(*, liquidation_id: int, quotes: MarketQuotes | None = None) -> Liquidation:
    """Execute a liquidation at the current trusted prices (or ``quotes``), not at the prices of
    the sweep that started it: its task may run minutes after that sweep (a retry, a redelivery,
    the recovery task), and a member is never closed out at a stale price nor after recovering.
    Close the plan's positions against the house account with ``trades_book``; the plan is made
    under the account's lock at these prices and checks before each step that the account is
    still below IM, so an account that recovered since its sweep trades nothing. Pay the fee
    (``CLEARING_LIQUIDATION_FEE_RATE`` of the closed notional, never more than the equity left) to
    the insurance fund, and have the fund cover any negative equity left once flat. While a price
    the account depends on is not trustworthy, nothing is traded: the liquidation stays in
    progress (``ops.liquidations_resume`` sends it again) with a ``liquidation_suspended`` alert.
    Idempotent."""
    liquidation = (
        Liquidation.objects.select_for_update()
        .select_related("sweep__parameter_set", "account")
        .get(pk=liquidation_id)
    )
    if liquidation.status == LiquidationStatus.DONE:
        return liquidation
    venue = dict(MarginAccount.objects.exclude(kind=AccountKind.MEMBER).values_list("kind", "pk"))
    house_id, fund_id = venue[AccountKind.HOUSE], venue[AccountKind.INSURANCE_FUND]
    accounts = margin_accounts_lock(account_ids=[liquidation.account_id, house_id, fund_id])
    quotes = quotes or quotes_current()
    form = parameters_form(parameter_set=liquidation.sweep.parameter_set)
    settlement = Asset.objects.get(symbol=settings.SETTLEMENT_ASSET)
    book = margin_book_build(
        rows=book_rows_fetch(account_ids=[liquidation.account_id]), parameters_form=form, quotes=quotes
    )
    if unsafe := _exposed(book, quotes.unsafe_for_liquidation())[0]:
        from clearing.marketdata.services import ops_alerts_raise

        ops_alerts_raise(
            kind=SUSPENDED_ALERT,
            messages={
                str(liquidation.account_id): f"Liquidation {liquidation.pk} of account "
                f"{liquidation.account_id} waits: {', '.join(unsafe)} not trustworthy now (stale, "
                "unconfirmed or short of sources)."
            },
        )
        return liquidation
    if not compute_margin(book.margin_input).finite[0]:
        # Fail closed: nothing is traded on a figure that is not a number; the liquidation waits,
        # in progress, with a critical alert, until its prices give finite figures.
        from clearing.marketdata.services import ops_alerts_raise

        ops_alerts_raise(
            kind=NOT_FINITE_ALERT,
            messages={
                str(liquidation.account_id): f"CRITICAL: liquidation {liquidation.pk} of account "
                f"{liquidation.account_id} not executed: its margin figures are not finite."
            },
        )
        return liquidation
    fee_rate = float(settings.CLEARING_LIQUIDATION_FEE_RATE)
    steps, _, _ = liquidation_plan(book=book, fee_rate=fee_rate, settlement_asset_id=settlement.pk)
    quantities = dict(
        Position.objects.filter(pk__in=[s.position_id for s in steps]).values_list("pk", "quantity")
    )
    instruments = Instrument.objects.in_bulk([s.instrument for s in steps], field_name="symbol")
    account, house = accounts[liquidation.account_id], accounts[house_id]
    fills = []
    notional = Decimal(0)
    for step in steps:
        quantity = quantities[step.position_id]
        price = max(decimal_from_float(step.price), Decimal("0.0000000001"))
        reference = f"liquidation-{liquidation.pk}-{step.position_id}"
        fills += [
            Fill(account, step.instrument, -quantity, price, f"{reference}-a"),
            Fill(house, step.instrument, quantity, price, f"{reference}-h"),
        ]
        notional += abs(quantity) * instruments[step.instrument].multiplier * price
    trades = trades_book(fills=fills) if fills else []
    after = compute_margin(
        margin_book_build(
            rows=book_rows_fetch(account_ids=[account.pk]), parameters_form=form, quotes=quotes
        ).margin_input
    )
    equity = float(after.equity[0])
    fee = min(decimal_from_float(fee_rate * float(notional)), max(decimal_from_float(equity), Decimal(0)))
    changes = []
    if fee > 0:
        reference = f"liquidation {liquidation.pk} fee"
        changes += [
            BalanceChange(account.pk, settlement, MovementKind.LIQUIDATION_FEE, -fee, reference),
            BalanceChange(fund_id, settlement, MovementKind.LIQUIDATION_FEE, fee, reference),
        ]
    equity -= float(fee)
    # Once flat, a negative net balance (market value, before haircuts) is the deficit.
    asset_index, amounts = _balances(account.pk, form, quotes)
    net = float(np.sum(book.margin_input.market.asset_price[asset_index] * amounts)) - float(fee)
    flat = not Position.objects.filter(account=account).exclude(quantity=0).exists()
    deficit = decimal_from_float(-net) if flat and net < 0 else Decimal(0)
    if deficit > 0:
        reference = f"liquidation {liquidation.pk} deficit"
        changes += [
            BalanceChange(account.pk, settlement, MovementKind.DEFICIT_COVER, deficit, reference),
            BalanceChange(fund_id, settlement, MovementKind.DEFICIT_COVER, -deficit, reference),
        ]
    collateral_movements_apply(changes=changes, created_by=None)
    final = compute_margin(
        margin_book_build(
            rows=book_rows_fetch(account_ids=[account.pk]), parameters_form=form, quotes=quotes
        ).margin_input
    )
    liquidation.plan = [step.__dict__ for step in steps]
    liquidation.status, liquidation.finished_at = LiquidationStatus.DONE, timezone.now()
    liquidation.closed_notional, liquidation.fee, liquidation.deficit_covered = notional, fee, deficit
    liquidation.equity_after, liquidation.initial_margin_after = (
        float(final.equity[0]),
        float(final.initial_margin[0]),
    )
    liquidation.save()
    liquidation.trades.set(trades)
    events_publish(
        events=[
            (
                account.pk,
                "liquidation.finished",
                {
                    "liquidation": liquidation.pk,
                    "positions_closed": len(steps),
                    "closed_notional": notional,
                    "fee": fee,
                    "deficit_covered": deficit,
                    "equity": liquidation.equity_after,
                    "initial_margin": liquidation.initial_margin_after,
                },
            )
        ]
    )
    from clearing.marketdata.services import ops_alerts_resolve

    ops_alerts_resolve(kind=SUSPENDED_ALERT, keys=[str(account.pk)])
    insurance_fund_after_liquidation(liquidation=liquidation, quotes=quotes)
    return liquidation

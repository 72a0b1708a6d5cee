"""Liquidation foresight on the platform (issue #17; methodology v1.1 section 9).

After every full sweep, each account whose equity / MM is below the active set's
``foresight_below_ratio`` (and each one not at ``ok`` already, so that a level can come back down)
is graded by ``sweeps.foresight`` tasks (``riskengine.sweeps.receivers`` hands them over once the
shard commits). A task, for its accounts, from their snapshots in that sweep:

1. rebuilds the engine input exactly as the sweep margined it (the snapshot's positions, balances
   and allocations; the sweep's market and parameter set) — the figures replay;
2. computes the distances and liquidation prices (``riskengine.core.foresight.distances``), the
   probability of liquidation within the governed horizon with the platform's EWMA volatility
   forecast from the oracle's daily closes (``liquidation_probability``), the look-ahead
   requirement (``riskengine.core.lookahead``: tomorrow's valuation and the next approved set),
   and the nearest distance in daily standard deviations (``riskengine.core.ladder``);
3. in one short transaction, under the accounts' ``AccountMargin`` row locks (account order, as
   the sweeps take them), grades each account on the ladder with its stored level as the previous
   one, writes ``AccountForesight`` where this sweep's valuation is newer than the stored one
   (newest valuation wins over a late or retried task), and publishes ``margin.warning`` through
   the outbox for each account whose level changed (a first grading at ``ok`` is no change).

Fail closed: a missing volatility forecast (too little history) makes the distance in standard
deviations and the probability null and the level at least ``warning``; so does a price the
account depends on that is not ``ok`` at the sweep, and a figure that is not a number.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import date

import numpy as np
from django.db import transaction
from django.utils import timezone

from accounts.models import MarginAccount
from clearing.cache import ProcessLRU
from clearing.events import events_publish
from clearing.marketdata.selectors import index_closes
from riskengine.calibration import daily_log_returns
from riskengine.core import MODES, DocumentError, compute_margin
from riskengine.core.foresight import Book, distances, liquidation_probability
from riskengine.core.ladder import LEVELS, NO_LEVEL, OK, nearest_distances, warning_levels
from riskengine.core.lookahead import PARAMETER_SET, lookahead
from riskengine.core.margin import STATUSES
from riskengine.core.volatility import SEED_RETURNS, annualised, ewma_variances
from riskengine.loading import BookRows, LoadedBook, margin_book_build
from riskengine.models import ParameterSet, ParameterStatus
from riskengine.selectors import parameters_form
from riskengine.sweeps import codec, storage
from riskengine.sweeps.calls import exposed_symbols
from riskengine.sweeps.models import AccountForesight, AccountMargin, MarginSnapshot, Sweep
from riskengine.sweeps.selectors import foresight_figures, sweep_quotes

MODEL = "ewma-0.94"
# Accounts per ``sweeps.foresight`` task: the probability costs 70–200 ms of CPU per account
# (docs/foresight.md), so 200 accounts stay well inside the task's time limit (settings).
TASK_ACCOUNTS = 200
EVENT = "margin.warning"


def underlying_vols(*, symbols: list[str], until: date) -> np.ndarray:
    """The annualised EWMA (λ = 0.94) volatility forecast ``(n,)`` of each of ``symbols`` from the
    oracle's daily closes up to ``until`` (one query); NaN for a symbol with fewer than
    ``SEED_RETURNS`` daily returns between consecutive days."""
    closes = index_closes(symbols=symbols, until=until)
    vols = np.full(len(symbols), np.nan)
    for i, symbol in enumerate(symbols):
        returns = daily_log_returns(closes[symbol])
        if len(returns) >= SEED_RETURNS:
            series = np.array([returns[day] for day in sorted(returns)])
            vols[i] = annualised(math.sqrt(float(ewma_variances(series)[-1])))
    return vols


def snapshots_rows(snapshots: list[MarginSnapshot]) -> BookRows:
    """The engine's input rows exactly as each snapshot stored them (positions with their
    allocations, balances), in the snapshots' order (account ids ascending)."""
    positions, balances = [], []
    for snapshot in snapshots:
        records = codec.decode(codec.POSITION, snapshot.positions)
        allocations = codec.decode(codec.ALLOCATION, snapshot.position_allocations)
        if allocations.size != records.size:
            allocations = np.zeros(records.size)
        account = np.full(records.size, snapshot.account_id, dtype=np.float64)
        positions.append(
            np.column_stack(
                [np.zeros(records.size), account, records["instrument"], records["quantity"],
                 records["entry"], allocations]
            )
        )  # fmt: skip
        held = codec.decode(codec.BALANCE, snapshot.collateral)
        balances.append(
            np.column_stack([np.full(held.size, snapshot.account_id), held["asset"], held["amount"]])
        )
    return BookRows.build(
        account_ids=[s.account_id for s in snapshots],
        account_codes=tuple(s.account.code for s in snapshots),
        account_modes=[MODES.index(s.mode) for s in snapshots],
        positions=np.vstack(positions) if positions else np.zeros((0, 6)),
        balances=np.vstack(balances) if balances else np.zeros((0, 3)),
    )


def parameter_set_next(*, after) -> ParameterSet | None:
    """The approved set that takes effect next after ``after`` (the earliest effective time)."""
    return (
        ParameterSet.objects.filter(status=ParameterStatus.APPROVED, effective_at__gt=after)
        .order_by("effective_at", "pk")
        .first()
    )


@dataclass(frozen=True, eq=False)
class Computed:
    """The foresight of ``n`` accounts (in ``snapshots`` order), ready to grade and store: arrays
    ``(n,)`` and per account JSON-ready parts."""

    snapshots: list[MarginSnapshot]
    status: np.ndarray
    sigmas: np.ndarray
    driver: list[str]
    probability: np.ndarray
    lookahead_im: np.ndarray
    lookahead_excess: np.ndarray
    lookahead_reason: list[str]
    trusted: np.ndarray
    by_underlying: list[list[dict]]
    joint: list[dict]
    vols: dict[str, float | None]
    horizon_days: float
    seconds: float


def _number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _side(move: float, price: float | None = None, sigmas: float | None = None) -> dict | None:
    if math.isnan(move):
        return None
    side = {"move": float(move)}
    if price is not None:
        side |= {"price": _number(price), "sigmas": None if sigmas is None else _number(sigmas)}
    return side


def foresight_compute(*, sweep: Sweep, snapshots: list[MarginSnapshot]) -> Computed:
    """The foresight of ``snapshots`` (all of ``sweep``, ordered by account id) at the sweep's
    market and parameter set (see the module doc). Reads: the closes, the next approved set."""
    started = time.perf_counter()
    parameter_set = sweep.parameter_set
    form = parameters_form(parameter_set=parameter_set)
    quotes = sweep_quotes(sweep=sweep)
    rows = snapshots_rows(snapshots)
    book: LoadedBook = margin_book_build(rows=rows, parameters_form=form, quotes=quotes)
    margin_input = book.margin_input
    names = margin_input.parameters.underlyings
    result = compute_margin(margin_input)
    foresight_book = Book(margin_input, result)
    found = distances(margin_input, book=foresight_book)
    vols = underlying_vols(symbols=list(names), until=sweep.valuation_time.date())
    nearest = nearest_distances(
        pair_indptr=foresight_book.pair_indptr, pair_underlying=foresight_book.pair_underlying,
        down=found.down, up=found.up, joint_down=found.joint_down, joint_up=found.joint_up, vols=vols,
    )  # fmt: skip
    horizon = float(parameter_set.foresight_horizon_days)
    # The probability needs a vol for every underlying an account holds: the others stay NaN.
    counts = np.diff(foresight_book.pair_indptr)
    pair_ok = np.isfinite(vols[foresight_book.pair_underlying])
    missing = np.bincount(foresight_book.pair_portfolio[~pair_ok], minlength=counts.size)
    can = np.flatnonzero(missing == 0)
    probability = np.full(counts.size, np.nan)
    if can.size:
        probability[can] = liquidation_probability(
            foresight_book, vols=np.nan_to_num(vols, nan=0.0), horizon_days=horizon, accounts=can
        )
    # Look-ahead: tomorrow's valuation, and the next approved set on today's book and market.
    next_set = parameter_set_next(after=sweep.valuation_time)
    next_input, next_failed = None, False
    if next_set is not None:
        try:
            next_input = margin_book_build(
                rows=rows, parameters_form=parameters_form(parameter_set=next_set), quotes=quotes
            ).margin_input
        except DocumentError:
            next_failed = True  # the next set cannot margin these books: fail closed below
    ahead = lookahead(margin_input, result=result, next_input=next_input)
    im, excess = ahead.im, ahead.excess
    if next_failed:
        im, excess = np.full(im.size, np.nan), np.full(im.size, np.nan)
    reasons = [
        f"parameter_set {next_set.version}"
        if (r == PARAMETER_SET or next_failed) and next_set
        else "tomorrow"
        for r in ahead.reason.tolist()
    ]
    trusted = np.array([not e for e in exposed_symbols(book, quotes.unsafe_for_liquidation())], dtype=bool)

    by_underlying, joint = [], []
    spot = foresight_book.pair_spot
    for k in range(counts.size):
        pairs = range(int(foresight_book.pair_indptr[k]), int(foresight_book.pair_indptr[k + 1]))
        by_underlying.append(
            [
                {
                    "underlying": names[int(foresight_book.pair_underlying[r])],
                    "down": _side(found.down[r], spot[r] * (1.0 + found.down[r]), nearest.down_sigmas[r]),
                    "up": _side(found.up[r], spot[r] * (1.0 + found.up[r]), nearest.up_sigmas[r]),
                }
                for r in pairs
            ]
        )
        joint.append({"down": _side(found.joint_down[k]), "up": _side(found.joint_up[k])})
    return Computed(
        snapshots=snapshots,
        status=np.array([STATUSES.index(s.status) for s in snapshots]),
        sigmas=nearest.sigmas,
        driver=[
            names[d] if d >= 0 and not j else "" for d, j in zip(nearest.driver, nearest.joint, strict=True)
        ],
        probability=probability,
        lookahead_im=im,
        lookahead_excess=excess,
        lookahead_reason=reasons,
        trusted=trusted,
        by_underlying=by_underlying,
        joint=joint,
        vols={name: _number(v) for name, v in zip(names, vols.tolist(), strict=True)},
        horizon_days=horizon,
        seconds=time.perf_counter() - started,
    )


def foresight_levels(*, computed: Computed, previous: np.ndarray, parameter_set: ParameterSet) -> np.ndarray:
    """The ladder level codes ``(n,)`` of ``computed``'s accounts given their previous levels."""
    snapshots = computed.snapshots
    return warning_levels(
        status=computed.status,
        sigmas=computed.sigmas,
        equity=np.array([s.equity for s in snapshots], dtype=np.float64),
        maintenance=np.array([s.maintenance_margin for s in snapshots], dtype=np.float64),
        trusted=computed.trusted,
        previous=previous,
        thresholds=parameter_set.ladder_thresholds(),
    )


def _row(*, computed: Computed, i: int, sweep: Sweep, level: int, previous: int, now) -> AccountForesight:
    snapshot = computed.snapshots[i]
    return AccountForesight(
        account_id=snapshot.account_id,
        snapshot_id=snapshot.pk,
        sweep_id=sweep.pk,
        valued_at=sweep.valuation_time,
        computed_at=now,
        level=LEVELS[level],
        previous="" if previous == NO_LEVEL else LEVELS[previous],
        driver=computed.driver[i],
        distance_sigmas=_number(computed.sigmas[i]),
        horizon_days=computed.horizon_days,
        probability=_number(computed.probability[i]),
        model=MODEL,
        vols=computed.vols,
        by_underlying=computed.by_underlying[i],
        joint=computed.joint[i],
        lookahead_im=_number(computed.lookahead_im[i]),
        lookahead_excess=_number(computed.lookahead_excess[i]),
        lookahead_reason=computed.lookahead_reason[i],
    )


def warning_event(*, foresight: AccountForesight, account_code: str) -> dict:
    """The ``margin.warning`` payload (``type`` and ``account`` are added by the outbox). Its
    shape is what the member pages' toasts read: change it only with them."""
    return {
        "account_code": account_code,
        "level": foresight.level,
        "previous": foresight.previous or None,
        "driver": foresight.driver or None,
        "distance_sigmas": foresight.distance_sigmas,
        "probability": foresight.probability,
    }


@dataclass
class GradeOutcome:
    accounts: int = 0
    stored: int = 0
    events: int = 0
    skipped: int = 0  # a newer valuation was already stored
    seconds: float = 0.0


def foresight_accounts_grade(*, sweep_id: int, account_ids: list[int]) -> GradeOutcome:
    """Grade ``account_ids`` from their snapshots in sweep ``sweep_id`` (the ``sweeps.foresight``
    task; see the module doc). Idempotent: running it again stores the same figures and, the
    level being unchanged, publishes nothing."""
    sweep = Sweep.objects.select_related("parameter_set").get(pk=sweep_id)
    snapshots = list(
        storage.any_of(MarginSnapshot.objects.filter(sweep=sweep), "account_id", sorted(account_ids))
        .select_related("account")
        .order_by("account_id")
    )
    outcome = GradeOutcome(accounts=len(snapshots))
    if not snapshots:
        return outcome
    computed = foresight_compute(sweep=sweep, snapshots=snapshots)
    outcome.seconds = computed.seconds
    ids = [s.account_id for s in snapshots]
    with transaction.atomic():
        # The accounts' current-margin rows serialise two graders of one account (and a grader
        # with a sweep's upsert), in account order as the sweeps lock them.
        list(
            storage.any_of(AccountMargin.objects.select_for_update(), "account_id", ids)
            .order_by("account_id")
            .values_list("pk", flat=True)
        )
        stored = {f.account_id: f for f in storage.any_of(AccountForesight.objects.all(), "account_id", ids)}
        key = (sweep.valuation_time, sweep.pk)
        newer = np.array(
            [a not in stored or (stored[a].valued_at, stored[a].sweep_id) < key for a in ids], dtype=bool
        )
        previous = np.array([LEVELS.index(stored[a].level) if a in stored else NO_LEVEL for a in ids])
        levels = foresight_levels(computed=computed, previous=previous, parameter_set=sweep.parameter_set)
        now = timezone.now()
        rows, events = [], []
        for i in np.flatnonzero(newer).tolist():
            row = _row(
                computed=computed, i=i, sweep=sweep, level=int(levels[i]), previous=int(previous[i]), now=now
            )
            if int(levels[i]) == int(previous[i]) and ids[i] in stored:
                row.previous = stored[ids[i]].previous  # unchanged: keep the level it came from
            rows.append(row)
            changed = int(levels[i]) != (OK if previous[i] == NO_LEVEL else int(previous[i]))
            if changed:
                events.append(
                    (ids[i], EVENT, warning_event(foresight=row, account_code=snapshots[i].account.code))
                )
        fields = [f.name for f in AccountForesight._meta.concrete_fields if f.name != "account"]
        AccountForesight.objects.bulk_create(
            rows, update_conflicts=True, unique_fields=["account"], update_fields=fields
        )
        if events:
            events_publish(events=events)
    outcome.stored, outcome.events, outcome.skipped = len(rows), len(events), int((~newer).sum())
    return outcome


def foresight_on_demand(*, current: AccountMargin) -> AccountForesight | None:
    """The foresight of the current margin ``current``, computed now and not stored (the API and
    pages, for an account no recent full sweep has graded)."""
    sweep = Sweep.objects.select_related("parameter_set").get(pk=current.sweep_id)
    computed = foresight_compute(sweep=sweep, snapshots=[current.snapshot])
    levels = foresight_levels(
        computed=computed, previous=np.array([NO_LEVEL]), parameter_set=sweep.parameter_set
    )
    return _row(
        computed=computed, i=0, sweep=sweep, level=int(levels[0]), previous=NO_LEVEL, now=timezone.now()
    )


# Foresights computed on demand, per process: (account id, snapshot id, the snapshot's valuation
# time) -> figures. A snapshot never changes, so its foresight is computed once per process however
# often a page re-reads it (the probability alone is tens of milliseconds); the valuation time in
# the key keeps a SQLite database's reused ids from meeting another snapshot's figures.
_on_demand = ProcessLRU(2048)


def _stored_is_current(stored: AccountForesight, current: AccountMargin) -> bool:
    """Whether the stored foresight still speaks for the current margin: it was graded by a full
    sweep no more than two sweep intervals before the current valuation. Every full sweep grades
    the accounts below the set's ``foresight_below_ratio`` (and those above ``ok``) again; an
    account that has since risen above that ratio keeps an old row no sweep refreshes, and its
    liquidation prices must not be shown as today's."""
    interval = current.snapshot.parameter_set.sweep_interval_seconds
    lag = (current.snapshot.sweep.valuation_time - stored.valued_at).total_seconds()
    return lag <= 2 * interval


def account_foresight(*, account: MarginAccount) -> dict | None:
    """The account's foresight in the API's shape (``foresight_figures``): the stored one while it
    is current (no query when ``account`` was read with its margin and foresight, as
    ``margin_account_visible_current`` reads it), else computed from its current margin and kept
    per process for that snapshot (not stored: a read stays a read); ``None`` when it has no
    current margin or its book cannot be margined."""
    try:
        current = account.margin
    except AccountMargin.DoesNotExist:
        return None
    try:
        stored = account.foresight
    except AccountForesight.DoesNotExist:
        stored = None
    if stored is not None and _stored_is_current(stored, current):
        return foresight_figures(foresight=stored)

    def build() -> dict | None:
        try:
            computed = foresight_on_demand(current=current)
        except DocumentError:
            return None
        return None if computed is None else foresight_figures(foresight=computed)

    return _on_demand.get_or_build(
        (account.pk, current.snapshot_id, current.snapshot.sweep.valuation_time), build
    )

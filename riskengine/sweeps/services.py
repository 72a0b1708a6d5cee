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

import logging
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts.models import MarginAccount
from accounts.services import margin_accounts_lock
from clearing import bulk
from clearing.marketdata.quotes import MarketQuotes
from clearing.marketdata.services import index_sweep_reference_set
from clearing.models import Instrument
from clearing.ops.alerts import ops_alerts_raise
from clearing.validation import decimal_from_float
from riskengine.core import DocumentError, compute_margin, parse_parameters
from riskengine.core.margin import STATUSES
from riskengine.loading import (
    BookRows,
    LoadedBook,
    book_rows_fetch,
    margin_book_build,
    market_form_build,
)
from riskengine.reference import quotes_current, reference_current
from riskengine.selectors import parameter_set_active, parameters_form
from riskengine.services import INVALID_SET_ALERT
from riskengine.sweeps import storage
from riskengine.sweeps.calls import calls_follow
from riskengine.sweeps.models import (
    ShardStatus,
    Sweep,
    SweepKind,
    SweepRequest,
    SweepShard,
    SweepStatus,
)
from riskengine.sweeps.selectors import sweep_quotes

log = logging.getLogger(__name__)

HOSTNAME = socket.gethostname()


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

    def add_calls(self, calls) -> None:
        """Add a ``calls.CallsOutcome`` (the shard's call transitions)."""
        self.opened += calls.opened
        self.cured += calls.cured
        self.escalated += calls.escalated
        self.suspended += calls.suspended
        self.not_finite += calls.not_finite
        self.liquidations += calls.liquidations


def sweep_superseded(*, sweep: Sweep) -> bool:
    """Whether a full sweep valued after ``sweep`` (by ``(valuation_time, id)``) is already done:
    then ``sweep``'s results are history only."""
    newer = Q(valuation_time__gt=sweep.valuation_time) | Q(
        valuation_time=sweep.valuation_time, pk__gt=sweep.pk
    )
    return Sweep.objects.filter(newer, kind=SweepKind.FULL, status=SweepStatus.DONE).exists()


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
    columns = storage.snapshot_columns(book, result, sweep=sweep, shard=shard, read_at=read_at)
    previous = storage.margins_previous(shard=shard, account_ids=columns["account_id"])
    storage.snapshots_insert(columns)
    # A superseded sweep's shard (redelivered, retried or late) keeps its snapshots as history and
    # touches nothing current: no margin, no call, no liquidation.
    current = (
        {}
        if sweep.kind == SweepKind.FULL and sweep_superseded(sweep=sweep)
        else storage.current_upsert(sweep=sweep, shard=shard)
    )
    timings["store"] = time.perf_counter() - started

    started = time.perf_counter()
    for code, count in enumerate(np.bincount(result.status, minlength=len(STATUSES)).tolist()):
        outcome.statuses[STATUSES[code]] += count
    outcome.add_calls(
        calls_follow(sweep=sweep, book=book, result=result, current=current, previous=previous, quotes=quotes)
    )
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


# A shard that escalates more liquidations than this sends them through ``sweeps.liquidations_send``
# tasks of at most LIQUIDATIONS_SEND_CHUNK ids instead of one message each from the shard's own
# task: a send costs the sender ≈ 1 ms of CPU idle and 14 ms at load 10 (bench/bench_sweep.py), so
# a crash that escalates 8,500 accounts at once held the shards' workers for seconds after their
# commits; now a few messages, sent on by whichever worker is free once the sweep's shards are.
LIQUIDATIONS_SENT_INLINE = 50
LIQUIDATIONS_SEND_CHUNK = 1000


def _liquidations_enqueue(ids: list[int]) -> None:
    from riskengine.sweeps.tasks import liquidations_send as task  # circular: tasks import this module

    # Runs after the shard's commit: a broker error here must neither fail the task whose work is
    # committed (nor mark its sweep failed) nor lose the liquidation. The liquidation row is in
    # progress in the database, and ``ops.liquidations_resume`` sends its task again from that
    # state within its bound (riskengine.sweeps.recovery).
    if len(ids) <= LIQUIDATIONS_SENT_INLINE:
        liquidations_send(liquidation_ids=ids)
        return
    for start in range(0, len(ids), LIQUIDATIONS_SEND_CHUNK):
        chunk = ids[start : start + LIQUIDATIONS_SEND_CHUNK]
        try:
            task.delay(chunk)
        except Exception:
            log.exception("could not enqueue %d liquidations; ops.liquidations_resume will", len(chunk))


def liquidations_send(*, liquidation_ids: list[int]) -> int:
    """Send one ``sweeps.liquidation_execute`` task per liquidation; a send that fails is logged
    and left to ``ops.liquidations_resume`` (the liquidation is in progress in the database).
    Returns how many were sent."""
    from riskengine.sweeps.tasks import liquidation_execute as task  # circular: tasks import this module

    sent = 0
    for liquidation_id in liquidation_ids:
        try:
            task.delay(liquidation_id)
        except Exception:
            log.exception("could not enqueue liquidation %s; ops.liquidations_resume will", liquidation_id)
        else:
            sent += 1
    return sent


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
    from riskengine.sweeps.tasks import sweep_shard  # circular: tasks import this module

    # After the sweep's commit: a broker error must not fail the caller or leave the sweep running
    # for ever. The shards are pending in the database and ``ops.sweeps_recover`` sends them again
    # from that state within its bound (riskengine.sweeps.recovery).
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
        with bulk.atomic_snapshot():
            read_at = bulk.statement_time()
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
    read_at = bulk.statement_time()
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
    # The request time as the ORM stores it (SQLite: naive UTC text).
    now = connection.ops.adapt_datetimefield_value(timezone.now())
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
    from riskengine.sweeps.tasks import sweep_requests_drain as task  # circular: tasks import this module

    # Runs after the writer's commit: a broker outage must not fail the trade or deposit. The
    # request row stays and the periodic task drains it.
    try:
        task.apply_async(countdown=settings.CLEARING_EVENT_SWEEP_DELAY_SECONDS)
    except Exception:
        log.exception("could not enqueue the event-sweep drain; the periodic task will take it")


def sweep_requests_drain(*, limit: int = 5000, quotes: MarketQuotes | None = None) -> Sweep | None:
    """Take every pending request (up to ``limit``) and sweep those accounts in one engine run,
    deleting the requests in the same transaction (a crash leaves them for the next drain)."""
    table = SweepRequest._meta.db_table
    with transaction.atomic():
        # Claim and delete in one statement; the delete commits (or not) with the sweep. Another
        # drain skips the rows claimed here (SQLite: its write transaction waits for this one).
        with connection.cursor() as cursor:
            cursor.execute(
                f"DELETE FROM {table} WHERE account_id IN (SELECT account_id FROM {table}"
                f" ORDER BY account_id LIMIT %s{bulk.skip_locked()}) RETURNING account_id, cause",
                [limit],
            )
            claimed = cursor.fetchall()
        if not claimed:
            return None
        ids = sorted(account_id for account_id, _ in claimed)
        causes = sorted({cause for _, cause in claimed})
        return sweep_accounts_run(account_ids=ids, cause="; ".join(causes), quotes=quotes)

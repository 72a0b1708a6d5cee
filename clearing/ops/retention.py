"""Retention of margin snapshots and of the sweeps that hold them (docs/operations.md, "Retention").

Why. A full sweep writes one snapshot per account every ``sweep_interval_seconds`` (60 s), about
665 bytes each: at 100,000 accounts 144 million rows and ≈ 96 GB a day, for ever.

Policy — a snapshot is kept while any of these holds, and deleted otherwise:

1. it was read within the last ``CLEARING_SNAPSHOT_RETENTION_HOURS`` (default 2 h): recent history
   stays at full resolution (the account page charts the last 120 snapshots, two hours of full
   sweeps; the API's margin history pages through the same);
2. it is referenced by current margin (``AccountMargin``), by the current foresight
   (``AccountForesight``, so its figures replay), by a margin call (the snapshot that
   opened it), by a call event, or by a liquidation (the liquidated account's snapshot in the
   liquidation's sweep): everything an audit of a call or a liquidation replays;
3. it is the last snapshot of its account in its UTC day (the account's daily close), for
   history and backtesting.

Sweeps (and their shards) are deleted once they hold no snapshot and no liquidation, are older
than the window and not running; failed and expired sweeps are kept 7 days for their errors. Every kept
snapshot still replays: its sweep (the market) and its parameter set stay.

How. ``margin_snapshots_prune`` (beat, every minute, one run at a time under an advisory lock)
deletes in batches of ``BATCH`` rows, each its own transaction, at most ``BATCHES`` per run
(300,000 rows: three times what 100,000 accounts write a minute). A batch is one ``DELETE … WHERE
id IN (SELECT … ORDER BY id LIMIT n)`` whose conditions are the policy itself, evaluated by the
database at that moment: a snapshot that became referenced, or gained a later snapshot the same
day, is judged on what is committed now, so a run can be repeated, interrupted or run beside
sweeps in any order (idempotent; a batch that fails rolls back whole). Batches walk ids upward
from ``SnapshotRetention.final_below_id`` — below it every row has had its final decision and is
never scanned again — up to the highest id that was visible ``window`` ago (``checkpoints``):
ids grow with insertion, so those rows were all read before the window began and no index on
read time is needed (the read time is checked as well, on the rows fetched).

The one sanctioned deletion. Snapshots are evidence (``replay_snapshot`` reproduces them bit for
bit): a trigger (migrations ``ops.0001``, and ``ops.0004`` on SQLite) refuses every UPDATE and
every DELETE unless the transaction has raised the flag ``clearing.snapshot_retention``, which only
this module does (``clearing.bulk.transaction_flag``: a transaction-local setting on PostgreSQL, a
row never committed on SQLite) — inside its own batch transaction, lowered again after the delete.
A stray ``MarginSnapshot.objects.filter(…).delete()`` or a cascade from another table fails. It is
a guard against code, not against a database user who could drop the trigger.

Both databases run it: everything dialect-specific (the lock, the flag, the day's bound, SKIP
LOCKED) comes from ``clearing.bulk``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from clearing import bulk
from clearing.ops.metrics import SNAPSHOTS_PRUNED
from clearing.ops.models import SnapshotRetention

log = logging.getLogger(__name__)

BATCH = 10_000
BATCHES = 30
SWEEP_BATCH = 1_000
FAILED_SWEEPS_KEPT = timedelta(days=7)
LOCK_KEY = "clearing.ops.retention"
GATE = "clearing.snapshot_retention"

SNAPSHOT = "sweeps_marginsnapshot"
# Rule 2: referenced for good (calls, events and liquidations are never deleted).
_PERMANENT = """
    NOT EXISTS (SELECT 1 FROM sweeps_margincall c WHERE c.opened_by_id = s.id)
    AND NOT EXISTS (SELECT 1 FROM sweeps_margincallevent e WHERE e.snapshot_id = s.id)
    AND NOT EXISTS (SELECT 1 FROM sweeps_liquidation l
                    WHERE l.sweep_id = s.sweep_id AND l.account_id = s.account_id)
"""


def _deletable() -> str:
    """Rule 2 for now (current margin), and rule 3: a later snapshot of the account the same UTC
    day exists, so this one is not the day's last (probes the (account, -read_at) index)."""
    return f"""
        {_PERMANENT}
        AND NOT EXISTS (SELECT 1 FROM sweeps_accountmargin m WHERE m.snapshot_id = s.id)
        AND NOT EXISTS (SELECT 1 FROM sweeps_accountforesight f WHERE f.snapshot_id = s.id)
        AND EXISTS (
            SELECT 1 FROM {SNAPSHOT} later
            WHERE later.account_id = s.account_id AND later.read_at > s.read_at
              AND later.read_at < {bulk.utc_day_end_sql("s.read_at")}
        )
    """


def _at(moment: datetime):
    """A datetime parameter as the ORM stores it (SQLite: naive UTC text), for raw SQL comparing
    it with stored ones."""
    return connection.ops.adapt_datetimefield_value(moment)


@dataclass
class PruneOutcome:
    snapshots: int = 0
    sweeps: int = 0
    final_below_id: int = 0
    skipped: str = ""


def retention_window() -> timedelta:
    return timedelta(hours=settings.CLEARING_SNAPSHOT_RETENTION_HOURS)


def _utc_midnight(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _checkpoint(*, now: datetime, window: timedelta) -> tuple[SnapshotRetention, int | None]:
    """Record the highest snapshot id visible now; return the state and the highest id that was
    visible ``window`` ago (None: no checkpoint is that old yet)."""
    with transaction.atomic():
        SnapshotRetention.objects.get_or_create(pk=1)
        state = SnapshotRetention.objects.select_for_update().get(pk=1)
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT coalesce(max(id), 0) FROM {SNAPSHOT}")
            highest = cursor.fetchone()[0]
        points = sorted([(datetime.fromisoformat(t), i) for t, i in state.checkpoints] + [(now, highest)])
        edge = now - window
        past = [(t, i) for t, i in points if t <= edge]
        upper = max((i for _, i in past), default=None)
        # Keep the newest checkpoint at or before the edge (it bounds the next run until a newer
        # one passes the edge) and everything after it.
        state.checkpoints = [[t.isoformat(), i] for t, i in past[-1:] + points[len(past) :]]
        state.save(update_fields=["checkpoints", "updated_at"])
    return state, upper


def _delete_batch(*, cursor_id: int, upper: int, edge: datetime, batch: int) -> list[int]:
    with transaction.atomic(), bulk.transaction_flag(GATE), connection.cursor() as cursor:
        cursor.execute(
            f"""
            DELETE FROM {SNAPSHOT} WHERE id IN (
                SELECT s.id FROM {SNAPSHOT} s
                WHERE s.id >= %s AND s.id <= %s AND s.read_at < %s AND {_deletable()}
                ORDER BY s.id LIMIT %s
            ) RETURNING id
            """,
            [cursor_id, upper, _at(edge), batch],
        )
        return [row[0] for row in cursor.fetchall()]


def _first_undecided(*, start: int, end: int, open_day: datetime) -> int | None:
    """The smallest id in ``[start, end]`` still left whose decision is not final: read on a day
    that is not over by the window (it may yet gain a later snapshot that day), and not kept for
    good by a reference."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT min(s.id) FROM {SNAPSHOT} s WHERE s.id >= %s AND s.id <= %s AND s.read_at >= %s"
            f" AND {_PERMANENT}",
            [start, end, _at(open_day)],
        )
        return cursor.fetchone()[0]


def margin_snapshots_prune(
    *, now: datetime | None = None, batch: int = BATCH, batches: int = BATCHES
) -> PruneOutcome:
    """Delete the snapshots the policy does not keep (module docstring), then the sweeps left
    empty; at most ``batches`` × ``batch`` snapshots per call. Idempotent."""
    now = now or timezone.now()
    window = retention_window()
    with bulk.advisory_lock(key=LOCK_KEY) as taken:
        if not taken:
            return PruneOutcome(skipped="another run holds the retention lock")
        return _prune(now=now, window=window, batch=batch, batches=batches)


def _prune(*, now: datetime, window: timedelta, batch: int, batches: int) -> PruneOutcome:
    state, upper = _checkpoint(now=now, window=window)
    outcome = PruneOutcome(final_below_id=state.final_below_id)
    if upper is None or upper < state.final_below_id:
        outcome.sweeps = sweeps_prune(now=now)
        return outcome
    position, scanned_to = state.final_below_id, upper
    for _ in range(batches):
        ids = _delete_batch(cursor_id=position, upper=upper, edge=now - window, batch=batch)
        outcome.snapshots += len(ids)
        SNAPSHOTS_PRUNED.inc(len(ids))
        if len(ids) < batch:
            break
        position = max(ids) + 1
    else:
        scanned_to = position - 1  # budget spent: everything below ``position`` is decided
    open_day = _utc_midnight(now - window)
    undecided = _first_undecided(start=state.final_below_id, end=scanned_to, open_day=open_day)
    final = scanned_to + 1 if undecided is None else undecided
    if final > state.final_below_id:
        SnapshotRetention.objects.filter(pk=1, final_below_id__lt=final).update(
            final_below_id=final, updated_at=now
        )
        outcome.final_below_id = final
    outcome.sweeps = sweeps_prune(now=now)
    return outcome


def sweeps_prune(*, now: datetime | None = None, batch: int = SWEEP_BATCH) -> int:
    """Delete up to ``batch`` sweeps, with their shards, that hold no snapshot and no liquidation,
    started before the window and are not running (failed ones after ``FAILED_SWEEPS_KEPT``)."""
    now = now or timezone.now()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT w.id FROM sweeps_sweep w
            WHERE w.started_at < %s AND w.status <> 'running'
              AND (w.status NOT IN ('failed', 'expired') OR w.started_at < %s)
              AND NOT EXISTS (SELECT 1 FROM {SNAPSHOT} s WHERE s.sweep_id = w.id)
              AND NOT EXISTS (SELECT 1 FROM sweeps_liquidation l WHERE l.sweep_id = w.id)
            ORDER BY w.id LIMIT %s{bulk.skip_locked()}
            """,
            [_at(now - retention_window()), _at(now - FAILED_SWEEPS_KEPT), batch],
        )
        doomed = [row[0] for row in cursor.fetchall()]
        if doomed:
            sweeps, params = bulk.any_sql("sweep_id", doomed, kind="int")
            cursor.execute(f"DELETE FROM sweeps_sweepshard WHERE {sweeps}", params)
            ids, params = bulk.any_sql("id", doomed, kind="int")
            cursor.execute(f"DELETE FROM sweeps_sweep WHERE {ids}", params)
        return len(doomed)

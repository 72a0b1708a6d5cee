"""Margin snapshots: kept at full resolution for the window, then only what calls, call events,
liquidations and current margins reference plus each account's daily close; deleted in bounded,
repeatable batches, and by nothing else."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import DatabaseError, connection, transaction
from django.db.models import FloatField

from accounts.models import MarginAccount, Member
from clearing.ops.models import SnapshotRetention
from clearing.ops.retention import margin_snapshots_prune
from clearing.ops.tasks import margin_snapshots_prune_task
from riskengine.models import ParameterSet, ParameterStatus
from riskengine.sweeps.models import (
    AccountMargin,
    CallStatus,
    Liquidation,
    MarginCall,
    MarginCallEvent,
    MarginSnapshot,
    Sweep,
    SweepShard,
)

DAY = datetime(2026, 1, 10, tzinfo=UTC)  # "today" in these tests; the window is 2 h
NOW = DAY + timedelta(hours=12)


def at(day_offset: int, hour: int, minute: int = 0) -> datetime:
    return DAY + timedelta(days=day_offset, hours=hour, minutes=minute)


def snapshot_at(account: MarginAccount, read_at: datetime) -> MarginSnapshot:
    """A snapshot read at ``read_at`` in a sweep of its own (as an event sweep writes it)."""
    parameter_set = ParameterSet.objects.get(status=ParameterStatus.ACTIVE)
    sweep = Sweep.objects.create(
        kind="event", cause="test", parameter_set=parameter_set, valuation_time=read_at, market={},
        status="done", shard_count=1, shards_done=1, accounts=1,
    )  # fmt: skip
    Sweep.objects.filter(pk=sweep.pk).update(started_at=read_at)
    shard = SweepShard.objects.create(sweep=sweep, number=0, account_ids=[account.pk], status="done")
    floats = {f.name: 1.0 for f in MarginSnapshot._meta.fields if isinstance(f, FloatField)}
    return MarginSnapshot.objects.create(
        sweep=sweep, shard=shard, account=account, parameter_set=parameter_set, read_at=read_at,
        mode="cross", status="healthy", by_underlying=b"", positions=b"", collateral=b"", **floats,
    )  # fmt: skip


def current(snapshot: MarginSnapshot) -> None:
    AccountMargin.objects.update_or_create(
        account=snapshot.account,
        defaults={"snapshot": snapshot, "read_at": snapshot.read_at, "status": "healthy",
                  "valued_at": snapshot.sweep.valuation_time, "sweep": snapshot.sweep,
                  "equity": 1.0, "initial_margin": 1.0, "maintenance_margin": 1.0},
    )  # fmt: skip


def call_opened_by(snapshot: MarginSnapshot) -> MarginCall:
    return MarginCall.objects.create(
        account=snapshot.account, status=CallStatus.CURED, amount=1, deadline=snapshot.read_at,
        opened_at=snapshot.read_at, opened_by=snapshot, closed_at=snapshot.read_at,
    )  # fmt: skip


@pytest.fixture
def accounts(demo):
    member = Member.objects.get(code="ALPHA")
    return [MarginAccount.objects.create(member=member, code=f"RET-{n}", mode="cross") for n in range(2)]


def test_retention_keeps_the_window_references_and_daily_closes_and_deletes_the_rest(accounts):
    a, b = accounts
    s = {label: snapshot_at(a, read_at) for label, read_at in {
        "yesterday 09:00": at(-1, 9), "yesterday 10:00 (call event)": at(-1, 10),
        "yesterday 12:00 (liquidation)": at(-1, 12), "yesterday 15:00": at(-1, 15),
        "yesterday 23:00 (close)": at(-1, 23),
        "today 08:00": at(0, 8), "today 09:00": at(0, 9), "today 09:30 (opened a call)": at(0, 9, 30),
        "today 10:30 (window)": at(0, 10, 30), "today 11:30 (window, current)": at(0, 11, 30),
    }.items()}  # fmt: skip
    # b was last swept yesterday morning: its current margin is old, and also its daily close.
    b_early, b_current = snapshot_at(b, at(-1, 9)), snapshot_at(b, at(-1, 9, 5))
    current(s["today 11:30 (window, current)"])
    current(b_current)
    call = call_opened_by(s["today 09:30 (opened a call)"])
    MarginCallEvent.objects.create(
        call=call, at=NOW, to_status="cured", cause="test", snapshot=s["yesterday 10:00 (call event)"]
    )
    liquidated = s["yesterday 12:00 (liquidation)"]
    Liquidation.objects.create(
        account=a, call=call, sweep=liquidated.sweep, status="done", started_at=liquidated.read_at
    )
    margin_snapshots_prune(now=NOW - timedelta(hours=2, minutes=1))  # a checkpoint before the window

    outcome = margin_snapshots_prune(now=NOW)

    deleted = {"yesterday 09:00", "yesterday 15:00", "today 08:00", "today 09:00"}
    left = set(MarginSnapshot.objects.values_list("pk", flat=True))
    assert {label for label, snapshot in s.items() if snapshot.pk not in left} == deleted
    assert b_early.pk not in left
    assert b_current.pk in left
    assert outcome.snapshots == len(deleted) + 1
    # The emptied sweeps went with their snapshots; every kept snapshot still has its sweep.
    assert not Sweep.objects.filter(pk__in=[s[label].sweep_id for label in deleted]).exists()
    assert outcome.sweeps == len(deleted) + 1
    assert Sweep.objects.filter(pk__in=MarginSnapshot.objects.values("sweep_id")).count() == len(left)

    again = margin_snapshots_prune(now=NOW)
    assert (again.snapshots, again.sweeps) == (0, 0)  # idempotent


def test_a_run_deletes_at_most_its_budget_and_the_next_run_goes_on(accounts):
    a, _ = accounts
    history = [snapshot_at(a, at(-1, 1, minute)) for minute in range(7)]
    margin_snapshots_prune(now=NOW - timedelta(hours=3))

    first = margin_snapshots_prune(now=NOW, batch=2, batches=2)
    assert first.snapshots == 4
    assert MarginSnapshot.objects.filter(pk__in=[x.pk for x in history[:4]]).count() == 0
    second = margin_snapshots_prune(now=NOW, batch=2, batches=2)
    assert second.snapshots == 2  # the last one is the day's close
    assert list(MarginSnapshot.objects.values_list("pk", flat=True)) == [history[-1].pk]
    # Yesterday is over by more than the window: its rows are decided and never scanned again.
    assert SnapshotRetention.objects.get().final_below_id > history[-1].pk


def test_nothing_is_deleted_before_a_checkpoint_is_older_than_the_window(accounts):
    a, _ = accounts
    snapshot_at(a, at(-1, 1))
    snapshot_at(a, at(-1, 2))
    assert margin_snapshots_prune(now=NOW).snapshots == 0
    assert margin_snapshots_prune(now=NOW + timedelta(hours=1)).snapshots == 0
    assert margin_snapshots_prune(now=NOW + timedelta(hours=2, seconds=1)).snapshots == 1


def test_the_database_refuses_to_change_or_delete_a_snapshot_outside_retention(accounts):
    a, _ = accounts
    snapshot = snapshot_at(a, at(-1, 1))
    snapshot_at(a, at(-1, 2))
    for statement in ("UPDATE sweeps_marginsnapshot SET equity = 0", "DELETE FROM sweeps_marginsnapshot"):
        refused = pytest.raises(DatabaseError, match="append-only")
        with refused, transaction.atomic(), connection.cursor() as c:
            c.execute(statement)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        MarginSnapshot.objects.filter(pk=snapshot.pk).delete()
    assert MarginSnapshot.objects.count() == 2


@pytest.mark.postgresql("retention runs on PostgreSQL only: the embedded SQLite stack keeps every snapshot")
def test_retention_switches_its_permission_to_delete_off_again_when_it_is_done(accounts):
    a, _ = accounts
    snapshot_at(a, at(-1, 1))
    snapshot_at(a, at(-1, 2))
    margin_snapshots_prune(now=NOW - timedelta(hours=3))
    assert margin_snapshots_prune(now=NOW).snapshots == 1
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as c:
        c.execute("DELETE FROM sweeps_marginsnapshot")
    assert MarginSnapshot.objects.count() == 1


def test_the_beat_task_prunes(accounts):
    a, _ = accounts
    snapshot_at(a, at(-2, 1))
    snapshot_at(a, at(-2, 2))
    SnapshotRetention.objects.create(pk=1, checkpoints=[[at(-1, 0).isoformat(), 10**12]])
    assert margin_snapshots_prune_task()["snapshots"] == 1

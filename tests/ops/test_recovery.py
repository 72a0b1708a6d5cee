"""A liquidation whose task was lost is executed all the same."""

from dataclasses import replace
from datetime import timedelta
from unittest import mock

import pytest
from django.db import OperationalError
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerOperationalError

from riskengine.sweeps import liquidation as liquidation_module
from riskengine.sweeps import services
from riskengine.sweeps.models import (
    Liquidation,
    LiquidationStatus,
    MarginSnapshot,
    ShardStatus,
    SweepShard,
    SweepStatus,
)
from riskengine.sweeps.tasks import liquidation_execute, liquidations_resume_task
from tests.factories import account_with_btc_long, demo_quotes, moved


def test_a_liquidation_still_in_progress_after_two_minutes_is_sent_again_and_completes(quotes):
    crashed = moved(quotes, BTC=quotes.underlying_prices["BTC"] * 0.5)
    accounts = [account_with_btc_long(code=f"T-LOST-{n}", usd="5000") for n in range(2)]
    services.sweep_accounts_run(account_ids=[a.pk for a in accounts], cause="crash", quotes=crashed)
    lost, fresh = (Liquidation.objects.get(account=a) for a in accounts)
    # The first one's task never arrived (the broker was down when the sweep committed).
    Liquidation.objects.filter(pk=lost.pk).update(started_at=timezone.now() - timedelta(minutes=3))

    with mock.patch.object(liquidation_execute, "delay") as delay:
        assert liquidations_resume_task() == [lost.pk]
    delay.assert_called_once_with(lost.pk)

    liquidation_execute.apply(args=[lost.pk])  # what the worker then runs
    assert Liquidation.objects.get(pk=lost.pk).status == LiquidationStatus.DONE
    with mock.patch.object(liquidation_execute, "delay") as delay:
        assert liquidations_resume_task() == []  # done, and the other one is young
    delay.assert_not_called()
    assert Liquidation.objects.get(pk=fresh.pk).status == LiquidationStatus.IN_PROGRESS


# --- Sweeps: stuck shards re-sent from the database's state, orphaned sweeps expired --------------


@pytest.mark.django_db(transaction=True)
def test_shards_and_liquidations_whose_sends_failed_after_commit_are_recovered_and_nothing_is_lost(
    demo,
):
    """The broker refuses every send for a while: the shards' sends after the sweep's commit, then
    the liquidations' sends after each shard's commit. Nothing fails that committed, and the
    recovery tasks complete all of it from the database's state."""
    from riskengine.sweeps.recovery import liquidations_resume, shard_resend_after, sweeps_recover
    from riskengine.sweeps.tasks import sweep_shard

    quotes = demo_quotes()
    account = account_with_btc_long(code="T-BROKER", usd="20000")
    crashed = moved(quotes, BTC=quotes.underlying_prices["BTC"] * 0.85)
    refused = BrokerOperationalError("Error 111 connecting to redis: Connection refused.")
    with mock.patch.object(sweep_shard, "delay", side_effect=refused):
        sweep = services.sweep_full_create(cause="broker down", quotes=crashed, shard_size=8)
    assert sweep.status == SweepStatus.RUNNING
    assert set(sweep.shards.values_list("status", flat=True)) == {ShardStatus.PENDING}

    later = timezone.now() + shard_resend_after() + timedelta(seconds=1)
    with mock.patch.object(sweep_shard, "delay") as delay:
        outcome = sweeps_recover(now=later)
    shard_ids = sorted(sweep.shards.values_list("pk", flat=True))
    assert sorted(outcome.resent) == shard_ids
    assert sorted(c.args[0] for c in delay.call_args_list) == shard_ids
    with mock.patch.object(sweep_shard, "delay") as delay:
        assert sweeps_recover(now=later).resent == []  # just sent: not again before the bound

    with mock.patch.object(liquidation_execute, "delay", side_effect=refused):
        for shard_id in shard_ids:  # what the workers then run (the liquidation sends fail)
            sweep_shard.apply(args=[shard_id])
    sweep.refresh_from_db()
    assert sweep.status == SweepStatus.DONE, sweep.error
    assert set(sweep.shards.values_list("status", flat=True)) == {ShardStatus.DONE}
    assert MarginSnapshot.objects.filter(sweep=sweep).count() == sweep.accounts
    liquidation = Liquidation.objects.get(account=account)
    assert liquidation.status == LiquidationStatus.IN_PROGRESS

    with mock.patch.object(liquidation_execute, "delay") as delay:
        resumed = liquidations_resume(older_than=timedelta(0))
    assert liquidation.pk in resumed
    with mock.patch.object(liquidation_module, "quotes_current", return_value=crashed):
        for liquidation_id in resumed:
            liquidation_execute.apply(args=[liquidation_id])
    assert Liquidation.objects.get(pk=liquidation.pk).status == LiquidationStatus.DONE
    assert not Liquidation.objects.filter(status=LiquidationStatus.IN_PROGRESS).exists()


def test_a_shard_that_failed_once_and_then_succeeded_completes_its_sweep(quotes):
    sweep = services.sweep_full_create(cause="test", quotes=quotes, enqueue=False, shard_size=8)
    first, *others = sweep.shards.order_by("number").values_list("pk", flat=True)
    compute = services._compute
    with (
        mock.patch.object(services, "_compute", side_effect=OperationalError("server closed the connection")),
        pytest.raises(OperationalError),
    ):
        services.sweep_shard_run(shard_id=first)
    assert SweepShard.objects.get(pk=first).status == ShardStatus.FAILED
    sweep.refresh_from_db()
    assert sweep.status == SweepStatus.RUNNING

    assert services._compute is compute
    for shard_id in [first, *others]:  # the retry, and the other shards
        services.sweep_shard_run(shard_id=shard_id)
    sweep.refresh_from_db()
    assert sweep.status == SweepStatus.DONE
    assert sweep.shards_done == sweep.shard_count
    assert MarginSnapshot.objects.filter(sweep=sweep).count() == sweep.accounts


def test_a_sweep_whose_shard_cannot_complete_is_expired_with_a_reason_and_an_ops_alert(quotes):
    from clearing.ops.models import OpsAlert
    from riskengine.sweeps.recovery import MAX_SHARD_RESENDS, shard_resend_after, sweeps_recover
    from riskengine.sweeps.tasks import sweep_shard

    sweep = services.sweep_full_create(cause="test", quotes=quotes, enqueue=False, shard_size=8)
    first, *others = sweep.shards.order_by("number").values_list("pk", flat=True)
    for shard_id in others:
        services.sweep_shard_run(shard_id=shard_id)
    bound = shard_resend_after()
    now = timezone.now()
    with mock.patch.object(sweep_shard, "delay"):
        for n in range(1, MAX_SHARD_RESENDS + 1):
            now += bound + timedelta(seconds=1)
            assert sweeps_recover(now=now).resent == [first]
            assert SweepShard.objects.get(pk=first).resends == n
        now += bound + timedelta(seconds=1)
        outcome = sweeps_recover(now=now)
    assert (outcome.resent, outcome.expired) == ([], [sweep.pk])
    sweep.refresh_from_db()
    assert sweep.status == SweepStatus.EXPIRED
    assert f"not done after {MAX_SHARD_RESENDS} re-sends" in sweep.error
    assert SweepShard.objects.get(pk=first).error.startswith("expired:")
    alert = OpsAlert.objects.get(kind="sweep_expired", key=str(sweep.pk), resolved_at=None)
    assert f"Full sweep {sweep.pk}" in alert.message

    # A late message for the shard still completes it, and with it the sweep.
    services.sweep_shard_run(shard_id=first)
    sweep.refresh_from_db()
    assert sweep.status == SweepStatus.DONE


def test_a_running_sweep_superseded_by_a_completed_newer_one_is_expired_not_resent(quotes):
    from riskengine.sweeps.recovery import shard_resend_after, sweeps_recover
    from riskengine.sweeps.tasks import sweep_shard

    old = services.sweep_full_create(cause="lost", quotes=quotes, enqueue=False)
    newer = replace(quotes, valuation_time=quotes.valuation_time + timedelta(minutes=1))
    services.sweep_full_run(cause="next", quotes=newer)
    with mock.patch.object(sweep_shard, "delay") as delay:
        outcome = sweeps_recover(now=timezone.now() + shard_resend_after() + timedelta(seconds=1))
    delay.assert_not_called()
    assert outcome.expired == [old.pk]
    old.refresh_from_db()
    assert old.status == SweepStatus.EXPIRED
    assert "superseded" in old.error


def test_a_duplicate_delivery_of_a_full_sweep_request_starts_no_second_sweep(quotes):
    from riskengine.sweeps.models import Sweep
    from riskengine.sweeps.tasks import sweep_full

    before = Sweep.objects.count()
    with mock.patch.object(services, "quotes_current", return_value=quotes):
        first = sweep_full.apply(kwargs={"cause": "requested"}, task_id="tick-2026-12-02T01:00:00").get()
        again = sweep_full.apply(kwargs={"cause": "requested"}, task_id="tick-2026-12-02T01:00:00").get()
        other = sweep_full.apply(kwargs={"cause": "requested"}, task_id="tick-2026-12-02T01:01:00").get()
    assert first == again
    assert other != first
    assert Sweep.objects.count() == before + 2
    assert Sweep.objects.get(pk=first).request_key == "tick-2026-12-02T01:00:00"


def test_the_sweep_recovery_runs_from_beat_with_a_bound_sized_from_the_task_limits():
    from django.conf import settings

    from clearing.ops.retry import RETRY_BACKOFF_MAX
    from riskengine.sweeps.recovery import shard_resend_after

    tasks = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert "ops.sweeps_recover" in tasks
    hard = settings.CELERY_TASK_ANNOTATIONS["sweeps.shard"]["time_limit"]
    assert shard_resend_after() == timedelta(seconds=hard + RETRY_BACKOFF_MAX)
    # A re-send never races a message the broker itself still holds for a live worker for long:
    # the bound is below the visibility timeout, and both are minutes, not an hour.
    assert shard_resend_after() < timedelta(seconds=settings.BROKER_VISIBILITY_TIMEOUT)


def test_a_liquidation_stuck_past_its_deadline_raises_an_ops_alert_resolved_once_it_is_done(quotes):
    from clearing.ops.models import OpsAlert
    from riskengine.sweeps.recovery import LIQUIDATION_STUCK_AFTER, liquidations_resume

    crashed = moved(quotes, BTC=quotes.underlying_prices["BTC"] * 0.5)
    account = account_with_btc_long(code="T-STUCK", usd="5000")
    services.sweep_accounts_run(account_ids=[account.pk], cause="crash", quotes=crashed)
    liquidation = Liquidation.objects.get(account=account)
    with mock.patch.object(liquidation_execute, "delay"):
        liquidations_resume(now=timezone.now() + timedelta(minutes=5))
        assert not OpsAlert.objects.filter(kind="liquidation_stuck").exists()  # resumed, not yet stuck
        liquidations_resume(now=timezone.now() + LIQUIDATION_STUCK_AFTER + timedelta(seconds=1))
    alert = OpsAlert.objects.get(kind="liquidation_stuck", key=str(liquidation.pk), resolved_at=None)
    assert f"Liquidation {liquidation.pk}" in alert.message

    liquidation_module.liquidation_execute(liquidation_id=liquidation.pk, quotes=crashed)
    with mock.patch.object(liquidation_execute, "delay") as delay:
        assert liquidations_resume() == []
    delay.assert_not_called()
    alert.refresh_from_db()
    assert alert.resolved_at is not None

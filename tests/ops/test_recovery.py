"""A liquidation whose task was lost is executed all the same."""

from datetime import timedelta
from unittest import mock

from django.utils import timezone

from clearing.ops.tasks import liquidations_resume_task
from riskengine.sweeps import services
from riskengine.sweeps.models import Liquidation, LiquidationStatus
from riskengine.sweeps.tasks import liquidation_execute
from tests.sweeps.conftest import account_with_btc_long, moved


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

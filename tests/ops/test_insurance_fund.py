"""The insurance fund is checked against a governed floor after every liquidation and full sweep
and every minute; below zero it raises a critical alert and records the uncovered deficit."""

from decimal import Decimal
from unittest import mock

import pytest

from accounts.models import AccountKind, CollateralBalance, MarginAccount
from clearing.ops.models import OpsAlert, UncoveredDeficit
from riskengine.fund import FundValue
from riskengine.models import FrozenParameterSet, ParameterSet, ParameterStatus
from riskengine.services import parameter_set_approve, parameter_set_draft_from, parameter_set_propose
from riskengine.sweeps import liquidation as liquidation_module
from riskengine.sweeps import services
from riskengine.sweeps.insurance import (
    ALERT_BELOW_FLOOR,
    ALERT_NEGATIVE,
    insurance_fund_check,
    insurance_fund_exhausted,
)
from riskengine.sweeps.models import Liquidation, LiquidationStatus
from riskengine.sweeps.tasks import insurance_fund_check_task
from tests.factories import account_with_btc_long, draft_post_data, moved, parameter_set_change_url


def open_alerts() -> set[str]:
    return set(OpsAlert.objects.filter(resolved_at=None, key="fund").values_list("kind", flat=True))


def fund_usd() -> Decimal:
    fund = MarginAccount.objects.get(kind=AccountKind.INSURANCE_FUND)
    return CollateralBalance.objects.get(account=fund, asset__symbol="USD").amount


def floor_set(amount: str) -> None:
    # The active set is frozen for code (a floor changes through a governed new set, tested below);
    # the row is set directly to put the fund below or above it.
    ParameterSet.objects.filter(status=ParameterStatus.ACTIVE).update(insurance_fund_floor=Decimal(amount))


def test_a_liquidation_that_exhausts_the_fund_alerts_critically_and_records_the_uncovered_deficit(quotes):
    before = fund_usd()
    account = account_with_btc_long(code="T-BIG", usd="5000", btc="500")
    crashed = moved(quotes, BTC=quotes.underlying_prices["BTC"] * 0.5)
    services.sweep_accounts_run(account_ids=[account.pk], cause="crash", quotes=crashed)
    liquidation = Liquidation.objects.get(account=account)

    done = liquidation_module.liquidation_execute(liquidation_id=liquidation.pk, quotes=crashed)

    assert done.status == LiquidationStatus.DONE  # the liquidation completes all the same
    assert done.deficit_covered > before
    assert fund_usd() == before - done.deficit_covered < 0
    assert open_alerts() == {ALERT_NEGATIVE, ALERT_BELOW_FLOOR}
    record = UncoveredDeficit.objects.get()
    assert record.liquidation == done
    assert record.uncovered == done.deficit_covered - before == -record.fund_value
    # The periodic check keeps the alert open without recording the same shortfall again.
    insurance_fund_check_task()
    assert UncoveredDeficit.objects.count() == 1
    assert OpsAlert.objects.get(kind=ALERT_NEGATIVE, resolved_at=None).raise_count == 2


def test_a_fund_below_its_floor_raises_a_warning_that_clears_when_the_floor_is_met(demo):
    assert insurance_fund_check(cause="test").value == fund_usd() > 0
    assert open_alerts() == set()
    floor_set(str(fund_usd() + 1))
    insurance_fund_check(cause="test")
    assert open_alerts() == {ALERT_BELOW_FLOOR}
    floor_set(str(fund_usd()))
    insurance_fund_check(cause="test")
    assert open_alerts() == set()
    assert OpsAlert.objects.get(kind=ALERT_BELOW_FLOOR).resolved_at is not None


def test_a_fund_that_prices_alone_take_below_zero_is_recorded_once(demo):
    fund = FundValue(account_id=1, value=Decimal("-250"), floor=Decimal(0))
    first = insurance_fund_exhausted(fund=fund, cause="BTC fell")
    assert first.uncovered == Decimal(250)
    assert insurance_fund_exhausted(fund=fund, cause="BTC fell") is None  # the same episode
    assert UncoveredDeficit.objects.count() == 1
    assert open_alerts() == {ALERT_NEGATIVE}


def test_a_failing_check_never_fails_the_liquidation(quotes):
    account = account_with_btc_long(code="T-CHK", usd="5000")
    crashed = moved(quotes, BTC=quotes.underlying_prices["BTC"] * 0.5)
    services.sweep_accounts_run(account_ids=[account.pk], cause="crash", quotes=crashed)
    liquidation = Liquidation.objects.get(account=account)
    check_path = "riskengine.sweeps.insurance.insurance_fund_check"
    with mock.patch(check_path, side_effect=RuntimeError("bug")) as check:
        done = liquidation_module.liquidation_execute(liquidation_id=liquidation.pk)
    assert check.called
    assert done.status == LiquidationStatus.DONE
    assert Liquidation.objects.get(pk=liquidation.pk).status == LiquidationStatus.DONE


def test_the_shard_that_completes_a_full_sweep_checks_the_fund(quotes):
    from riskengine.sweeps.tasks import sweep_shard

    floor_set("1e12")
    sweep = services.sweep_full_create(cause="test", quotes=quotes, enqueue=False)
    shards = list(sweep.shards.order_by("number").values_list("pk", flat=True))
    for shard_id in shards[:-1]:
        sweep_shard(shard_id)
    assert open_alerts() == set()  # not before the sweep is done
    sweep_shard(shards[-1])
    assert open_alerts() == {ALERT_BELOW_FLOOR}
    assert f"full sweep {sweep.pk}" in OpsAlert.objects.get(kind=ALERT_BELOW_FLOOR).message


def test_the_floor_is_edited_in_a_draft_and_takes_effect_only_once_approved(
    client, active_set, ops, approver, validation_ready
):
    draft = parameter_set_draft_from(base=active_set, created_by=ops, version="v2")
    client.force_login(ops)
    data = draft_post_data(client, draft, insurance_fund_floor="2500000", _continue="1")
    assert client.post(parameter_set_change_url(draft), data).status_code == 302
    draft.refresh_from_db()
    assert draft.insurance_fund_floor == Decimal(2_500_000)
    assert "insurance" in str(draft.events.get(action="edited").changes).lower()
    # A negative floor is refused on the form.
    refused = client.post(parameter_set_change_url(draft), {**data, "insurance_fund_floor": "-1"})
    assert refused.status_code == 200
    assert "insurance_fund_floor" in refused.context["adminform"].form.errors

    parameter_set_propose(parameter_set=draft, proposed_by=ops, reason="a floor for the fund")
    draft = ParameterSet.objects.get(pk=draft.pk)
    draft.insurance_fund_floor = Decimal(1)
    with pytest.raises(FrozenParameterSet):
        draft.save()
    assert ParameterSet.objects.get(status=ParameterStatus.ACTIVE).insurance_fund_floor == 0
    parameter_set_approve(parameter_set=ParameterSet.objects.get(pk=draft.pk), approved_by=approver)
    assert ParameterSet.objects.get(status=ParameterStatus.ACTIVE).insurance_fund_floor == Decimal(2_500_000)
    # A later draft starts from the floor in force.
    assert parameter_set_draft_from(base=draft, created_by=ops, version="v3").insurance_fund_floor == Decimal(
        2_500_000
    )

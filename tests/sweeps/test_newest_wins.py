"""Newest wins: a late, redelivered or retried shard of an older sweep never changes current state,
and liquidations trade at the current trusted prices, not at their (possibly old) sweep's."""

from dataclasses import replace
from datetime import timedelta
from unittest import mock

from clearing.marketdata.models import IndexState
from clearing.models import Trade
from clearing.ops.models import OpsAlert
from clearing.validation import decimal_from_float
from riskengine.sweeps import liquidation as liquidation_module
from riskengine.sweeps import services
from riskengine.sweeps.models import (
    AccountMargin,
    CallStatus,
    Liquidation,
    LiquidationStatus,
    MarginCall,
    MarginSnapshot,
    SweepStatus,
)
from tests.factories import account_with_btc_long, demo_quotes, moved


def later(quotes, minutes: int = 1):
    return replace(quotes, valuation_time=quotes.valuation_time + timedelta(minutes=minutes))


def calls_state() -> list[tuple]:
    return list(
        MarginCall.objects.order_by("pk").values_list("pk", "account_id", "status", "deadline", "closed_at")
    )


def test_a_shard_of_sweep_a_delivered_after_sweep_b_changes_no_call_margin_or_reference(quotes):
    accounts = [account_with_btc_long(code=f"T-NEW-{usd}", usd=str(usd)) for usd in (20000, 60000, 150000)]
    IndexState.objects.update_or_create(symbol="BTC", defaults={"kind": "underlying"})
    sweep_a = services.sweep_full_create(cause="A", quotes=quotes, enqueue=False)
    crashed = later(moved(quotes, BTC=quotes.underlying_prices["BTC"] * 0.85))
    sweep_b, _ = services.sweep_full_run(cause="B after a 15 % move", quotes=crashed)
    assert sweep_b.status == SweepStatus.DONE
    assert MarginCall.objects.filter(account__in=accounts).exists()  # B found calls to decide on
    calls = calls_state()
    margins = dict(AccountMargin.objects.values_list("account_id", "snapshot_id"))
    liquidations = list(Liquidation.objects.order_by("pk").values_list("pk", "status"))
    reference = IndexState.objects.get(symbol="BTC").reference_price

    # A's shards arrive late (redelivered after a crash): at A's older prices every account is fine.
    for shard_id in sweep_a.shards.values_list("pk", flat=True):
        services.sweep_shard_run(shard_id=shard_id)

    assert calls_state() == calls
    assert dict(AccountMargin.objects.values_list("account_id", "snapshot_id")) == margins
    assert set(AccountMargin.objects.values_list("sweep_id", flat=True)) == {sweep_b.pk}
    assert list(Liquidation.objects.order_by("pk").values_list("pk", "status")) == liquidations
    assert IndexState.objects.get(symbol="BTC").reference_price == reference
    # A's results are kept as history, once per account.
    assert MarginSnapshot.objects.filter(sweep=sweep_a).count() == sweep_a.accounts
    sweep_a.refresh_from_db()
    assert sweep_a.status == SweepStatus.DONE


def test_an_older_valuation_arriving_later_never_replaces_a_newer_current_margin(quotes):
    account = account_with_btc_long(code="T-ORDER", usd="60000")
    sweep_a = services.sweep_full_create(cause="A", quotes=quotes, enqueue=False)
    crashed = later(moved(quotes, BTC=quotes.underlying_prices["BTC"] * 0.85))
    # B is an event sweep (not a full sweep: A is not superseded), valued after A, stored first.
    sweep_b = services.sweep_accounts_run(account_ids=[account.pk], cause="index BTC", quotes=crashed)
    call = MarginCall.objects.get(account=account)

    for shard_id in sweep_a.shards.values_list("pk", flat=True):
        services.sweep_shard_run(shard_id=shard_id)

    current = AccountMargin.objects.get(account=account)
    assert (current.sweep_id, current.valued_at) == (sweep_b.pk, crashed.valuation_time)
    assert current.snapshot.sweep_id == sweep_b.pk
    # A's figures did not touch the call B decided on (A, at the old prices, would cure it).
    assert MarginCall.objects.get(pk=call.pk).status == call.status
    assert MarginCall.objects.filter(account=account).count() == 1
    assert MarginSnapshot.objects.filter(sweep=sweep_a, account=account).exists()
    # Accounts B did not value take A's figures: A is their newest valuation.
    other = AccountMargin.objects.exclude(account=account).values_list("sweep_id", flat=True)
    assert set(other) == {sweep_a.pk}


def test_a_liquidation_whose_account_recovered_since_its_sweep_stops_without_trading(quotes):
    account = account_with_btc_long(code="T-RECOV", usd="20000")
    crashed = moved(quotes, BTC=quotes.underlying_prices["BTC"] * 0.93)
    services.sweep_accounts_run(account_ids=[account.pk], cause="crash", quotes=crashed)
    liquidation = Liquidation.objects.get(account=account)
    trades = Trade.objects.filter(account=account).count()

    # BTC rallied before the task ran: at the current quotes the account is above IM again.
    rallied = later(moved(quotes, BTC=quotes.underlying_prices["BTC"] * 1.2), 5)
    with mock.patch.object(liquidation_module, "quotes_current", return_value=rallied):
        done = liquidation_module.liquidation_execute(liquidation_id=liquidation.pk)

    assert done.status == LiquidationStatus.DONE
    assert done.plan == []
    assert done.closed_notional == 0
    assert done.fee == 0
    assert Trade.objects.filter(account=account).count() == trades


def test_a_liquidation_trades_at_the_current_quotes_not_at_its_sweeps(quotes):
    account = account_with_btc_long(code="T-NOWPX", usd="20000")
    crashed = moved(quotes, BTC=quotes.underlying_prices["BTC"] * 0.93)
    services.sweep_accounts_run(account_ids=[account.pk], cause="crash", quotes=crashed)
    liquidation = Liquidation.objects.get(account=account)
    deeper = later(moved(quotes, BTC=quotes.underlying_prices["BTC"] * 0.9), 5)

    with mock.patch.object(liquidation_module, "quotes_current", return_value=deeper):
        done = liquidation_module.liquidation_execute(liquidation_id=liquidation.pk)

    assert done.status == LiquidationStatus.DONE
    assert done.plan
    prices = set(done.trades.filter(account=account).values_list("price", flat=True))
    assert prices == {decimal_from_float(deeper.underlying_prices["BTC"])}


def test_a_liquidation_waits_while_a_price_it_depends_on_is_not_trustworthy_now(quotes):
    account = account_with_btc_long(code="T-WAITPX", usd="20000")
    crashed = moved(quotes, BTC=quotes.underlying_prices["BTC"] * 0.93)
    services.sweep_accounts_run(account_ids=[account.pk], cause="crash", quotes=crashed)
    liquidation = Liquidation.objects.get(account=account)
    stale = moved(later(demo_quotes(BTC="stale"), 5), BTC=crashed.underlying_prices["BTC"])

    with mock.patch.object(liquidation_module, "quotes_current", return_value=stale):
        waiting = liquidation_module.liquidation_execute(liquidation_id=liquidation.pk)

    assert waiting.status == LiquidationStatus.IN_PROGRESS
    assert Trade.objects.filter(account=account).count() == 1
    assert OpsAlert.objects.filter(
        kind="liquidation_suspended", key=str(account.pk), resolved_at=None
    ).exists()
    with mock.patch.object(liquidation_module, "quotes_current", return_value=later(crashed, 6)):
        assert (
            liquidation_module.liquidation_execute(liquidation_id=liquidation.pk).status
            == LiquidationStatus.DONE
        )
    assert not OpsAlert.objects.filter(
        kind="liquidation_suspended", key=str(account.pk), resolved_at=None
    ).exists()
    assert MarginCall.objects.get(account=account).status == CallStatus.ESCALATED

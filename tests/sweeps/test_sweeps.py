"""Full and event sweeps: snapshots, idempotency, replay, margin calls, liquidation, triggers."""

import io
import json
from datetime import timedelta
from decimal import Decimal
from unittest import mock

import pytest
from django.core.management import call_command
from django.utils import timezone

from accounts.models import AccountKind, Asset, CollateralBalance, CollateralMovement, MarginAccount
from accounts.services import collateral_deposit
from clearing.models import OutboxEvent, Position, Trade
from clearing.signals import accounts_changed
from riskengine.core import compute_document
from riskengine.sweeps import liquidation as liquidation_module
from riskengine.sweeps import services
from riskengine.sweeps.models import (
    AccountMargin,
    CallStatus,
    Liquidation,
    LiquidationStatus,
    MarginCall,
    MarginCallEvent,
    MarginSnapshot,
    ShardStatus,
    SweepRequest,
)
from riskengine.sweeps.selectors import margin_snapshot_document, margin_snapshot_figures
from tests.factories import account_with_btc_long, demo_quotes, moved

FIGURES = ("equity", "collateral_value", "initial_margin", "maintenance_margin", "excess", "margin_ratio")


def usd(account):
    return CollateralBalance.objects.get(account=account, asset__symbol="USD").amount


def test_a_full_sweep_stores_one_snapshot_per_account_across_shards(quotes):
    sweep, outcome = services.sweep_full_run(cause="test", quotes=quotes, shard_size=7)

    accounts = MarginAccount.objects.count()
    assert sweep.status == "done"
    assert sweep.shard_count == -(-accounts // 7) >= 4
    assert MarginSnapshot.objects.filter(sweep=sweep).count() == accounts == outcome.accounts
    assert AccountMargin.objects.count() == accounts
    assert set(sweep.shards.values_list("status", flat=True)) == {ShardStatus.DONE}
    assert sum(outcome.statuses.values()) == accounts


def test_running_a_shard_again_changes_nothing(quotes):
    sweep = services.sweep_full_create(cause="test", quotes=quotes, shard_size=10, enqueue=False)
    shard = sweep.shards.order_by("number").first()
    first = services.sweep_shard_run(shard_id=shard.pk)
    counts = (MarginSnapshot.objects.count(), MarginCall.objects.count(), OutboxEvent.objects.count())

    again = services.sweep_shard_run(shard_id=shard.pk)

    assert first.accounts == 10
    assert again.accounts == 0
    assert (MarginSnapshot.objects.count(), MarginCall.objects.count(), OutboxEvent.objects.count()) == counts


def test_every_stored_snapshot_replays_to_the_same_figures(quotes):
    sweep, _ = services.sweep_full_run(cause="test", quotes=quotes)
    snapshots = MarginSnapshot.objects.filter(sweep=sweep).select_related("sweep", "account", "parameter_set")

    assert snapshots.count() >= 50
    for snapshot in snapshots:
        document = json.loads(json.dumps(margin_snapshot_document(snapshot=snapshot)))
        (replayed,) = compute_document(document)
        stored = margin_snapshot_figures(snapshot=snapshot)
        # Summation order differs between a whole-venue run and a one-account run, so figures
        # agree to the last bits, not always bit for bit.
        got, want = flat(replayed, keys=stored), flat(stored)
        numbers = {k for k, v in want.items() if isinstance(v, float)}
        assert {k: got[k] for k in numbers} == pytest.approx(
            {k: want[k] for k in numbers}, rel=1e-12, abs=1e-9
        )
        assert {k: v for k, v in got.items() if k not in numbers} == {
            k: v for k, v in want.items() if k not in numbers
        }


def flat(figures, prefix="", keys=None) -> dict:
    """Nested result figures as ``{"by_underlying.0.scan_risk": value, ...}`` (strings kept)."""
    out = {}
    items = figures.items() if isinstance(figures, dict) else enumerate(figures)
    for key, value in items:
        if keys is not None and key not in keys:
            continue
        if isinstance(value, dict | list):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_the_replay_command_prints_a_document_the_engine_accepts(quotes):
    sweep, _ = services.sweep_full_run(cause="test", quotes=quotes)
    snapshot = MarginSnapshot.objects.filter(sweep=sweep).exclude(positions=b"").first()
    out = io.StringIO()
    call_command("replay_snapshot", str(snapshot.pk), stdout=out)

    (replayed,) = compute_document(json.loads(out.getvalue()))
    assert replayed["initial_margin"] == snapshot.initial_margin


def test_the_sweep_command_prints_a_summary(demo):
    with mock.patch.object(services, "quotes_current", demo_quotes):
        out = io.StringIO()
        call_command("sweep", "--shard-size", "20", stdout=out)
    accounts = MarginAccount.objects.count()
    assert f"{accounts} accounts" in out.getvalue()
    assert "healthy" in out.getvalue()
    assert "margin call" in out.getvalue()
    assert "opened" in out.getvalue()


def test_a_margin_call_opens_once_and_is_cured_by_a_deposit(quotes):
    account = account_with_btc_long(code="T-CALL", usd="20000")
    sweep = services.sweep_accounts_run(account_ids=[account.pk], cause="test", quotes=quotes)
    snapshot = MarginSnapshot.objects.get(sweep=sweep, account=account)
    assert snapshot.status == "margin_call", (
        snapshot.equity,
        snapshot.initial_margin,
        snapshot.maintenance_margin,
    )

    call = MarginCall.objects.get(account=account)
    assert call.status == CallStatus.OPEN
    assert call.amount == pytest.approx(
        Decimal(repr(snapshot.initial_margin - snapshot.equity)), abs=Decimal("1e-6")
    )
    assert call.deadline - call.opened_at == timedelta(minutes=60)
    services.sweep_accounts_run(account_ids=[account.pk], cause="again", quotes=quotes)
    assert MarginCall.objects.filter(account=account).count() == 1

    collateral_deposit(account=account, asset=Asset.objects.get(symbol="USD"), amount=Decimal(100_000))
    services.sweep_accounts_run(account_ids=[account.pk], cause="deposit", quotes=quotes)
    call.refresh_from_db()
    assert call.status == CallStatus.CURED
    assert list(call.events.values_list("from_status", "to_status")) == [("", "open"), ("open", "cured")]
    pushed = list(OutboxEvent.objects.filter(group=f"account-{account.pk}").values_list("type", flat=True))
    assert "margin_call.opened" in pushed
    assert "margin_call.cured" in pushed
    assert "margin.updated" in pushed
    opened = OutboxEvent.objects.get(group=f"account-{account.pk}", type="margin_call.opened").payload
    assert Decimal(opened["amount"]) == call.amount
    assert opened["deadline"]


def test_the_database_allows_one_open_call_per_account(quotes):
    from django.db import IntegrityError, transaction

    account = account_with_btc_long(code="T-UNIQ", usd="20000")
    services.sweep_accounts_run(account_ids=[account.pk], cause="test", quotes=quotes)
    call = MarginCall.objects.get(account=account)
    with pytest.raises(IntegrityError), transaction.atomic():
        MarginCall.objects.create(
            account=account,
            amount=1,
            deadline=call.deadline,
            opened_at=call.opened_at,
            opened_by=call.opened_by,
        )


def test_an_uncured_call_is_escalated_when_its_deadline_passes(quotes):
    account = account_with_btc_long(code="T-LATE", usd="20000")
    services.sweep_accounts_run(account_ids=[account.pk], cause="test", quotes=quotes)
    call = MarginCall.objects.get(account=account)
    later = timezone.now() + timedelta(minutes=61)
    with mock.patch("django.utils.timezone.now", return_value=later):
        services.sweep_accounts_run(account_ids=[account.pk], cause="later", quotes=quotes)
    call.refresh_from_db()
    assert call.status == CallStatus.ESCALATED
    assert call.events.last().cause == "cure period elapsed"
    assert Liquidation.objects.get(account=account).status == LiquidationStatus.IN_PROGRESS


def test_equity_below_maintenance_escalates_at_once_and_liquidation_restores_the_account(quotes):
    account = account_with_btc_long(code="T-LIQ", usd="20000")
    crashed = moved(quotes, BTC=quotes.underlying_prices["BTC"] * 0.93)
    sweep = services.sweep_accounts_run(account_ids=[account.pk], cause="crash", quotes=crashed)
    snapshot = MarginSnapshot.objects.get(sweep=sweep, account=account)
    assert snapshot.status == "liquidation", (snapshot.equity, snapshot.maintenance_margin)
    call = MarginCall.objects.get(account=account)
    assert call.status == CallStatus.ESCALATED
    assert [e.to_status for e in call.events.all()] == ["open", "escalated"]
    liquidation = Liquidation.objects.get(account=account)
    fund = MarginAccount.objects.get(kind=AccountKind.INSURANCE_FUND)
    house = MarginAccount.objects.get(kind=AccountKind.HOUSE)
    fund_before = usd(fund)

    done = liquidation_module.liquidation_execute(liquidation_id=liquidation.pk, quotes=crashed)

    assert done.status == LiquidationStatus.DONE
    assert (
        done.equity_after >= done.initial_margin_after
        or not Position.objects.filter(account=account).exclude(quantity=0).exists()
    )
    btc_price = Decimal(repr(crashed.underlying_prices["BTC"])).quantize(Decimal("1e-10"))
    closing = Trade.objects.filter(account=account, price=btc_price)
    assert closing.exists()
    assert Trade.objects.filter(account=house, price=btc_price).count() == closing.count()
    assert 0 < done.fee <= (done.closed_notional * Decimal("0.005")).quantize(Decimal("1e-10"))
    assert usd(fund) - fund_before == done.fee - done.deficit_covered
    assert CollateralMovement.objects.filter(account=fund, kind="liquidation_fee").count() == 1
    assert liquidation_module.liquidation_execute(liquidation_id=liquidation.pk).fee == done.fee  # idempotent
    assert Trade.objects.filter(account=account).count() == 1 + closing.count()
    types = list(OutboxEvent.objects.filter(group=f"account-{account.pk}").values_list("type", flat=True))
    assert {"margin_call.escalated", "liquidation.started", "liquidation.finished"} <= set(types)


def test_a_deficit_is_covered_by_the_insurance_fund_and_recorded(quotes):
    account = account_with_btc_long(code="T-DEF", usd="5000")
    crashed = moved(quotes, BTC=quotes.underlying_prices["BTC"] * 0.5)
    services.sweep_accounts_run(account_ids=[account.pk], cause="crash", quotes=crashed)
    liquidation = Liquidation.objects.get(account=account)
    fund = MarginAccount.objects.get(kind=AccountKind.INSURANCE_FUND)
    fund_before = usd(fund)

    done = liquidation_module.liquidation_execute(liquidation_id=liquidation.pk, quotes=crashed)

    assert not Position.objects.filter(account=account).exclude(quantity=0).exists()
    assert done.fee == 0
    assert done.deficit_covered > 0
    assert usd(account) == 0
    assert usd(fund) == fund_before - done.deficit_covered
    cover = CollateralMovement.objects.get(account=fund, kind="deficit_cover")
    assert cover.amount == -done.deficit_covered


def test_a_stale_price_suspends_liquidation_but_not_the_margin_call(quotes):
    from clearing.ops.models import OpsAlert

    account = account_with_btc_long(code="T-STALE", usd="20000")
    crashed = moved(demo_quotes(BTC="stale"), BTC=quotes.underlying_prices["BTC"] * 0.93)
    services.sweep_accounts_run(account_ids=[account.pk], cause="crash", quotes=crashed)

    call = MarginCall.objects.get(account=account)
    assert call.status == CallStatus.OPEN
    assert not Liquidation.objects.filter(account=account).exists()
    assert call.events.last().cause.startswith("liquidation suspended")
    assert OpsAlert.objects.filter(
        kind="liquidation_suspended", key=str(account.pk), resolved_at=None
    ).exists()

    services.sweep_accounts_run(
        account_ids=[account.pk], cause="fresh", quotes=moved(quotes, BTC=crashed.underlying_prices["BTC"])
    )
    call.refresh_from_db()
    assert call.status == CallStatus.ESCALATED
    assert Liquidation.objects.filter(account=account, status="in_progress").count() == 1
    assert not OpsAlert.objects.filter(
        kind="liquidation_suspended", key=str(account.pk), resolved_at=None
    ).exists()


def test_a_second_liquidation_never_starts_while_one_is_in_progress(quotes):
    account = account_with_btc_long(code="T-TWICE", usd="20000")
    crashed = moved(quotes, BTC=quotes.underlying_prices["BTC"] * 0.93)
    services.sweep_accounts_run(account_ids=[account.pk], cause="crash", quotes=crashed)
    services.sweep_accounts_run(account_ids=[account.pk], cause="again", quotes=crashed)
    services.sweep_accounts_run(account_ids=[account.pk], cause="again", quotes=crashed)
    assert Liquidation.objects.filter(account=account).count() == 1


def test_no_new_call_opens_while_the_accounts_liquidation_is_in_progress(quotes):
    account = account_with_btc_long(code="T-BUSY", usd="20000")
    crashed = moved(quotes, BTC=quotes.underlying_prices["BTC"] * 0.93)
    services.sweep_accounts_run(account_ids=[account.pk], cause="crash", quotes=crashed)
    services.sweep_accounts_run(account_ids=[account.pk], cause="again", quotes=crashed)

    assert list(MarginCall.objects.filter(account=account).values_list("status", flat=True)) == [
        CallStatus.ESCALATED
    ]
    liquidation = Liquidation.objects.get(account=account)
    liquidation_module.liquidation_execute(liquidation_id=liquidation.pk, quotes=crashed)
    services.sweep_accounts_run(account_ids=[account.pk], cause="after", quotes=crashed)
    snapshot = MarginSnapshot.objects.filter(account=account).latest("read_at")
    open_calls = MarginCall.objects.filter(account=account, status=CallStatus.OPEN).count()
    assert open_calls == (0 if snapshot.status == "healthy" else 1)


def test_a_trade_requests_one_coalesced_event_sweep(quotes, django_capture_on_commit_callbacks):
    account = account_with_btc_long(code="T-TRIG", usd="500000")
    SweepRequest.objects.all().delete()
    with mock.patch.object(services, "_drain_enqueue") as enqueue:
        for _ in range(10):
            with django_capture_on_commit_callbacks(execute=True):
                collateral_deposit(account=account, asset=Asset.objects.get(symbol="USD"), amount=Decimal(1))
    assert SweepRequest.objects.filter(account=account).count() == 1
    assert enqueue.call_count == 1

    sweep = services.sweep_requests_drain(quotes=quotes)
    assert sweep.kind == "event"
    assert "accounts changed" in sweep.cause
    assert list(sweep.snapshots.values_list("account_id", flat=True)) == [account.pk]
    assert not SweepRequest.objects.exists()
    assert services.sweep_requests_drain(quotes=quotes) is None


def test_booking_a_trade_sends_accounts_changed_on_commit(quotes, django_capture_on_commit_callbacks):
    account = account_with_btc_long(code="T-SIG", usd="500000")
    received = []
    accounts_changed.connect(
        lambda sender, account_ids, **kw: received.append(account_ids), weak=False, dispatch_uid="t"
    )
    try:
        with django_capture_on_commit_callbacks(execute=True), mock.patch.object(services, "_drain_enqueue"):
            from accounts.trading import trade_book
            from clearing.marketdata.demo import spot_prices

            trade_book(account=account, instrument="BTC-PERP", quantity=1, price=spot_prices()["BTC"])
    finally:
        accounts_changed.disconnect(dispatch_uid="t")
    assert [account.pk] in received


def test_an_index_move_requests_a_sweep_of_the_exposed_accounts(quotes, django_capture_on_commit_callbacks):
    from clearing.marketdata.signals import index_moved

    account = account_with_btc_long(code="T-IDX", usd="500000")
    SweepRequest.objects.all().delete()
    with (
        django_capture_on_commit_callbacks(execute=True),
        mock.patch.object(services, "_drain_enqueue") as enqueue,
    ):
        index_moved.send(
            sender=None, underlying="BTC", kind="underlying", reference_price=1, price=2, index_price_id=1
        )
    requested = set(SweepRequest.objects.values_list("account_id", flat=True))
    assert account.pk in requested
    eth_only = Position.objects.exclude(quantity=0).values("account_id").distinct()
    assert requested == {
        a
        for a in eth_only.values_list("account_id", flat=True)
        if Position.objects.filter(account_id=a, instrument__underlying__symbol="BTC")
        .exclude(quantity=0)
        .exists()
    } | set(
        CollateralBalance.objects.filter(asset__symbol="BTC")
        .exclude(amount=0)
        .values_list("account_id", flat=True)
    )
    assert enqueue.call_count == 1


def test_activating_a_parameter_set_starts_a_full_sweep(demo):
    from riskengine.models import ParameterSet
    from riskengine.signals import parameter_set_activated
    from riskengine.sweeps import tasks

    with mock.patch.object(tasks.sweep_full, "delay") as delay:
        parameter_set_activated.send(
            sender=ParameterSet, parameter_set=ParameterSet.objects.get(status="active")
        )
    delay.assert_called_once()
    assert "activated" in delay.call_args.kwargs["cause"]


def test_the_periodic_sweep_starts_only_when_its_interval_has_passed(
    demo, django_capture_on_commit_callbacks
):
    with (
        mock.patch.object(services, "quotes_current", demo_quotes),
        mock.patch.object(services, "_shards_enqueue") as enqueue,
    ):
        with django_capture_on_commit_callbacks(execute=True):
            first = services.sweep_full_due()
        assert first is not None
        assert first.cause == "periodic"
        assert services.sweep_full_due() is None
        assert services.sweep_full_due(now=timezone.now() + timedelta(seconds=61)) is not None
    assert enqueue.call_count == 1
    assert enqueue.call_args.args[0] == list(first.shards.order_by("pk").values_list("pk", flat=True))


def test_unchanged_figures_are_not_pushed_again_by_a_full_sweep(quotes):
    services.sweep_full_run(cause="first", quotes=quotes)
    before = OutboxEvent.objects.filter(type="margin.updated").count()
    services.sweep_full_run(cause="second", quotes=quotes)
    assert OutboxEvent.objects.filter(type="margin.updated").count() == before
    services.sweep_full_run(cause="moved", quotes=moved(quotes, BTC=quotes.underlying_prices["BTC"] * 1.02))
    assert OutboxEvent.objects.filter(type="margin.updated").count() > before


def test_call_events_are_append_only(quotes):
    from clearing.ledger import AppendOnlyError

    account = account_with_btc_long(code="T-LOG", usd="20000")
    services.sweep_accounts_run(account_ids=[account.pk], cause="test", quotes=quotes)
    event = MarginCallEvent.objects.get(call__account=account)
    with pytest.raises(AppendOnlyError):
        event.delete()


# A shard's queries: reads, snapshot COPY, upsert, venue accounts, open calls, busy liquidations,
# one bulk statement per kind of write (calls, cures, escalations, liquidations, alerts, call
# events, outbox, target bands), progress and shard rows, and whether a newer full sweep superseded
# this one (before storing, and before setting the index references). The same bound holds for 2
# and for 12 accounts entering a call, being escalated, or having their liquidation suspended.
SHARD_MAX_QUERIES = 38


def shard_run_queries(*, quotes, accounts: int, assert_max) -> None:
    for n in range(accounts):
        account_with_btc_long(code=f"T-BULK-{accounts}-{n}", usd="20000")
    for market in (quotes, moved(quotes, BTC=quotes.underlying_prices["BTC"] * 0.93)):
        sweep = services.sweep_full_create(cause="bulk", quotes=market, shard_size=10_000, enqueue=False)
        with assert_max(SHARD_MAX_QUERIES):
            services.sweep_shard_run(shard_id=sweep.shards.get().pk)


@pytest.mark.parametrize("accounts", [2, 12])
def test_a_shard_makes_as_many_queries_whatever_the_number_of_accounts_in_a_call(
    quotes, accounts, django_assert_max_num_queries
):
    shard_run_queries(quotes=quotes, accounts=accounts, assert_max=django_assert_max_num_queries)

    bulk = MarginAccount.objects.filter(code__startswith=f"T-BULK-{accounts}-")
    assert MarginCall.objects.filter(account__in=bulk, status=CallStatus.ESCALATED).count() == accounts
    assert (
        Liquidation.objects.filter(account__in=bulk, status=LiquidationStatus.IN_PROGRESS).count() == accounts
    )
    events = MarginCallEvent.objects.filter(call__account__in=bulk).values_list("to_status", flat=True)
    assert sorted(events) == ["escalated"] * accounts + ["open"] * accounts


@pytest.mark.parametrize("accounts", [2, 12])
def test_suspended_liquidations_cost_no_query_per_account(quotes, accounts, django_assert_max_num_queries):
    from clearing.ops.models import OpsAlert

    stale = demo_quotes(BTC="stale")
    shard_run_queries(quotes=stale, accounts=accounts, assert_max=django_assert_max_num_queries)

    bulk = MarginAccount.objects.filter(code__startswith=f"T-BULK-{accounts}-")
    assert MarginCall.objects.filter(account__in=bulk, status=CallStatus.OPEN).count() == accounts
    assert not Liquidation.objects.filter(account__in=bulk).exists()
    keys = {str(pk) for pk in bulk.values_list("pk", flat=True)}
    alerts = OpsAlert.objects.filter(kind="liquidation_suspended", key__in=keys, resolved_at=None)
    assert set(alerts.values_list("key", flat=True)) == keys
    causes = MarginCallEvent.objects.filter(call__account__in=bulk).values_list("cause", flat=True)
    assert sum(cause.startswith("liquidation suspended: BTC") for cause in causes) == accounts


def test_a_shard_that_changes_many_accounts_pushes_their_margin_updates_as_one_fanout_row(
    quotes, monkeypatch
):
    from clearing.events import FANOUT_GROUP
    from frontend.relay import outbox_claim
    from riskengine.sweeps import calls

    monkeypatch.setattr(calls, "FANOUT_MIN", 1)
    sweep, _ = services.sweep_full_run(cause="first", quotes=quotes, shard_size=10)

    fanned = OutboxEvent.objects.filter(group=FANOUT_GROUP, type="margin.updated")
    assert fanned.count() == sweep.shard_count  # every account is new: one row per shard
    assert not OutboxEvent.objects.filter(type="margin.updated").exclude(group=FANOUT_GROUP).exists()
    # Claimed, the rows are one margin.updated per account, in its own group, with its figures.
    updates = [
        (group, event) for _, group, event in outbox_claim(limit=1000) if event["type"] == "margin.updated"
    ]
    current = {m.account_id: m for m in AccountMargin.objects.all()}
    assert (
        sorted(event["account"] for _, event in updates)
        == sorted(current)
        == sorted(MarginAccount.objects.values_list("pk", flat=True))
    )
    for group, event in updates:
        assert group == f"account-{event['account']}"
        assert event["sweep"] == sweep.pk
        assert event["status"] == current[event["account"]].status
        assert event["equity"] == pytest.approx(float(current[event["account"]].equity))


def test_a_shard_escalating_many_accounts_sends_their_liquidations_in_a_few_chunked_messages(
    quotes, monkeypatch, django_capture_on_commit_callbacks
):
    from riskengine.sweeps.tasks import liquidation_execute, liquidations_send

    monkeypatch.setattr(services, "LIQUIDATIONS_SENT_INLINE", 2)
    monkeypatch.setattr(services, "LIQUIDATIONS_SEND_CHUNK", 2)
    accounts = [account_with_btc_long(code=f"T-MANY-{n}", usd="5000") for n in range(3)]
    crashed = moved(quotes, BTC=quotes.underlying_prices["BTC"] * 0.5)
    with (
        mock.patch.object(liquidations_send, "delay") as chunked,
        mock.patch.object(liquidation_execute, "delay") as single,
        django_capture_on_commit_callbacks(execute=True),
    ):
        services.sweep_accounts_run(account_ids=[a.pk for a in accounts], cause="crash", quotes=crashed)
    ids = sorted(Liquidation.objects.filter(account__in=accounts).values_list("pk", flat=True))
    assert len(ids) == 3
    # Three escalated (more than sent inline): two messages of at most two ids, no single sends.
    assert [sorted(c.args[0]) for c in chunked.call_args_list] == [ids[:2], ids[2:]]
    single.assert_not_called()

    with mock.patch.object(liquidation_execute, "delay") as single:
        for call in chunked.call_args_list:  # what a worker then runs
            liquidations_send.apply(args=[call.args[0]])
    assert sorted(c.args[0] for c in single.call_args_list) == ids

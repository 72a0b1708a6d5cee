"""Validation runs on the platform: sharded backtest and stress of every member account, the venue's
reduce, idempotent shards, failures, alerts (riskengine.validation.services)."""

from dataclasses import replace
from decimal import Decimal

import numpy as np
import pytest

from accounts.models import AccountKind, MarginAccount
from accounts.services import collateral_deposit
from clearing.marketdata.models import IndexClose
from clearing.ops.models import OpsAlert
from riskengine.core.backtest import backtest, backtest_report
from riskengine.core.stress import stress
from riskengine.loading import margin_book_load
from riskengine.selectors import parameters_form
from riskengine.services import parameter_set_bootstrap
from riskengine.tasks import validation_nightly, validation_shard
from riskengine.validation import storage
from riskengine.validation.models import (
    AccountBacktest,
    AccountStress,
    ShardStatus,
    ValidationKind,
    ValidationMode,
    ValidationRun,
)
from riskengine.validation.services import (
    ALERT_COVER2,
    ALERT_FAILED,
    ALERT_RED,
    history_arrays,
    run_scenarios,
    validation_results_prune,
    validation_run_complete,
    validation_run_create,
    validation_shard_run,
)
from tests import factories


def run_of(parameter_set, quotes, *, kind=ValidationKind.ON_DEMAND, mode=ValidationMode.FIXED, **kwargs):
    run = validation_run_create(
        kind=kind, mode=mode, parameter_set=parameter_set, cause="test", quotes=quotes, enqueue=False,
        **kwargs,
    )  # fmt: skip
    return validation_run_complete(run=run)


def engine_view(run, quotes, accounts):
    """What the engine says of ``accounts`` at once: their margin input and the run's history."""
    book = margin_book_load(
        parameters_form=parameters_form(parameter_set=run.parameter_set),
        quotes=quotes,
        account_ids=[a.pk for a in accounts],
    )
    return book.margin_input, history_arrays(run.history, book.margin_input.parameters)


def test_a_run_gives_each_account_and_the_venue_what_the_engine_gives_for_the_whole_book(
    book, active_set, quotes_now
):
    run = run_of(active_set, quotes_now, shard_size=2)

    held = [book.long_btc, book.short_call, book.hedged, book.other_member]
    margin_input, history = engine_view(run, quotes_now, held)
    want = backtest_report(backtest(margin_input, history, mode="fixed"))
    assert run.status == "done", run.error
    assert run.shard_count == 3  # five member accounts by twos; the fund is no member account
    assert (run.accounts, run.backtested) == (5, 4)
    assert run.observations == want["portfolios"][0]["observations"] > 900
    rows = {r.account.code: r for r in AccountBacktest.objects.filter(run=run).select_related("account")}
    assert set(rows) == {"AAA-01", "AAA-02", "AAA-03", "BBB-01"}
    for section in want["portfolios"]:
        row = rows[section["id"]]
        assert (row.observations, row.exceptions, row.light) == (
            section["observations"],
            section["exceptions"],
            section["traffic_light"],
        )
        assert row.coverage == section["coverage"]
        assert [e["day"] for e in row.exception_days] == section["exception_days"]
    assert sum(row.exceptions for row in rows.values()) > 0  # the history has moves beyond these IMs

    pooled, aggregate = run.report["pooled"], run.report["aggregate"]
    for got, expected in ((pooled, want["venue"]["pooled"]), (aggregate, want["venue"]["aggregate"])):
        assert (got["observations"], got["exceptions"], got["traffic_light"]) == (
            expected["observations"],
            expected["exceptions"],
            expected["traffic_light"],
        )
        assert got["exception_days"] == expected["exception_days"]
        assert got["kupiec"]["lr"] == pytest.approx(expected["kupiec"]["lr"], rel=1e-9)
        assert got["christoffersen"]["lr_cc"] == pytest.approx(expected["christoffersen"]["lr_cc"], rel=1e-9)
        assert got["procyclicality"]["peak_to_trough"] == pytest.approx(
            expected["procyclicality"]["peak_to_trough"], rel=1e-9
        )
    lights = ["green", "yellow", "red"]
    assert run.light == max(pooled["traffic_light"], aggregate["traffic_light"], key=lights.index)


def test_the_aggregate_book_of_net_positions_has_the_im_and_loss_of_the_book_of_every_entry(
    book, active_set, quotes_now
):
    run = run_of(active_set, quotes_now, shard_size=1)

    held = [book.long_btc, book.short_call, book.hedged, book.other_member]
    margin_input, history = engine_view(run, quotes_now, held)
    result = backtest(margin_input, history, mode="fixed")  # the engine's aggregate: every entry
    series = storage.decode(storage.RUN_SERIES, run.series)
    np.testing.assert_allclose(series["aggregate_im"], result.initial_margin[:, -1], rtol=1e-9)
    np.testing.assert_allclose(series["aggregate_loss"], result.loss[:, -1], rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(series["venue_im"], result.initial_margin[:, :-1].sum(axis=1), rtol=1e-12)
    assert series["exceptions"].tolist() == result.exception[:, :-1].sum(axis=1).tolist()


def test_cover_1_and_cover_2_are_the_engines_over_every_member_account_with_its_member(
    venue, active_set, member_a, member_b, history, quotes_now
):
    # Thin collateral: the crash scenarios cost both members more than their equity.
    book = factories.validation_book_make(venue, member_a, member_b, long_usd="10000", short_usd="8000")

    run = run_of(active_set, quotes_now, shard_size=2)

    accounts = [book.long_btc, book.short_call, book.hedged, book.cash_only, book.other_member]
    margin_input, history_ = engine_view(run, quotes_now, accounts)
    scenarios = run_scenarios(run=run, margin_input=margin_input, history=history_)
    want = stress(margin_input, scenarios, members=[a.member.code for a in accounts])
    cover_2 = run.report["cover_2"]
    assert cover_2["amount"] == pytest.approx(want.cover_2.amount, rel=1e-12)
    assert cover_2["amount"] > 0
    assert cover_2["scenario"] == scenarios.names[want.cover_2.scenario]
    assert cover_2["members"] == [want.members[j] for j in want.cover_2.members]
    assert cover_2["members"]
    assert run.report["cover_1"]["amount"] == pytest.approx(want.cover_1.amount, rel=1e-12)
    assert [s["name"] for s in run.report["scenarios"]] == list(scenarios.names)
    assert run.fund_value == Decimal(1_000_000)
    stresses = {r.account.code: r for r in AccountStress.objects.filter(run=run).select_related("account")}
    assert set(stresses) == {"AAA-01", "AAA-02", "AAA-03", "AAA-04", "BBB-01"}
    worst = np.argmax(want.loss, axis=0)
    for k, account in enumerate(accounts):
        row = stresses[account.code]
        assert row.worst_scenario == scenarios.names[worst[k]]
        assert row.worst_loss == pytest.approx(want.loss[worst[k], k], rel=1e-12)
        assert row.member_id == account.member_id


def test_an_account_without_a_position_is_stressed_but_not_backtested(book, active_set, quotes_now):
    run = run_of(active_set, quotes_now)

    assert not AccountBacktest.objects.filter(run=run, account=book.cash_only).exists()
    assert AccountStress.objects.get(run=run, account=book.cash_only).equity == pytest.approx(10_000)


def test_running_a_shard_again_changes_nothing(book, active_set, quotes_now):
    run = validation_run_create(
        kind="on_demand", mode="fixed", parameter_set=active_set, cause="t", quotes=quotes_now,
        shard_size=3, enqueue=False,
    )  # fmt: skip
    first, second = run.shards.order_by("number")
    assert validation_shard_run(shard_id=first.pk) == 3
    counts = (AccountBacktest.objects.count(), AccountStress.objects.count())

    assert validation_shard_run(shard_id=first.pk) == 0
    assert (AccountBacktest.objects.count(), AccountStress.objects.count()) == counts
    run.refresh_from_db()
    assert (run.shards_done, run.status) == (1, "running")
    validation_shard.apply(args=[second.pk])  # the Celery task, in this process
    run.refresh_from_db()
    assert (run.shards_done, run.status) == (2, "done")


def test_a_missing_price_series_fails_the_run_naming_it_and_alerts_ops(
    venue, active_set, member_a, member_b, quotes_now
):
    factories.price_history_load(symbols=("BTC", "USDC"))  # no ETH
    factories.validation_book_make(venue, member_a, member_b)

    run = run_of(active_set, quotes_now, kind=ValidationKind.NIGHTLY)

    assert run.status == "failed"
    assert run.error.startswith("prices.ETH: missing")
    assert run.shard_count == 0
    assert not AccountBacktest.objects.exists()
    alert = OpsAlert.objects.get(kind=ALERT_FAILED, key="fixed", resolved_at=None)
    assert "prices.ETH" in alert.message


def test_a_shard_that_cannot_be_computed_fails_its_run_saying_why(book, active_set, quotes_now):
    without_iv = replace(quotes_now, option_ivs={})  # the short call has no mark volatility

    run = validation_run_create(
        kind="nightly", mode="fixed", parameter_set=active_set, cause="t", quotes=without_iv, enqueue=False
    )
    with pytest.raises(Exception, match="iv"):
        validation_run_complete(run=run)

    run.refresh_from_db()
    assert run.status == "failed"
    assert "iv" in run.error
    assert run.shards.get().status == ShardStatus.FAILED
    assert OpsAlert.objects.filter(kind=ALERT_FAILED, resolved_at=None).exists()


def test_the_closes_of_the_valuation_day_are_left_out(book, active_set, quotes_now):
    today = quotes_now.valuation_time.date()
    for symbol in ("BTC", "ETH", "USDC"):
        IndexClose.objects.create(symbol=symbol, day=today, price=Decimal(1), origin="oracle")

    run = run_of(active_set, quotes_now)

    assert run.history["days"][-1] == "2023-08-29"


def red_venue(venue, member_a, member_b, *, fund_usd="1000000"):
    """A set whose psr and standard fractions are far too small for the history: red."""
    form = factories.venue_parameters_form("thin")
    for values in form["underlyings"].values():
        values.update(psr=0.01, imf=0.002, mmf=0.001)
    parameter_set = parameter_set_bootstrap(form=form)
    factories.price_history_load()
    factories.validation_book_make(venue, member_a, member_b, fund_usd=fund_usd)
    return parameter_set


def test_a_red_venue_and_a_fund_below_cover_2_raise_alerts_that_a_later_run_resolves(
    venue, member_a, member_b, quotes_now
):
    thin = red_venue(venue, member_a, member_b, fund_usd="1000")

    run = run_of(thin, quotes_now, kind=ValidationKind.NIGHTLY)

    assert run.light == "red"
    red = OpsAlert.objects.get(kind=ALERT_RED, key="venue", resolved_at=None)
    assert "backtest is red" in red.message
    assert run.report["cover_2"]["amount"] > 1000
    below = OpsAlert.objects.get(kind=ALERT_COVER2, key="venue", resolved_at=None)
    assert "insurance fund holds 1,000 USD" in below.message

    fund = MarginAccount.objects.get(kind=AccountKind.INSURANCE_FUND)
    collateral_deposit(account=fund, asset=venue.usd, amount=Decimal(100_000_000))
    run_of(thin, quotes_now, kind=ValidationKind.ON_DEMAND)

    assert not OpsAlert.objects.filter(kind=ALERT_COVER2, resolved_at=None).exists()
    assert OpsAlert.objects.filter(kind=ALERT_RED, resolved_at=None).exists()  # still red


def test_only_the_active_sets_fixed_runs_speak_for_the_venue(venue, member_a, member_b, quotes_now):
    thin = red_venue(venue, member_a, member_b)

    run_of(thin, quotes_now, kind=ValidationKind.NIGHTLY, mode=ValidationMode.CALIBRATED)
    run_of(thin, quotes_now, kind=ValidationKind.PROPOSAL)

    assert not OpsAlert.objects.filter(kind=ALERT_RED).exists()


def test_the_nightly_task_runs_both_modes_once_per_message(book, active_set, monkeypatch, quotes_now):
    monkeypatch.setattr("riskengine.validation.services.quotes_current", lambda: quotes_now)

    first = validation_nightly.apply(task_id="beat-1").get()
    again = validation_nightly.apply(task_id="beat-1").get()

    assert first == again
    assert len(first) == 2
    runs = ValidationRun.objects.filter(pk__in=first)
    assert {run.mode for run in runs} == {"fixed", "calibrated"}
    for run in runs:
        validation_run_complete(run=run)
    fixed, calibrated = (ValidationRun.objects.get(pk=pk) for pk in first)
    # The calibrated psr follows the history's volatility: its IM is not the fixed set's.
    assert (
        fixed.report["pooled"]["procyclicality"]["peak_to_trough"]
        != calibrated.report["pooled"]["procyclicality"]["peak_to_trough"]
    )


def test_pruning_keeps_the_newest_runs_account_rows_and_every_runs_venue_results(
    book, active_set, quotes_now
):
    older, newer = run_of(active_set, quotes_now), run_of(active_set, quotes_now)
    calibrated = run_of(active_set, quotes_now, mode=ValidationMode.CALIBRATED)
    proposal = run_of(active_set, quotes_now, kind=ValidationKind.PROPOSAL, proposal=active_set)

    deleted = validation_results_prune(keep=1)

    assert deleted == 4 + 5 + 4 + 5  # the older fixed run's and the decided proposal's rows
    assert not AccountBacktest.objects.filter(run__in=[older, proposal]).exists()
    assert AccountBacktest.objects.filter(run=newer).count() == 4
    assert AccountStress.objects.filter(run=calibrated).count() == 5
    older.refresh_from_db()
    assert older.report["pooled"]["observations"] > 0

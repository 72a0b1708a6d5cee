"""The oracle on PostgreSQL: observations in, index prices, statuses, alerts and signals out."""

from __future__ import annotations

import math
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import DatabaseError, connection, transaction

from accounts.models import Role
from clearing.marketdata.models import (
    IndexClose,
    IndexPrice,
    IndexState,
    PriceObservation,
    VolMark,
    VolObservation,
)
from clearing.marketdata.selectors import market_quotes_current
from clearing.marketdata.services import (
    PriceIn,
    index_price_confirm,
    index_prices_refresh,
    index_sweep_reference_set,
    price_observation_submit,
    price_observations_submit,
    vol_observation_submit,
)
from clearing.marketdata.signals import index_moved
from clearing.ops.alerts import ops_alert_raise, ops_alert_resolve
from clearing.ops.models import OpsAlert
from tests import factories


def submit(oracle, clock, symbol, *prices):
    """Each source in turn submits its price at the current time; returns the last index row."""
    row = None
    for user, price in zip(oracle.sources, prices, strict=False):
        row = price_observation_submit(source_user=user, symbol=symbol, price=price, source_time=clock.now)
    return row


@pytest.fixture
def moves():
    received = []

    def receiver(sender, **kwargs):
        received.append(kwargs)

    index_moved.connect(receiver)
    yield received
    index_moved.disconnect(receiver)


def test_every_observation_is_stored_and_aggregated_into_the_median(oracle, clock):
    row = submit(oracle, clock, "BTC", "60000", "60300", "59900")
    assert PriceObservation.objects.filter(symbol="BTC").count() == 3
    assert IndexPrice.objects.filter(symbol="BTC").count() == 3
    assert row.status == "ok"
    assert row.price == Decimal(60000)
    assert row.sources == ["src-a", "src-b", "src-c"]
    state = IndexState.objects.get(symbol="BTC")
    assert (state.status, state.last_good_price, state.last_good_index_price_id) == ("ok", 60000, row.pk)
    assert IndexClose.objects.get(symbol="BTC", day=clock.now.date()).price == Decimal(60000)


def test_a_bad_tick_is_excluded_and_flagged_with_its_reason(oracle, clock):
    submit(oracle, clock, "BTC", "60000", "60100", "59950")
    clock.advance(seconds=1)
    row = price_observation_submit(
        source_user=oracle.sources[3], symbol="BTC", price="6000", source_time=clock.now
    )
    assert row.status == "ok"
    assert row.price == Decimal(60000)  # the median of the three good quotes
    assert row.sources == ["src-a", "src-b", "src-c"]
    [exclusion] = row.exclusions
    assert exclusion["source"] == "src-d"
    assert exclusion["price"] == "6000"
    assert "deviates" in exclusion["reason"]
    assert market_quotes_current().underlying_prices["BTC"] == 60000.0


def test_too_few_sources_degrade_the_index_and_alert_ops(oracle, clock):
    row = submit(oracle, clock, "ETH", "3000", "3010")
    assert row.status == "degraded"
    assert row.price == Decimal(3000)  # the first source's price: never the average 3005
    assert "closer to the last good price" in row.note
    alert = OpsAlert.objects.get(kind="price_degraded", key="ETH", resolved_at=None)
    assert "fewer fresh price sources" in alert.message
    assert "liquidations of exposed accounts are suspended" in alert.message
    price_observation_submit(source_user=oracle.sources[2], symbol="ETH", price="3005", source_time=clock.now)
    assert IndexState.objects.get(symbol="ETH").status == "ok"
    assert not OpsAlert.objects.filter(kind="price_degraded", key="ETH", resolved_at=None).exists()


def test_a_silent_feed_goes_stale_suspends_liquidation_and_alerts_ops(oracle, clock):
    submit(oracle, clock, "BTC", "60000", "60010", "59990")
    submit(oracle, clock, "ETH", "3000", "3001", "2999")
    clock.advance(seconds=45)
    submit(oracle, clock, "ETH", "3002", "3001", "2999")
    clock.advance(seconds=30)  # BTC's sources are now 75 s old, ETH's 30 s
    quotes = market_quotes_current()
    assert quotes.statuses["BTC"] == "stale"  # read-time: before any aggregation records it
    assert quotes.statuses["ETH"] == "ok"
    assert quotes.underlying_prices["BTC"] == 60000.0  # the last good price
    assert quotes.unsafe_for_liquidation() == {"BTC"}

    [row] = index_prices_refresh()
    assert (row.symbol, row.status, row.price, row.last_good_price) == ("BTC", "stale", None, 60000)
    assert len(row.exclusions) == 3
    alert = OpsAlert.objects.get(kind="price_stale", key="BTC", resolved_at=None)
    assert "liquidations of exposed accounts are suspended" in alert.message
    assert index_prices_refresh() == []  # recorded once, not on every beat


def test_a_sudden_move_is_held_unconfirmed_then_confirmed_by_the_next_aggregation(oracle, clock):
    submit(oracle, clock, "BTC", "60000", "60010", "59990")
    clock.advance(seconds=10)
    # Two of three sources move -25 %: the one left behind is now the outlier, and of the two
    # remaining (never averaged) the one closer to the last good price is the candidate.
    first = submit(oracle, clock, "BTC", "45000", "45010")
    assert first.status == "unconfirmed"
    assert first.price == Decimal(45010)
    assert first.exclusions[0]["source"] == "src-c"
    # (src-a's move alone was an excluded outlier; the last good price was then 60,010.)
    assert first.last_good_price == Decimal(60010)
    quotes = market_quotes_current()
    assert quotes.statuses["BTC"] == "unconfirmed"
    assert quotes.underlying_prices["BTC"] == 60010.0
    assert "BTC" in quotes.unsafe_for_liquidation()
    assert OpsAlert.objects.filter(kind="price_unconfirmed", key="BTC", resolved_at=None).exists()

    confirming = price_observation_submit(
        source_user=oracle.sources[2], symbol="BTC", price="44990", source_time=clock.now
    )
    assert confirming.status == "ok"
    assert confirming.last_good_price == Decimal(45000)  # median of 45000, 45010, 44990
    assert "confirms" in confirming.note
    assert market_quotes_current().unsafe_for_liquidation() == set()
    assert not OpsAlert.objects.filter(kind="price_unconfirmed", resolved_at=None).exists()


def test_a_held_move_that_reverts_is_dropped(oracle, clock):
    submit(oracle, clock, "BTC", "60000", "60010", "59990")
    clock.advance(seconds=5)
    assert submit(oracle, clock, "BTC", "30000", "30000").status == "unconfirmed"
    row = submit(oracle, clock, "BTC", "60005", "60000")
    assert row.status == "ok"
    assert row.last_good_price == Decimal(60000)


def test_ops_can_confirm_a_held_move_and_nobody_else_can(oracle, clock):
    ops = factories.user_make(username="opsy", role=Role.OPS)
    risk = factories.user_make(username="risky", role=Role.RISK_APPROVER)
    submit(oracle, clock, "BTC", "60000", "60010", "59990")
    with pytest.raises(ValidationError) as error:
        index_price_confirm(symbol="BTC", confirmed_by=ops)
    assert "symbol" in error.value.message_dict
    clock.advance(seconds=5)
    submit(oracle, clock, "BTC", "45000", "45010")
    with pytest.raises(ValidationError) as error:
        index_price_confirm(symbol="BTC", confirmed_by=risk)
    assert "confirmed_by" in error.value.message_dict

    row = index_price_confirm(symbol="BTC", confirmed_by=ops)
    # The held price had two of three sources: confirmed, it keeps the status it would have had.
    assert (row.status, row.last_good_price, row.confirmed_by) == ("degraded", Decimal(45010), ops)
    assert "confirmed by opsy" in row.note
    state = IndexState.objects.get(symbol="BTC")
    assert (state.status, state.last_good_price, state.pending_price) == ("degraded", 45010, None)


def test_a_move_beyond_event_move_since_the_last_sweep_fires_the_hook_once(
    oracle, clock, moves, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        submit(oracle, clock, "BTC", "60000", "60010", "59990")
    assert moves == []  # the first price only sets the reference
    assert index_sweep_reference_set(prices={"BTC": Decimal(60000), "NOPE": Decimal(1)}) == 1

    clock.advance(seconds=20)
    with django_capture_on_commit_callbacks(execute=True):
        submit(oracle, clock, "BTC", "60900", "60950", "60800")  # +1.5 %: below event_move (2 %)
    assert moves == []

    clock.advance(seconds=20)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        last = submit(oracle, clock, "BTC", "61500", "61600", "61550")  # +2.5 % from 60,000
        assert moves == []  # nothing is sent before the commit
    assert len(callbacks) == 1
    [move] = moves
    assert move["underlying"] == "BTC"
    assert move["kind"] == "underlying"
    assert move["reference_price"] == Decimal(60000)
    assert move["price"] > Decimal("61200")
    assert IndexPrice.objects.get(pk=move["index_price_id"]).symbol == "BTC"
    assert move["index_price_id"] <= last.pk

    clock.advance(seconds=20)
    with django_capture_on_commit_callbacks(execute=True):
        submit(oracle, clock, "BTC", "61600", "61650", "61550")  # the reference moved with the trigger
    assert len(moves) == 1


def test_a_held_move_does_not_trigger_an_event_sweep_until_it_is_confirmed(
    oracle, clock, moves, django_capture_on_commit_callbacks
):
    submit(oracle, clock, "BTC", "60000", "60010", "59990")
    clock.advance(seconds=5)
    with django_capture_on_commit_callbacks(execute=True):
        submit(oracle, clock, "BTC", "45000", "45010")
    assert moves == []
    with django_capture_on_commit_callbacks(execute=True):
        price_observation_submit(
            source_user=oracle.sources[2], symbol="BTC", price="45005", source_time=clock.now
        )
    assert [m["price"] for m in moves] == [Decimal(45005)]


@pytest.mark.parametrize(
    ("symbol", "price", "offset", "field"),
    [
        ("BTC", "0", 0, "price"),
        ("BTC", "-5", 0, "price"),
        ("BTC", float("nan"), 0, "price"),
        ("BTC", math.inf, 0, "price"),
        ("BTC", "Infinity", 0, "price"),
        ("BTC", "abc", 0, "price"),
        ("BTC", "60000", 30, "source_time"),
        ("DOGE", "1", 0, "symbol"),
        ("USD", "1", 0, "symbol"),
    ],
)
def test_bad_input_is_refused_naming_the_field_and_nothing_is_stored(
    oracle, clock, symbol, price, offset, field
):
    with pytest.raises(ValidationError) as error:
        price_observation_submit(
            source_user=oracle.sources[0],
            symbol=symbol,
            price=price,
            source_time=clock.now + timedelta(seconds=offset),
        )
    assert field in error.value.message_dict
    assert not PriceObservation.objects.exists()
    assert not IndexPrice.objects.exists()


def test_a_user_that_is_not_a_registered_source_is_refused(oracle, clock):
    stranger = factories.user_make(username="stranger", role=Role.PRICE_SOURCE)
    with pytest.raises(ValidationError) as error:
        price_observation_submit(source_user=stranger, symbol="BTC", price="1", source_time=clock.now)
    assert "source" in error.value.message_dict
    assert not PriceObservation.objects.exists()


def test_one_bad_observation_refuses_the_whole_batch(oracle, clock):
    batch = [
        PriceIn(oracle.sources[0], "BTC", "60000", clock.now),
        PriceIn(oracle.sources[1], "BTC", "-1", clock.now),
    ]
    with pytest.raises(ValidationError) as error:
        price_observations_submit(observations=batch)
    assert "observations[1].price" in error.value.message_dict
    assert not PriceObservation.objects.exists()


def test_a_batch_aggregates_after_every_observation(oracle, clock):
    rows = price_observations_submit(
        observations=[
            PriceIn(oracle.sources[0], "BTC", "60000", clock.now),
            PriceIn(oracle.sources[0], "USDC", "1.0001", clock.now),
            PriceIn(oracle.sources[1], "BTC", "60100", clock.now),
            PriceIn(oracle.sources[2], "BTC", "60050", clock.now),
        ]
    )
    assert [(r.symbol, r.status, r.price) for r in rows] == [
        ("BTC", "degraded", Decimal(60000)),
        ("USDC", "degraded", Decimal("1.0001")),
        ("BTC", "degraded", Decimal(60000)),  # two sources: the one closest to the last good price
        ("BTC", "ok", Decimal(60050)),
    ]
    quotes = market_quotes_current()
    assert quotes.asset_prices == {"USD": 1.0, "USDC": 1.0001}
    assert quotes.index_price_ids["BTC"] == rows[3].pk


def test_the_current_market_is_read_in_a_constant_number_of_queries(oracle, clock, django_assert_num_queries):
    submit(oracle, clock, "BTC", "60000", "60010", "59990")
    submit(oracle, clock, "ETH", "3000", "3001", "2999")
    submit(oracle, clock, "USDC", "1", "1", "0.9999")
    vol_observation_submit(
        source_user=oracle.sources[0], instrument="BTC-70000-C", iv="0.55", source_time=clock.now
    )
    with django_assert_num_queries(2):
        quotes = market_quotes_current()
    assert quotes.underlying_prices == {"BTC": 60000.0, "ETH": 3000.0}
    assert quotes.asset_prices == {"USD": 1.0, "USDC": 1.0}
    assert quotes.option_ivs == {"BTC-70000-C": 0.55}
    assert quotes.statuses == {"USD": "ok", "BTC": "ok", "ETH": "ok", "USDC": "ok"}


def test_implied_vols_become_the_option_mark_and_nonsense_is_refused(oracle, clock):
    vol_observation_submit(
        source_user=oracle.sources[0], instrument="BTC-70000-C", iv="0.55", source_time=clock.now
    )
    clock.advance(seconds=1)
    vol_observation_submit(
        source_user=oracle.sources[1], instrument="BTC-70000-C", iv=0.6, source_time=clock.now
    )
    # A late observation is kept but does not replace the newer mark.
    vol_observation_submit(
        source_user=oracle.sources[2],
        instrument="BTC-70000-C",
        iv="0.9",
        source_time=clock.now - timedelta(seconds=5),
    )
    assert VolObservation.objects.count() == 3
    assert VolMark.objects.get().iv == Decimal("0.6")
    for instrument, iv, field in [
        ("BTC-70000-C", "0", "iv"),
        ("BTC-70000-C", "7.5", "iv"),
        ("BTC-70000-C", float("nan"), "iv"),
        ("BTC-PERP", "0.5", "instrument"),
        ("NOPE-C", "0.5", "instrument"),
    ]:
        with pytest.raises(ValidationError) as error:
            vol_observation_submit(
                source_user=oracle.sources[0], instrument=instrument, iv=iv, source_time=clock.now
            )
        assert field in error.value.message_dict
    with pytest.raises(ValidationError) as error:
        vol_observation_submit(
            source_user=oracle.sources[0],
            instrument="BTC-70000-C",
            iv="0.5",
            source_time=clock.now + timedelta(minutes=1),
        )
    assert "source_time" in error.value.message_dict
    assert VolObservation.objects.count() == 3


def test_observations_and_index_prices_are_append_only_in_the_database(oracle, clock):
    submit(oracle, clock, "BTC", "60000")
    for table in ("marketdata_priceobservation", "marketdata_indexprice"):
        with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"UPDATE {table} SET symbol = 'X'")


def test_an_open_alert_is_raised_once_per_kind_and_key(db, clock):
    first = ops_alert_raise(kind="liquidation_suspended", key="ACC-1", message="first")
    again = ops_alert_raise(kind="liquidation_suspended", key="ACC-1", message="again")
    assert again.pk == first.pk
    assert (again.raise_count, again.message) == (2, "again")
    assert ops_alert_resolve(kind="liquidation_suspended", key="ACC-1") == 1
    assert ops_alert_resolve(kind="liquidation_suspended", key="ACC-1") == 0
    reopened = ops_alert_raise(kind="liquidation_suspended", key="ACC-1", message="third")
    assert reopened.pk != first.pk
    assert OpsAlert.objects.count() == 2


def test_a_source_repeating_its_own_held_move_never_confirms_it_another_source_does(oracle, clock):
    submit(oracle, clock, "BTC", "60000", "60010", "59990")
    clock.advance(seconds=61)  # the others went quiet: src-a is BTC's only fresh source
    held = submit(oracle, clock, "BTC", "45000")
    assert (held.status, held.last_good_price) == ("unconfirmed", Decimal(60000))
    assert IndexState.objects.get(symbol="BTC").pending_sources == ["src-a"]

    for price in ("45010", "44995", "45000"):  # src-a, again and again
        clock.advance(seconds=1)
        again = submit(oracle, clock, "BTC", price)
        assert (again.status, again.last_good_price) == ("unconfirmed", Decimal(60000))
        assert "still reported only by src-a" in again.note
    assert "BTC" in market_quotes_current().unsafe_for_liquidation()

    confirming = price_observation_submit(
        source_user=oracle.sources[1], symbol="BTC", price="45005", source_time=clock.now
    )
    assert confirming.status == "degraded"  # confirmed, by two of the three sources required
    assert confirming.last_good_price in (Decimal(45000), Decimal(45005))
    assert "src-b agreeing with src-a" in confirming.note
    state = IndexState.objects.get(symbol="BTC")
    assert (state.pending_price, state.pending_sources) == (None, [])


def test_a_price_source_cannot_confirm_its_own_held_move_but_another_source_or_ops_can(oracle, clock):
    from django.core.exceptions import PermissionDenied

    src_a, src_b, src_c, _ = oracle.sources
    submit(oracle, clock, "BTC", "60000", "60010", "59990")
    clock.advance(seconds=5)
    submit(oracle, clock, "BTC", "45000", "45010")  # src-a and src-b move, src-c does not
    state = IndexState.objects.get(symbol="BTC")
    assert (state.status, state.pending_sources) == ("unconfirmed", ["src-a", "src-b"])
    rows = IndexPrice.objects.count()

    for source in (src_a, src_b):
        with pytest.raises(PermissionDenied) as refusal:
            index_price_confirm(symbol="BTC", confirmed_by=source)
        assert "cannot confirm its own move" in str(refusal.value)
        assert "src-a, src-b" in str(refusal.value)
    state.refresh_from_db()
    assert (state.status, state.pending_price, state.last_good_price) == ("unconfirmed", 45010, 60010)
    assert IndexPrice.objects.count() == rows

    row = index_price_confirm(symbol="BTC", confirmed_by=src_c)
    assert (row.status, row.last_good_price, row.confirmed_by) == ("degraded", Decimal(45010), src_c)
    assert "confirmed by src-c" in row.note


def test_ops_confirm_a_move_a_source_may_not(oracle, clock):
    ops = factories.user_make(username="opsy", role=Role.OPS)
    submit(oracle, clock, "BTC", "60000", "60010", "59990")
    clock.advance(seconds=5)
    submit(oracle, clock, "BTC", "45000", "45010")
    assert index_price_confirm(symbol="BTC", confirmed_by=ops).last_good_price == Decimal(45010)


def test_the_confirm_endpoint_refuses_the_source_of_the_move_with_403_and_changes_nothing(oracle, clock):
    from rest_framework.test import APIClient

    from accounts.services import api_token_issue

    def client(user) -> APIClient:
        http = APIClient()
        http.credentials(HTTP_AUTHORIZATION=f"Bearer {api_token_issue(user=user, name='feed')[1]}")
        return http

    submit(oracle, clock, "BTC", "60000", "60010", "59990")
    clock.advance(seconds=5)
    submit(oracle, clock, "BTC", "45000", "45010")
    url = "/api/v1/index-prices/BTC/confirm/"
    refused = client(oracle.sources[0]).post(url, format="json", headers={"Idempotency-Key": "k1"})
    assert refused.status_code == 403
    assert "cannot confirm its own move" in refused.json()["detail"]
    assert IndexState.objects.get(symbol="BTC").status == "unconfirmed"

    accepted = client(oracle.sources[2]).post(url, format="json")
    assert accepted.status_code == 201
    assert IndexState.objects.get(symbol="BTC").last_good_price == Decimal(45010)


def test_an_ok_index_reads_degraded_once_fewer_than_the_quorum_of_sources_are_fresh(oracle, clock):
    submit(oracle, clock, "BTC", "60000")
    clock.advance(seconds=20)
    price_observation_submit(
        source_user=oracle.sources[1], symbol="BTC", price="60010", source_time=clock.now
    )
    clock.advance(seconds=20)
    row = price_observation_submit(
        source_user=oracle.sources[2], symbol="BTC", price="59990", source_time=clock.now
    )
    assert row.status == "ok"
    clock.advance(seconds=15)  # src-a is 55 s old: three fresh sources
    assert market_quotes_current().statuses["BTC"] == "ok"
    clock.advance(seconds=10)  # src-a is 65 s old: two fresh sources of three required
    quotes = market_quotes_current()
    assert quotes.statuses["BTC"] == "degraded"
    assert "BTC" in quotes.unsafe_for_liquidation()
    [recorded] = index_prices_refresh()
    assert (recorded.symbol, recorded.status, recorded.sources) == ("BTC", "degraded", ["src-b", "src-c"])
    assert OpsAlert.objects.filter(kind="price_degraded", key="BTC", resolved_at=None).exists()
    assert index_prices_refresh() == []


def test_a_single_degraded_source_does_not_allow_liquidation(oracle, clock, member_a):
    """An account deep below its maintenance margin is margin-called but not liquidated while BTC
    has one fresh source; once the quorum is back, the liquidation starts."""
    from accounts.services import collateral_deposit
    from accounts.trading import trade_book
    from riskengine.sweeps.models import Liquidation, MarginCall
    from riskengine.sweeps.services import sweep_accounts_run

    account = factories.account_make(member=member_a, code="AAA-01", mode="cross")
    collateral_deposit(account=account, asset=oracle.usd, amount=Decimal(20_000))
    trade_book(account=account, instrument="BTC-PERP", quantity=Decimal(10), price=Decimal(60_000))
    submit(oracle, clock, "BTC", "60000", "60010", "59990")
    clock.advance(seconds=61)
    row = submit(oracle, clock, "BTC", "59000")  # src-a alone
    assert (row.status, row.sources) == ("degraded", ["src-a"])

    sweep_accounts_run(account_ids=[account.pk], cause="test: one source")
    call = MarginCall.objects.get(account=account)
    assert call.status == "open"
    assert call.events.last().cause == "liquidation suspended: BTC not trustworthy"
    assert not Liquidation.objects.filter(account=account).exists()

    for source in oracle.sources[1:3]:
        price_observation_submit(source_user=source, symbol="BTC", price="59010", source_time=clock.now)
    assert market_quotes_current().statuses["BTC"] == "ok"
    sweep_accounts_run(account_ids=[account.pk], cause="test: quorum")
    assert Liquidation.objects.filter(account=account).count() == 1

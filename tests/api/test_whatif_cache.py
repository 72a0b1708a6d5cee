"""The what-if's per-process caches (``riskengine.reference``): the active parameter set, the
reference rows and the oracle's quotes are reused while unchanged, never after a change."""

from __future__ import annotations

from decimal import Decimal

import pytest

from accounts.models import Role
from accounts.services import user_create
from accounts.trading import trade_book
from clearing.marketdata.selectors import market_quotes_current
from clearing.marketdata.services import price_observation_submit
from riskengine import reference, whatif
from riskengine.models import ParameterSet, ParameterStatus
from riskengine.services import parameter_set_bootstrap
from riskengine.signals import parameter_set_activated
from riskengine.sweeps import services as sweep_services
from riskengine.whatif import margin_what_if
from tests.factories import client_for, quotes_fixed, venue_parameters_form

V1 = "/api/v1"


@pytest.fixture(autouse=True)
def empty_caches():
    reference.reference_clear()
    yield
    reference.reference_clear()


def test_a_what_if_costs_the_same_few_queries_whatever_the_book(world, django_assert_max_num_queries):
    trader = world["trader_a"]
    path = f"{V1}/accounts/{world.account_a.pk}/what-if/"
    body = {
        "trades": [{"instrument": "BTC-PERP", "quantity": "1"}],
        "collateral": [{"asset": "USDC", "amount": "-5"}],
    }
    assert trader.post(path, body).status_code == 200  # fills the caches, records the token's use
    # token, account, reference probe, the account's rows (quotes: the tests' fixed seam)
    with django_assert_max_num_queries(4):
        assert trader.post(path, body).status_code == 200
    for instrument in ("BTC-PERP", "ETH-PERP", "BTC-70000-C"):
        trade_book(account=world.account_a, instrument=instrument, quantity=Decimal(2), price=Decimal(100))
    with django_assert_max_num_queries(4):
        assert trader.post(path, body).status_code == 200


def test_cached_reference_data_gives_the_figures_of_a_fresh_read(world):
    trade_book(account=world.account_a, instrument="BTC-70000-C", quantity=Decimal(-3), price=Decimal(900))
    trades = [(world.venue.btc_perp, Decimal(2), None)]
    quotes = quotes_fixed()  # one valuation time for all three
    fresh = margin_what_if(account=world.account_a, trades=trades, quotes=quotes)
    cached = margin_what_if(account=world.account_a, trades=trades, quotes=quotes)
    reference.reference_clear()
    again = margin_what_if(account=world.account_a, trades=trades, quotes=quotes)
    for result in (cached, again):
        assert result.before == fresh.before
        assert result.after == fresh.after
        assert result.document == fresh.document


def test_a_parameter_set_activated_elsewhere_is_used_by_the_next_what_if(world):
    trade_book(account=world.account_a, instrument="BTC-PERP", quantity=Decimal(3), price=Decimal(60_000))
    before = margin_what_if(account=world.account_a).before
    # Another process activates a stricter set: no signal reaches this one, the probe must notice.
    parameter_set_activated.disconnect(dispatch_uid="riskengine.reference.activated")
    try:
        ParameterSet.objects.filter(status=ParameterStatus.ACTIVE).update(status=ParameterStatus.SUPERSEDED)
        form = venue_parameters_form("v2")
        for underlying in form["underlyings"].values():
            underlying["psr"] = 0.30
        parameter_set_bootstrap(form=form)
    finally:
        parameter_set_activated.connect(
            reference.reference_clear, dispatch_uid="riskengine.reference.activated"
        )
    after = margin_what_if(account=world.account_a).before
    assert reference.reference_current().parameters_form["version"] == "v2"
    assert after["initial_margin"] > before["initial_margin"]


def submit(oracle, clock, symbol, *prices):
    for user, price in zip(oracle.sources, prices, strict=False):
        price_observation_submit(source_user=user, symbol=symbol, price=price, source_time=clock.now)


def test_cached_quotes_follow_every_new_index_price_and_go_stale_on_time(
    oracle,
    clock,
    django_assert_num_queries,
):
    submit(oracle, clock, "BTC", "60000", "60010", "59990")
    first = reference.quotes_current()
    assert (first.underlying_prices["BTC"], first.statuses["BTC"]) == (60000.0, "ok")
    clock.advance(seconds=5)
    with django_assert_num_queries(1):  # only the probe: nothing new from the oracle
        hit = reference.quotes_current()
    assert hit.valuation_time == clock.now
    assert hit.underlying_prices == first.underlying_prices

    submit(oracle, clock, "BTC", "61000", "61010", "60990")
    assert reference.quotes_current().underlying_prices["BTC"] == 61000.0

    clock.advance(seconds=75)  # the sources are now older than max_age (60 s): no write needed
    stale = reference.quotes_current()
    assert stale.statuses["BTC"] == "stale"
    assert stale.underlying_prices["BTC"] == 61000.0  # the last good price


def test_sweeps_the_api_and_the_what_if_read_one_quotes_current_with_one_fail_closed_answer(
    oracle,
    clock,
):
    assert sweep_services.quotes_current is whatif.quotes_current is reference.quotes_current
    submit(oracle, clock, "BTC", "60000", "60010", "59990")
    assert reference.quotes_current().statuses["BTC"] == "ok"  # cached from here on

    clock.advance(seconds=75)  # the sources fell silent past max_age (60 s); the oracle wrote nothing
    cached = reference.quotes_current()
    assert cached.statuses == market_quotes_current(at=clock.now).statuses  # an uncached read's
    assert cached.statuses["BTC"] == "stale"
    assert "BTC" in cached.unsafe_for_liquidation()

    sweep, _outcome = sweep_services.sweep_full_run(cause="test")
    assert sweep.statuses["BTC"] == "stale"
    reader = client_for(user_create(username="ops-reader", password=None, role=Role.OPS))
    listed = {row["symbol"]: row["status"] for row in reader.get(f"{V1}/index-prices/").json()["results"]}
    assert listed["BTC"] == "stale"

"""The resources behave as documented: trades, collateral, what-if, simulate, prices, parameters."""

from __future__ import annotations

from decimal import Decimal

import pytest

from accounts.models import CollateralBalance, CollateralMovement, Deposit, Withdrawal
from accounts.trading import trade_book
from clearing.models import Position, Trade
from riskengine.core import compute_document
from tests.factories import recent

V1 = "/api/v1"


def usdc(account) -> Decimal:
    return CollateralBalance.objects.get(account=account, asset__symbol="USDC").amount


# --- Trades ---------------------------------------------------------------------------------------


def test_the_venue_books_one_fill_and_gets_the_trade_back(world):
    response = world["venue"].post(
        f"{V1}/trades/",
        {"account": "AAA-01", "instrument": "BTC-PERP", "quantity": "2", "price": "60000", "trade_id": "v-1"},
    )
    assert response.status_code == 201, response.json()
    (trade,) = response.json()["trades"]
    assert trade["account"] == "AAA-01"
    assert trade["trade_id"] == "v-1"
    assert Decimal(trade["quantity"]) == 2
    assert Position.objects.get(account=world.account_a, instrument__symbol="BTC-PERP").quantity == 2


def test_a_batch_is_booked_atomically_and_an_error_names_the_fill_and_field(world):
    fills = [
        {"account": "AAA-01", "instrument": "BTC-PERP", "quantity": "1", "price": "60000"},
        {"account": "BBB-01", "instrument": "ETH-PERP", "quantity": "-3", "price": "0"},
    ]
    response = world["venue"].post(f"{V1}/trades/", {"fills": fills})
    assert response.status_code == 400
    assert "fills[1].price" in response.json()
    assert not Trade.objects.exists()

    fills[1]["price"] = "3000"
    response = world["venue"].post(f"{V1}/trades/", {"fills": fills})
    assert response.status_code == 201
    assert [t["account"] for t in response.json()["trades"]] == ["AAA-01", "BBB-01"]
    assert Trade.objects.count() == 2


def test_a_trade_id_already_booked_is_refused_naming_trade_id(world):
    fill = {"account": "AAA-01", "instrument": "BTC-PERP", "quantity": "1", "price": "60000", "trade_id": "x"}
    assert world["venue"].post(f"{V1}/trades/", fill).status_code == 201
    response = world["venue"].post(f"{V1}/trades/", fill)
    assert response.status_code == 400
    assert "trade_id" in response.json()
    assert Trade.objects.count() == 1


def test_a_trade_that_breaches_margin_is_still_accepted(world):
    # 100 BTC notional 6m against 100k USDC: far beyond the initial margin, cleared anyway.
    response = world["venue"].post(
        f"{V1}/trades/", {"account": "AAA-01", "instrument": "BTC-PERP", "quantity": "100", "price": "60000"}
    )
    assert response.status_code == 201
    trade = Trade.objects.get(account=world.account_a)
    assert (trade.instrument.symbol, trade.quantity, trade.price) == ("BTC-PERP", 100, 60_000)
    position = Position.objects.get(account=world.account_a, instrument__symbol="BTC-PERP")
    assert (position.quantity, position.entry_price) == (100, 60_000)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"account": "AAA-01", "instrument": "BTC-PERP", "quantity": "1", "price": "NaN"}, "price"),
        ({"account": "AAA-01", "instrument": "BTC-PERP", "quantity": "1", "price": "Infinity"}, "price"),
        ({"account": "AAA-01", "instrument": "BTC-PERP", "quantity": "0", "price": "1"}, "quantity"),
        ({"account": "AAA-01", "instrument": "BTC-PERP", "quantity": "1e-11", "price": "1"}, "quantity"),
        ({"account": "AAA-01", "instrument": "BTC-PERP", "quantity": "1" * 19, "price": "1"}, "quantity"),
        ({"account": "AAA-01", "instrument": "NOPE", "quantity": "1", "price": "1"}, "instrument"),
        ({"account": "ZZZ-99", "instrument": "BTC-PERP", "quantity": "1", "price": "1"}, "account"),
        ({"account": "AAA-01", "instrument": "BTC-PERP", "quantity": "1", "price": "1", "qty": 1}, "qty"),
    ],
)
def test_bad_fills_are_refused_naming_the_field_and_nothing_is_booked(world, body, field):
    response = world["venue"].post(f"{V1}/trades/", body)
    assert response.status_code == 400
    assert field in response.json(), response.json()
    assert not Trade.objects.exists()


def test_json_nan_literals_are_refused(world):
    response = world["venue"].http.post(
        f"{V1}/trades/",
        '{"account": "AAA-01", "instrument": "BTC-PERP", "quantity": 1, "price": NaN}',
        content_type="application/json",
    )
    assert response.status_code == 400
    assert not Trade.objects.exists()


# --- Collateral -----------------------------------------------------------------------------------


def test_a_trader_announces_a_deposit_that_counts_only_once_custody_confirms_it(world):
    trader, custodian = world["trader_a"], world["custodian"]
    response = trader.post(
        f"{V1}/accounts/{world.account_a.pk}/deposits/",
        {"asset": "USDC", "amount": "250.5", "note": "from cold"},
    )
    assert response.status_code == 201, response.json()
    announced = response.json()
    assert (announced["state"], announced["origin"], announced["reference"]) == ("pending", "announced", None)
    assert usdc(world.account_a) == Decimal(100_000)

    response = custodian.post(f"{V1}/custody/deposits/{announced['id']}/confirm/", {"reference": "0xfeed"})
    assert response.status_code == 201, response.json()
    assert (response.json()["state"], response.json()["reference"]) == ("confirmed", "0xfeed")
    assert usdc(world.account_a) == Decimal("100250.5")
    listed = trader.get(f"{V1}/accounts/{world.account_a.pk}/deposits/").json()["results"]
    assert [(d["id"], d["state"]) for d in listed] == [(announced["id"], "confirmed")]


def test_a_trader_requests_a_withdrawal_that_is_reserved_at_once_and_custody_sends_it(world):
    trader, custodian = world["trader_a"], world["custodian"]
    response = trader.post(
        f"{V1}/accounts/{world.account_a.pk}/withdrawals/",
        {"asset": "USDC", "amount": "50", "destination": "0xabc"},
    )
    assert response.status_code == 201, response.json()
    requested = response.json()
    assert (requested["state"], Decimal(requested["amount"])) == ("requested", Decimal(50))
    # Reserved at once: out of the balance (and so of equity) before custody sends anything.
    assert usdc(world.account_a) == Decimal(99_950)
    reservation = CollateralMovement.objects.get(pk=requested["reservation_id"])
    assert (reservation.kind, reservation.amount) == ("withdrawal_reserve", Decimal(-50))

    queue = custodian.get(f"{V1}/custody/withdrawals/").json()["results"]
    assert [(w["id"], w["destination"]) for w in queue] == [(requested["id"], "0xabc")]
    response = custodian.post(f"{V1}/custody/withdrawals/{requested['id']}/sent/", {"reference": "0xpaid"})
    assert response.status_code == 201, response.json()
    assert response.json()["state"] == "sent"
    assert usdc(world.account_a) == Decimal(99_950)
    assert custodian.get(f"{V1}/custody/withdrawals/").json()["results"] == []


def test_a_withdrawal_that_would_leave_equity_below_im_is_refused_naming_amount(world):
    # 10 BTC perp: IM = 10 * 60000 * 0.15 (psr) ≈ 90k under portfolio rules; equity 100k.
    trade_book(account=world.account_a, instrument="BTC-PERP", quantity=Decimal(10), price=Decimal(60_000))
    url = f"{V1}/accounts/{world.account_a.pk}/withdrawals/"
    response = world["trader_a"].post(url, {"asset": "USDC", "amount": "50000"})
    assert response.status_code == 400
    assert "initial margin" in response.json()["amount"][0]
    assert usdc(world.account_a) == Decimal(100_000)
    assert not CollateralMovement.objects.filter(account=world.account_a, kind="withdrawal_reserve").exists()
    assert not Withdrawal.objects.exists()

    response = world["trader_a"].post(url, {"asset": "USDC", "amount": "1000"})
    assert response.status_code == 201


def test_a_withdrawal_beyond_the_balance_is_refused(world):
    response = world["trader_a"].post(
        f"{V1}/accounts/{world.account_a.pk}/withdrawals/", {"asset": "USDC", "amount": "100001"}
    )
    assert response.status_code == 400
    assert "amount" in response.json()
    assert not Withdrawal.objects.exists()


def test_an_amount_with_more_decimals_than_the_asset_allows_is_refused(world):
    response = world["trader_a"].post(
        f"{V1}/accounts/{world.account_a.pk}/deposits/", {"asset": "USDC", "amount": "1.0000001"}
    )
    assert response.status_code == 400
    assert "amount" in response.json()
    assert not Deposit.objects.exists()


# --- What-if and simulate -------------------------------------------------------------------------


def test_what_if_returns_before_after_and_a_document_that_replays_after(world):
    response = world["trader_a"].post(
        f"{V1}/accounts/{world.account_a.pk}/what-if/",
        {
            "trades": [
                {"instrument": "BTC-PERP", "quantity": "5"},
                {"instrument": "BTC-70000-C", "quantity": "-2"},
            ],
            "collateral": [{"asset": "USDC", "amount": "-1000"}],
        },
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["before"]["initial_margin"] == 0
    assert body["after"]["initial_margin"] > 0
    (replayed,) = compute_document(body["document"])
    assert replayed["initial_margin"] == pytest.approx(body["after"]["initial_margin"], rel=1e-12)
    assert replayed["equity"] == pytest.approx(body["after"]["equity"], rel=1e-12)
    # Nothing was written.
    assert not Position.objects.exists()
    assert usdc(world.account_a) == Decimal(100_000)


def test_a_closing_what_if_trade_nets_against_the_position(world):
    trade_book(account=world.account_a, instrument="BTC-PERP", quantity=Decimal(4), price=Decimal(59_000))
    response = world["trader_a"].post(
        f"{V1}/accounts/{world.account_a.pk}/what-if/",
        {"trades": [{"instrument": "BTC-PERP", "quantity": "-4", "price": "60000"}]},
    )
    body = response.json()
    assert body["before"]["initial_margin"] > 0
    assert body["after"]["initial_margin"] == 0
    # The realised 4 × 1000 USD moves into cash; equity is unchanged by closing at the index.
    assert body["after"]["equity"] == pytest.approx(body["before"]["equity"], rel=1e-12)
    assert body["document"]["portfolios"][0]["positions"] == []


def test_what_if_errors_name_the_hypothetical_field(world):
    response = world["trader_a"].post(
        f"{V1}/accounts/{world.account_a.pk}/what-if/",
        {"trades": [{"instrument": "BTC-PERP", "quantity": "1"}, {"instrument": "NOPE", "quantity": "1"}]},
    )
    assert response.status_code == 400
    assert "trades[1].instrument" in response.json()


def test_simulate_returns_the_engine_results_of_a_document(world):
    document = (
        world["trader_a"]
        .post(
            f"{V1}/accounts/{world.account_a.pk}/what-if/",
            {"trades": [{"instrument": "BTC-PERP", "quantity": "3"}]},
        )
        .json()["document"]
    )
    response = world["viewer_a"].post(f"{V1}/margin/simulate/", document)
    assert response.status_code == 200
    assert response.json()["results"] == compute_document(document)


def test_simulate_names_the_offending_field_of_a_malformed_document(world):
    document = (
        world["trader_a"]
        .post(
            f"{V1}/accounts/{world.account_a.pk}/what-if/",
            {"trades": [{"instrument": "BTC-PERP", "quantity": "3"}]},
        )
        .json()["document"]
    )
    document["market"]["underlyings"]["BTC"]["price"] = -1
    response = world["viewer_a"].post(f"{V1}/margin/simulate/", document)
    assert response.status_code == 400
    assert any("market.underlyings.BTC" in field for field in response.json())


# --- Prices ---------------------------------------------------------------------------------------


def test_a_price_source_submits_prices_and_vols_and_the_index_lists_them(world):
    feed = world["feed"]
    response = feed.post(
        f"{V1}/price-observations/", {"symbol": "BTC", "price": "61000", "source_time": recent()}
    )
    assert response.status_code == 201, response.json()
    assert response.json()["symbol"] == "BTC"
    response = feed.post(
        f"{V1}/vol-observations/", {"instrument": "BTC-70000-C", "iv": "0.6", "source_time": recent()}
    )
    assert response.status_code == 201, response.json()
    assert Decimal(response.json()["iv"]) == Decimal("0.6")

    listed = world["viewer_a"].get(f"{V1}/index-prices/").json()["results"]
    btc = next(row for row in listed if row["symbol"] == "BTC")
    assert btc["status"] in {"ok", "degraded", "unconfirmed"}
    assert Decimal(btc["price"]) == 61000


def test_a_price_for_an_unknown_symbol_is_refused_naming_symbol(world):
    response = world["feed"].post(
        f"{V1}/price-observations/", {"symbol": "XYZ", "price": "1", "source_time": recent()}
    )
    assert response.status_code == 400
    assert "symbol" in response.json()


def test_a_price_source_submits_a_batch_stored_and_aggregated_in_order_in_one_request(world):
    from clearing.marketdata.models import IndexPrice, PriceObservation

    before = PriceObservation.objects.count()
    batch = {
        "observations": [
            {"symbol": "BTC", "price": "61000", "source_time": recent(3)},
            {"symbol": "ETH", "price": "3050", "source_time": recent(2)},
            {"symbol": "BTC", "price": "61100", "source_time": recent(1)},
        ]
    }
    response = world["feed"].post(f"{V1}/price-observations/", batch)
    assert response.status_code == 201, response.json()
    answered = response.json()["index_prices"]
    assert [row["symbol"] for row in answered] == ["BTC", "ETH", "BTC"]
    assert Decimal(answered[2]["price"]) == Decimal("61100")  # the latest quote of the only source
    assert PriceObservation.objects.count() == before + 3
    assert IndexPrice.objects.filter(pk__in=[row["id"] for row in answered]).count() == 3


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ([{"source_time": "not a time"}], "observations[0].source_time"),  # the serializer's check
        ([{"symbol": "XYZ"}], "observations[0].symbol"),  # the oracle's check, a batch of one
        ([{}, {"price": "-1"}], "observations[1].price"),
        ([{}, {"symbol": "XYZ"}], "observations[1].symbol"),
    ],
)
def test_a_bad_observation_refuses_the_whole_batch_naming_it(world, changes, field):
    from clearing.marketdata.models import PriceObservation

    good = {"symbol": "BTC", "price": "61000", "source_time": recent()}
    observations = [{**good, **change} for change in changes]
    before = PriceObservation.objects.count()
    response = world["feed"].post(f"{V1}/price-observations/", {"observations": observations})
    assert response.status_code == 400
    assert field in response.json(), response.json()
    assert PriceObservation.objects.count() == before


def test_a_price_source_submits_a_batch_of_implied_vols(world):
    from clearing.marketdata.models import VolMark

    batch = {
        "observations": [
            {"instrument": "BTC-70000-C", "iv": "0.61", "source_time": recent(2)},
            {"instrument": "BTC-70000-C", "iv": "0.62", "source_time": recent(1)},
        ]
    }
    response = world["feed"].post(f"{V1}/vol-observations/", batch)
    assert response.status_code == 201, response.json()
    answered = response.json()["observations"]
    assert [Decimal(row["iv"]) for row in answered] == [Decimal("0.61"), Decimal("0.62")]
    assert VolMark.objects.get(instrument__symbol="BTC-70000-C").iv == Decimal("0.62")
    refused = world["feed"].post(
        f"{V1}/vol-observations/",
        {"observations": [{"instrument": "BTC-70000-C", "iv": "9", "source_time": recent()}]},
    )
    assert refused.status_code == 400
    assert "observations[0].iv" in refused.json()


def test_a_batch_over_the_size_limit_is_refused(world):
    from clearing.api.serializers import MAX_BATCH

    one = {"symbol": "BTC", "price": "61000", "source_time": recent()}
    response = world["feed"].post(f"{V1}/price-observations/", {"observations": [one] * (MAX_BATCH + 1)})
    assert response.status_code == 400
    assert response.json() == {"observations": [f"Ensure this field has no more than {MAX_BATCH} elements."]}


# --- Reference data and parameters ----------------------------------------------------------------


def test_reference_data_lists_underlyings_instruments_and_assets(world):
    venue = world["venue"]
    assert [u["symbol"] for u in venue.get(f"{V1}/underlyings/").json()["results"]] == ["BTC", "ETH"]
    instruments = {i["symbol"]: i for i in venue.get(f"{V1}/instruments/").json()["results"]}
    assert instruments["BTC-70000-C"]["right"] == "call"
    assert {a["symbol"] for a in venue.get(f"{V1}/assets/").json()["results"]} == {"USD", "USDC", "BTC"}


def test_the_active_parameter_set_is_returned_in_the_spec_form(world):
    body = world["viewer_a"].get(f"{V1}/risk-parameters/active/").json()
    assert body["status"] == "active"
    assert body["parameters"]["underlyings"]["BTC"]["psr"] == 0.15
    versions = world["viewer_a"].get(f"{V1}/risk-parameters/").json()["results"]
    assert [v["version"] for v in versions] == ["v1"]


def test_page_size_is_capped(world):
    response = world["ops"].get(f"{V1}/instruments/?limit=100000")
    assert response.status_code == 200
    assert response.json()["count"] == 4
    from clearing.api.pagination import Pagination

    assert Pagination().get_limit(type("R", (), {"query_params": {"limit": "100000"}})()) == 500


@pytest.mark.parametrize(
    ("query", "field"),
    [("offset=-1", "offset"), ("offset=x", "offset"), ("limit=0", "limit"), ("limit=1&limit=2", "limit")],
)
def test_a_malformed_limit_or_offset_is_refused_naming_it(world, query, field):
    response = world["ops"].get(f"{V1}/instruments/?{query}")
    assert response.status_code == 400
    assert list(response.json()) == [field]


@pytest.mark.parametrize(
    "body",
    [
        {"asset": "USDC", "amount": "1", "x\x00": 1},  # in a key
        {"asset": "USDC", "amount": "1", "note": "a\x00b"},  # in a value
        {"asset": "USDC", "amount": "1", "notes": [{"deep": ["\x00"]}]},  # nested in lists and objects
    ],
)
def test_a_nul_character_anywhere_in_a_body_is_refused_by_the_parser(world, body):
    # The parser's own refusal (not a field's, nor the unknown-key check's): no text column, nor
    # PostgreSQL's JSONB where outcomes are stored, can hold a NUL.
    response = world["trader_a"].post(f"{V1}/accounts/{world.account_a.pk}/deposits/", body)
    assert response.status_code == 400
    assert "NUL characters" in response.json()["detail"]
    assert not Deposit.objects.exists()

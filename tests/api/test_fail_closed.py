"""Each attack of issue #12 performed against the API and refused with nothing changed: a parameter
set that takes prices below zero, pathological documents, deep and repeated-key bodies, oversize
bodies, unknown routes, numbers that are not plain ASCII, figures that are not finite."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import replace
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts.models import CollateralMovement
from clearing.models import Trade
from riskengine import whatif
from riskengine.core import DocumentError, compute_document
from tests.factories import quotes_fixed
from tests.riskengine.documents import hand_example_document, make_document
from tests.riskengine.pathological import JUNK_NUMBERS, json_value, pathological_documents

V1 = "/api/v1"
PROPERTY = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def raw_post(client, path: str, body: str | bytes):
    return client.http.post(path, body, content_type="application/json")


def nothing_changed() -> tuple[int, int]:
    return Trade.objects.count(), CollateralMovement.objects.count()


# --- A parameter set that takes prices below zero, and unbounded scenarios ------------------------


def test_simulate_refuses_a_psr_of_0_9_naming_the_field(world):
    doc = hand_example_document()
    doc["parameters"]["underlyings"]["BTC"]["psr"] = 0.9
    response = world["viewer_a"].post(f"{V1}/margin/simulate/", doc)
    assert response.status_code == 400
    assert "zero or below" in response.json()["parameters.underlyings.BTC.psr"][0]


@pytest.mark.parametrize("steps", [300000, 51, 0, "4.5"])
def test_simulate_refuses_price_steps_outside_1_to_50_naming_the_field(world, steps):
    doc = hand_example_document()
    doc["parameters"]["price_steps"] = steps
    response = world["viewer_a"].post(f"{V1}/margin/simulate/", doc)
    assert response.status_code == 400
    assert "parameters.price_steps" in response.json()


@pytest.mark.parametrize(
    ("limit", "field"),
    [("positions", "portfolios[0].positions"), ("instruments", "market.instruments"),
     ("underlyings", "parameters.underlyings"), ("extreme_moves", "parameters.underlyings.BTC.extreme")],
)  # fmt: skip
def test_simulate_refuses_a_document_over_its_size_limits_naming_the_field(world, settings, limit, field):
    settings.CLEARING_SIMULATE_LIMITS = {**settings.CLEARING_SIMULATE_LIMITS, limit: 1}
    response = world["viewer_a"].post(f"{V1}/margin/simulate/", hand_example_document())
    assert response.status_code == 400
    assert "too large" in response.json()[field][0]


def test_simulate_refuses_more_portfolios_than_the_limit_naming_the_field(world):
    doc = make_document(*[{"id": f"P{k}", "mode": "cross"} for k in range(1001)])
    response = world["viewer_a"].post(f"{V1}/margin/simulate/", doc)
    assert response.status_code == 400
    assert "portfolios" in response.json()


def test_simulate_answers_422_naming_the_portfolio_whose_figures_would_not_be_finite(world):
    doc = make_document(
        {"id": "FINE", "mode": "cross", "collateral": {"USDC": "1000"}},
        {"id": "HUGE", "mode": "cross", "positions": [
            {"instrument": "BTC-PERP", "quantity": "1e306", "entry_price": "1"}]},
    )  # fmt: skip
    response = world["viewer_a"].post(f"{V1}/margin/simulate/", doc)
    assert response.status_code == 422
    message = response.json()["portfolios[1]"][0]
    assert "'HUGE'" in message
    assert "not be finite" in message


# --- Bodies: depth, repeated keys, size; routes ----------------------------------------------------


@pytest.mark.parametrize(
    "body", ["[" * 1000 + "]" * 1000, "[" * 1000, '{"a":' * 1000 + "1" + "}" * 1000, "[" * 100_000]
)
def test_a_body_nested_deeper_than_400_is_refused_with_400_not_a_recursion_error(world, body):
    before = nothing_changed()
    for path in (f"{V1}/margin/simulate/", f"{V1}/trades/", f"{V1}/accounts/{world.account_a.pk}/deposits/"):
        client = world["venue"] if path.endswith("trades/") else world["trader_a"]
        response = raw_post(client, path, body)
        assert response.status_code == 400, path
        assert "nested deeper than 400" in response.json()["detail"]
    assert nothing_changed() == before


def test_a_repeated_key_is_refused_naming_the_key_and_nothing_changes(world):
    before = nothing_changed()
    response = raw_post(
        world["trader_a"],
        f"{V1}/accounts/{world.account_a.pk}/deposits/",
        '{"asset": "USDC", "amount": "1", "amount": "1000000"}',
    )
    assert response.status_code == 400
    assert "duplicate key 'amount'" in response.json()["detail"]
    assert nothing_changed() == before


def test_a_document_with_a_repeated_key_is_refused_by_simulate(world):
    text = json.dumps(hand_example_document())
    text = text.replace('"mm_ratio": 0.8', '"mm_ratio": 0.8, "mm_ratio": 0.01', 1)
    response = raw_post(world["viewer_a"], f"{V1}/margin/simulate/", text)
    assert response.status_code == 400
    assert "duplicate key 'mm_ratio'" in response.json()["detail"]


def test_a_body_over_the_size_limit_is_answered_with_json_413_and_nothing_changes(world):
    before = nothing_changed()
    padding = " " * 2_700_000  # over Django's 2.5 MB DATA_UPLOAD_MAX_MEMORY_SIZE
    for client, path in ((world["viewer_a"], f"{V1}/margin/simulate/"), (world["venue"], f"{V1}/trades/")):
        response = raw_post(client, path, '{"fills": []' + padding + "}")
        assert response.status_code == 413
        assert response["Content-Type"] == "application/json"
        assert "2,621,440 bytes" in response.json()["detail"]
    assert nothing_changed() == before


def test_the_size_limit_follows_the_setting(world, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    response = world["trader_a"].post(
        f"{V1}/accounts/{world.account_a.pk}/deposits/",
        {"asset": "USDC", "amount": "1", "reference": "x" * 100},
    )
    assert response.status_code == 413
    assert "100 bytes" in response.json()["detail"]


@pytest.mark.parametrize(
    "path", ["/api/v1/nope/", "/api/nope", "/api/v2/accounts/", "/api/v1/accounts/1/nope/"]
)
def test_an_unknown_api_route_is_answered_with_json_404(world, path):
    for response in (
        world["trader_a"].get(path),
        world["anonymous"].get(path),
        world["venue"].post(path, {}),
    ):
        assert response.status_code == 404
        assert response["Content-Type"] == "application/json"
        assert path in response.json()["detail"]


def test_a_signed_in_browser_posting_to_an_unknown_api_route_gets_the_json_404_not_a_csrf_page(world):
    from django.test import Client as Browser

    browser = Browser(enforce_csrf_checks=True)
    browser.force_login(world["trader_a"].user)
    response = browser.post("/api/v1/accounts/null%2Cnull/deposits/", {}, content_type="application/json")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"


def test_an_api_route_without_its_slash_is_redirected_on_get_and_named_on_post(world):
    response = world["trader_a"].get(f"{V1}/accounts")
    assert response.status_code == 301
    assert response["Location"] == f"{V1}/accounts/"
    response = world["venue"].post(f"{V1}/trades", {})
    assert response.status_code == 404
    assert f"'{V1}/trades/'" in response.json()["detail"]


# --- Numbers that are not plain ASCII ------------------------------------------------------------

NOT_PLAIN = ["١٢٣", "１２３", "1_000", " 1 ", "1 ", "²"]


@pytest.mark.parametrize("text", NOT_PLAIN)
def test_numbers_that_are_not_plain_ascii_are_refused_naming_the_field_and_nothing_changes(world, text):
    before = nothing_changed()
    cases = [
        (world["venue"], f"{V1}/trades/",
         {"account": "AAA-01", "instrument": "BTC-PERP", "quantity": text, "price": "60000"}, "quantity"),
        (world["venue"], f"{V1}/trades/",
         {"fills": [{"account": "AAA-01", "instrument": "BTC-PERP", "quantity": "1", "price": text}]},
         "fills[0].price"),
        (world["trader_a"], f"{V1}/accounts/{world.account_a.pk}/deposits/",
         {"asset": "USDC", "amount": text}, "amount"),
        (world["trader_a"], f"{V1}/accounts/{world.account_a.pk}/withdrawals/",
         {"asset": "USDC", "amount": text}, "amount"),
        (world["trader_a"], f"{V1}/accounts/{world.account_a.pk}/what-if/",
         {"trades": [{"instrument": "BTC-PERP", "quantity": text}]}, "trades[0].quantity"),
        (world["trader_a"], f"{V1}/accounts/{world.account_a.pk}/what-if/",
         {"collateral": [{"asset": "USDC", "amount": text}]}, "collateral[0].amount"),
        (world["feed"], f"{V1}/price-observations/",
         {"symbol": "BTC", "price": text, "source_time": quotes_fixed().valuation_time.isoformat()}, "price"),
    ]  # fmt: skip
    for client, path, body, field in cases:
        response = client.post(path, body)
        assert response.status_code == 400, (path, response.json())
        assert "not a plain decimal number" in response.json()[field][0], (path, response.json())
    doc = hand_example_document()
    doc["portfolios"][0]["collateral"]["USDC"] = text
    response = world["viewer_a"].post(f"{V1}/margin/simulate/", doc)
    assert response.status_code == 400
    assert "portfolios[0].collateral.USDC" in response.json()
    assert nothing_changed() == before


def test_plain_numbers_are_still_accepted(world):
    for text in ("250.5", "2e2", "+3"):
        response = world["trader_a"].post(
            f"{V1}/accounts/{world.account_a.pk}/deposits/", {"asset": "USDC", "amount": text}
        )
        assert response.status_code == 201, response.json()
    assert (
        world["trader_a"]
        .post(f"{V1}/accounts/{world.account_a.pk}/deposits/", {"asset": "USDC", "amount": 7})
        .status_code
        == 201
    )


# --- What-if: figures that are not finite are a 422 naming the book and figure, never a 500 ----


def test_what_if_answers_422_naming_the_book_and_figure_when_a_figure_is_not_finite(world, monkeypatch):
    engine = whatif.compute_margin

    def with_nan(margin_input):
        portfolios = margin_input.portfolios
        quantity = np.where(portfolios.position_portfolio == 0, np.nan, portfolios.position_quantity)
        return engine(replace(margin_input, portfolios=replace(portfolios, position_quantity=quantity)))

    monkeypatch.setattr(whatif, "compute_margin", with_nan)
    response = world["trader_a"].post(
        f"{V1}/accounts/{world.account_a.pk}/what-if/",
        {"trades": [{"instrument": "BTC-PERP", "quantity": "1"}]},
    )
    assert response.status_code == 422
    message = response.json()["after"][0]
    assert "not be finite" in message
    assert "initial_margin" in message


def test_what_if_with_an_active_set_that_fails_validation_answers_503_naming_the_field(world):
    from riskengine.models import ParameterSet, ParameterStatus, UnderlyingParameters
    from riskengine.reference import reference_clear

    active = ParameterSet.objects.get(status=ParameterStatus.ACTIVE)
    UnderlyingParameters.objects.filter(parameter_set=active, underlying__symbol="BTC").update(
        psr=Decimal("0.9")
    )
    reference_clear()
    response = world["trader_a"].post(
        f"{V1}/accounts/{world.account_a.pk}/what-if/",
        {"trades": [{"instrument": "BTC-PERP", "quantity": "1"}]},
    )
    reference_clear()
    assert response.status_code == 503
    assert "parameters.underlyings.BTC.psr" in response.json()["detail"]


# --- Property: pathological input is a named refusal, never a server error ---------------------


@PROPERTY
@given(doc=pathological_documents())
def test_simulate_answers_a_pathological_document_with_a_named_refusal_never_a_500(world, doc):
    response = world["viewer_a"].post(f"{V1}/margin/simulate/", doc)
    assert response.status_code in (200, 400, 422), response.content[:500]
    body = response.json()
    if response.status_code == 200:
        assert len(body["results"]) == len(doc["portfolios"])
        assert all(math.isfinite(r["initial_margin"]) for r in body["results"])
    else:
        assert body, "a refusal says why"
        if set(body) != {"detail"}:  # not a body-level refusal (a NUL character, say): fields named
            assert all(isinstance(messages, list) and messages for messages in body.values())
        try:
            compute_document(copy.deepcopy(doc))
        except (DocumentError, TypeError, AttributeError):
            pass  # the engine refuses it too (or the serializer refused its shape first)
        else:
            pytest.fail(f"the API refused a document the engine accepts: {body}")


what_if_number = st.one_of(
    st.sampled_from(JUNK_NUMBERS), st.sampled_from(["1", "-2.5", "1e17", "-1e17"]), json_value
)


@PROPERTY
@given(
    trades=st.lists(
        st.fixed_dictionaries(
            {"instrument": st.sampled_from(["BTC-PERP", "BTC-FUT", "BTC-70000-C", "ETH-PERP", "NOPE", 1]),
             "quantity": what_if_number},
            optional={"price": what_if_number, "extra": json_value},
        ),
        max_size=3,
    ),
    collateral=st.lists(
        st.fixed_dictionaries({"asset": st.sampled_from(["USDC", "USD", "BTC", "DOGE", None]),
                               "amount": what_if_number}),
        max_size=2,
    ),
)  # fmt: skip
def test_what_if_answers_pathological_input_with_a_named_refusal_never_a_500(world, trades, collateral):
    before = nothing_changed()
    response = world["trader_a"].post(
        f"{V1}/accounts/{world.account_a.pk}/what-if/", {"trades": trades, "collateral": collateral}
    )
    assert response.status_code in (200, 400, 422), response.content[:500]
    if response.status_code != 200:
        assert response.json()
    assert nothing_changed() == before

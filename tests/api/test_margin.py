"""Swept margin through the API: current margin with its replay document, history, calls,
liquidations."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.services import collateral_deposit
from riskengine.core import compute_document
from riskengine.sweeps.foresight import foresight_accounts_grade
from riskengine.sweeps.models import AccountMargin
from riskengine.sweeps.selectors import margin_snapshot_document
from riskengine.sweeps.services import sweep_accounts_run
from tests import factories
from tests.factories import quotes_fixed

V1 = "/api/v1"


def test_the_current_margin_replays_from_its_document(world, swept):
    body = world["viewer_a"].get(f"{V1}/accounts/{world.account_a.pk}/margin/").json()
    assert body["snapshot"]["status"] == "margin_call"
    (replayed,) = compute_document(body["document"])
    for figure in ("equity", "initial_margin", "maintenance_margin", "excess"):
        assert replayed[figure] == pytest.approx(body["margin"][figure], rel=1e-12)
    assert replayed["components"] == pytest.approx(body["margin"]["components"])
    assert replayed["comparison"] == pytest.approx(body["margin"]["comparison"])
    assert [u["underlying"] for u in body["margin"]["by_underlying"]] == ["BTC"]


def test_accounts_carry_their_current_margin(world, swept):
    accounts = {a["code"]: a for a in world["trader_a"].get(f"{V1}/accounts/").json()["results"]}
    assert accounts["AAA-01"]["margin"]["status"] == "margin_call"
    assert accounts["AAA-01"]["margin"]["initial_margin"] > accounts["AAA-01"]["margin"]["equity"]
    assert accounts["AAA-02"]["margin"] is None  # never swept


def test_the_current_margin_is_served_in_two_narrow_queries_once_its_answer_is_built(world, swept):
    current = AccountMargin.objects.select_related("snapshot").get(account=world.account_a)
    foresight_accounts_grade(sweep_id=current.sweep_id, account_ids=[world.account_a.pk])
    url = f"{V1}/accounts/{world.account_a.pk}/margin/"
    world["viewer_a"].get(url)  # the token's last use is written, the answer built and kept

    with CaptureQueriesContext(connection) as queries:
        body = world["viewer_a"].get(url).json()

    # The token; the account's version (its current snapshot's and stored foresight's ids and
    # times), which names the answer built by the first read: no snapshot or sweep is read again.
    assert len(queries) == 2
    assert "sweeps_marginsnapshot" not in queries[1]["sql"]
    assert "sweeps_sweep" not in queries[1]["sql"]
    assert body["foresight"]["level"] == "margin_call"
    assert body["document"]["portfolios"][0]["positions"][0]["instrument"] == "BTC-PERP"
    assert body["document"] == json.loads(json.dumps(margin_snapshot_document(snapshot=current.snapshot)))


def test_the_current_margin_after_a_newer_sweep_is_the_newer_one(world, swept):
    url = f"{V1}/accounts/{world.account_a.pk}/margin/"
    before = world["viewer_a"].get(url).json()
    collateral_deposit(account=world.account_a, asset=world.venue.usdc, amount=Decimal(50_000))
    sweep_accounts_run(account_ids=[world.account_a.pk], cause="deposit", quotes=quotes_fixed())

    after = world["viewer_a"].get(url).json()

    current = AccountMargin.objects.get(account=world.account_a)
    assert after["snapshot"]["id"] == current.snapshot_id != before["snapshot"]["id"]
    assert after["snapshot"]["sweep_id"] == current.sweep_id
    assert after["margin"]["equity"] == pytest.approx(before["margin"]["equity"] + 50_000)


def test_an_account_never_swept_has_no_current_margin(world, swept):
    assert world["trader_a"].get(f"{V1}/accounts/{world.account_a2.pk}/margin/").status_code == 404


def test_margin_history_is_paginated_newest_first(world, swept):
    sweep_accounts_run(account_ids=[world.account_a.pk], cause="again", quotes=quotes_fixed())
    page = world["trader_a"].get(f"{V1}/accounts/{world.account_a.pk}/margin-history/?limit=1").json()
    assert page["count"] == 2
    assert len(page["results"]) == 1
    assert page["next"]


def test_margin_calls_and_liquidations_are_listed_with_their_events(world, swept):
    calls = world["trader_a"].get(f"{V1}/margin-calls/").json()["results"]
    assert [(c["account"], c["status"]) for c in calls] == [("AAA-01", "open")]
    assert calls[0]["events"][0]["to_status"] == "open"
    assert float(calls[0]["amount"]) > 0
    liquidations = world["ops"].get(f"{V1}/liquidations/").json()["results"]
    assert [liq["account"] for liq in liquidations] == ["AAA-01"]
    assert world["trader_b"].get(f"{V1}/liquidations/").json()["results"] == []


def _accounts_list_queries(client) -> tuple[int, int]:
    """(queries, accounts listed) of one ``GET /accounts/``."""
    with CaptureQueriesContext(connection) as queries:
        body = client.get(f"{V1}/accounts/?limit=100").json()
    return len(queries), len(body["results"])


def test_the_accounts_list_does_not_grow_queries_with_accounts(world, swept):
    _accounts_list_queries(world["ops"])  # the first request also fills per-process caches
    few_queries, few = _accounts_list_queries(world["ops"])
    more = [factories.account_make(member=world.account_a.member, code=f"AAA-{n:02d}") for n in range(10, 30)]
    for account in more:
        collateral_deposit(account=account, asset=world.venue.usdc, amount=Decimal(1_000))
    sweep_accounts_run(account_ids=[a.pk for a in more], cause="more accounts", quotes=quotes_fixed())
    many_queries, many = _accounts_list_queries(world["ops"])

    assert many == few + len(more)
    assert many_queries == few_queries <= 6

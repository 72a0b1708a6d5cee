"""``GET /api/v1/accounts/{id}/backtest/``: a member's own account's backtest in the venue's
latest validation run (coverage, exceptions with their underlying, the IM and loss series)."""

from decimal import Decimal

import pytest

from accounts.trading import trade_book
from riskengine.validation.models import AccountBacktest, AccountStress, ValidationKind
from riskengine.validation.services import validation_run_complete, validation_runs_start
from tests.factories import price_history_load, quotes_fixed

V1 = "/api/v1"


@pytest.fixture
def validated(world, monkeypatch):
    """Member A's first account long 2 BTC, member B's long 1 ETH; a nightly run of both modes."""
    price_history_load()
    monkeypatch.setattr("riskengine.validation.services.quotes_current", quotes_fixed)
    trade_book(account=world.account_a, instrument="BTC-PERP", quantity=Decimal(2), price=Decimal(60_000))
    trade_book(account=world.account_b, instrument="ETH-PERP", quantity=Decimal(1), price=Decimal(3_000))
    runs = validation_runs_start(kind=ValidationKind.NIGHTLY, cause="test", enqueue=False)
    return {run.mode: validation_run_complete(run=run) for run in runs}


def test_a_member_reads_its_accounts_coverage_exceptions_and_series(world, validated):
    response = world["viewer_a"].get(f"{V1}/accounts/{world.account_a.pk}/backtest/")

    assert response.status_code == 200
    body = response.json()
    row = AccountBacktest.objects.get(run=validated["fixed"], account=world.account_a)
    assert body["run"]["id"] == validated["fixed"].pk
    assert body["run"]["mode"] == "fixed"
    assert (body["account"], body["observations"], body["exceptions"]) == (
        "AAA-01",
        row.observations,
        row.exceptions,
    )
    assert body["coverage"] == row.coverage
    assert body["traffic_light"] == row.light
    assert body["exception_days"] == row.exception_days
    assert body["exceptions"] > 0
    assert {e["underlying"] for e in body["exception_days"]} <= {"BTC", "collateral"}
    series = body["series"]
    assert len(series["days"]) == len(series["initial_margin"]) == len(series["loss"]) == row.observations
    assert series["days"][0] == body["run"]["start"]
    assert series["days"][-1] == body["run"]["end"]
    for exception in body["exception_days"]:
        k = series["days"].index(exception["day"])
        assert series["loss"][k] == pytest.approx(exception["loss"], rel=1e-6)
        assert series["loss"][k] > series["initial_margin"][k]
    stress = AccountStress.objects.get(run=validated["fixed"], account=world.account_a)
    assert body["stress"]["worst_scenario"] == stress.worst_scenario


def test_the_calibrated_mode_is_asked_for_by_name_and_nothing_else_is_accepted(world, validated):
    client = world["trader_a"]

    calibrated = client.get(f"{V1}/accounts/{world.account_a.pk}/backtest/?mode=calibrated").json()
    refused = client.get(f"{V1}/accounts/{world.account_a.pk}/backtest/?mode=hourly")

    assert calibrated["run"]["id"] == validated["calibrated"].pk
    assert refused.status_code == 400
    assert "mode" in refused.json()


def test_another_members_account_is_not_found(world, validated):
    response = world["trader_b"].get(f"{V1}/accounts/{world.account_a.pk}/backtest/")

    assert response.status_code == 404
    assert "AAA" not in response.content.decode()


def test_an_account_without_a_position_or_a_venue_without_a_run_is_not_found(world, monkeypatch):
    assert world["trader_a"].get(f"{V1}/accounts/{world.account_a.pk}/backtest/").status_code == 404

    price_history_load()
    monkeypatch.setattr("riskengine.validation.services.quotes_current", quotes_fixed)
    for run in validation_runs_start(kind=ValidationKind.NIGHTLY, cause="test", enqueue=False):
        validation_run_complete(run=run)
    response = world["trader_a"].get(f"{V1}/accounts/{world.account_a2.pk}/backtest/")

    assert response.status_code == 404
    assert "held no position" in response.json()["detail"]

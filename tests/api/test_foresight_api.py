"""Liquidation foresight in ``GET accounts/{id}/margin/``: the stored result, computed for the
answer when missing, and only ever the caller's own member's."""

from __future__ import annotations

from datetime import datetime, timedelta
from unittest import mock

from riskengine.sweeps import foresight
from riskengine.sweeps.foresight import foresight_accounts_grade
from riskengine.sweeps.models import AccountForesight, AccountMargin

V1 = "/api/v1"
SHAPE = {"level", "computed_at", "horizon_days", "by_underlying", "joint", "probability", "lookahead"}


def test_the_margin_carries_the_stored_foresight(world, swept):
    sweep_id = AccountMargin.objects.get(account=world.account_a).sweep_id
    foresight_accounts_grade(sweep_id=sweep_id, account_ids=[world.account_a.pk])
    stored = AccountForesight.objects.get(account=world.account_a)

    body = world["viewer_a"].get(f"{V1}/accounts/{world.account_a.pk}/margin/").json()["foresight"]

    assert set(body) == SHAPE
    assert body["level"] == "margin_call" == stored.level  # the engine's call, never softened
    (btc,) = body["by_underlying"]
    assert btc["underlying"] == "BTC"
    assert set(btc["down"]) == {"move", "price", "sigmas"}
    assert btc["down"]["move"] < 0
    assert btc["up"] is None
    assert set(body["joint"]) == {"down", "up"}
    assert body["joint"]["down"]["move"] == btc["down"]["move"]
    assert set(body["probability"]) == {"value", "model", "horizon_days"}
    assert body["probability"]["model"] == "ewma-0.94"
    assert body["lookahead"]["reason"] == "tomorrow"
    assert body["lookahead"]["im"] == stored.lookahead_im
    assert body["lookahead"]["excess"] < 0  # equity below the initial margin


def test_a_missing_foresight_is_computed_for_the_answer_and_not_stored(world, swept):
    body = world["trader_a"].get(f"{V1}/accounts/{world.account_a.pk}/margin/").json()["foresight"]

    assert body["level"] == "margin_call"
    # No daily closes in this venue's history: no volatility forecast, no probability (fail closed).
    assert body["probability"]["value"] is None
    assert body["by_underlying"][0]["down"]["sigmas"] is None
    assert not AccountForesight.objects.exists()


def test_a_foresight_graded_after_a_read_is_served_at_once(world, swept):
    url = f"{V1}/accounts/{world.account_a.pk}/margin/"
    on_demand = world["viewer_a"].get(url).json()["foresight"]
    sweep_id = AccountMargin.objects.get(account=world.account_a).sweep_id
    foresight_accounts_grade(sweep_id=sweep_id, account_ids=[world.account_a.pk])
    stored = AccountForesight.objects.get(account=world.account_a)

    body = world["viewer_a"].get(url).json()["foresight"]

    assert datetime.fromisoformat(body["computed_at"]) == stored.computed_at
    assert datetime.fromisoformat(on_demand["computed_at"]) < stored.computed_at


def test_an_answer_read_by_its_member_is_never_served_to_another(world, swept):
    url = f"{V1}/accounts/{world.account_a.pk}/margin/"
    assert world["trader_a"].get(url).status_code == 200  # built and kept by this process

    response = world["trader_b"].get(url)

    assert response.status_code == 404
    assert world.account_a.code not in response.content.decode()


def test_a_member_never_sees_another_members_foresight(world, swept):
    sweep_id = AccountMargin.objects.get(account=world.account_a).sweep_id
    foresight_accounts_grade(sweep_id=sweep_id, account_ids=[world.account_a.pk])

    response = world["trader_b"].get(f"{V1}/accounts/{world.account_a.pk}/margin/")

    assert response.status_code == 404
    assert "foresight" not in response.content.decode()
    own = world["trader_b"].get(f"{V1}/accounts/{world.account_b.pk}/margin/").json()
    assert own["foresight"]["level"] in {"ok", "watch", "warning"}


def test_a_stored_foresight_no_recent_full_sweep_refreshed_is_not_shown_as_todays(world, swept):
    # Graded long ago, then the account rose above the level below which full sweeps grade: its row
    # is old, and its liquidation prices are no longer today's.
    sweep_id = AccountMargin.objects.get(account=world.account_a).sweep_id
    foresight_accounts_grade(sweep_id=sweep_id, account_ids=[world.account_a.pk])
    stale = AccountForesight.objects.get(account=world.account_a)
    margin = AccountMargin.objects.get(account=world.account_a)
    interval = margin.snapshot.parameter_set.sweep_interval_seconds
    made_up = {"underlying": "BTC", "down": {"move": -0.5, "price": 1.0, "sigmas": 9.0}, "up": None}
    AccountForesight.objects.filter(pk=stale.pk).update(
        valued_at=stale.valued_at - timedelta(seconds=2 * interval + 1), by_underlying=[made_up]
    )

    body = world["trader_a"].get(f"{V1}/accounts/{world.account_a.pk}/margin/").json()["foresight"]

    assert body["by_underlying"][0]["down"]["price"] != 1.0
    assert datetime.fromisoformat(body["computed_at"]) > stale.computed_at
    fresh = world["trader_a"].get(f"{V1}/accounts/{world.account_a.pk}/margin/").json()["foresight"]
    assert fresh == body


def test_a_snapshots_foresight_is_computed_once_however_often_it_is_read(world, swept):
    compute_now = foresight.foresight_on_demand
    with mock.patch.object(foresight, "foresight_on_demand", wraps=compute_now) as compute:
        answers = [
            world["trader_a"].get(f"{V1}/accounts/{world.account_a.pk}/margin/").json()["foresight"]
            for _ in range(3)
        ]

    assert compute.call_count == 1
    assert answers[0] == answers[1] == answers[2]

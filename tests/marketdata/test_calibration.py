"""Calibration: EWMA vols and correlations from the index history, psr per the methodology
(section 6), a repaired correlation matrix when needed, and a proposal that is never applied."""

from __future__ import annotations

import itertools
import math
from datetime import date

import numpy as np
import pytest
from django.core.management import call_command

from clearing.history import daily_history
from riskengine.calibration import calibration_compute, calibration_propose
from riskengine.core import check_correlation
from riskengine.models import ParameterSet
from riskengine.selectors import parameter_set_active
from riskengine.tasks import calibrate
from tests.marketdata.history import history_venue_make

AS_OF = date(2023, 8, 29)


@pytest.fixture
def history_venue(db):
    return history_venue_make()


def ewma_vol_by_hand(symbol: str, until: date) -> float:
    """An independent, plain-Python RiskMetrics EWMA over the shipped CSV (λ = 0.94)."""
    bars = [b for b in daily_history(symbol) if b.day <= until]
    returns = [
        math.log(float(b1.close) / float(b0.close))
        for b0, b1 in itertools.pairwise(bars)
        if (b1.day - b0.day).days == 1
    ]
    variance = sum(r * r for r in returns[:30]) / 30
    for r in returns:
        variance = 0.94 * variance + 0.06 * r * r
    return math.sqrt(variance)


def test_calibration_proposes_psr_from_the_ewma_vol_of_real_daily_returns(history_venue):
    active = parameter_set_active()
    proposed = calibration_propose(as_of=AS_OF)

    assert proposed.status == "proposed"
    assert proposed.origin == "calibration"
    assert proposed.based_on == active
    assert parameter_set_active() == active  # never applied automatically
    form = ParameterSet.objects.get(pk=proposed.pk).to_parameters_form()
    for symbol in ("BTC", "ETH", "SOL"):
        expected = max(0.10, 2.326 * ewma_vol_by_hand(symbol, AS_OF) * math.sqrt(2) * 1.25)
        assert form["underlyings"][symbol]["psr"] == pytest.approx(expected, abs=1e-6)
        assert f"{symbol}: σ" in proposed.reason
    # Everything but psr and the correlation is carried over from the active set.
    before = active.to_parameters_form()
    assert form["underlyings"]["BTC"]["imf"] == before["underlyings"]["BTC"]["imf"]
    assert form["assets"] == before["assets"]
    rho = check_correlation(form["correlation"]["matrix"])
    assert form["correlation"]["underlyings"] == ["BTC", "ETH", "SOL"]
    assert 0.5 < rho[0, 1] < 1.0  # BTC and ETH move together


def test_the_ftx_week_raises_the_proposed_psr_of_sol(history_venue):
    before = calibration_propose(as_of=date(2022, 11, 5)).to_parameters_form()["underlyings"]["SOL"]["psr"]
    after = calibration_propose(as_of=date(2022, 11, 12)).to_parameters_form()["underlyings"]["SOL"]["psr"]
    assert after > before * 1.5
    assert ParameterSet.objects.filter(status="proposed", origin="calibration").count() == 2


def test_an_inconsistent_correlation_matrix_is_repaired_to_the_nearest_valid_one():
    # BTC and ETH have history (estimated correlation near 0.9); SOL has too little, so it keeps
    # its current correlations, which contradict the estimate: +0.9 with BTC but -0.9 with ETH.
    rng = np.random.default_rng(7)
    common = rng.normal(0, 0.03, 200)
    days = [date.fromordinal(date(2022, 1, 1).toordinal() + i) for i in range(201)]

    def path(returns):
        return [
            (d, float(p))
            for d, p in zip(days, 100 * np.exp(np.concatenate([[0], np.cumsum(returns)])), strict=True)
        ]

    form = {
        "underlyings": {"BTC": {"psr": 0.15}, "ETH": {"psr": 0.18}, "SOL": {"psr": 0.25}},
        "correlation": {
            "underlyings": ["BTC", "ETH", "SOL"],
            "matrix": [[1.0, 0.0, 0.9], [0.0, 1.0, -0.9], [0.9, -0.9, 1.0]],
        },
    }
    closes = {
        "BTC": path(common + rng.normal(0, 0.01, 200)),
        "ETH": path(common + rng.normal(0, 0.01, 200)),
        "SOL": path(rng.normal(0, 0.05, 200))[:20],
    }
    result = calibration_compute(form=form, closes=closes, as_of=days[-1])
    assert result.repaired
    assert result.kept == ["SOL"]
    assert result.psr["SOL"] == 0.25
    rho = check_correlation(result.correlation)
    # The nearest valid matrix keeps every sign; the contradiction is shared out between the entries.
    assert rho[0, 1] > 0.3
    assert rho[0, 2] > 0.3
    assert rho[1, 2] < -0.3
    assert "repaired to the nearest valid matrix" in result.summary()


def test_calibration_runs_from_the_command_and_the_celery_task(history_venue, capsys):
    call_command("calibrate", "--as-of", "2023-08-29")
    assert "proposed" in capsys.readouterr().out
    pk = calibrate.apply().get()
    assert ParameterSet.objects.get(pk=pk).status == "proposed"
    assert ParameterSet.objects.filter(origin="calibration").count() == 2

"""Calibration of the price scan ranges and the correlation matrix (methodology section 6).

From the daily closes (``IndexClose``: the real history loaded by ``seed_demo``, then the oracle's
own closes), per underlying:

- daily log returns, only between consecutive calendar days (a gap in the history — e.g. between
  the shipped history and today — is never turned into one giant return);
- EWMA variance (RiskMetrics, λ = 0.94): ``σ²_t = λ·σ²_{t−1} + (1 − λ)·r_t²``, started from the mean
  of the first ``SEED_RETURNS`` squared returns;
- ``psr = max(psr_floor, z·σ̂·√mpor_days·(1 + apc_buffer))`` with ``z = 2.326``, ``mpor_days = 2``,
  ``apc_buffer = 0.25``; ``psr_floor`` is ``PSR_FLOOR`` (10 %), a venue constant: using the
  current psr as the floor would make psr a ratchet that never comes down; and capped at
  ``PSR_CAP_SHARE`` (99 %) of the methodology's bound ``1 / max(1, |multiple|)`` (v1.1 section 5: no
  scenario may take a price to zero or below; with the default ±2 extremes psr ≤ 0.495, an extreme
  move of −99 %). A capped psr is named in the proposal's reason with its uncapped value: the
  approver sees that the history asks for more than the scan can express (the FTX week for SOL);
- EWMA covariances on the days every underlying has a return, the same λ, turned into
  correlations. An underlying with fewer than ``MIN_RETURNS`` returns keeps its current psr and its
  current correlations; the matrix is then repaired to the nearest valid one (Higham) if it is not
  a valid correlation matrix — as it is whenever the rounding or the mix breaks it.

The pure part (the constants, the EWMA, psr from a volatility and its cap) is
``riskengine.core.calibration``, which the backtest's ``calibrated`` mode shares.

The result is a *proposed* parameter set (``origin="calibration"``) based on the active one; it is
never activated here: it goes through the maker-checker approval like any change.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import numpy as np
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from clearing.marketdata.selectors import index_closes
from riskengine.core import DocumentError, check_correlation, nearest_correlation
from riskengine.core.calibration import (
    LAMBDA,
    MIN_RETURNS,
    PSR_DECIMALS,
    SEED_RETURNS,
    ewma_volatility,
    psr_cap,
    psr_from_vol,
)
from riskengine.core.params import DEFAULT_EXTREME
from riskengine.models import ParameterSet
from riskengine.selectors import parameter_set_active, parameter_set_with_rows
from riskengine.services import parameter_set_create, parameter_set_propose

CORRELATION_DECIMALS = 6


@dataclass(frozen=True)
class Calibration:
    as_of: date
    vols: dict[str, float]  # daily EWMA volatility per calibrated underlying
    returns_used: dict[str, int]
    psr: dict[str, float]  # every underlying of the form (uncalibrated ones keep theirs)
    underlyings: list[str]
    correlation: list[list[float]]
    repaired: bool
    kept: list[str] = field(default_factory=list)  # underlyings without enough history
    capped: dict[str, float] = field(default_factory=dict)  # underlying → uncapped psr

    def summary(self) -> str:
        parts = [
            f"{u}: σ {self.vols[u]:.4f}/day over {self.returns_used[u]} returns → psr {self.psr[u]:.4f}"
            for u in self.underlyings
            if u in self.vols
        ]
        parts += [
            f"{u}: psr {self.capped[u]:.4f} capped at {self.psr[u]:.4f} (psr·max(1, |multiple|) < 1)"
            for u in self.capped
        ]
        parts += [f"{u}: too little history, psr kept at {self.psr[u]:.4f}" for u in self.kept]
        repaired = "repaired to the nearest valid matrix (Higham)" if self.repaired else "valid as estimated"
        return (
            f"EWMA (λ={LAMBDA}) calibration on daily closes up to {self.as_of}: "
            + "; ".join(parts)
            + f". Correlation {repaired}."
        )


def daily_log_returns(closes: list[tuple[date, float]]) -> dict[date, float]:
    """``day → ln(close_day / close_previous_day)`` for consecutive calendar days only."""
    returns = {}
    for (day0, p0), (day1, p1) in itertools.pairwise(closes):
        if day1 - day0 == timedelta(days=1):
            returns[day1] = math.log(p1 / p0)
    return returns


def ewma_correlation(returns: np.ndarray, *, lam: float = LAMBDA) -> np.ndarray:
    """EWMA correlation ``(k, k)`` of ``returns`` ``(n, k)`` (one column per underlying)."""
    seed = returns[:SEED_RETURNS]
    covariance = seed.T @ seed / len(seed)
    for r in returns:
        covariance = lam * covariance + (1 - lam) * np.outer(r, r)
    scale = 1.0 / np.sqrt(np.diag(covariance))
    return covariance * scale[:, None] * scale[None, :]


def calibration_compute(
    *, form: dict, closes: dict[str, list[tuple[date, float]]], as_of: date
) -> Calibration:
    """Pure: the calibration of the ``parameters`` form ``form`` from ``closes`` (symbol → days)."""
    names = list(form["correlation"]["underlyings"])
    current = np.asarray(form["correlation"]["matrix"], dtype=np.float64)
    psr = {u: float(values["psr"]) for u, values in form["underlyings"].items()}
    returns = {u: daily_log_returns(closes.get(u, [])) for u in names}
    calibrated = [u for u in names if len(returns[u]) >= MIN_RETURNS]
    kept = [u for u in form["underlyings"] if u not in calibrated]
    vols = {}
    capped = {}
    for u in calibrated:
        series = np.array([returns[u][d] for d in sorted(returns[u])])
        vols[u] = ewma_volatility(series)
        psr[u] = round(float(psr_from_vol(vols[u])), PSR_DECIMALS)
        extreme = form["underlyings"][u].get("extreme", DEFAULT_EXTREME)
        cap = psr_cap(e["multiple"] for e in extreme)
        if psr[u] > cap:
            capped[u], psr[u] = psr[u], cap
    matrix = current.copy()
    common = sorted(set.intersection(*(set(returns[u]) for u in calibrated))) if calibrated else []
    if len(calibrated) >= 2 and len(common) >= MIN_RETURNS:
        index = [names.index(u) for u in calibrated]
        estimated = ewma_correlation(np.array([[returns[u][d] for u in calibrated] for d in common]))
        matrix[np.ix_(index, index)] = estimated
    matrix = np.round(matrix, CORRELATION_DECIMALS)
    repaired = False
    try:
        check_correlation(matrix)
    except DocumentError:
        matrix = np.round(nearest_correlation(matrix), CORRELATION_DECIMALS)
        repaired = True
        try:
            check_correlation(matrix)
        except DocumentError:
            # Rounding can push the smallest eigenvalue a hair below zero: keep full precision.
            matrix = nearest_correlation(matrix)
    return Calibration(
        as_of=as_of,
        vols=vols,
        returns_used={u: len(returns[u]) for u in calibrated},
        psr=psr,
        underlyings=names,
        correlation=matrix.tolist(),
        repaired=repaired,
        kept=kept,
        capped=capped,
    )


# --- Proposal ------------------------------------------------------------------------------------


def _version(as_of: date) -> str:
    base = f"calib-{as_of:%Y-%m-%d}"
    taken = set(ParameterSet.objects.filter(version__startswith=base).values_list("version", flat=True))
    number = 1
    while f"{base}.{number}" in taken:
        number += 1
    return f"{base}.{number}"


@transaction.atomic
def calibration_propose(*, as_of: date | datetime | None = None) -> ParameterSet:
    """Calibrate psr and correlations from the stored daily closes up to ``as_of`` (default today)
    and propose the result as a new parameter set based on the active one. Never activates it."""
    if isinstance(as_of, datetime):
        as_of = as_of.date()
    as_of = as_of or timezone.now().date()
    active = parameter_set_active()
    # A fresh form, not the shared cached one: this function changes it into the proposal.
    form = parameter_set_with_rows(pk=active.pk).to_parameters_form()
    closes = index_closes(symbols=list(form["underlyings"]), until=as_of)
    calibration = calibration_compute(form=form, closes=closes, as_of=as_of)
    if not calibration.vols:
        raise ValidationError({"as_of": f"No underlying has {MIN_RETURNS} daily returns up to {as_of}."})
    form["version"] = _version(as_of)
    for symbol, value in calibration.psr.items():
        form["underlyings"][symbol]["psr"] = value
    form["correlation"] = {"underlyings": calibration.underlyings, "matrix": calibration.correlation}
    reason = calibration.summary()
    created = parameter_set_create(
        form=form, created_by=None, origin="calibration", reason=reason, based_on=active
    )
    return parameter_set_propose(parameter_set=created, proposed_by=None, reason=reason)

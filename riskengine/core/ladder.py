"""The warning ladder (issue #17 item 4): one vocabulary for how close an account is to liquidation.

Levels, in order: ``ok``, ``watch``, ``warning``, ``margin_call``, ``liquidation`` (codes 0–4,
``LEVELS``). The last two are the engine's own status and are never softened: an account the
engine puts in ``margin_call`` or ``liquidation`` is at that level whatever else holds, and a
``healthy`` one is at most ``warning``. For a healthy account the level comes from two governed
measures:

- the **distance in forecast daily standard deviations**: a move ``x`` of an underlying of
  annualised forecast volatility ``σ`` is ``|ln(1 + x)| / (σ·√(1/365))`` daily standard deviations
  (``distance_sigmas``); the account's distance is its smallest over every underlying and
  direction and the joint move (``nearest_distances``);
- **equity / MM**.

``warning`` when the distance is below ``warning_sigmas`` or the ratio below ``warning_ratio``;
``watch`` when below ``watch_sigmas`` or ``watch_ratio``; ``ok`` otherwise.

Hysteresis: a level reached before (``previous``) is left only when the account is *clearly* past
its thresholds: distance at least ``sigmas·(1 + hysteresis)`` and ratio at least
``ratio·(1 + hysteresis)``; an account just past them stays where it was, so a price hovering at a
threshold does not flap the level (and the member's toasts) every sweep.

Fail closed: a figure that is not a number (NaN, ±inf equity or MM, a NaN distance: a missing or
non-positive volatility), or prices that are not trusted, give at least ``warning``; never ``ok``.
A distance of ``+inf`` means that no move within the section 9 range liquidates the account (or
that it holds nothing that moves): the distance then says nothing against ``ok``.

Pure numpy; every array ``(n,)`` over accounts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .margin import STATUSES

LEVELS = ("ok", "watch", "warning", "margin_call", "liquidation")
OK, WATCH, WARNING, MARGIN_CALL, LIQUIDATION = range(len(LEVELS))
NO_LEVEL = -1  # ``previous`` of an account never graded
_STATUS_MARGIN_CALL = STATUSES.index("margin_call")
_STATUS_LIQUIDATION = STATUSES.index("liquidation")
DAY = 1.0 / 365.0  # one calendar day in years (ACT/365, as every time of the methodology)


@dataclass(frozen=True)
class LadderThresholds:
    """Governed thresholds (parameter set): ``watch_sigmas > warning_sigmas > 0`` daily standard
    deviations, ``watch_ratio > warning_ratio > 1`` (equity / MM), ``hysteresis`` in ``[0, 1)``
    (a fraction of each threshold)."""

    watch_sigmas: float = 3.0
    warning_sigmas: float = 1.5
    watch_ratio: float = 3.0
    warning_ratio: float = 2.2
    hysteresis: float = 0.1

    def __post_init__(self) -> None:
        values = (self.watch_sigmas, self.warning_sigmas, self.watch_ratio, self.warning_ratio)
        if not all(math.isfinite(v) for v in (*values, self.hysteresis)):
            raise ValueError("ladder thresholds must be finite numbers")
        if not self.watch_sigmas > self.warning_sigmas > 0:
            raise ValueError("ladder thresholds: need watch_sigmas > warning_sigmas > 0")
        if not self.watch_ratio > self.warning_ratio > 1:
            raise ValueError("ladder thresholds: need watch_ratio > warning_ratio > 1")
        if not 0 <= self.hysteresis < 1:
            raise ValueError("ladder thresholds: need 0 <= hysteresis < 1")


def distance_sigmas(move: np.ndarray, vol: np.ndarray) -> np.ndarray:
    """``|ln(1 + x)| / (σ·√(1/365))`` daily standard deviations for moves ``x`` ``(n,)`` (fractions;
    NaN = no move in range → ``+inf``) and annualised vols ``σ`` ``(n,)``; NaN where the vol is
    missing, not finite or not positive (fail closed)."""
    move = np.asarray(move, dtype=np.float64)
    vol = np.asarray(vol, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        sigmas = np.abs(np.log1p(move)) / (vol * math.sqrt(DAY))
    sigmas = np.where(np.isnan(move), np.inf, sigmas)
    return np.where(np.isfinite(vol) & (vol > 0.0), sigmas, np.nan)


@dataclass(frozen=True, eq=False)
class Nearest:
    """Per account ``(n_port,)``: ``sigmas`` the smallest distance (daily standard deviations; NaN
    when a vol it needs is missing; +inf when nothing in range), ``driver`` the underlying index
    of the nearest single-underlying distance (−1 when the account has none in range),
    ``joint`` whether the joint (market-wide) move is strictly the nearest. Per pair
    ``(n_pairs,)``: ``down_sigmas``, ``up_sigmas``."""

    sigmas: np.ndarray
    driver: np.ndarray
    joint: np.ndarray
    down_sigmas: np.ndarray
    up_sigmas: np.ndarray


def nearest_distances(
    *,
    pair_indptr: np.ndarray,
    pair_underlying: np.ndarray,
    down: np.ndarray,
    up: np.ndarray,
    joint_down: np.ndarray,
    joint_up: np.ndarray,
    vols: np.ndarray,
) -> Nearest:
    """The nearest distance of each account, in daily standard deviations, from the section 9
    distances (``riskengine.core.foresight.Distances``: per pair ``down``, ``up``; per account
    ``joint_down``, ``joint_up``; NaN = none in range) and annualised ``vols`` ``(n_und,)``. A
    joint move is measured with the largest vol among the account's underlyings (the fewest
    standard deviations: the cautious reading). A NaN vol of an underlying the account holds makes
    its distance NaN (fail closed)."""
    pair_indptr = np.asarray(pair_indptr, dtype=np.int64)
    n_port = pair_indptr.size - 1
    counts = np.diff(pair_indptr)
    pair_vol = np.asarray(vols, dtype=np.float64)[pair_underlying]
    down_sigmas = distance_sigmas(down, pair_vol)
    up_sigmas = distance_sigmas(up, pair_vol)
    pair_sigmas = np.minimum(down_sigmas, up_sigmas)  # NaN propagates: fail closed
    single = np.full(n_port, np.inf)
    driver = np.full(n_port, -1, dtype=np.int64)
    joint_vol = np.full(n_port, np.nan)
    held = np.flatnonzero(counts > 0)
    if held.size:
        starts = pair_indptr[held]
        single[held] = np.minimum.reduceat(pair_sigmas, starts)
        # NaN vols must win the maximum too (np.maximum propagates NaN).
        joint_vol[held] = np.maximum.reduceat(pair_vol, starts)
        # The driver: the first pair of each account at its (finite) minimum.
        account_of_pair = np.repeat(np.arange(n_port), counts)
        at_min = np.isfinite(pair_sigmas) & (pair_sigmas == single[account_of_pair])
        first = np.full(n_port, pair_sigmas.size)
        np.minimum.at(first, account_of_pair[at_min], np.flatnonzero(at_min))
        found = first < pair_sigmas.size
        driver[found] = np.asarray(pair_underlying)[first[found]]
    joint = np.minimum(distance_sigmas(joint_down, joint_vol), distance_sigmas(joint_up, joint_vol))
    joint = np.where(counts > 0, joint, np.inf)
    sigmas = np.minimum(single, joint)
    return Nearest(
        sigmas=sigmas, driver=driver, joint=joint < single, down_sigmas=down_sigmas, up_sigmas=up_sigmas
    )


def warning_levels(
    *,
    status: np.ndarray,
    sigmas: np.ndarray,
    equity: np.ndarray,
    maintenance: np.ndarray,
    trusted: np.ndarray,
    previous: np.ndarray,
    thresholds: LadderThresholds,
) -> np.ndarray:
    """The ladder level ``(n,)`` int8 (``LEVELS`` codes) of each account.

    ``status`` ``(n,)`` the engine's status codes (``STATUSES``); ``sigmas`` ``(n,)`` the nearest
    distance in daily standard deviations (``nearest_distances``; +inf: none in range);
    ``equity``, ``maintenance`` ``(n,)`` USD; ``trusted`` ``(n,)`` bool, every price the account
    depends on is trusted; ``previous`` ``(n,)`` the level of the last grading (``NO_LEVEL`` when
    none). See the module doc for the rules."""
    status = np.asarray(status)
    sigmas = np.asarray(sigmas, dtype=np.float64)
    equity = np.asarray(equity, dtype=np.float64)
    maintenance = np.asarray(maintenance, dtype=np.float64)
    previous = np.asarray(previous, dtype=np.int64)
    t = thresholds
    valid = (
        np.isfinite(equity)
        & np.isfinite(maintenance)
        & (maintenance >= 0.0)
        & ~np.isnan(sigmas)
        & (sigmas >= 0.0)
        & np.asarray(trusted, dtype=bool)
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(maintenance > 0.0, equity / maintenance, np.where(equity >= 0.0, np.inf, -np.inf))
    # Comparisons with NaN are False: an invalid row is graded by the fail-closed floor below.
    level = np.where(
        (sigmas < t.warning_sigmas) | (ratio < t.warning_ratio),
        WARNING,
        np.where((sigmas < t.watch_sigmas) | (ratio < t.watch_ratio), WATCH, OK),
    ).astype(np.int64)
    # Hysteresis: a level held before is kept until the account is clearly past its thresholds
    # (a previous margin call or liquidation counts from ``warning``: the engine decided those).
    held = np.minimum(previous, WARNING)
    clear = 1.0 + t.hysteresis
    rungs = ((WARNING, t.warning_sigmas, t.warning_ratio), (WATCH, t.watch_sigmas, t.watch_ratio))
    for rung, rung_sigmas, rung_ratio in rungs:
        clearly_past = (sigmas >= rung_sigmas * clear) & (ratio >= rung_ratio * clear)
        level = np.where((held >= rung) & (level < rung) & ~clearly_past, rung, level)
    level = np.where(valid, level, np.maximum(level, WARNING))  # fail closed: never ok
    level = np.where(status == _STATUS_MARGIN_CALL, MARGIN_CALL, level)
    level = np.where(status == _STATUS_LIQUIDATION, LIQUIDATION, level)
    return level.astype(np.int8)

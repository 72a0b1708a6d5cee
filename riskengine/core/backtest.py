"""Backtesting and procyclicality (methodology v1.1 section 7; EMIR RTS 153/2013 art. 49).

The hypothetical-portfolio test: every portfolio of a document is held fixed (its positions,
balances and allocations) and replayed over a daily ``PriceHistory``. With ``h = mpor_days``, for
each day ``t`` of the history such that the calendar day ``t + h`` is in it too (an
*observation*):

- ``IM_t``: the portfolio's initial margin in its own mode at the closes of ``t`` (options keep the
  document's iv and time to expiry ``T``: rolled), under the parameter set as it is (``fixed``) or
  with every ``psr_u`` recalibrated at ``t`` from the history up to ``t`` (``calibrated``,
  ``riskengine.core.calibration.psr_path``: section 6 with the venue's floor and cap);
- ``L_t = -(W_{t+h} - W_t)``, ``W`` = collateral at market value (no haircut) + position values,
  positions revalued at ``t + h`` with ``T - h/365``;
- an exception when ``L_t > IM_t``; a day whose ``L_t`` or ``IM_t`` is not finite (NaN or an
  overflow to infinity) is an exception too (fail closed: an undefined figure never passes).

Isolated accounts are tested at account level: ``W`` is the account's (allocations earmark
collateral and change no value) and ``IM = sum_i IM_i`` (section 4a's account IM).

The venue (``AGGREGATE``): besides every portfolio, the venue's aggregate book, every position
entry and balance of the document in one portfolio in ``portfolio`` mode (the netted book of the
venue under its risk-based rules), is tested as a portfolio of its own: it is the last column of
``Backtest``'s matrices. ``pooled`` statistics count every account-day of the portfolios (not
the aggregate) as one observation.

Statistics (vectorised over portfolios), ``p = 0.01``, ``0 * ln 0 = 0``:

- Kupiec POF ``LR = -2 ln[(1-p)^(n-x) p^x] + 2 ln[(1-x/n)^(n-x) (x/n)^x]``, p-value from chi2(1);
- Christoffersen independence from the transition counts ``n_ij`` (state ``i`` on one observation,
  ``j`` on the next) of the exception sequence, ``pi_01 = n01/(n00+n01)``,
  ``pi_11 = n11/(n10+n11)``, ``pi = (n01+n11)/(n00+n01+n10+n11)``:
  ``LR_ind = -2 ln[(1-pi)^(n00+n10) pi^(n01+n11)] + 2 ln[(1-pi_01)^n00 pi_01^n01 (1-pi_11)^n10
  pi_11^n11]`` (chi2(1)); ``LR_cc = LR_pof + LR_ind``, p-value from chi2(2). Pooled, the counts
  are summed over the accounts' own sequences (no transition from one account to the next);
- Basel traffic light from ``F``, the binomial CDF of ``x`` in ``n`` at ``p``: green ``F < 0.95``,
  yellow ``F < 0.9999``, red otherwise (250 observations: 0-4, 5-9, 10+);
- procyclicality: ``max IM / min IM`` over the observations (undefined, ``None``, when the
  smallest IM is 0), and for ``k`` in 1, 5, 30 calendar days the largest ``IM_{t+k}/IM_t - 1``
  over observation days ``t`` and ``t + k`` with ``IM_t > 0``. Pooled, of the venue's total IM
  ``sum_k IM_{k,t}`` (the margin the venue holds that day).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy.special import bdtr, chdtrc, xlogy

from .calibration import PSR_FLOOR, psr_cap, psr_path
from .daily import daily_initial_margin, wealth_change
from .document import PORTFOLIO, MarginInput, Portfolios
from .errors import DocumentError
from .history import PriceHistory

MODES = ("fixed", "calibrated")
COVERAGE = 0.99
P_EXCEPTION = 1.0 - COVERAGE
GREEN, YELLOW = 0.95, 0.9999
LIGHTS = ("green", "yellow", "red")
HORIZONS = (1, 5, 30)
AGGREGATE = "aggregate"
COLLATERAL = "collateral"


@dataclass(frozen=True, eq=False)
class Backtest:
    """A backtest of ``n_port`` portfolios (and the aggregate book) over ``n_obs`` observations.

    ``mode`` (``fixed``/``calibrated``), ``mpor_days`` ``h``; ``ids`` the ``n_port`` portfolio ids;
    ``aggregate`` whether the aggregate book was tested; ``days`` ``(n_obs,)`` datetime64[D] the
    observation days ``t``; ``psr`` ``(n_obs, n_und)`` the scan range used each day.
    ``initial_margin``, ``loss`` ``(n_obs, n_col)`` USD and ``exception`` ``(n_obs, n_col)`` bool,
    ``n_col = n_port + 1`` with the aggregate book (the last column), ``n_port`` without: column
    ``k < n_port`` is portfolio ``k``.

    Exceptions, one entry each (portfolios and aggregate, ordered by column then day):
    ``exception_day`` ``(n_exc,)`` observation index, ``exception_column`` ``(n_exc,)``,
    ``exception_loss_by`` ``(n_exc, n_und + 1)`` USD the part of ``L_t`` from each underlying
    (its positions and linked collateral) and, last, from the other collateral;
    ``exception_driver`` ``(n_exc,)`` the name of the largest part (an underlying or
    ``"collateral"``): the underlying that caused the exception.
    """

    mode: str
    mpor_days: int
    ids: tuple[str, ...]
    aggregate: bool
    days: np.ndarray
    psr: np.ndarray
    initial_margin: np.ndarray
    loss: np.ndarray
    exception: np.ndarray
    exception_day: np.ndarray
    exception_column: np.ndarray
    exception_loss_by: np.ndarray
    exception_driver: tuple[str, ...]

    @property
    def n_portfolios(self) -> int:
        return len(self.ids)


# --- statistics ----------------------------------------------------------------------------------


def kupiec(observations, exceptions, p: float = P_EXCEPTION) -> tuple[np.ndarray, np.ndarray]:
    """Kupiec's proportion-of-failures test: ``(lr, p_value)`` for ``x`` exceptions in ``n``
    observations (arrays or scalars broadcast together; ``n >= 1``)."""
    n = np.asarray(observations, dtype=np.float64)
    x = np.asarray(exceptions, dtype=np.float64)
    rate = x / n
    lr = -2.0 * (xlogy(n - x, 1.0 - p) + xlogy(x, p)) + 2.0 * (xlogy(n - x, 1.0 - rate) + xlogy(x, rate))
    lr = np.maximum(lr, 0.0)  # 0 up to rounding when x/n = p
    return lr, chdtrc(1, lr)


def transition_counts(exception: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(n00, n01, n10, n11)`` ``(k,)`` of ``exception`` ``(n_obs, k)`` bool: ``n_ij`` the number of
    consecutive observations in state ``i`` then ``j`` (1 = exception) in each column."""
    before, after = exception[:-1], exception[1:]
    return (
        np.sum(~before & ~after, axis=0),
        np.sum(~before & after, axis=0),
        np.sum(before & ~after, axis=0),
        np.sum(before & after, axis=0),
    )


def christoffersen(n00, n01, n10, n11, lr_pof) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Christoffersen's independence and conditional coverage tests from transition counts:
    ``(lr_ind, lr_cc, p_value_cc)`` (``lr_cc = lr_pof + lr_ind``, chi2(2))."""
    n00, n01, n10, n11 = (np.asarray(v, dtype=np.float64) for v in (n00, n01, n10, n11))
    pi_01 = n01 / np.maximum(n00 + n01, 1.0)  # a state never left: its counts are 0, so are its terms
    pi_11 = n11 / np.maximum(n10 + n11, 1.0)
    pi = (n01 + n11) / np.maximum(n00 + n01 + n10 + n11, 1.0)
    independent = xlogy(n00 + n10, 1.0 - pi) + xlogy(n01 + n11, pi)
    markov = xlogy(n00, 1.0 - pi_01) + xlogy(n01, pi_01) + xlogy(n10, 1.0 - pi_11) + xlogy(n11, pi_11)
    lr_ind = np.maximum(-2.0 * independent + 2.0 * markov, 0.0)
    lr_cc = np.asarray(lr_pof, dtype=np.float64) + lr_ind
    return lr_ind, lr_cc, chdtrc(2, lr_cc)


def traffic_light(observations, exceptions, p: float = P_EXCEPTION) -> np.ndarray:
    """Index into ``LIGHTS`` (0 green, 1 yellow, 2 red) from the binomial CDF ``F(x; n, p)``."""
    cdf = bdtr(np.asarray(exceptions), np.asarray(observations), p)
    return np.where(cdf < GREEN, 0, np.where(cdf < YELLOW, 1, 2))


def procyclicality(
    initial_margin: np.ndarray, days: np.ndarray, horizons=HORIZONS
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """``(peak_to_trough (k,), {horizon: max_increase (k,)})`` of ``initial_margin`` ``(n_obs, k)``
    USD on ``days`` ``(n_obs,)`` datetime64[D]; NaN where undefined (no positive IM to divide by,
    or a figure that is not finite)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        finite = np.all(np.isfinite(initial_margin), axis=0)
        low, high = initial_margin.min(axis=0), initial_margin.max(axis=0)
        peak_to_trough = np.where(finite & (low > 0.0), high / low, np.nan)
        increases = {}
        for k in horizons:
            later = np.searchsorted(days, days + np.timedelta64(k, "D"))
            has = later < days.size
            has[has] = days[later[has]] == days[has] + np.timedelta64(k, "D")
            start = initial_margin[has]
            ratio = initial_margin[later[has]] / start
            ratio[~(start > 0.0)] = -np.inf  # no increase is measured from a zero IM
            best = ratio.max(axis=0, initial=-np.inf) - 1.0
            increases[k] = np.where(finite & np.isfinite(best), best, np.nan)
    return peak_to_trough, increases


# --- the backtest ---------------------------------------------------------------------------------


def with_aggregate(margin_input: MarginInput) -> MarginInput:
    """``margin_input`` with one more portfolio, ``AGGREGATE``: every position entry (not merged)
    and every balance of the others, in ``portfolio`` mode."""
    f = margin_input.portfolios
    n = f.n_portfolios
    aggregate = Portfolios(
        ids=(*f.ids, AGGREGATE),
        mode=np.append(f.mode, np.int8(PORTFOLIO)).astype(np.int8),
        position_portfolio=np.concatenate([f.position_portfolio, np.full(f.position_portfolio.size, n)]),
        position_instrument=np.tile(f.position_instrument, 2),
        position_quantity=np.tile(f.position_quantity, 2),
        position_entry=np.tile(f.position_entry, 2),
        position_allocated_margin=np.tile(f.position_allocated_margin, 2),
        balance_portfolio=np.concatenate([f.balance_portfolio, np.full(f.balance_portfolio.size, n)]),
        balance_asset=np.tile(f.balance_asset, 2),
        balance_amount=np.tile(f.balance_amount, 2),
    )
    return dataclasses.replace(margin_input, portfolios=aggregate)


def observation_rows(history: PriceHistory, mpor_days: int) -> tuple[np.ndarray, np.ndarray]:
    """``(t, t_plus_h)`` ``(n_obs,)`` rows of the history: the days ``t`` whose calendar day
    ``t + mpor_days`` is in the history, and that day's row."""
    later = history.index_of(history.days + np.timedelta64(mpor_days, "D"))
    start = np.flatnonzero(later >= 0)
    return start, later[start]


def calibrated_psr(
    margin_input: MarginInput, history: PriceHistory, *, floor: float = PSR_FLOOR
) -> np.ndarray:
    """``(n_days, n_und)``: each day's psr recalibrated from the history up to it (section 6)."""
    p = margin_input.parameters
    cap = np.array([psr_cap(p.extreme_multiple[u][p.extreme_valid[u]]) for u in range(len(p.underlyings))])
    return psr_path(history.days, history.underlying_close, p.psr, cap, floor=floor)


def backtest(
    margin_input: MarginInput,
    history: PriceHistory,
    *,
    mode: str = "fixed",
    mpor_days: int = 2,
    psr_floor: float = PSR_FLOOR,
    aggregate: bool = True,
) -> Backtest:
    """Backtest every portfolio of ``margin_input`` and, with ``aggregate``, the aggregate book over
    ``history`` (module doc; a run over a shard of the venue's accounts leaves the aggregate book
    to a run of its own). Raises ``DocumentError`` for no portfolio, an unknown ``mode``,
    ``mpor_days`` not a whole number >= 1, or a history with no observation."""
    if mode not in MODES:
        raise DocumentError("mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
    if isinstance(mpor_days, bool) or not isinstance(mpor_days, int | np.integer) or mpor_days < 1:
        raise DocumentError("mpor_days", f"must be a whole number of days >= 1, got {mpor_days!r}")
    if margin_input.portfolios.n_portfolios == 0:
        raise DocumentError("portfolios", "at least one portfolio is needed")
    start, end = observation_rows(history, int(mpor_days))
    if start.size == 0:
        raise DocumentError("prices", f"no day t of the history has t + {mpor_days} days in it too")
    if mode == "fixed":
        psr = np.broadcast_to(margin_input.parameters.psr, (start.size, len(margin_input.parameters.psr)))
    else:
        psr = calibrated_psr(margin_input, history, floor=psr_floor)[start]
    book = with_aggregate(margin_input) if aggregate else margin_input
    closes, assets = history.underlying_close, history.asset_close
    initial_margin = daily_initial_margin(book, closes[start], psr)
    with np.errstate(over="ignore", invalid="ignore"):
        change = wealth_change(
            book, (closes[start], assets[start]), (closes[end], assets[end]), elapsed_years=mpor_days / 365.0
        )
        loss = -change.total()
        # Fail closed: a loss or an IM that is NaN or infinite is an exception, never a pass.
        exception = ~(np.isfinite(loss) & np.isfinite(initial_margin) & (loss <= initial_margin))
        column, day = np.nonzero(exception.T)
        loss_by = -change.split(day, column)
    names = (*margin_input.parameters.underlyings, COLLATERAL)
    driver = tuple(names[k] for k in np.argmax(np.nan_to_num(loss_by, nan=np.inf), axis=1).tolist())
    return Backtest(
        mode=mode, mpor_days=int(mpor_days), ids=margin_input.portfolios.ids, aggregate=aggregate,
        days=history.days[start],
        psr=np.asarray(psr), initial_margin=initial_margin, loss=loss, exception=exception,
        exception_day=day, exception_column=column, exception_loss_by=loss_by, exception_driver=driver,
    )  # fmt: skip


# --- statistics of a backtest and the report (the CLI's JSON) ------------------------------------


@dataclass(frozen=True, eq=False)
class Statistics:
    """Section 7's statistics of ``k`` exception series, each field ``(k,)``: ``observations``,
    ``exceptions``, ``coverage``, ``kupiec_lr``, ``kupiec_p_value``, ``lr_ind``, ``lr_cc``,
    ``p_value_cc``, ``light`` (index into ``LIGHTS``), ``peak_to_trough`` and ``max_increase``
    ``{k_days: (k,)}`` (NaN where undefined)."""

    observations: np.ndarray
    exceptions: np.ndarray
    coverage: np.ndarray
    kupiec_lr: np.ndarray
    kupiec_p_value: np.ndarray
    lr_ind: np.ndarray
    lr_cc: np.ndarray
    p_value_cc: np.ndarray
    light: np.ndarray
    peak_to_trough: np.ndarray
    max_increase: dict[int, np.ndarray]


def statistics(
    observations: np.ndarray,
    exceptions: np.ndarray,
    counts: tuple,
    initial_margin: np.ndarray,
    days: np.ndarray,
) -> Statistics:
    """``Statistics`` of ``k`` series from their counts ``(k,)``, transition counts (four ``(k,)``)
    and IM ``(n_obs, k)`` on ``days``."""
    observations = np.asarray(observations, dtype=np.int64)
    exceptions = np.asarray(exceptions, dtype=np.int64)
    lr_pof, p_pof = kupiec(observations, exceptions)
    lr_ind, lr_cc, p_cc = christoffersen(*counts, lr_pof)
    peak, increases = procyclicality(initial_margin, days)
    return Statistics(
        observations=observations, exceptions=exceptions, coverage=1.0 - exceptions / observations,
        kupiec_lr=lr_pof, kupiec_p_value=p_pof, lr_ind=lr_ind, lr_cc=lr_cc, p_value_cc=p_cc,
        light=traffic_light(observations, exceptions), peak_to_trough=peak, max_increase=increases,
    )  # fmt: skip


def backtest_statistics(result: Backtest) -> tuple[Statistics, Statistics]:
    """``(columns, pooled)``: the statistics of every column (the portfolios, then the aggregate
    book if tested) and of the pooled account-days (``k = 1``; procyclicality of the venue's total
    IM)."""
    n_obs, n_port = result.days.size, result.n_portfolios
    counts = transition_counts(result.exception)
    exception = result.exception
    columns = statistics(
        np.full(exception.shape[1], n_obs), exception.sum(axis=0), counts, result.initial_margin, result.days
    )
    venue_margin = result.initial_margin[:, :n_port].sum(axis=1)[:, None]  # what the venue holds each day
    pooled = statistics(
        np.array([n_obs * n_port]), np.array([result.exception[:, :n_port].sum()]),
        tuple(np.array([c[:n_port].sum()]) for c in counts), venue_margin, result.days,
    )  # fmt: skip
    return columns, pooled


def _numbers(values: np.ndarray) -> list[float | None]:
    """JSON numbers, ``None`` for a figure that is undefined (NaN) or infinite."""
    return [v + 0.0 if np.isfinite(v) else None for v in np.asarray(values, dtype=np.float64).tolist()]


def report_sections(stats: Statistics, ids: list[str], exception_days: list[list[str]]) -> list[dict]:
    """The report's SECTION of each of ``stats``' ``k`` series: ``id`` from ``ids``, the counts,
    coverage, tests, traffic light, procyclicality and ``exception_days`` (ISO dates) of each
    (``None`` for an undefined figure). The platform builds its venue report with it too."""
    columns = {
        name: _numbers(getattr(stats, name))
        for name in (
            "coverage",
            "kupiec_lr",
            "kupiec_p_value",
            "lr_ind",
            "lr_cc",
            "p_value_cc",
            "peak_to_trough",
        )
    }
    increases = {k: _numbers(v) for k, v in stats.max_increase.items()}
    observations, exceptions = stats.observations.tolist(), stats.exceptions.tolist()
    lights = [LIGHTS[light] for light in stats.light.tolist()]
    return [
        {
            "id": name,
            "observations": observations[k],
            "exceptions": exceptions[k],
            "coverage": columns["coverage"][k],
            "kupiec": {"lr": columns["kupiec_lr"][k], "p_value": columns["kupiec_p_value"][k]},
            "christoffersen": {
                "lr_ind": columns["lr_ind"][k],
                "lr_cc": columns["lr_cc"][k],
                "p_value_cc": columns["p_value_cc"][k],
            },
            "traffic_light": lights[k],
            "procyclicality": {
                "peak_to_trough": columns["peak_to_trough"][k],
                "max_increase": {str(h): values[k] for h, values in increases.items()},
            },
            "exception_days": exception_days[k],
        }
        for k, name in enumerate(ids)
    ]


def backtest_report(result: Backtest) -> dict:
    """The ``python -m riskengine backtest`` JSON (issue #16): ``mode``, ``mpor_days``, ``start``,
    ``end`` (the first and last observation day ``t``), one section per portfolio with its ``id``,
    and ``venue`` {``pooled``, ``aggregate``} with the same fields (``id`` ``"pooled"`` and
    ``"aggregate"``). ``exception_days`` are ISO dates ``t`` (pooled: the days with an exception in
    at least one account). Undefined figures (a peak-to-trough ratio over a zero IM) are ``null``.
    A backtest without the aggregate book has no ``venue.aggregate``."""
    n_port = result.n_portfolios
    labels = np.datetime_as_string(result.days, unit="D")
    columns, pooled = backtest_statistics(result)
    # Exceptions are ordered by column then day: split them by column.
    n_col = result.exception.shape[1]
    bounds = np.searchsorted(result.exception_column, np.arange(n_col + 1)).tolist()
    days = labels[result.exception_day].tolist()
    by_column = [days[bounds[k] : bounds[k + 1]] for k in range(n_col)]
    pooled_days = labels[result.exception[:, :n_port].any(axis=1)].tolist()
    sections = report_sections(columns, [*result.ids, AGGREGATE][:n_col], by_column)
    venue = {"pooled": report_sections(pooled, ["pooled"], [pooled_days])[0]}
    if result.aggregate:
        venue["aggregate"] = sections[n_port]
    return {
        "mode": result.mode,
        "mpor_days": result.mpor_days,
        "start": str(labels[0]),
        "end": str(labels[-1]),
        "portfolios": sections[:n_port],
        "venue": venue,
    }

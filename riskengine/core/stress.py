"""Stress testing and default-fund sizing, Cover-1 and Cover-2 (methodology v1.1 section 8).

A scenario moves every underlying's and every asset's price by a factor and scales option ivs,
over the margin period of risk ``h = mpor_days``: from the document's market, options are
revalued at ``T - h/365``. For each account:

- the stressed loss ``L_s = -(W_s - W)``, ``W`` collateral at market value (no haircut) plus
  position values (as in the backtest, ``riskengine.core.daily.wealth_change``);
- the uncovered loss ``U_s = max(0, L_s - E)``, ``E`` the account's equity at the document's
  market (section 3, after haircuts; every mode, isolated included: a defaulter's collateral,
  allocated or not, all stands behind its positions);
- a member's uncovered loss is the sum over its accounts (a member's accounts never offset each
  other: each is ``max(0, ...)`` first).

``Cover-2 = max_s (U_(1),s + U_(2),s)``: the two members with the largest uncovered losses in the
same scenario; ``Cover-1`` likewise with one. Reported with the scenario and the members that set
them (the first scenario reaching the maximum; members in decreasing uncovered loss, ties in
order of first appearance); when no member has an uncovered loss anywhere, the amount is 0 and
no scenario or member sets it.

Scenarios:

- historical (``historical_scenarios``): every ``h``-day window inside the history's named crisis
  periods (``CRISIS_PERIODS``: ``t`` and ``t + h`` both in the period and in the history), each
  price's factor ``P_{t+h} / P_t``; ivs unchanged (the history has no ivs; factor 1);
- hypothetical (``hypothetical_scenarios``), governed with the parameter set, defaults of section 8
  (``DEFAULT_HYPOTHETICAL``). A definition names factors for some underlyings and one for every
  other underlying (``others``); linked assets move with their underlying; a stablecoin (an asset
  linked to no underlying, other than the settlement currency ``USD``) either stays or goes to
  ``stablecoin_price`` USD (factor ``stablecoin_price / P_a``); ``USD`` never moves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .daily import wealth_change
from .document import MarginInput
from .errors import DocumentError, NonFiniteFigures
from .history import SETTLEMENT, PriceHistory
from .margin import compute_margin, require_finite
from .parsing import shown

KINDS = ("historical", "hypothetical")


@dataclass(frozen=True)
class CrisisPeriod:
    """A named crisis period of the history: its first and last day (ISO dates, inclusive)."""

    name: str
    first: str
    last: str


# The crash weeks of the shipped history (clearing/data/prices/README.md).
CRISIS_PERIODS = (
    CrisisPeriod("May 2021", "2021-05-12", "2021-05-23"),
    CrisisPeriod("LUNA", "2022-05-07", "2022-05-12"),
    CrisisPeriod("FTX", "2022-11-06", "2022-11-09"),
    CrisisPeriod("USDC depeg", "2023-03-10", "2023-03-13"),
)


@dataclass(frozen=True)
class HypotheticalScenario:
    """A governed hypothetical scenario: price factors of the ``underlyings`` it names
    (``((name, factor), ...)``), ``others`` for every underlying it does not name, every stablecoin
    at ``stablecoin_price`` USD (``None``: unchanged), ivs times ``iv_factor``."""

    name: str
    underlyings: tuple[tuple[str, float], ...] = ()
    others: float = 1.0
    stablecoin_price: float | None = None
    iv_factor: float = 1.0


# Section 8's defaults. Where a default names some underlyings only, an underlying it does not
# name falls like the largest fall it names (an unnamed altcoin is no safer than SOL).
DEFAULT_HYPOTHETICAL = (
    HypotheticalScenario("all crypto -40%, ivs x1.5", others=0.60, iv_factor=1.5),
    HypotheticalScenario(
        "BTC -30%, ETH -45%, SOL -60%, ivs x2",
        underlyings=(("BTC", 0.70), ("ETH", 0.55), ("SOL", 0.40)),
        others=0.40,
        iv_factor=2.0,
    ),
    HypotheticalScenario("every stablecoin at 0.87", stablecoin_price=0.87),
    HypotheticalScenario("all crypto +50%, ivs x1.5", others=1.50, iv_factor=1.5),
)


@dataclass(frozen=True, eq=False)
class Scenarios:
    """``n_s`` scenarios: ``names``, ``kinds`` (``KINDS``), ``underlying_factor`` ``(n_s, n_und)``
    and ``asset_factor`` ``(n_s, n_assets)`` price factors, ``iv_factor`` ``(n_s,)``."""

    names: tuple[str, ...]
    kinds: tuple[str, ...]
    underlying_factor: np.ndarray
    asset_factor: np.ndarray
    iv_factor: np.ndarray

    @property
    def n_scenarios(self) -> int:
        return len(self.names)

    def __add__(self, other: Scenarios) -> Scenarios:
        return Scenarios(
            names=self.names + other.names,
            kinds=self.kinds + other.kinds,
            underlying_factor=np.concatenate([self.underlying_factor, other.underlying_factor]),
            asset_factor=np.concatenate([self.asset_factor, other.asset_factor]),
            iv_factor=np.concatenate([self.iv_factor, other.iv_factor]),
        )


def historical_scenarios(
    margin_input: MarginInput,
    history: PriceHistory,
    *,
    mpor_days: int = 2,
    periods: Sequence[CrisisPeriod] = CRISIS_PERIODS,
) -> Scenarios:
    """Every ``mpor_days`` window of ``periods`` the history holds (module doc), period by period,
    named ``"<period> <t>..<t+h>"``."""
    horizon = np.timedelta64(int(mpor_days), "D")
    starts = []
    names = []
    for period in periods:
        first, last = np.datetime64(period.first, "D"), np.datetime64(period.last, "D")
        rows = np.flatnonzero((history.days >= first) & (history.days + horizon <= last))
        rows = rows[history.index_of(history.days[rows] + horizon) >= 0]
        starts.append(rows)
        names += [f"{period.name} {day}..{day + horizon}" for day in history.days[rows].tolist()]
    start = np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)
    end = history.index_of(history.days[start] + horizon)
    return Scenarios(
        names=tuple(names),
        kinds=("historical",) * start.size,
        underlying_factor=history.underlying_close[end] / history.underlying_close[start],
        asset_factor=history.asset_close[end] / history.asset_close[start],
        iv_factor=np.ones(start.size),
    )


def _factor(value, field: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (np.isfinite(value) and value > 0)
    ):
        raise DocumentError(field, f"must be a finite number > 0, got {shown(value)}")
    return float(value)


def hypothetical_scenarios(
    margin_input: MarginInput, definitions: Sequence[HypotheticalScenario] = DEFAULT_HYPOTHETICAL
) -> Scenarios:
    """The ``definitions`` applied to the parameter set's underlyings and assets at the document's
    market (module doc). Raises ``DocumentError`` naming ``scenarios[k]`` for a factor, price or iv
    factor that is not a finite number > 0. Underlyings a definition names that the parameter set
    does not have are ignored."""
    p, m = margin_input.parameters, margin_input.market
    n = len(definitions)
    underlying_factor = np.ones((n, len(p.underlyings)))
    asset_factor = np.ones((n, len(p.assets)))
    iv_factor = np.ones(n)
    linked = p.asset_underlying >= 0
    stablecoin = ~linked & (np.asarray(p.assets, dtype=object) != SETTLEMENT)
    for k, definition in enumerate(definitions):
        where = f"scenarios[{k}]"
        underlying_factor[k] = _factor(definition.others, f"{where}.others")
        for name, factor in definition.underlyings:
            if name in p.underlyings:
                underlying_factor[k, p.underlyings.index(name)] = _factor(
                    factor, f"{where}.underlyings.{name}"
                )
        iv_factor[k] = _factor(definition.iv_factor, f"{where}.iv_factor")
        asset_factor[k, linked] = underlying_factor[k, p.asset_underlying[linked]]
        if definition.stablecoin_price is not None:
            price = _factor(definition.stablecoin_price, f"{where}.stablecoin_price")
            asset_factor[k, stablecoin] = price / m.asset_price[stablecoin]
    return Scenarios(
        names=tuple(d.name for d in definitions),
        kinds=("hypothetical",) * n,
        underlying_factor=underlying_factor,
        asset_factor=asset_factor,
        iv_factor=iv_factor,
    )


@dataclass(frozen=True)
class Cover:
    """A default-fund figure: ``amount`` USD, the ``scenario`` index (-1: none sets it) and the
    ``members`` (indices into ``Stress.members``) whose uncovered losses make it."""

    amount: float
    scenario: int
    members: tuple[int, ...]


@dataclass(frozen=True, eq=False)
class Stress:
    """Stress results of ``n_port`` portfolios under ``n_s`` scenarios.

    ``scenarios``; ``ids`` and ``member_of`` ``(n_port,)`` (index into ``members``, the distinct
    member names in order of first appearance); ``equity`` ``(n_port,)`` USD (E);
    ``loss`` and ``uncovered`` ``(n_s, n_port)`` USD; ``member_uncovered`` ``(n_s, n_members)``
    USD; ``cover_1``, ``cover_2``.
    """

    scenarios: Scenarios
    ids: tuple[str, ...]
    members: tuple[str, ...]
    member_of: np.ndarray
    equity: np.ndarray
    loss: np.ndarray
    uncovered: np.ndarray
    member_uncovered: np.ndarray
    cover_1: Cover
    cover_2: Cover


def cover(member_uncovered: np.ndarray, k: int) -> Cover:
    """Cover-``k`` of ``member_uncovered`` ``(n_s, n_members)`` USD: the largest sum over a
    scenario of its ``k`` largest member losses (module doc)."""
    n_s, n_members = member_uncovered.shape
    if n_s == 0 or n_members == 0:
        return Cover(0.0, -1, ())
    order = np.argsort(-member_uncovered, axis=1, kind="stable")[:, :k]  # (n_s, <=k), largest first
    top = np.take_along_axis(member_uncovered, order, axis=1)
    total = top.sum(axis=1)
    s = int(np.argmax(total))
    if not total[s] > 0.0:
        return Cover(0.0, -1, ())
    members = tuple(int(j) for j, u in zip(order[s].tolist(), top[s].tolist(), strict=True) if u > 0.0)
    return Cover(float(total[s]), s, members)


def stress(
    margin_input: MarginInput,
    scenarios: Scenarios,
    *,
    members: Sequence[str] | None = None,
    mpor_days: int = 2,
) -> Stress:
    """Stressed and uncovered losses of every portfolio and member under ``scenarios`` (module
    doc). ``members`` ``(n_port,)`` names each portfolio's member (default: its own id). Raises
    ``NonFiniteFigures`` naming the first portfolio whose equity or a stressed loss would not be
    finite: nothing is returned then."""
    f, p = margin_input.portfolios, margin_input.parameters
    members = list(f.ids) if members is None else list(members)
    if len(members) != f.n_portfolios:
        raise DocumentError("members", f"one member per portfolio is needed, got {len(members)}")
    result = compute_margin(margin_input)
    require_finite(result)
    equity = result.equity
    n_s = scenarios.n_scenarios
    base_prices = np.broadcast_to(margin_input.market.underlying_price, (n_s, len(p.underlyings)))
    base_assets = np.broadcast_to(margin_input.market.asset_price, (n_s, len(p.assets)))
    after = (base_prices * scenarios.underlying_factor, base_assets * scenarios.asset_factor)
    with np.errstate(over="ignore", invalid="ignore"):
        loss = -wealth_change(
            margin_input, (base_prices, base_assets), after, elapsed_years=mpor_days / 365.0,
            iv_factor=scenarios.iv_factor,
        ).total()  # fmt: skip
    bad = np.flatnonzero(~np.all(np.isfinite(loss), axis=0))
    if bad.size:
        k = int(bad[0])
        raise NonFiniteFigures(
            f"portfolios[{k}]", f"the stressed loss of portfolio {shown(f.ids[k])} would not be finite"
        )
    uncovered = np.maximum(0.0, loss - equity[None, :])
    names, first, inverse = np.unique(
        np.asarray(members, dtype=object), return_index=True, return_inverse=True
    )
    order = np.argsort(first)  # members in order of first appearance (np.unique sorts by name)
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size)
    member_of = rank[inverse.reshape(-1)]
    ordered = tuple(str(name) for name in names[order].tolist())
    belongs = sp.csr_matrix(
        (np.ones(f.n_portfolios), (member_of, np.arange(f.n_portfolios))),
        shape=(len(ordered), f.n_portfolios),
    )
    member_uncovered = np.asarray(belongs @ uncovered.T).T.copy()  # (n_s, n_members)
    return Stress(
        scenarios=scenarios, ids=f.ids, members=ordered, member_of=member_of, equity=equity, loss=loss,
        uncovered=uncovered, member_uncovered=member_uncovered,
        cover_1=cover(member_uncovered, 1), cover_2=cover(member_uncovered, 2),
    )  # fmt: skip


def scenario_prices(margin_input: MarginInput, scenarios: Scenarios, s: int) -> dict[str, float]:
    """``{symbol: factor}`` of scenario ``s``: every underlying, then every asset whose name is not
    an underlying's (a linked asset of an underlying's name has its factor)."""
    p = margin_input.parameters
    prices = {name: float(v) for name, v in zip(p.underlyings, scenarios.underlying_factor[s], strict=True)}
    for name, v in zip(p.assets, scenarios.asset_factor[s], strict=True):
        prices.setdefault(name, float(v))
    return prices


def stress_report(margin_input: MarginInput, result: Stress) -> dict:
    """The ``python -m riskengine stress`` JSON (issue #16): ``scenarios``, ``portfolios`` (each
    with its ``member`` and its ``worst`` scenario: the largest loss, first on ties),
    ``cover_1`` and ``cover_2`` (``scenario`` ``None`` and ``members`` empty when nothing is
    uncovered)."""
    sc = result.scenarios
    worst = np.argmax(result.loss, axis=0) if sc.n_scenarios else np.zeros(len(result.ids), dtype=np.int64)

    def cover_dict(c: Cover) -> dict:
        return {
            "amount": c.amount + 0.0,
            "scenario": sc.names[c.scenario] if c.scenario >= 0 else None,
            "members": [result.members[j] for j in c.members],
        }

    portfolios = []
    for k, portfolio_id in enumerate(result.ids):
        s = int(worst[k])
        portfolios.append(
            {
                "id": portfolio_id,
                "member": result.members[int(result.member_of[k])],
                "worst": {
                    "scenario": sc.names[s] if sc.n_scenarios else None,
                    "loss": float(result.loss[s, k]) + 0.0 if sc.n_scenarios else 0.0,
                    "uncovered": float(result.uncovered[s, k]) + 0.0 if sc.n_scenarios else 0.0,
                },
            }
        )
    return {
        "scenarios": [
            {
                "name": name,
                "kind": kind,
                "prices": scenario_prices(margin_input, sc, s),
                "iv_factor": float(sc.iv_factor[s]),
            }
            for s, (name, kind) in enumerate(zip(sc.names, sc.kinds, strict=True))
        ],
        "portfolios": portfolios,
        "cover_1": cover_dict(result.cover_1),
        "cover_2": cover_dict(result.cover_2),
    }

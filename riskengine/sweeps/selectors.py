"""Reads of margin sweeps: exposures, current margins, and the replay of a stored snapshot."""

from __future__ import annotations

import math

import numpy as np
from django.db.models import Q, Value
from django.shortcuts import get_object_or_404

from accounts.models import Asset, CollateralBalance, MarginAccount, User
from accounts.selectors import margin_accounts_visible
from clearing.cache import ProcessLRU
from clearing.marketdata.quotes import MarketQuotes
from clearing.models import Instrument, Position
from riskengine.core.margin import VOL_MOVES
from riskengine.loading import market_form_quotes
from riskengine.models import ParameterSet
from riskengine.selectors import parameters_form, parameters_parsed
from riskengine.sweeps import codec, storage
from riskengine.sweeps.models import AccountForesight, AccountMargin, MarginSnapshot, Sweep, WarningLevel


def sweep_quotes(*, sweep: Sweep) -> MarketQuotes:
    """The market a sweep used, as ``MarketQuotes`` (every shard of a sweep prices with these)."""
    return market_form_quotes(
        market=sweep.market,
        valuation_time=sweep.valuation_time,
        statuses=sweep.statuses,
        index_price_ids=sweep.index_price_ids,
    )


def accounts_exposed(*, symbol: str) -> list[int]:
    """Member and venue accounts whose margin depends on ``symbol``'s price: positions on that
    underlying, collateral linked to it, or collateral that is the asset itself."""
    positions = Position.objects.exclude(quantity=0).filter(instrument__underlying__symbol=symbol)
    balances = CollateralBalance.objects.exclude(amount=0).filter(
        Q(asset__symbol=symbol) | Q(asset__underlying__symbol=symbol)
    )
    ids = set(positions.values_list("account_id", flat=True)) | set(
        balances.values_list("account_id", flat=True)
    )
    return sorted(ids)


def margin_snapshot_positions(
    *, snapshot: MarginSnapshot, symbols: dict[int, str] | None = None
) -> list[dict]:
    """The snapshot's input positions in the document's ``positions[]`` form, each with its
    ``allocated_margin`` when the snapshot stored one that is not 0 (isolated accounts).
    ``symbols``: instrument id → symbol, when the caller already read them (one query otherwise)."""
    records = codec.decode(codec.POSITION, snapshot.positions)
    allocations = codec.decode(codec.ALLOCATION, snapshot.position_allocations)
    if symbols is None:
        symbols = dict(
            Instrument.objects.filter(pk__in=np.unique(records["instrument"]).tolist())
            .order_by()
            .values_list("pk", "symbol")
        )
    positions = []
    for j, record in enumerate(records):
        position = {
            "instrument": symbols[int(record["instrument"])],
            "quantity": repr(float(record["quantity"])),
        }
        if not math.isnan(record["entry"]):
            position["entry_price"] = repr(float(record["entry"]))
        if allocations.size and allocations[j] != 0.0:
            position["allocated_margin"] = repr(float(allocations[j]))
        positions.append(position)
    return positions


def margin_snapshot_by_underlying(*, snapshot: MarginSnapshot) -> list[dict]:
    """The snapshot's ``by_underlying`` figures as in the engine's result (spec section 5)."""
    parameters, grid = parameters_parsed(parameter_set=snapshot.parameter_set)
    out = []
    for r in codec.decode(codec.PAIR, snapshot.by_underlying):
        u, s = int(r["underlying"]), int(r["worst"])
        out.append(
            {
                "underlying": parameters.underlyings[u],
                "scan_risk": float(r["scan_risk"]),
                "directional": float(r["directional"]),
                "delta_usd": float(r["delta_usd"]),
                "gamma_usd": float(r["gamma_usd"]),
                "vega_usd": float(r["vega_usd"]),
                "theta_usd": float(r["theta_usd"]),
                "worst_scenario": {
                    "price_move": float(grid.price_move[u, s]),
                    "vol_move": VOL_MOVES[grid.vol_move[s]],
                    "kind": "extreme" if grid.is_extreme[s] else "standard",
                },
            }
        )
    return out


def margin_snapshot_figures(*, snapshot: MarginSnapshot) -> dict:
    """The stored figures in the engine's result shape (without per-position figures, which a
    replay of ``margin_snapshot_document`` gives)."""
    return {
        "id": snapshot.account.code,
        "mode": snapshot.mode,
        "status": snapshot.status,
        "equity": snapshot.equity,
        "collateral_value": snapshot.collateral_value,
        "initial_margin": snapshot.initial_margin,
        "maintenance_margin": snapshot.maintenance_margin,
        "excess": snapshot.excess,
        "margin_ratio": snapshot.margin_ratio,
        "components": {
            "scan_directional": snapshot.scan_directional,
            "scan_non_directional": snapshot.scan_non_directional,
            "correlation_credit": snapshot.correlation_credit,
            "basis": snapshot.basis,
            "short_option_minimum": snapshot.short_option_minimum,
            "concentration": snapshot.concentration,
        },
        "by_underlying": margin_snapshot_by_underlying(snapshot=snapshot),
        "free_collateral": snapshot.free_collateral,
        "comparison": {
            "isolated": snapshot.required_isolated,
            "cross": snapshot.required_cross,
            "portfolio": snapshot.required_portfolio,
        },
    }


# A sweep's market is written once, when the sweep starts, and never changed: it is cached per
# process by sweep (the id read with the snapshot, so a newer sweep is a new key; with its start
# time, so an id reused by a re-created database never hits). A full sweep's market holds every
# instrument (≈ 150 bytes of JSON each), so only a few are kept; event sweeps each have their own.
SWEEP_MARKETS_CACHED = 8
_sweep_markets = ProcessLRU(SWEEP_MARKETS_CACHED)


def sweep_market(*, sweep: Sweep) -> dict:
    """``sweep.market``, from the per-process cache when this sweep's was read before (loaded, one
    query, when ``sweep`` was read with its market deferred). Shared: callers must not change it."""
    return _sweep_markets.get_or_build((sweep.pk, sweep.started_at), lambda: sweep.market)


def margin_snapshot_document(*, snapshot: MarginSnapshot) -> dict:
    """The margin document (spec section 5) the snapshot was computed from: the parameters form
    of its parameter set, the sweep's market restricted to the account's instruments, and the
    account's positions and collateral exactly as the engine saw them. ``compute_document`` on it
    gives the stored figures. One query (the symbols of its instruments and assets), two if the
    sweep's market is not cached yet (``sweep_market``)."""
    records = codec.decode(codec.POSITION, snapshot.positions)
    balances = codec.decode(codec.BALANCE, snapshot.collateral)
    instruments = Instrument.objects.filter(pk__in=np.unique(records["instrument"]).tolist())
    assets = Asset.objects.filter(pk__in=np.unique(balances["asset"]).tolist())
    symbols: dict[str, dict[int, str]] = {"instrument": {}, "asset": {}}
    for kind, pk, symbol in (
        instruments.order_by()
        .values_list(Value("instrument"), "pk", "symbol")
        .union(assets.order_by().values_list(Value("asset"), "pk", "symbol"), all=True)
    ):
        symbols[kind][pk] = symbol
    positions = margin_snapshot_positions(snapshot=snapshot, symbols=symbols["instrument"])
    collateral: dict[str, float] = {}
    for record in balances:
        symbol = symbols["asset"][int(record["asset"])]
        collateral[symbol] = collateral.get(symbol, 0.0) + float(record["amount"])
    held = {position["instrument"] for position in positions}
    sweep = snapshot.sweep
    market = dict(sweep_market(sweep=sweep))
    market["instruments"] = {s: e for s, e in market["instruments"].items() if s in held}
    account = snapshot.account
    return {
        "valuation_time": sweep.valuation_time.isoformat().replace("+00:00", "Z"),
        "parameters": parameters_form(parameter_set=snapshot.parameter_set),
        "market": market,
        "portfolios": [
            {
                "id": account.code,
                "mode": snapshot.mode,
                "collateral": {symbol: repr(amount) for symbol, amount in sorted(collateral.items())},
                "positions": positions,
            }
        ],
    }


# Documents of snapshots, per process, for the read-only callers that serve them as they are (the
# current-margin route): (snapshot id, its sweep's valuation time) -> document. A snapshot never
# changes once written, so its document is built once however often it is served; the valuation
# time in the key keeps a SQLite database's reused ids from meeting another snapshot's document.
SNAPSHOT_DOCUMENTS_SHARED = 1024
_snapshot_documents = ProcessLRU(SNAPSHOT_DOCUMENTS_SHARED)


def margin_snapshot_document_shared(*, snapshot: MarginSnapshot) -> dict:
    """``margin_snapshot_document``, built once per process and snapshot and shared: the caller
    must not change it (``margin_snapshot_document`` gives a document of one's own). No query
    once the snapshot's document is built."""
    return _snapshot_documents.get_or_build(
        (snapshot.pk, snapshot.sweep.valuation_time), lambda: margin_snapshot_document(snapshot=snapshot)
    )


def _columns(prefix: str, model, *names: str) -> list[str]:
    """``prefix`` + each of ``names``, or of every concrete column of ``model`` when none is named."""
    names = names or tuple(field.attname for field in model._meta.concrete_fields)
    return [f"{prefix}{name}" for name in names]


# What the current margin's answer reads (``margin_snapshot_figures``, ``margin_snapshot_document``,
# ``foresight_figures``): the snapshot and the stored foresight whole, of the account, its margin
# row, the sweep and the parameter set only what they use. Fewer columns are less for the ORM to
# compile (≈ 0.7 ms of the ≈ 2 ms this read took with every column); anything else read from these
# objects would cost a query (tests/api/test_margin.py counts them).
_CURRENT_MARGIN_COLUMNS = (
    *_columns("", MarginAccount, "code", "mode", "kind", "member_id"),
    *_columns("margin__", AccountMargin, "snapshot_id"),
    *_columns("margin__snapshot__", MarginSnapshot),
    *_columns("margin__snapshot__sweep__", Sweep, "valuation_time", "started_at"),
    *_columns("margin__snapshot__parameter_set__", ParameterSet, "version", "sweep_interval_seconds"),
    *_columns("foresight__", AccountForesight),
)


def margin_account_visible_current(*, user: User, pk: int) -> MarginAccount:
    """The account with ``pk`` if ``user`` may see it (``accounts.selectors.margin_accounts_visible``;
    ``Http404`` otherwise), read in one query with its current margin (``account.margin``: the
    snapshot with its sweep and parameter set; the sweep's market left for ``sweep_market``) and its
    stored foresight (``account.foresight``); either raises ``DoesNotExist`` when there is none.
    The margin and the foresight are the rows of that one read: never a cached, older valuation.
    Only the columns the API's answer reads are loaded (``_CURRENT_MARGIN_COLUMNS``)."""
    accounts = (
        margin_accounts_visible(user=user)
        .select_related(None)  # not the member: each join costs PostgreSQL's planner ≈ 0.1 ms
        .select_related("margin__snapshot__sweep", "margin__snapshot__parameter_set", "foresight")
        .only(*_CURRENT_MARGIN_COLUMNS)
    )
    account = get_object_or_404(accounts, pk=pk)
    margin = getattr(account, "margin", None)
    if margin is not None and margin.snapshot.account_id == account.pk:
        margin.snapshot.account = account  # the same row: no query to read it again
    return account


def margin_account_visible_version(*, user: User, pk: int) -> tuple:
    """What the account's current-margin answer (``margin_account_visible_current`` shaped for the
    API) is a function of, read in one narrow query: ``(pk, code, snapshot id, valued at, stored
    foresight's snapshot id, valuation and computation times)``, ``None`` for what it does not have;
    ``Http404`` as ``margin_account_visible``. A snapshot, its sweep and its parameter set never
    change once written, and a stored foresight is replaced with a new computation time, never
    edited: equal versions are equal answers, and a newer sweep or foresight is a new version."""
    columns = ("pk", "code", "margin__snapshot_id", "margin__valued_at")
    columns += ("foresight__snapshot_id", "foresight__valued_at", "foresight__computed_at")
    versions = margin_accounts_visible(user=user).select_related(None).values_list(*columns)
    return get_object_or_404(versions, pk=pk)


def accounts_graded_above_ok(*, account_ids: list[int]) -> set[int]:
    """Those of ``account_ids`` whose stored foresight is at a level above ``ok`` (one query)."""
    graded = storage.any_of(
        AccountForesight.objects.exclude(level=WarningLevel.OK), "account_id", account_ids
    )
    return set(graded.values_list("account_id", flat=True))


def foresight_figures(*, foresight: AccountForesight) -> dict:
    """A stored (or on-demand) foresight in the API's and the pages' shape."""
    return {
        "level": foresight.level,
        "computed_at": foresight.computed_at,
        "horizon_days": foresight.horizon_days,
        "by_underlying": foresight.by_underlying,
        "joint": foresight.joint,
        "probability": {
            "value": foresight.probability,
            "model": foresight.model,
            "horizon_days": foresight.horizon_days,
        },
        "lookahead": {
            "im": foresight.lookahead_im,
            "excess": foresight.lookahead_excess,
            "reason": foresight.lookahead_reason,
        },
    }


def foresight_document(*, foresight: AccountForesight) -> dict:
    """The margin document a stored foresight replays from: its snapshot's document
    (``margin_snapshot_document``) with the vols it used as ``market.underlyings.<u>.vol``, for
    ``python -m riskengine foresight --horizon-days <foresight.horizon_days>``."""
    document = margin_snapshot_document(snapshot=foresight.snapshot)
    underlyings = {name: dict(entry) for name, entry in document["market"]["underlyings"].items()}
    for name, vol in foresight.vols.items():
        if name in underlyings and vol is not None:
            underlyings[name]["vol"] = vol
    document["market"] = {**document["market"], "underlyings": underlyings}
    return document

"""Reads of margin sweeps: exposures, current margins, and the replay of a stored snapshot."""

from __future__ import annotations

import math

import numpy as np
from django.db.models import Q

from accounts.models import Asset, CollateralBalance
from clearing.marketdata.quotes import MarketQuotes
from clearing.models import Instrument, Position
from riskengine.core import parse_parameters, scenario_grid
from riskengine.core.margin import VOL_MOVES
from riskengine.loading import market_form_quotes
from riskengine.selectors import parameters_form
from riskengine.sweeps import codec, storage
from riskengine.sweeps.models import AccountForesight, MarginSnapshot, Sweep, WarningLevel


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
    ``allocated_margin`` when the snapshot stored one that is not 0 (isolated accounts)."""
    records = codec.decode(codec.POSITION, snapshot.positions)
    allocations = codec.decode(codec.ALLOCATION, snapshot.position_allocations)
    if symbols is None:
        symbols = dict(
            Instrument.objects.filter(pk__in=np.unique(records["instrument"]).tolist()).values_list(
                "pk", "symbol"
            )
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


def margin_snapshot_by_underlying(*, snapshot: MarginSnapshot, parameters_form: dict) -> list[dict]:
    """The snapshot's ``by_underlying`` figures as in the engine's result (spec section 5)."""
    parameters = parse_parameters(parameters_form)
    grid = scenario_grid(parameters)
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
        "by_underlying": margin_snapshot_by_underlying(
            snapshot=snapshot, parameters_form=parameters_form(parameter_set=snapshot.parameter_set)
        ),
        "free_collateral": snapshot.free_collateral,
        "comparison": {
            "isolated": snapshot.required_isolated,
            "cross": snapshot.required_cross,
            "portfolio": snapshot.required_portfolio,
        },
    }


def margin_snapshot_document(*, snapshot: MarginSnapshot) -> dict:
    """The margin document (spec section 5) the snapshot was computed from: the parameters form
    of its parameter set, the sweep's market restricted to the account's instruments, and the
    account's positions and collateral exactly as the engine saw them. ``compute_document`` on it
    gives the stored figures."""
    sweep = snapshot.sweep
    positions = margin_snapshot_positions(snapshot=snapshot)
    balances = codec.decode(codec.BALANCE, snapshot.collateral)
    asset_symbols = dict(
        Asset.objects.filter(pk__in=np.unique(balances["asset"]).tolist()).values_list("pk", "symbol")
    )
    collateral: dict[str, float] = {}
    for record in balances:
        symbol = asset_symbols[int(record["asset"])]
        collateral[symbol] = collateral.get(symbol, 0.0) + float(record["amount"])
    held = {position["instrument"] for position in positions}
    market = dict(sweep.market)
    market["instruments"] = {s: e for s, e in sweep.market["instruments"].items() if s in held}
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

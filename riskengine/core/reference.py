"""A straightforward per-portfolio implementation of the methodology in plain Python (``math`` only).

It reads the margin document directly and follows the spec line by line, one portfolio, one
underlying, one scenario and one position at a time. It is deliberately independent of the
vectorised engine (no shared pricing, parsing or aggregation code) so tests can use it as a
cross-check, and the benchmark uses it as the "obvious implementation" to measure the speed-up
against. It assumes a valid document (validation is the engine's job).
"""

from __future__ import annotations

import json
import math
import sys
from datetime import datetime

_SQRT2 = math.sqrt(2.0)
VOL_MOVES = ("up", "none", "down")


def _n(x: float) -> float:
    return 0.5 * math.erfc(-x / _SQRT2)


def _phi(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def black76_reference(f: float, k: float, sigma: float, t: float, call: bool, r: float = 0.0) -> tuple:
    """(price, delta, gamma, vega per 1.00, theta per day) of one option, spec section 2."""
    if t <= 0.0 or sigma * math.sqrt(t) <= 0.0:
        intrinsic = max(f - k, 0.0) if call else max(k - f, 0.0)
        itm = f > k if call else f < k
        return intrinsic, ((1.0 if call else -1.0) if itm else 0.0), 0.0, 0.0, 0.0
    sd = sigma * math.sqrt(t)
    d1 = (math.log(f / k) + 0.5 * sd * sd) / sd
    d2 = d1 - sd
    disc = math.exp(-r * t)
    if call:
        price = disc * (f * _n(d1) - k * _n(d2))
        delta = disc * _n(d1)
    else:
        price = disc * (k * _n(-d2) - f * _n(-d1))
        delta = -disc * _n(-d1)
    gamma = disc * _phi(d1) / (f * sd)
    vega = disc * f * _phi(d1) * math.sqrt(t)
    theta = (r * price - disc * f * _phi(d1) * sigma / (2.0 * math.sqrt(t))) / 365.0
    return price, delta, gamma, vega, theta


def _num(value) -> float:
    return float(value)


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


class ReferenceContext:
    """Parameters and market of a document as plain Python values."""

    def __init__(self, doc: dict) -> None:
        params = doc["parameters"]
        self.mm_ratio = _num(params.get("mm_ratio", 0.8))
        self.offset_cap = _num(params.get("offset_cap", 0.8))
        self.lookahead = _num(params.get("lookahead_days", 1))
        self.rate = _num(params.get("rate", 0.0))
        self.n = int(_num(params.get("price_steps", 4)))
        self.min_vol = _num(params.get("min_vol", 0.01))
        vol_term = params.get("vol_term", {})
        self.pivot = _num(vol_term.get("pivot_days", 30))
        self.short_power = _num(vol_term.get("short_power", 0.30))
        self.long_power = _num(vol_term.get("long_power", 0.13))
        standard = params.get("standard", {})
        self.option_imf = _num(standard.get("option_imf", 0.15))
        self.option_min = _num(standard.get("option_min", 0.10))
        self.option_mmf = _num(standard.get("option_mmf", 0.075))
        self.underlyings = list(params["underlyings"])
        self.und = {}
        for name, u in params["underlyings"].items():
            entry = {key: _num(value) for key, value in u.items() if key != "extreme"}
            # The spec's default, written again on purpose: this module shares nothing with the engine.
            default_extreme = [{"multiple": -2, "coverage": 0.35}, {"multiple": 2, "coverage": 0.35}]
            entry["extreme"] = [
                (_num(e["multiple"]), _num(e["coverage"])) for e in u.get("extreme", default_extreme)
            ]
            self.und[name] = entry
        corr = params["correlation"]
        names = corr["underlyings"]
        self.rho = {
            (a, b): _num(corr["matrix"][i][j]) for i, a in enumerate(names) for j, b in enumerate(names)
        }
        self.assets = {}
        market = doc["market"]
        self.spot = {name: _num(u["price"]) for name, u in market["underlyings"].items()}
        for name, a in params["assets"].items():
            brackets, lower = [], 0.0
            for bracket in a["haircuts"]:
                upper = math.inf if bracket["up_to"] is None else _num(bracket["up_to"])
                brackets.append((lower, upper, _num(bracket["haircut"])))
                lower = upper
            linked = a.get("underlying")
            if linked is not None:
                price = self.spot[linked]
            else:
                price = _num(market.get("assets", {}).get(name, {}).get("price", 1.0))
            self.assets[name] = {
                "linked": linked,
                "addon": _num(a.get("liability_addon", 0.0)),
                "brackets": brackets,
                "price": price,
            }
        now = _time(doc["valuation_time"])
        self.instruments = {}
        for name, i in market["instruments"].items():
            inst = {"kind": i["kind"], "und": i["underlying"], "m": _num(i["multiplier"]), "t": 0.0}
            if i["kind"] != "perpetual":
                inst["t"] = (_time(i["expiry"]) - now).total_seconds() / (365.0 * 86400.0)
            if i["kind"] == "option":
                inst.update(k=_num(i["strike"]), call=i["right"] == "call", iv=_num(i["iv"]))
            self.instruments[name] = inst

    def value(self, inst: dict, spot: float, sigma: float | None = None, t: float | None = None) -> float:
        """Per-unit value of an option at the given spot, vol and time to expiry."""
        return black76_reference(
            spot, inst["k"], inst["iv"] if sigma is None else sigma, inst["t"] if t is None else t,
            inst["call"], self.rate,
        )[0]  # fmt: skip


def collateral_value(ctx: ReferenceContext, asset: str, amount: float) -> float:
    a = ctx.assets[asset]
    v = amount * a["price"]
    if v < 0:
        return v * (1.0 + a["addon"])
    total = 0.0
    for lower, upper, haircut in a["brackets"]:
        if v > lower:
            total += (min(v, upper) - lower) * (1.0 - haircut)
    return total


def reference_portfolio(ctx: ReferenceContext, portfolio: dict) -> dict:
    """The result dict (spec section 5) of one portfolio, computed the obvious way."""
    mode = portfolio["mode"]
    collateral = {asset: _num(amount) for asset, amount in portfolio.get("collateral", {}).items()}
    coll_value = sum(collateral_value(ctx, a, b) for a, b in collateral.items())

    # Positions: value, Greeks and the standard-rule requirements, one at a time.
    rows = []
    for pos in portfolio.get("positions", []):
        inst = ctx.instruments[pos["instrument"]]
        q, m = _num(pos["quantity"]), inst["m"]
        s = ctx.spot[inst["und"]]
        u = ctx.und[inst["und"]]
        if inst["kind"] == "option":
            price, delta, gamma, vega, theta = black76_reference(
                s, inst["k"], inst["iv"], inst["t"], inst["call"], ctx.rate
            )
            value = q * m * price
            if q < 0:
                otm = max(0.0, inst["k"] - s) if inst["call"] else max(0.0, s - inst["k"])
                im = abs(q) * m * max(ctx.option_imf * s - otm, ctx.option_min * s)
                mm = abs(q) * m * ctx.option_mmf * s
            else:
                im = mm = 0.0
        else:
            price, delta, gamma, vega, theta = s, 1.0, 0.0, 0.0, 0.0
            value = q * m * (s - _num(pos["entry_price"]))
            im = abs(q) * m * s * u["imf"]
            mm = abs(q) * m * s * u["mmf"]
        # Section 4a: the isolated position stands on its allocation and its own value alone.
        allocated = _num(pos.get("allocated_margin", 0.0))
        equity_i = allocated + value
        if equity_i >= im:
            status_i = "healthy"
        elif equity_i >= mm:
            status_i = "margin_call"
        else:
            status_i = "liquidation"
        rows.append(
            {"pos": pos, "inst": inst, "q": q, "m": m, "price": price, "value": value,
             "delta_usd": q * m * delta * s, "gamma_usd": q * m * gamma * s * s / 100.0,
             "vega_usd": q * m * vega / 100.0, "theta_usd": q * m * theta, "im": im, "mm": mm,
             "allocated": allocated, "equity": equity_i, "status": status_i}
        )  # fmt: skip
    positions_value = sum(r["value"] for r in rows)
    im_standard = sum(r["im"] for r in rows)
    mm_standard = sum(r["mm"] for r in rows)

    # Portfolio rules, one underlying at a time.
    groups = []
    for name in ctx.underlyings:
        mine = [r for r in rows if r["inst"]["und"] == name]
        linked = sum(b for a, b in collateral.items() if ctx.assets[a]["linked"] == name)
        has_linked = any(b != 0 and ctx.assets[a]["linked"] == name for a, b in collateral.items())
        if not mine and not has_linked:
            continue
        groups.append(_underlying(ctx, name, mine, linked))
    sum_abs_d = sum(abs(g["directional"]) for g in groups)
    quad = sum(
        g["directional"] * h["directional"] * ctx.rho[(g["underlying"], h["underlying"])]
        for g in groups
        for h in groups
    )
    a = min(math.sqrt(max(0.0, quad)), sum_abs_d)
    a_prime = sum_abs_d - ctx.offset_cap * (sum_abs_d - a)
    non_dir = sum(g["non_directional"] for g in groups)
    basis = sum(g["basis"] for g in groups)
    som = sum(g["som"] for g in groups)
    conc = sum(g["conc"] for g in groups)
    im_portfolio = a_prime + non_dir + basis + som + conc
    mm_portfolio = ctx.mm_ratio * im_portfolio

    equity = coll_value + positions_value  # section 3 E, in every mode
    free = coll_value - sum(r["allocated"] for r in rows)
    if mode == "portfolio":
        im, mm = im_portfolio, mm_portfolio
    else:
        im, mm = im_standard, mm_standard
    if mode == "isolated":
        # The worst position's status; at least a margin call when free collateral is negative.
        statuses = {r["status"] for r in rows}
        if "liquidation" in statuses:
            status = "liquidation"
        elif "margin_call" in statuses or free < 0:
            status = "margin_call"
        else:
            status = "healthy"
    elif equity >= im:
        status = "healthy"
    elif equity >= mm:
        status = "margin_call"
    else:
        status = "liquidation"
    is_pm = mode == "portfolio"
    return {
        "id": portfolio["id"],
        "mode": mode,
        "status": status,
        "equity": equity,
        "collateral_value": coll_value,
        "initial_margin": im,
        "maintenance_margin": mm,
        "excess": equity - im,
        "margin_ratio": None if mm == 0 else equity / mm,
        "components": {
            "scan_directional": a_prime if is_pm else 0.0,
            "scan_non_directional": non_dir if is_pm else 0.0,
            "correlation_credit": (sum_abs_d - a_prime) if is_pm else 0.0,
            "basis": basis if is_pm else 0.0,
            "short_option_minimum": som if is_pm else 0.0,
            "concentration": conc if is_pm else 0.0,
        },
        "by_underlying": [{k: v for k, v in g.items() if k in _BY_UNDERLYING} for g in groups],
        "positions": [
            {
                "instrument": r["pos"]["instrument"],
                "quantity": r["q"],
                "price": r["price"],
                "value": r["value"],
                "delta_usd": r["delta_usd"],
                "initial_margin": r["im"],
                "maintenance_margin": r["mm"],
                "allocated_margin": r["allocated"] if mode == "isolated" else None,
                "equity": r["equity"] if mode == "isolated" else None,
                "status": r["status"] if mode == "isolated" else None,
            }
            for r in rows
        ],
        "free_collateral": free if mode == "isolated" else None,
        "comparison": {
            "isolated": sum(max(0.0, r["im"] - r["value"]) for r in rows),
            "cross": max(0.0, im_standard - positions_value),
            "portfolio": max(0.0, im_portfolio - positions_value),
        },
    }


_BY_UNDERLYING = (
    "underlying", "scan_risk", "directional", "delta_usd", "gamma_usd", "vega_usd", "theta_usd",
    "worst_scenario",
)  # fmt: skip


def _underlying(ctx: ReferenceContext, name: str, rows: list[dict], linked_units: float) -> dict:
    u = ctx.und[name]
    s = ctx.spot[name]
    psr = u["psr"]
    # (x, vol move, kind, coverage) in the engine's documented order.
    scenarios = [
        (j / ctx.n * psr, vol, "standard", 1.0) for j in range(-ctx.n, ctx.n + 1) for vol in VOL_MOVES
    ]
    scenarios += [(multiple * psr, "up", "extreme", coverage) for multiple, coverage in u["extreme"]]

    worst_pnl, worst = math.inf, None
    for x, vol, kind, coverage in scenarios:
        pnl = linked_units * s * x
        for r in rows:
            inst = r["inst"]
            if inst["kind"] == "option":
                dte = 365.0 * inst["t"]
                power = ctx.short_power if dte < ctx.pivot else ctx.long_power
                term = (ctx.pivot / max(dte, 1.0)) ** power
                factor = {"up": 1.0 + u["vol_up"] * term, "none": 1.0, "down": 1.0 - u["vol_down"] * term}[
                    vol
                ]
                sigma = max(ctx.min_vol, inst["iv"] * factor)
                t_shift = max(inst["t"] - ctx.lookahead / 365.0, 0.0)
                pnl += r["q"] * r["m"] * (ctx.value(inst, s * (1.0 + x), sigma, t_shift) - r["price"])
            else:
                pnl += r["q"] * r["m"] * (s * (1.0 + x) - s)
        pnl *= coverage
        if pnl < worst_pnl:
            worst_pnl, worst = pnl, {"price_move": x, "vol_move": vol, "kind": kind}
    scan = max(0.0, -worst_pnl)
    delta = sum(r["delta_usd"] for r in rows) + linked_units * s
    directional = math.copysign(min(scan, abs(delta) * psr), delta) if delta != 0 else 0.0

    buckets: dict = {}
    for r in rows:
        inst = r["inst"]
        if inst["kind"] == "option":
            continue
        key = "perpetual" if inst["kind"] == "perpetual" else inst["t"]
        buckets[key] = buckets.get(key, 0.0) + r["q"] * r["m"] * s
    basis = 0.0
    for key, net in buckets.items():
        t = 0.0 if key == "perpetual" else key
        basis += abs(net) * max(u["min_basis"], u["basis_rate"] * t)

    net_option_units: dict = {}
    for r in rows:
        if r["inst"]["kind"] == "option":
            name_i = r["pos"]["instrument"]
            net_option_units[name_i] = net_option_units.get(name_i, 0.0) + r["q"] * r["m"]
    short_units = sum(max(0.0, -units) for units in net_option_units.values())
    som = u["som_rate"] * s * short_units
    return {
        "underlying": name,
        "scan_risk": scan,
        "directional": directional,
        "non_directional": scan - abs(directional),
        "delta_usd": delta,
        "gamma_usd": sum(r["gamma_usd"] for r in rows),
        "vega_usd": sum(r["vega_usd"] for r in rows),
        "theta_usd": sum(r["theta_usd"] for r in rows),
        "worst_scenario": worst,
        "basis": basis,
        "som": max(0.0, som - scan),
        "conc": u["conc_rate"] * max(0.0, abs(delta) - u["conc_threshold"]),
    }


def reference_amount_due(result: dict) -> float:
    """The amount due of one result dict, from its published fields alone: in ``isolated`` mode
    (section 4a) the shortfall to IM of each position in margin call plus negative free collateral;
    otherwise ``max(0, IM - E)`` (section 4c; 0 when healthy)."""
    if result["mode"] == "isolated":
        called = sum(
            p["initial_margin"] - p["equity"] for p in result["positions"] if p["status"] == "margin_call"
        )
        return called + max(0.0, -result["free_collateral"])
    return max(0.0, result["initial_margin"] - result["equity"])


def reference_document(doc: dict) -> list[dict]:
    """Results of every portfolio of a (valid) document, the straightforward way."""
    ctx = ReferenceContext(doc)
    return [reference_portfolio(ctx, portfolio) for portfolio in doc["portfolios"]]


def main(argv: list[str] | None = None) -> int:
    """``python riskengine/core/reference.py DOC.json``: the results of a (valid) document as compact
    JSON on stdout, the same output as ``python -m riskengine margin DOC.json``.

    Run it by path, as above, and it is a plain-Python process: ``math``, ``datetime`` and ``json``
    only (``-m riskengine.core.reference`` would import the numpy engine package first). The CLI
    benchmark (``bench/bench_cli.py``) times it as the yardstick.
    """
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python riskengine/core/reference.py DOC.json|-", file=sys.stderr)
        return 2
    if args[0] == "-":
        doc = json.load(sys.stdin)
    else:
        with open(args[0], encoding="utf-8") as handle:
            doc = json.load(handle)
    json.dump(reference_document(doc), sys.stdout, separators=(",", ":"), allow_nan=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m riskengine foresight DOC.json [--horizon-days 1] [--prices DIR] [--indent N]``.

Liquidation foresight (methodology v1.1 section 9) of every portfolio of a margin document, as
``{"portfolios": [{"id", "status", "by_underlying": [{"underlying", "down": {"move", "price"} |
null, "up": {"move", "price"} | null}], "joint": {"down": {"move"} | null, "up": {"move"} |
null}, "probability": {"horizon_days", "value", "model"}}]}`` on stdout, exit 0.

Volatilities (annualised): ``market.underlyings.<u>.vol`` where the document gives it; otherwise
the EWMA (λ = 0.94) forecast from the daily closes in ``--prices DIR`` (file ``<u>-USD.csv``, the
shipped history's layout). An underlying some portfolio depends on with neither is an error (exit
2, naming it), as is anything the ``margin`` command refuses; nothing is written then.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from . import STATUSES, DocumentError, compute_margin, parse_document, require_finite
from .foresight import Book, distances, liquidation_probability
from .jsontext import MAX_DEPTH, loads
from .volatility import LAMBDA, annualised, ewma_volatility, read_closes

EXIT_MALFORMED = 2
EWMA_MODEL = f"ewma-{LAMBDA}"


def add_parser(commands) -> None:
    """Register the ``foresight`` subcommand on the CLI's subparsers."""
    parser = commands.add_parser("foresight", help="distance to and probability of liquidation (spec 9)")
    parser.add_argument("document", help="margin document (JSON), or - for standard input")
    parser.add_argument("--horizon-days", type=float, default=1.0, help="probability horizon (default 1)")
    parser.add_argument(
        "--prices", type=Path, default=None,
        help="directory of daily closes <UNDERLYING>-USD.csv for the volatility forecast of the "
        "underlyings whose vol the document does not give",
    )  # fmt: skip
    parser.add_argument("--indent", type=int, default=None, help="indent the JSON by this many spaces")
    parser.set_defaults(run=run)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_MALFORMED


def run(args) -> int:
    if not (math.isfinite(args.horizon_days) and args.horizon_days > 0):
        return _fail("--horizon-days: must be a positive number of days")
    try:
        text = sys.stdin.read() if args.document == "-" else Path(args.document).read_text(encoding="utf-8")
    except OSError as error:
        return _fail(f"cannot read {args.document}: {error.strerror or error}")
    except UnicodeDecodeError as error:
        return _fail(f"document: not UTF-8 text: {error}")
    try:
        doc = loads(text, max_depth=MAX_DEPTH)
    except ValueError as error:
        return _fail(f"document: not valid JSON: {error}")
    try:
        margin_input = parse_document(doc)
        result = compute_margin(margin_input)
        require_finite(result)
        vols, model = _vols(margin_input, result, args.prices)
    except DocumentError as error:
        return _fail(str(error))
    book = Book(margin_input, result)
    found = distances(margin_input, book=book)
    probability = liquidation_probability(book, vols=vols, horizon_days=args.horizon_days)
    out = {"portfolios": _portfolios(found, probability, args.horizon_days, model)}
    sys.stdout.write(json.dumps(out, indent=args.indent, allow_nan=False))
    sys.stdout.write("\n")
    return 0


def _vols(margin_input, result, prices: Path | None) -> tuple[np.ndarray, str]:
    """Annualised vols ``(n_und,)`` (NaN where nothing needs one) and the model's name."""
    names = margin_input.parameters.underlyings
    given = margin_input.market.underlying_vol
    vols = np.full(len(names), np.nan) if given is None else given.copy()
    needed = np.unique(result.pair_underlying)
    sources = set()
    for u in needed.tolist():
        if np.isfinite(vols[u]):
            sources.add("document")
            continue
        path = prices / f"{names[u]}-USD.csv" if prices is not None else None
        field = f"market.underlyings.{names[u]}.vol"
        if path is None or not path.is_file():
            where = f"and {path} does not exist" if path is not None else "and no --prices DIR was given"
            raise DocumentError(field, f"no volatility for {names[u]}: the document gives none {where}")
        try:
            vols[u] = annualised(ewma_volatility(read_closes(path)))
        except (ValueError, KeyError) as error:
            raise DocumentError(field, f"no volatility for {names[u]}: {path}: {error}") from None
        sources.add(EWMA_MODEL)
    model = "+".join(sorted(sources, key=lambda s: s != "document")) or "none"
    return vols, model


def _move(move: float, price: float | None = None) -> dict | None:
    if not math.isfinite(move):
        return None
    return {"move": move} if price is None else {"move": move, "price": price}


def _portfolios(found, probability: np.ndarray, horizon_days: float, model: str) -> list[dict]:
    book = found.book
    names = book.margin_input.parameters.underlyings
    out = []
    for k, portfolio_id in enumerate(book.margin_input.portfolios.ids):
        pairs = range(int(book.pair_indptr[k]), int(book.pair_indptr[k + 1]))
        out.append({
            "id": portfolio_id,
            "status": STATUSES[int(book.result.status[k])],
            "by_underlying": [
                {
                    "underlying": names[int(book.pair_underlying[r])],
                    "down": _move(float(found.down[r]), float(found.down_price[r])),
                    "up": _move(float(found.up[r]), float(found.up_price[r])),
                }
                for r in pairs
            ],
            "joint": {"down": _move(float(found.joint_down[k])), "up": _move(float(found.joint_up[k]))},
            "probability": {"horizon_days": horizon_days, "value": float(probability[k]), "model": model},
        })  # fmt: skip
    return out

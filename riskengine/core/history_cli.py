"""``python -m riskengine backtest|stress DOC.json --prices DIR``: model validation from the CLI.

``backtest DOC.json --prices DIR [--mode fixed|calibrated] [--mpor-days 2]`` replays every
portfolio of a margin document over the daily history in ``DIR`` (``riskengine.core.backtest``);
``stress DOC.json --prices DIR [--mpor-days 2]`` runs the crisis windows of that history and the
default hypothetical scenarios (``riskengine.core.stress``); a portfolio may carry ``"member"`` (a
string; default its own id). Both print one JSON object (compact; ``--indent N`` for a readable
one) and exit 0.

``DIR`` holds one ``<SYMBOL>-USD.csv`` per underlying of the parameter set and per asset that is
neither linked to an underlying nor ``USD`` (``riskengine.core.history.needed_series``), in the
shape of ``clearing/data/prices/``: a header naming at least ``Date`` (``YYYY-MM-DD``) and
``Close`` (USD, a finite positive plain number), one row per day, days increasing. This module
reads them (the one place with file IO); the days all files share are used.

Errors exit 2 with the message on stderr and nothing on stdout, as ``margin`` does: a document
that cannot be read or is malformed (naming the field), a missing or malformed price file (naming
the file and, when it is one line's fault, the line), figures that would not be finite (naming the
portfolio), a history too short for one observation.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from datetime import date
from pathlib import Path

import numpy as np

from .backtest import MODES, backtest, backtest_report
from .document import MarginInput, parse_document
from .errors import DocumentError
from .history import PriceHistory, align_history, needed_series
from .jsontext import MAX_DEPTH, loads
from .parsing import is_plain_number, shown
from .stress import historical_scenarios, hypothetical_scenarios, stress, stress_report

EXIT_MALFORMED = 2
ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)


class PriceFileError(Exception):
    """A price file that is missing or malformed; ``str()`` names the file (and line)."""


def read_closes(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(days (n,) datetime64[D], closes (n,) float64)`` of one ``<SYMBOL>-USD.csv`` file; raises
    ``PriceFileError`` naming the file (and the line) when it is missing or malformed."""
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.reader(handle))
    except FileNotFoundError:
        raise PriceFileError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError) as error:
        raise PriceFileError(f"{path}: cannot be read: {error}") from None
    except csv.Error as error:
        raise PriceFileError(f"{path}: not CSV: {error}") from None
    if not rows:
        raise PriceFileError(f"{path}: empty (a header with Date and Close is needed)")
    header = [name.strip() for name in rows[0]]
    for needed in ("Date", "Close"):
        if needed not in header:
            raise PriceFileError(f"{path}: line 1: no {needed} column")
    day_column, close_column = header.index("Date"), header.index("Close")
    days, closes = [], []
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue  # a blank line (a trailing newline)
        if len(row) != len(header):
            raise PriceFileError(f"{path}: line {line}: {len(row)} fields, the header has {len(header)}")
        text = row[day_column]
        try:
            day = date.fromisoformat(text) if ISO_DAY.fullmatch(text) else None
        except ValueError:  # 2021-02-30
            day = None
        if day is None:
            raise PriceFileError(f"{path}: line {line}: Date {shown(text)} is not a YYYY-MM-DD date")
        text = row[close_column]
        close = float(text) if is_plain_number(text) else math.nan
        if not (math.isfinite(close) and close > 0.0):
            raise PriceFileError(f"{path}: line {line}: Close {shown(text)} is not a finite positive number")
        if days and day <= days[-1]:
            raise PriceFileError(f"{path}: line {line}: {day} does not come after {days[-1]}")
        days.append(day)
        closes.append(close)
    if not days:
        raise PriceFileError(f"{path}: no price rows")
    return np.array(days, dtype="datetime64[D]"), np.array(closes)


def read_history(directory: str, margin_input: MarginInput) -> PriceHistory:
    """The price history of ``directory`` for the document's parameter set (module doc)."""
    folder = Path(directory)
    if not folder.is_dir():
        raise PriceFileError(f"{directory}: not a directory")
    series = {
        symbol: read_closes(folder / f"{symbol}-USD.csv")
        for symbol, _ in needed_series(margin_input.parameters)
    }
    return align_history(margin_input.parameters, series)


def _document(source: str):
    """The parsed JSON of ``source`` (a path or ``-``); ``OSError``/``ValueError`` on failure."""
    if source == "-":
        text = sys.stdin.read()
    else:
        with open(source, encoding="utf-8") as handle:
            text = handle.read()
    return loads(text, max_depth=MAX_DEPTH)


def _members(doc: dict) -> list[str]:
    """Each portfolio's ``member`` (a non-empty string; default its ``id``)."""
    members = []
    for k, portfolio in enumerate(doc["portfolios"]):
        member = portfolio.get("member", portfolio["id"])
        if not isinstance(member, str) or not member:
            raise DocumentError(f"portfolios[{k}].member", f"must be a non-empty string, got {shown(member)}")
        members.append(member)
    return members


def _write(report: dict, indent: int | None) -> None:
    separators = (",", ":") if indent is None else None
    sys.stdout.write(json.dumps(report, indent=indent, separators=separators, allow_nan=False))
    sys.stdout.write("\n")


def _run(args, compute) -> int:
    """Read the document and the history, ``compute(doc, margin_input, history) -> report``, write
    it; every failure exits 2 with one message on stderr and nothing on stdout."""
    try:
        doc = _document(args.document)
    except OSError as error:
        print(f"error: cannot read {args.document}: {error.strerror or error}", file=sys.stderr)
        return EXIT_MALFORMED
    except UnicodeDecodeError as error:
        print(f"error: document: not UTF-8 text: {error}", file=sys.stderr)
        return EXIT_MALFORMED
    except ValueError as error:
        print(f"error: document: not valid JSON: {error}", file=sys.stderr)
        return EXIT_MALFORMED
    try:
        margin_input = parse_document(doc)
        history = read_history(args.prices, margin_input)
        report = compute(doc, margin_input, history)
    except (DocumentError, PriceFileError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_MALFORMED
    _write(report, args.indent)
    return 0


def run_backtest(args) -> int:
    def compute(doc, margin_input, history):
        result = backtest(margin_input, history, mode=args.mode, mpor_days=args.mpor_days)
        bad = np.flatnonzero(~np.all(np.isfinite(result.initial_margin) & np.isfinite(result.loss), axis=0))
        if bad.size:
            k = int(bad[0])
            name = result.ids[k] if k < result.n_portfolios else "the aggregate book"
            raise DocumentError(
                f"portfolios[{k}]" if k < result.n_portfolios else "portfolios",
                f"the backtest figures of {shown(name)} would not be finite (overflow)",
            )
        return backtest_report(result)

    return _run(args, compute)


def run_stress(args) -> int:
    def compute(doc, margin_input, history):
        members = _members(doc)
        scenarios = historical_scenarios(margin_input, history, mpor_days=args.mpor_days)
        scenarios = scenarios + hypothetical_scenarios(margin_input)
        result = stress(margin_input, scenarios, members=members, mpor_days=args.mpor_days)
        return stress_report(margin_input, result)

    return _run(args, compute)


def _days(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of days >= 1, got {text!r}")
    return int(text)


def add_commands(commands) -> None:
    """Register ``backtest`` and ``stress`` on the CLI's subparsers (each sets ``run``)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("document", help="margin document (JSON), or - for standard input")
    common.add_argument("--prices", required=True, help="directory of <SYMBOL>-USD.csv daily closes")
    common.add_argument("--mpor-days", type=_days, default=2, help="margin period of risk h in days (2)")
    common.add_argument("--indent", type=int, default=None, help="indent the JSON (default: compact)")
    backtest_parser = commands.add_parser(
        "backtest", parents=[common], help="backtest every portfolio over a daily price history (spec 7)"
    )
    backtest_parser.add_argument(
        "--mode", choices=MODES, default="fixed", help="psr as set, or recalibrated daily"
    )
    backtest_parser.set_defaults(run=run_backtest)
    stress_parser = commands.add_parser(
        "stress", parents=[common], help="stress losses, Cover-1 and Cover-2 (spec 8)"
    )
    stress_parser.set_defaults(run=run_stress)

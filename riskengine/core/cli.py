"""``python -m riskengine margin DOC.json|-``: compute (or replay) a margin document.

(``python -m riskengine foresight DOC.json``: liquidation foresight, ``riskengine.core.foresight_cli``.)

Prints a JSON array of results, one per portfolio in document order, and exits 0: compact JSON by
default (``--indent N`` for a readable one). Output is all or nothing: a malformed document (the
message names the offending field), one whose figures would not be finite (it names the
portfolio), JSON that repeats a key in an object, uses ``NaN``/``Infinity``, or nests deeper than
``MAX_DEPTH`` (``riskengine.core.jsontext``), all exit 2 with the message on stderr and nothing on stdout.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys

from . import DocumentError, compute_margin, foresight_cli, parse_document, require_finite
from .history_cli import add_commands as add_model_validation_commands
from .jsontext import MAX_DEPTH, loads
from .results import write_json

EXIT_MALFORMED = 2


def _read(source: str) -> str:
    if source == "-":
        return sys.stdin.read()
    with open(source, encoding="utf-8") as handle:
        return handle.read()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m riskengine", description="Margin engine (methodology v1.1)."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    margin = commands.add_parser("margin", help="compute the margin of every portfolio of a document")
    margin.add_argument("document", help="margin document (JSON), or - for standard input")
    margin.add_argument(
        "--indent", type=int, default=None, help="indent the JSON by this many spaces (default: compact)"
    )
    margin.set_defaults(run=_margin)
    add_model_validation_commands(commands)  # backtest, stress (riskengine.core.history_cli)
    foresight_cli.add_parser(commands)
    args = parser.parse_args(argv)
    # One run over a document tree with no reference cycles: the cyclic garbage collector would
    # only rescan the document's ~10^5 containers again and again (~10 % of a run).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return args.run(args)
    finally:
        if collecting:
            gc.enable()


def _margin(args) -> int:
    try:
        text = _read(args.document)
    except OSError as error:
        print(f"error: cannot read {args.document}: {error.strerror or error}", file=sys.stderr)
        return EXIT_MALFORMED
    except UnicodeDecodeError as error:
        print(f"error: document: not UTF-8 text: {error}", file=sys.stderr)
        return EXIT_MALFORMED
    try:
        doc = loads(text, max_depth=MAX_DEPTH)
    except ValueError as error:
        print(f"error: document: not valid JSON: {error}", file=sys.stderr)
        return EXIT_MALFORMED
    try:
        result = compute_margin(parse_document(doc))
        require_finite(result)  # all or nothing: checked before the first byte is written
    except DocumentError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_MALFORMED
    if args.indent is None:
        write_json(result, sys.stdout)
    else:
        sys.stdout.write(json.dumps(result.to_dicts(), indent=args.indent, allow_nan=False))
    sys.stdout.write("\n")
    return 0

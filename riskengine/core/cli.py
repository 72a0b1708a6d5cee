"""``python -m riskengine margin DOC.json|-``: compute (or replay) a margin document.

Prints a JSON array of results, one per portfolio in document order, and exits 0. A malformed
document exits 2 with a message naming the offending field on stderr and prints nothing on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys

from . import DocumentError, compute_document

EXIT_MALFORMED = 2


def _load(source: str):
    if source == "-":
        return json.load(sys.stdin)
    with open(source, encoding="utf-8") as handle:
        return json.load(handle)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m riskengine", description="Margin engine (methodology v1)."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    margin = commands.add_parser("margin", help="compute the margin of every portfolio of a document")
    margin.add_argument("document", help="margin document (JSON), or - for standard input")
    margin.add_argument("--indent", type=int, default=2, help="JSON indentation (default 2)")
    args = parser.parse_args(argv)
    try:
        doc = _load(args.document)
    except OSError as error:
        print(f"error: cannot read {args.document}: {error.strerror or error}", file=sys.stderr)
        return EXIT_MALFORMED
    except json.JSONDecodeError as error:
        print(f"error: document: not valid JSON: {error}", file=sys.stderr)
        return EXIT_MALFORMED
    try:
        results = compute_document(doc)
    except DocumentError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_MALFORMED
    json.dump(results, sys.stdout, indent=args.indent, allow_nan=False)
    sys.stdout.write("\n")
    return 0

"""Strict JSON text for margin documents and API bodies: ``loads(text)``.

``json.loads`` as is accepts ``NaN`` and ``Infinity``, keeps the *last* value of a repeated key
without a word, and recurses once per nesting level (a body of 100,000 ``[`` raises
``RecursionError``). ``loads`` refuses all three with ``JSONInputError`` saying why (naming the
repeated key). The CLI's document loader and the API's ``StrictJSONParser`` both use it.
Well-formed text is read by ``orjson`` when what it reads is provably the same (``_fast``); every
other text, and every refusal's wording, goes through the standard library's parser.
"""

from __future__ import annotations

import json

import numpy as np
import orjson

# A margin document nests 6 levels; no API body needs more than a handful.
MAX_DEPTH = 400

# ``bytes.translate`` keeps only the brackets, as int8 steps: +1 opening, -1 (0xff) closing.
_STEPS = bytes(1 if c in b"[{" else 0xFF if c in b"]}" else c for c in range(256))
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")


class JSONInputError(ValueError):
    """Text that is not accepted as strict JSON; ``str()`` says why."""


def _object(pairs: list[tuple[str, object]]) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise JSONInputError(f"duplicate key {key[:100]!r} in an object")
            seen.add(key)
    return obj


def _constant(name: str):
    raise JSONInputError(f"{name} is not a JSON number")


def depth_exceeds(text: str, limit: int = MAX_DEPTH) -> bool:
    """Whether arrays and objects nest deeper than ``limit`` in ``text``.

    Quick bounds first, in C: fewer brackets than ``limit`` cannot exceed it; the running count of
    every bracket, those inside strings included (``bytes.translate`` and ``numpy``, ~1.5 ms a
    MB), bounds the true depth from above. Only when that bound exceeds ``limit`` are strings
    skipped exactly, in Python.
    """
    if text.count("[") + text.count("{") <= limit:
        return False
    brackets = text.encode("utf-8", "surrogatepass").translate(_STEPS, _NOT_BRACKETS)
    steps = np.frombuffer(brackets, dtype=np.int8)
    if not steps.size or np.cumsum(steps, dtype=np.int64).max() <= limit:
        return False
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "[" or char == "{":
            depth += 1
            if depth > limit:
                return True
        elif char == "]" or char == "}":
            depth -= 1
    return False


def _fast(text: str):
    """``text`` parsed by ``orjson`` when the result is certainly what the strict loader returns,
    else ``None`` (the caller then runs the strict loader, which also words every refusal).

    orjson refuses ``NaN``/``Infinity``, literals out of float range, lone surrogates, control
    characters and BOMs (all left to the strict loader: it accepts some, words the rest) and reads
    the same values otherwise, with two exceptions, both caught from ``orjson.dumps`` of what it
    read (~0.05 s for a 9 MB document):

    - an integer beyond 64 bits becomes a float (the standard library keeps it exact): such a float
      is at least 9.2e18 in size, which ``orjson.dumps`` writes with ``e+``; any ``e+`` in the dump
      (a float of 1e16 or more, or those characters in a string: a false alarm only costs speed)
      sends the text to the strict loader;
    - a repeated key keeps its last value silently: the text has one colon per member of every
      object plus those inside strings; the dump has one per member *kept* plus those inside
      strings (``orjson`` never escapes ``:``). Equal counts mean no member was dropped, hence no
      repeated key (a colon escaped as ``\\u003a`` in the text only makes the counts differ).
    """
    try:
        value = orjson.loads(text)
        dumped = orjson.dumps(value)
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):  # dumps nests 254 levels at most
        return None
    if b"e+" in dumped or text.count(":") != dumped.count(b":"):
        return None
    return value


def loads(text: str, *, max_depth: int = MAX_DEPTH):
    """Parse strict JSON ``text``: no ``NaN``/``Infinity``, no key repeated within an object, at
    most ``max_depth`` levels of arrays and objects. Raises ``JSONInputError`` (a ``ValueError``)
    with the reason, or ``json.JSONDecodeError`` (also a ``ValueError``) for text that is not
    JSON at all.

    Well-formed text is read by ``orjson`` (``_fast``: a tenth of the time, the same values);
    anything it cannot vouch for goes through the standard library's parser with the checks."""
    if depth_exceeds(text, max_depth):
        raise JSONInputError(f"nested deeper than {max_depth} levels")
    value = _fast(text)
    if value is not None:
        return value
    try:
        return json.loads(text, object_pairs_hook=_object, parse_constant=_constant)
    except RecursionError:  # unreachable after the depth check; kept so no input can crash
        raise JSONInputError(f"nested deeper than {max_depth} levels") from None

"""Strict JSON text for margin documents and API bodies: ``loads(text)``.

``json.loads`` as is accepts ``NaN`` and ``Infinity``, keeps the *last* value of a repeated key
without a word, and recurses once per nesting level (a body of 100,000 ``[`` raises
``RecursionError``). ``loads`` refuses all three with ``JSONInputError`` saying why (naming the
repeated key). The CLI's document loader and the API's ``StrictJSONParser`` both use it.
"""

from __future__ import annotations

import json

import numpy as np

# A margin document nests 6 levels; no API body needs more than a handful.
MAX_DEPTH = 400

_STEP = np.zeros(256, dtype=np.int8)
_STEP[[ord("["), ord("{")]] = 1
_STEP[[ord("]"), ord("}")]] = -1


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
    every bracket, those inside strings included (``numpy``, ~3 ms a MB), bounds the true depth
    from above. Only when that bound exceeds ``limit`` are strings skipped exactly, in Python.
    """
    if text.count("[") + text.count("{") <= limit:
        return False
    steps = _STEP[np.frombuffer(text.encode("utf-8", "surrogatepass"), dtype=np.uint8)]
    steps = steps[steps != 0]
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


def loads(text: str, *, max_depth: int = MAX_DEPTH):
    """Parse strict JSON ``text``: no ``NaN``/``Infinity``, no key repeated within an object, at
    most ``max_depth`` levels of arrays and objects. Raises ``JSONInputError`` (a ``ValueError``)
    with the reason, or ``json.JSONDecodeError`` (also a ``ValueError``) for text that is not
    JSON at all."""
    if depth_exceeds(text, max_depth):
        raise JSONInputError(f"nested deeper than {max_depth} levels")
    try:
        return json.loads(text, object_pairs_hook=_object, parse_constant=_constant)
    except RecursionError:  # unreachable after the depth check; kept so no input can crash
        raise JSONInputError(f"nested deeper than {max_depth} levels") from None

"""Hypothesis strategies for pathological margin documents: a valid document with one part replaced
by junk (any JSON value, a number in a form that is not plain, an unknown key, a missing key), so
property tests can check that the engine, the CLI and the API refuse them with a named field and
never fail otherwise."""

from __future__ import annotations

import copy

from hypothesis import strategies as st

from tests.riskengine.documents import hand_example_document, make_document, spec_market

JUNK_NUMBERS = [
    "١٢٣", "１２３", "1_000", " 1 ", "1 ", "+", "-", ".", "e3", "1e", "nan", "NaN", "inf", "-Infinity",
    "0x10", "1,5", "", "1e999", "-1e999", "1" * 400, 10**400, -(10**400), 1e308, -1e308, 5e-324,
    -0.0, 0, True, False, None,
]  # fmt: skip

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.sampled_from(JUNK_NUMBERS),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


def base_documents() -> list[dict]:
    """Valid documents covering every part of the format (options, futures, linked collateral)."""
    rich = make_document(
        {"id": "P-1", "mode": "portfolio", "collateral": {"USDC": "50000", "BTC": 0.5},
         "positions": [{"instrument": "BTC-26MAR27-70000-C", "quantity": -3},
                       {"instrument": "BTC-26MAR27", "quantity": 1, "entry_price": 59000},
                       {"instrument": "ETH-25DEC26-3000-C", "quantity": 4}]},
        {"id": "P-2", "mode": "isolated", "collateral": {"USDC": 10000},
         "positions": [{"instrument": "ETH-PERP", "quantity": "-2.5", "entry_price": "2900",
                        "allocated_margin": "1500"}]},
        {"id": "P-3", "mode": "cross", "collateral": {"USDC": 1000}, "positions": []},
        market=spec_market(),
    )  # fmt: skip
    return [hand_example_document(), rich]


def paths(value, prefix=()) -> list[tuple]:
    """Every path to a value in a JSON tree (dict keys and list indices)."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths(item, (*prefix, index))
    return found


@st.composite
def pathological_documents(draw) -> dict:
    """A valid document with one to three of its parts replaced, removed or given a stray key."""
    doc = copy.deepcopy(draw(st.sampled_from(base_documents())))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(paths(doc)))
        action = draw(st.sampled_from(["replace", "replace", "number", "delete", "add"]))
        if not path:
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        last = path[-1]
        if action == "replace":
            parent[last] = draw(json_value)
        elif action == "number":
            parent[last] = draw(st.sampled_from(JUNK_NUMBERS))
        elif action == "delete":
            del parent[last]
        elif isinstance(parent[last], dict):
            parent[last][draw(st.text(min_size=1, max_size=6))] = draw(json_value)
        else:
            parent[last] = draw(json_value)
    return doc

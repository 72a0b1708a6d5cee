"""Hypothesis strategies and the document builder of the property tests (shared by several suites)."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.riskengine.documents import make_document, wide_market

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


INSTRUMENTS = sorted(wide_market()["instruments"])
MODES = ("isolated", "cross", "portfolio")

quantities = st.integers(min_value=-40, max_value=40).map(lambda n: n / 4)
# An allocated margin (spec section 4a) or none (the key absent: 0); validated and shown in every
# mode, used only in isolated mode.
allocations = st.one_of(st.none(), st.integers(min_value=0, max_value=20_000).map(lambda n: n / 2))
positions = st.lists(
    st.tuples(
        st.sampled_from(INSTRUMENTS), quantities, st.integers(min_value=2000, max_value=80000), allocations
    ),
    max_size=6,
)


def position_entry(name: str, quantity: float, entry: int, allocated: float | None) -> dict:
    position = {"instrument": name, "quantity": quantity, "entry_price": entry}
    if allocated is not None:
        position["allocated_margin"] = allocated
    return position


collateral = st.fixed_dictionaries(
    {},
    optional={
        "USDC": st.integers(min_value=-50_000, max_value=2_000_000).map(str),
        "BTC": st.integers(min_value=-20, max_value=400).map(lambda n: n / 4),
    },
)


@st.composite
def portfolios(draw, *, mode=None, max_size=4):
    count = draw(st.integers(min_value=1, max_value=max_size))
    return [
        {
            "id": f"P{k}",
            "mode": mode or draw(st.sampled_from(MODES)),
            "collateral": draw(collateral),
            "positions": [position_entry(*drawn) for drawn in draw(positions)],
        }
        for k in range(count)
    ]


def document(books, *, parameters=None):
    return make_document(*books, parameters=parameters, market=wide_market())

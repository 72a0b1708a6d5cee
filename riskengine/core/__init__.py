"""The margin engine: the published margin methodology (v1.1) as a pure numpy/scipy library.

No Django here. Two entry points that give identical figures:

- ``compute_document(doc) -> list[dict]``: validate a margin document (spec section 5, a ``dict``
  as loaded from JSON) and return one result dict per portfolio, in document order.
- ``compute_margin(MarginInput) -> MarginResult``: the array API for sweeps over many accounts;
  build ``MarginInput(parameters, market, Portfolios(...))`` from arrays, call ``check_input`` once,
  then read result arrays or ``result.to_dicts(indices)``.

See ``docs/margin-engine.md``.
"""

from .black76 import Greeks, black76, black76_price
from .document import (
    CROSS,
    ISOLATED,
    MODES,
    PORTFOLIO,
    DocumentLimits,
    MarginInput,
    Portfolios,
    check_input,
    parse_document,
)
from .errors import DocumentError, NonFiniteFigures
from .margin import (
    STATUSES,
    MarginResult,
    ScenarioGrid,
    compute_margin,
    non_finite_figures,
    require_finite,
    scenario_grid,
)
from .market import FUTURE, KINDS, OPTION, PERPETUAL, Market, parse_market
from .params import (
    Parameters,
    check_correlation,
    check_haircut_brackets,
    nearest_correlation,
    parse_parameters,
)


def compute_document(doc, *, limits: DocumentLimits | None = None) -> list[dict]:
    """Validate ``doc`` and return its results (spec section 5), one dict per portfolio in order.

    Raises ``DocumentError`` (naming the field) for a malformed document, or one larger than
    ``limits``: nothing is computed; and (naming the portfolio) when a portfolio's figures would
    not be finite: no result at all is returned (all or nothing).
    """
    result = compute_margin(parse_document(doc, limits=limits))
    require_finite(result)
    return result.to_dicts()


__all__ = [
    "CROSS", "FUTURE", "ISOLATED", "KINDS", "MODES", "OPTION", "PERPETUAL", "PORTFOLIO", "STATUSES",
    "DocumentError", "DocumentLimits", "Greeks", "MarginInput", "MarginResult", "Market",
    "NonFiniteFigures", "Parameters", "Portfolios", "ScenarioGrid", "black76", "black76_price",
    "check_correlation",
    "check_haircut_brackets", "check_input", "compute_document", "compute_margin",
    "nearest_correlation", "non_finite_figures", "parse_document", "parse_market", "parse_parameters",
    "require_finite", "scenario_grid",
]  # fmt: skip

"""The one exception the engine raises for bad input."""

from __future__ import annotations


class DocumentError(ValueError):
    """A margin document (or array input) that must not be computed from.

    ``field`` is the path of the offending field in the document, e.g.
    ``portfolios[3].positions[1].instrument``; ``str(error)`` starts with it so that a
    member, an auditor or the CLI user sees at once what to fix.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class NonFiniteFigures(DocumentError):
    """A portfolio whose figures would not be finite (an overflow, or a scenario validation did not
    foresee): ``field`` names the portfolio (``portfolios[3]``), the message its id and figures.
    The input was well formed but cannot be margined (the API answers 422, not 400)."""

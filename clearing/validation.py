"""Input checks shared by services, serializers and commands; each error names its field."""

from __future__ import annotations

from decimal import Decimal

from django.core.exceptions import ValidationError

from riskengine.core.parsing import is_plain_number

# What a NUMERIC(28, 10) column holds.
MAX_DIGITS = 28
MAX_DECIMAL_PLACES = 10
QUANTUM = Decimal(1).scaleb(-MAX_DECIMAL_PLACES)


def decimal_from_float(value: float) -> Decimal:
    """The one float → Decimal conversion of a computed figure (an engine result, an oracle price)
    on its way to money or a database column: through ``repr``, the shortest decimal that reads
    back as the same float (no binary noise: 0.1 → 0.1, not 0.1000000000000000055…), rounded to
    the places a NUMERIC(28, 10) column holds. Input is parsed by ``decimal_plain`` instead, which
    refuses what does not fit rather than rounding it."""
    return Decimal(repr(float(value))).quantize(QUANTUM)


def decimal_plain(value: object, *, field: str) -> Decimal:
    """The one number parser of API and service input: ``value`` as a Decimal, or a ValidationError
    on ``field``.

    Accepted: a Decimal, an int, a float (through its ``repr``: floats carry binary noise, 0.1 →
    0.1000000000000000055…) or a *plain* ASCII decimal string (``"-1.5"``, ``"2e3"``), the grammar
    of the margin engine's documents (``riskengine.core.parsing.is_plain_number``). Refused, as
    ``Decimal()`` would otherwise accept them: other scripts' digits (``"١٢٣"``, ``"１２３"``),
    underscores (``"1_000"``), surrounding spaces (``" 1 "``), ``NaN``/``Infinity``, booleans.
    """
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool) or value is None:
        raise ValidationError({field: f"{value!r} is not a number."})
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, str) and is_plain_number(value):
        return Decimal(value)
    shown = repr(value) if not isinstance(value, str) or len(value) <= 40 else repr(value[:40] + "…")
    raise ValidationError(
        {field: f'{shown} is not a plain decimal number (ASCII digits, e.g. "-1.5" or "2e3", no spaces).'}
    )


def decimal_finite(value: object, *, field: str) -> Decimal:
    """``value`` (``decimal_plain``) as a finite Decimal that fits the database columns, or a
    ValidationError on ``field``."""
    number = decimal_plain(value, field=field)
    if not number.is_finite():
        raise ValidationError({field: "Must be a finite number (no NaN or infinity)."})
    _sign, digits, exponent = number.as_tuple()
    decimals = max(0, -exponent)
    if decimals > MAX_DECIMAL_PLACES:
        raise ValidationError({field: f"At most {MAX_DECIMAL_PLACES} decimal places."})
    if len(digits) + max(0, exponent) - decimals > MAX_DIGITS - MAX_DECIMAL_PLACES:
        raise ValidationError({field: "Too large."})
    return number


def decimal_positive(value: object, *, field: str) -> Decimal:
    number = decimal_finite(value, field=field)
    if number <= 0:
        raise ValidationError({field: "Must be positive."})
    return number


def decimal_nonzero(value: object, *, field: str) -> Decimal:
    number = decimal_finite(value, field=field)
    if number == 0:
        raise ValidationError({field: "Must not be zero."})
    return number


def errors_prefixed(error: ValidationError, prefix: str) -> ValidationError:
    """Re-key a field error under ``prefix`` (``fills[2].price``) so batch errors point at the item."""
    if hasattr(error, "error_dict"):
        return ValidationError(
            {f"{prefix}.{field}": messages for field, messages in error.error_dict.items()}
        )
    return ValidationError({prefix: error.messages})

"""Input checks shared by services, serializers and commands; each error names its field."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django.core.exceptions import ValidationError

# What a NUMERIC(28, 10) column holds.
MAX_DIGITS = 28
MAX_DECIMAL_PLACES = 10


def decimal_finite(value: object, *, field: str) -> Decimal:
    """``value`` as a finite Decimal that fits the database columns, or a ValidationError on ``field``."""
    if isinstance(value, float):
        # Floats carry binary noise (0.1 → 0.1000000000000000055…); go through their repr.
        value = repr(value)
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except (InvalidOperation, ValueError, TypeError):
        raise ValidationError({field: f"{value!r} is not a number."}) from None
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

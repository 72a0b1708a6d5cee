"""One error shape for the whole API: ``{"field": ["message", ...]}`` with 400 for bad input.

Services raise Django's ``ValidationError`` keyed by field (``fills[2].price``) and the engine
raises ``DocumentError(field, message)``; both become DRF validation errors here, so views stay
thin and every refusal names what to fix. Two more, same shape: a portfolio whose figures would
not be finite (the engine's ``NonFiniteFigures``) is a 422 naming the portfolio and its figures
(the input was well formed, it cannot be margined); a body over ``DATA_UPLOAD_MAX_MEMORY_SIZE``
(Django's ``RequestDataTooBig``) is a JSON 413, not Django's HTML 400.
"""

from __future__ import annotations

from collections.abc import Callable

from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions, status
from rest_framework.views import exception_handler as drf_exception_handler

from clearing.api.parsers import RequestTooLarge, body_limit
from riskengine.core.errors import DocumentError, NonFiniteFigures


class NotMarginable(exceptions.APIException):
    """422: well-formed input whose margin figures would not be finite (``{"field": [message]}``)."""

    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_code = "not_marginable"

    def __init__(self, field: str, message: str):
        super().__init__({field: [message]})


def validation_error_from_django(
    error: DjangoValidationError, *, rename: Callable[[str], str] | None = None
) -> exceptions.ValidationError:
    """A DRF 400 from a service's ValidationError; ``rename`` maps a service's field names to the
    API's (``fills[0].external_id`` → ``trade_id``)."""
    if hasattr(error, "error_dict"):
        detail: dict[str, list[str]] = {}
        for field, messages in error.message_dict.items():
            name = "non_field_errors" if field == "__all__" else field
            if rename is not None:
                name = rename(name)
            detail.setdefault(name, []).extend(messages)
        return exceptions.ValidationError(detail)
    return exceptions.ValidationError({"non_field_errors": error.messages})


def validation_error_from_document(
    error: DocumentError, *, prefix: str = ""
) -> exceptions.ValidationError | NotMarginable:
    """A 400 naming the document's field, or a 422 naming the portfolio when its figures would
    not be finite (``NonFiniteFigures``)."""
    field = f"{prefix}{error.field}" if prefix else error.field
    if isinstance(error, NonFiniteFigures):
        return NotMarginable(field, error.message)
    return exceptions.ValidationError({field: [error.message]})


def errors_flatten(detail, prefix: str = "") -> dict[str, list]:
    """Nested serializer errors (``{"fills": [{}, {"price": [...]}]}``) as flat field paths
    (``{"fills[1].price": [...]}``), the same names the services use."""
    if isinstance(detail, dict):
        flat: dict[str, list] = {}
        for key, value in detail.items():
            # List serializers report their items by index.
            if isinstance(key, int):
                path = f"{prefix}[{key}]"
            elif prefix and key == "non_field_errors":  # about the nested value as a whole
                path = prefix
            else:
                path = f"{prefix}.{key}" if prefix else str(key)
            flat.update(errors_flatten(value, path))
        return flat
    if isinstance(detail, list) and detail and all(isinstance(item, dict | list) for item in detail):
        flat = {}
        for index, value in enumerate(detail):
            flat.update(errors_flatten(value, f"{prefix}[{index}]"))
        return flat
    if isinstance(detail, list):
        return {prefix or "non_field_errors": detail} if detail else {}
    return {prefix or "non_field_errors": [detail]}


def exception_handler(exc, context):
    if isinstance(exc, DjangoValidationError):
        exc = validation_error_from_django(exc)
    elif isinstance(exc, DocumentError):
        exc = validation_error_from_document(exc)
    elif isinstance(exc, RequestDataTooBig):
        exc = RequestTooLarge(body_limit())
    if isinstance(exc, exceptions.ValidationError):
        exc.detail = errors_flatten(exc.detail)
    return drf_exception_handler(exc, context)
